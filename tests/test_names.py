"""File names are data: any name the file system allows is kept, written safely and shown readably;
odd folder entries are listed with their reason; bad output paths are one line (no models here)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emotion_llama.annotate.export import RECORD_SCHEMA
from emotion_llama.encoders.store import ClipFeatures, NativeStore, open_store
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.media.video import checked_path
from emotion_llama.names import json_dumps, printable, record_id
from emotion_llama.perception.extract import scan_videos

NAME_PATTERN = re.compile(RECORD_SCHEMA["properties"]["name"]["pattern"])

#: A POSIX file name: any bytes but "/" and NUL, 1 to 200 of them (the store adds a suffix).
file_names = st.binary(min_size=1, max_size=200).filter(lambda b: b"/" not in b and b"\0" not in b)
#: ...and the kinds users actually produce, so they are always among the examples.
TRICKY = [
    b"bad_\xff",
    b"with space",
    b"-lead",
    "ünïcødé 情绪".encode(),
    b"tab\there",
    b"x" * 200,
    b"a\nb",
    b"name",
]


def as_name(raw: bytes) -> str:
    return os.fsdecode(raw)


@given(st.one_of(file_names, st.sampled_from(TRICKY)))
def test_record_id_is_a_safe_token_and_printable_is_text(raw):
    name = as_name(raw)
    rid = record_id(name)
    assert NAME_PATTERN.match(rid), rid
    rid.encode("utf-8")  # never a surrogate: every text format can carry it
    assert len(rid) <= 130 and rid not in (".", "..")
    shown = printable(name)
    assert shown.isprintable() and shown.encode("utf-8")
    # the JSON form is valid UTF-8 and reads back as the very name, bytes and all
    text = json_dumps({"name": name, "keyed": {name: 1}})  # a name as a value and as a key
    assert json.loads(text.encode("utf-8").decode("utf-8")) == {"name": name, "keyed": {name: 1}}
    assert os.fsencode(json.loads(text)["name"]) == raw


@given(st.lists(st.one_of(file_names, st.sampled_from(TRICKY)), min_size=2, max_size=30, unique=True))
def test_record_ids_of_different_names_differ(raws):
    ids = [record_id(as_name(r)) for r in raws]
    assert len(set(ids)) == len(ids)


def test_ordinary_names_keep_their_id():
    for name in ("sample_00000001", "-lead", "ünï", "A01_happy.take2"):
        assert record_id(name) == name
    assert record_id("with space").startswith("with_space~")
    assert printable(as_name(b"bad_\xff")) == "bad_\\xff"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(file_names, st.sampled_from(TRICKY)))
def test_any_name_is_stored_and_found_again(tmp_path_factory, raw):
    root = tmp_path_factory.mktemp("store")
    name = as_name(raw)
    store = NativeStore(root, {"local": 4, "temporal": 4, "audio": 4})
    feats = ClipFeatures(*(np.full(4, k, np.float32) for k in range(3)))
    try:
        store.write(name, feats, clues={"name": name, "source": f"/v/{name}.mp4"}, source=f"/v/{name}.mp4")
    except OSError as exc:  # only a name too long for the file system beside ".json"
        assert len(raw) + len(".json") > 255, exc
        return
    again = open_store(root)  # a fresh reader of the manifest written above
    assert again.is_done(name) and np.array_equal(again.read(name).audio, feats.audio)
    clue = json.loads((root / "clues" / f"{name}.json").read_bytes().decode("utf-8"))
    assert clue["name"] == name


@pytest.fixture()
def odd_folder(tmp_path):
    v = tmp_path / "v"
    v.mkdir()
    clip = b"\x00\x00\x00\x18ftypmp42 not really a video, but a regular file"
    for raw in TRICKY[:4]:
        (v / as_name(raw + b".mp4")).write_bytes(clip)
    (v / "dir.mp4").mkdir()
    os.mkfifo(v / "fifo.mp4")
    (v / "loop.mp4").symlink_to("loop.mp4")
    (v / "dangling.mp4").symlink_to("nowhere.mp4")
    (v / "empty.mp4").write_bytes(b"")
    (v / "-lead.avi").write_bytes(clip)  # the clip name "-lead" again
    (v / "notes.txt").write_text("not a video by its name: ignored")
    return v


def test_odd_entries_are_listed_with_their_reason(odd_folder):
    scan = scan_videos(odd_folder)
    # "-lead.avi" sorts before "-lead.mp4": it keeps the clip name, the other is listed
    want = sorted([*(r + b".mp4" for r in TRICKY[:4] if r != b"-lead"), b"-lead.avi"])
    assert sorted(os.fsencode(p.name) for p in scan.videos) == want
    assert {Path(p).name: why for p, why in scan.problems} == {
        "dir.mp4": "a folder, not a video file",
        "fifo.mp4": "a named pipe (FIFO), not a video file",
        "loop.mp4": "a symbolic link loop",
        "dangling.mp4": "a dangling symbolic link (its target does not exist)",
        "empty.mp4": "the file is empty (0 bytes)",
        "-lead.mp4": "has the clip name '-lead' of -lead.avi; rename one",
    }


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("dir.mp4", "a folder, not a video file"),
        ("fifo.mp4", "a named pipe (FIFO), not a video file"),
        ("loop.mp4", "a symbolic link loop"),
        ("dangling.mp4", "a dangling symbolic link"),
        ("missing.mp4", "no such file"),
    ],
)
def test_a_single_odd_path_says_what_it_is(odd_folder, entry, reason):
    with pytest.raises(EmotionLlamaError, match=re.escape(reason)):
        checked_path(odd_folder / entry)


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "emotion_llama.cli", *args], capture_output=True, text=True, env=env, cwd=cwd
    )


def one_line_error(res: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    for needle in needles:
        assert needle in res.stderr, res.stderr


def test_bad_output_paths_are_one_line_before_any_work(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    videos = tmp_path / "videos"
    videos.mkdir()
    one_line_error(
        cli("extract", str(videos), "--out", str(a_file), "-p", "tiny"), "exists and is not a folder"
    )
    one_line_error(
        cli("annotate", str(videos), "--out", str(a_file), "-p", "tiny"), "exists and is not a folder"
    )
    one_line_error(cli("synth", "--out", str(a_file)), "a_file: exists and is not a folder")
    one_line_error(
        cli("probe", str(a_file), "--json", "/proc/nope/x.json", "-p", "tiny"),
        "/proc/nope/x.json",
        "cannot create its folder",
    )
    one_line_error(
        cli("analyze", str(videos / "x.mp4"), "--json", str(tmp_path), "-p", "tiny"), "is a folder"
    )


def test_an_os_error_deep_in_a_command_is_one_line(monkeypatch, capsys):
    # The command's last net: an OSError from anywhere below becomes one line naming the path.
    from emotion_llama import cli as cli_module
    from emotion_llama.media import samples

    def fails(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/data/clips/x.mp4")

    monkeypatch.setattr(samples, "make_speaking_clip", fails)
    monkeypatch.setattr(sys, "argv", ["emotion-llama", "sample", "/tmp/never-written.mp4"])
    with pytest.raises(SystemExit) as stop:
        cli_module.main()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "/data/clips/x.mp4: Permission denied" in err and "Traceback" not in err


def test_sample_text_is_spoken_never_read_as_options(tmp_path):
    from emotion_llama.media.samples import speak

    wav = speak("-w x hello", tmp_path / "s.wav")
    assert wav.stat().st_size > 10_000  # about a second of speech
    assert not (tmp_path / "x").exists() and not Path("x").exists()


def test_a_non_utf8_name_prints_escaped(tmp_path):
    bad = tmp_path / as_name(b"bad_\xff.mp4")
    res = cli("probe", str(bad), "-p", "tiny")
    one_line_error(res, "bad_\\xff.mp4: no such file")
