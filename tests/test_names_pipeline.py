"""Any file name through probe, extract and annotate on a real clip: random bytes, spaces, unicode,
a leading "-", a name at the file system's limit, beside entries that are no videos. Every clip
either succeeds or is listed with its reason, the batch always finishes, and a rerun redoes
nothing. Slow: real face and speech models, the offline LLM."""

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.media.samples import make_speaking_clip, real_media_dir
from emotion_llama.names import record_id

pytestmark = pytest.mark.slow

FIXED = [b"bad_\xff", b"with space", b"-lead", "ünïcødé 情绪".encode()]
#: A stem this long is a legal video name (+ ".mp4" = 255 bytes) but "{stem}.json" is not.
LONG = b"L" * 251


def random_names(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        raw = bytes(rng.choice([*range(1, 47), *range(48, 256)]) for _ in range(rng.randint(1, 40)))
        if raw not in (b".", b"..") and not raw.startswith(b".") and raw not in out:
            out.append(raw)  # "." would hide it, "/" (47) and NUL cannot be in a name
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, list[bytes]]:
    try:
        media = real_media_dir()
        clip = tmp_path_factory.mktemp("src") / "clip.mp4"
        make_speaking_clip(
            media / "WolfgangLanger_Pexels.mp4", "What a day it was.", clip, start=8.0, seconds=1.5
        )
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("names")
    stems = [*FIXED, *random_names(20261202, 2), LONG]
    for stem in stems:
        shutil.copyfile(clip, os.path.join(os.fsencode(root), stem + b".mp4"))
    (root / "folder.mp4").mkdir()
    os.mkfifo(root / "pipe.mp4")
    return root, stems


def _accounted(summary_failed, names_done: set[str], root: Path, stems: list[bytes]) -> dict[bytes, str]:
    """Every entry is done or failed, never both, never neither; the failures' reasons by name."""
    failed = {os.fsencode(Path(p).name): why for p, why in summary_failed}
    for stem in stems:
        done = os.fsdecode(stem) in names_done
        assert done != (stem + b".mp4" in failed), (stem, failed.get(stem + b".mp4"))
    assert failed[b"folder.mp4"] == "a folder, not a video file"
    assert failed[b"pipe.mp4"] == "a named pipe (FIFO), not a video file"
    return failed


def test_probe_prints_and_plots_any_name(folder, tmp_path):
    root, _ = folder
    bad = Path(os.fsdecode(os.path.join(os.fsencode(root), b"bad_\xff.mp4")))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "emotion_llama.cli",
            "probe",
            str(bad),
            "--json",
            str(tmp_path / "p.json"),
            "-p",
            "tiny",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "bad_\\xff.mp4" in r.stdout and "Traceback" not in r.stderr
    record = json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))
    assert os.fsencode(record["video"]["path"]).endswith(b"bad_\xff.mp4")  # the very file
    assert (tmp_path / "p.au.png").read_bytes()[:4] == b"\x89PNG"


def test_extract_any_name_then_rerun_redoes_nothing(folder, tmp_path, tiny_config):
    from emotion_llama.encoders.store import open_store
    from emotion_llama.perception.extract import extract_folder

    root, stems = folder
    out = tmp_path / "features"
    s = extract_folder(root, out, tiny_config, workers=1, progress=False)
    store = open_store(out)
    names = set(store.manifest["clips"])
    failed = _accounted(s.failed, names, root, stems)
    assert s.total == len(stems) + 2 and s.written == len(stems) - 1
    # the name at the limit fails alone, for its clue file's name; the others are found again
    assert "File name too long" in failed[LONG + b".mp4"]
    for name in names:
        assert store.is_done(name) and store.read(name).audio.shape == (tiny_config.features.audio_dim,)
        assert os.path.exists(os.fsdecode(store.manifest["clips"][name]["source"]))
    again = extract_folder(root, out, tiny_config, workers=1, progress=False)
    assert again.already_done == len(names) and again.written == 0
    assert {p for p, _ in again.failed} == {p for p, _ in s.failed}


def test_annotate_any_name_exports_every_clip(folder, tmp_path, tiny_config):
    from emotion_llama.annotate.export import validate_record
    from emotion_llama.annotate.pipeline import AnnotateOptions, annotate_folder

    root, stems = folder
    out = tmp_path / "dataset"
    options = AnnotateOptions(workers=1, max_new_tokens=24, progress=False)
    s = annotate_folder(root, out, tiny_config, options)
    records = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in (out / "records").glob("*.json")}
    by_file = {os.fsencode(Path(r["source"]).name)[: -len(b".mp4")]: r for r in records.values()}
    failed = _accounted(s.failed, {os.fsdecode(k) for k in by_file}, root, stems)
    assert set(by_file) == set(stems) and len(failed) == 2  # every clip has its record, the long one too
    for stem, rec in by_file.items():
        validate_record(rec)
        assert rec["name"] == record_id(os.fsdecode(stem))
    labels = (out / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert sorted(line.split()[0] for line in labels) == sorted(
        r["name"] for r in records.values() if r["label"]
    )
    coarse = json.loads((out / "merr_coarse.json").read_text(encoding="utf-8"))
    assert set(coarse) == {r["name"] for r in records.values() if r["caption"]}
    assert "-lead" in coarse and "with space" not in coarse  # plain names stay, others get a safe id

    again = annotate_folder(root, out, tiny_config, options)
    assert (again.perceived_now, again.reasoned_now) == (0, 0) and len(again.failed) == 2

    # a record that no longer validates fails alone: the others are still exported
    spoiled = out / "records" / f"{record_id('-lead')}.json"
    rec = json.loads(spoiled.read_text(encoding="utf-8"))
    spoiled.write_text(json.dumps({**rec, "label_source": "guess"}), encoding="utf-8")
    third = annotate_folder(root, out, tiny_config, options)
    reasons = {os.fsencode(Path(p).name): why for p, why in third.failed}
    assert "label_source" in reasons[b"-lead.mp4"] and len(reasons) == 3
    coarse = json.loads((out / "merr_coarse.json").read_text(encoding="utf-8"))
    assert "-lead" not in coarse and len(coarse) == len(records) - 1
