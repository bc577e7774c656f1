"""``--shard i/N`` and ``merge``: the shard rule, and shards 0/2 + 1/2 merged equal to one
unsharded run, byte for byte (feature stores from the real store writer: fast; extract, annotate
and evaluate on real clips: slow)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from emotion_llama.cli import app
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.shards import Shard, mark_done, parse_shard, shard_index
from helpers import tree_bytes

runner = CliRunner()


# -- the rule -----------------------------------------------------------------------------------------
def test_each_clip_is_in_exactly_one_shard_by_a_stable_hash_of_its_name():
    names = [f"clip_{i:04d}" for i in range(600)] + ["with space", "caf\u00e9", "bad\udcff"]
    for n in (1, 2, 3, 7):
        shards = [Shard(i, n) for i in range(n)]
        for name in names:
            assert sum(s.has(name) for s in shards) == 1
        sizes = [len(s.select(names, str)) for s in shards]
        assert sum(sizes) == len(names) and min(sizes) > len(names) / n * 0.8  # roughly even
    # the rule itself, spelled out: a script or another tool can compute it
    digest = hashlib.sha256(b"clip_0007").digest()
    assert shard_index("clip_0007", 5) == int.from_bytes(digest[:8], "big") % 5
    # undecodable bytes hash as the bytes on disk
    assert shard_index("bad\udcff", 7) == int.from_bytes(hashlib.sha256(b"bad\xff").digest()[:8], "big") % 7
    # adding clips moves no other clip: the shard is a function of the name, not of the list
    before = {name: shard_index(name, 4) for name in names[:100]}
    after = Shard(1, 4).select([*names, "new_a", "new_b"], str)
    assert [x for x in after if x in before] == [x for x in names[:100] if before[x] == 1]


@pytest.mark.parametrize("text", ["2/2", "-1/2", "0/0", "a/b", "1", "1/2/3"])
def test_a_bad_shard_is_refused_in_one_line(text):
    with pytest.raises(EmotionLlamaError, match="--shard"):
        parse_shard(text)


def test_shard_text_forms():
    assert parse_shard(" 3 / 8 ") == Shard(3, 8) and parse_shard(None) is None
    assert Shard(3, 8).folder(Path("out")) == Path("out/shards/3-of-8") and str(Shard(3, 8)) == "3/8"


# -- feature stores (the real writer, synthetic vectors) ------------------------------------------------
DIMS = {"local": 8, "temporal": 8, "audio": 8}


def _write_clips(store, names: list[str]) -> None:
    from emotion_llama.encoders.store import ClipFeatures

    for name in names:
        rng = np.random.default_rng(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
        feats = ClipFeatures(*(rng.standard_normal(8).astype(np.float32) for _ in range(3)))
        frame = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        store.write(name, feats, frame=frame, clues={"name": name}, source=f"/videos/{name}.mp4")


def _store(root: Path, layout: str):
    from emotion_llama.encoders.store import open_store

    store = open_store(root, DIMS, layout)
    store.set_info(layout=layout, frame="first", dims=DIMS)
    return store


@pytest.mark.parametrize("layout", ["native", "authors"])
def test_merged_shards_equal_one_unsharded_store(tmp_path, layout):
    names = [f"clip_{i}" for i in range(12)]
    _write_clips(_store(tmp_path / "one", layout), names)
    out = tmp_path / "sharded"
    for i in range(3):
        shard = Shard(i, 3)
        mine = shard.select(names, str)
        assert mine  # each shard has clips
        _write_clips(_store(shard.folder(out), layout), mine)
        mark_done(shard.folder(out), shard, "features", layout=layout, total=len(mine), failed=[])
    r = runner.invoke(app, ["merge", str(out)])
    assert r.exit_code == 0, r.output
    assert "12 clips merged now" in r.output
    assert tree_bytes(out, skip=("shards/",)) == tree_bytes(tmp_path / "one")
    # a second merge copies nothing and changes nothing
    merged = [p for p in out.rglob("*") if p.is_file() and p.relative_to(out).parts[0] != "shards"]
    before = {p: p.stat().st_mtime_ns for p in merged}
    r = runner.invoke(app, ["merge", str(out)])
    assert r.exit_code == 0 and "0 clips merged now, 12 in" in " ".join(r.output.split())
    assert tree_bytes(out, skip=("shards/",)) == tree_bytes(tmp_path / "one")
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p.name != "manifest.json")


def test_merge_refuses_until_every_shard_has_finished(tmp_path):
    out = tmp_path / "out"
    _write_clips(_store(Shard(0, 3).folder(out), "native"), ["a"])
    mark_done(Shard(0, 3).folder(out), Shard(0, 3), "features", layout="native", total=1, failed=[])
    _store(Shard(2, 3).folder(out), "native")  # started, not finished
    r = runner.invoke(app, ["merge", str(out)])
    assert r.exit_code == 2
    text = " ".join(r.output.split())
    assert "shard(s) 1 of 3 never ran" in text and "shard(s) 2 of 3 have not finished" in text
    assert not (out / "manifest.json").exists()  # nothing merged
    r = runner.invoke(app, ["merge", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "--shard i/N first" in " ".join(r.output.split())


def test_a_failed_clip_of_a_shard_is_in_the_merge_failure_table(tmp_path):
    out = tmp_path / "out"
    for i in range(2):
        shard = Shard(i, 2)
        _write_clips(_store(shard.folder(out), "native"), shard.select(["a", "b", "c"], str))
        failed = [["/videos/bad.mp4", "not a readable media file"]] if i == 1 else []
        mark_done(shard.folder(out), shard, "features", layout="native", total=2, failed=failed)
    r = runner.invoke(app, ["merge", str(out)])
    assert r.exit_code == 1 and "bad.mp4" in r.output and "1 failed" in r.output


# -- real clips: extract, annotate, evaluate ------------------------------------------------------------
@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    from emotion_llama.media.samples import make_speaking_clip, real_media_dir

    root = tmp_path_factory.mktemp("shard_clips")
    sentences = ["This is the best day of my life.", "Please leave me alone.", "What a wonderful surprise."]
    try:
        face = real_media_dir() / "WolfgangLanger_Pexels.mp4"
        for i, text in enumerate(sentences):
            make_speaking_clip(face, text, root / f"clip_{i}.mp4", start=2.0 * i, seconds=1.5)
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))
    (root / "broken.mp4").write_text("this is not a video\n")
    # clip_0, clip_1 and broken are shard 0 of 2; clip_2 is shard 1
    assert [shard_index(v.stem, 2) for v in sorted(root.iterdir())] == [0, 0, 0, 1]
    return root


@pytest.mark.slow
def test_sharded_extract_and_evaluate_merge_into_the_unsharded_run(videos, tmp_path, tiny_config):
    from emotion_llama.evaluate.runner import (
        get_benchmark,
        model_predict_fn,
        read_predictions,
        run_predictions,
    )
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import save_pretrained
    from emotion_llama.perception.extract import extract_folder

    one = tmp_path / "one"
    s = extract_folder(videos, one, tiny_config, layout="authors", workers=1, progress=False)
    assert s.written == 3 and len(s.failed) == 1
    out = tmp_path / "sharded"
    for i in range(2):
        s = extract_folder(
            videos, out, tiny_config, layout="authors", workers=1, progress=False, shard=Shard(i, 2)
        )
        assert (s.written, len(s.failed)) == ((2, 1) if i == 0 else (1, 0))
        assert not (out / "manifest.json").exists()  # each shard writes its own folder
    r = runner.invoke(app, ["merge", str(out)])
    assert r.exit_code == 1 and "broken.mp4" in r.output  # the shard's failure is reported
    assert tree_bytes(out, skip=("shards/",)) == tree_bytes(one)

    # evaluate over the merged folder: predictions of shard 0/2 + 1/2, merged, are the unsharded ones
    for folder in (one, out):
        (folder / "labels.txt").write_text("clip_0 60 happy\nclip_1 60 sad\nclip_2 60 surprise\n")
    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt")
    bench = get_benchmark("mer2023")
    predict = model_predict_fn(ckpt, bench, max_new_tokens=3)
    run_predictions(bench, one, tmp_path / "eval_one", predict, progress=False)
    for i in range(2):
        run_predictions(bench, out, tmp_path / "eval", predict, progress=False, shard=Shard(i, 2))
    r = runner.invoke(app, ["merge", str(tmp_path / "eval")])
    assert r.exit_code == 0, r.output
    assert "3 predictions merged now" in r.output and "emotion-llama score" in r.output

    def by_name(path: Path) -> dict[str, dict]:
        return {x.pop("name"): (x.pop("_line"), x)[1] for x in read_predictions(path)}

    merged = by_name(tmp_path / "eval" / "predictions.jsonl")
    assert merged == by_name(tmp_path / "eval_one" / "predictions.jsonl") and len(merged) == 3


@pytest.mark.slow
def test_sharded_annotate_merges_into_the_unsharded_dataset(videos, tmp_path, tiny_config):
    """Every file but the LLM answer cache is the unsharded run's, byte for byte: records, clue
    files, thumbnails, AU plots, exports and the report (stage 3 reruns over all the records)."""
    from emotion_llama.annotate.pipeline import AnnotateOptions, annotate_folder
    from emotion_llama.backends.llm import make_llm

    llm = make_llm("offline", cache=tmp_path / "answers.sqlite")  # one LLM for the three runs
    options = AnnotateOptions(workers=1, progress=False, max_new_tokens=24, with_features=True)
    one = annotate_folder(videos, tmp_path / "one", tiny_config, options, llm=llm)
    assert one.kept == 3 and len(one.failed) == 1
    out = tmp_path / "sharded"
    for i in range(2):
        sharded = replace(options, shard=Shard(i, 2))
        part = annotate_folder(videos, out, tiny_config, sharded, llm=llm)
        assert part.perceived_now == (2 if i == 0 else 1)
    r = runner.invoke(app, ["merge", str(out)])
    assert r.exit_code == 1 and "broken.mp4" in r.output, r.output
    assert "3 records kept" in r.output
    skip = ("shards/", "llm_cache.sqlite")
    got, want = tree_bytes(out, skip=skip), tree_bytes(tmp_path / "one", skip=skip)
    assert sorted(got) == sorted(want)
    assert {"records/clip_2.json", "merr_fine.json", "HL-UTT/clip_2.npy", "report.html"} <= set(want)
    assert got == want
    assert json.loads((out / "merr_coarse.json").read_text()).keys() == {"clip_0", "clip_1", "clip_2"}


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--shard", "2/2"], "--shard 2/2"),
        (["--shard", "half"], "give i/N"),
        (["--address", "127.0.0.1:6379"], "--address is for --engine ray"),
        (["--engine", "spark"], "--engine must be one of local, ray"),
    ],
)
def test_bad_engine_and_shard_options_fail_before_any_work(tmp_path, extra, says):
    (tmp_path / "videos").mkdir()
    for command in ("extract", "annotate"):
        out = tmp_path / f"out_{command}"
        r = runner.invoke(app, [command, str(tmp_path / "videos"), "--out", str(out), *extra])
        assert r.exit_code == 2 and says in " ".join(r.output.split()), r.output
        assert not out.exists()  # refused before the output folder was made
