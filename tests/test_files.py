"""The one atomic writer and the JSON/YAML readers: a failed write leaves the old file and no
temporary file; errors name the file and the place."""

import pytest

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.files import atomic_output, atomic_write_text, clean_partial, read_json, read_yaml


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "out.json", "old\n")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_folder_is_replaced_whole(tmp_path):
    out = tmp_path / "model"
    for text in ("first", "second"):
        with atomic_output(out, folder=True) as tmp:
            (tmp / "config.json").write_text(text)
    assert (out / "config.json").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_long_names_get_a_temporary_and_leftovers_are_cleaned(tmp_path):
    name = "n" * 250
    atomic_write_text(tmp_path / name, "x")
    (tmp_path / ".left.abc.tmp").write_text("from a killed run")
    assert clean_partial(tmp_path) == 1 and [p.name for p in tmp_path.iterdir()] == [name]


def test_readers_name_the_file_and_the_place(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text('{"a": 1,\n "b": }\n')
    with pytest.raises(
        EmotionLlamaError, match=r"m\.json: not valid JSON \(Expecting value at line 2, column 7\)"
    ):
        read_json(bad)
    y = tmp_path / "r.yaml"
    y.write_text("model: tiny\ntrain: [1, 2\n")
    with pytest.raises(EmotionLlamaError, match=r"r\.yaml: not valid YAML \(.* at line 3, column 1\)"):
        read_yaml(y)
    with pytest.raises(EmotionLlamaError, match=r"nope\.json: no such file"):
        read_json(tmp_path / "nope.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(EmotionLlamaError, match=r"bin\.json: not valid JSON \(not UTF-8"):
        read_json(tmp_path / "bin.json")
