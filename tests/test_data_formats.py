"""Training readers for every format (folder, MER2023/MER2024 label lists, pseudo-labels, DFEW
folds, JSONL) and the one entry point recipes use: samples, selection, errors, skipping, and a
batch the tiny model takes."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from emotion_llama.config import EmotionLlamaConfig, tiny_config
from emotion_llama.data.formats.dfew import DFEW_INSTRUCTION
from emotion_llama.data.formats.folder import read_training_folder
from emotion_llama.data.formats.jsonl import read_jsonl
from emotion_llama.data.formats.lists import DFEW_LABELS, find_dfew_split, read_dfew_split
from emotion_llama.data.formats.pseudo import read_pseudo_labels
from emotion_llama.data.samples import DataError, TrainDataError
from emotion_llama.data.synth import make_synthetic_dataset
from emotion_llama.encoders.store import ClipFeatures, open_store
from emotion_llama.evaluate.runner import BENCHMARKS
from emotion_llama.prompts import EMOTION_INSTRUCTION
from emotion_llama.train.data import TrainDataset
from emotion_llama.train.formats import FORMATS, DataSpec, open_training_data, open_training_mix

N = 8


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cfg() -> EmotionLlamaConfig:
    return tiny_config()


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory, cfg: EmotionLlamaConfig) -> tuple[Path, list[dict]]:
    """A project-format folder with a native feature store: labels.txt, subtitles.csv, ...."""
    out = tmp_path_factory.mktemp("synth")
    return out, make_synthetic_dataset(out, n=N, config=cfg, seed=1)


@pytest.fixture(scope="module")
def model(cfg: EmotionLlamaConfig) -> Any:
    from emotion_llama.model.builder import build_model

    torch.manual_seed(0)
    m = build_model(cfg)
    m.eval()
    return m


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _store(root: Path, cfg: EmotionLlamaConfig, names: list[str], layout: str = "native") -> None:
    """Tiny features and a frame per clip through the store writer API."""
    f = cfg.features
    store = open_store(root, {"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim}, layout)
    rng = np.random.default_rng(0)
    size = cfg.vision.image_size
    for name in names:
        feats = ClipFeatures(
            local=rng.standard_normal(f.local_dim).astype(np.float32),
            temporal=rng.standard_normal(f.temporal_dim).astype(np.float32),
            audio=rng.standard_normal(f.audio_dim).astype(np.float32),
        )
        store.write(name, feats, frame=rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def _forward(dataset: TrainDataset, model: Any) -> float:
    """One collated batch of two items through the tiny model: a finite loss."""
    items = [dataset[i] for i in range(min(2, len(dataset)))]
    assert all("name" in it and it["name"] == dataset.names()[i] for i, it in enumerate(items))
    batch = dataset.collate(items)
    assert "name" not in batch and "task" not in batch
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)
    return float(loss)


# -- the entry point ---------------------------------------------------------------------------------
def test_unknown_format_and_bad_options_are_clear(synth: tuple[Path, list[dict]], processor: Any) -> None:
    out, _ = synth
    with pytest.raises(TrainDataError, match=r"unknown data format 'csv'.*folder, jsonl, mer2023, mer2024"):
        open_training_data("csv", out, processor)
    assert FORMATS == ("folder", "jsonl", "mer2023", "mer2024", "pseudo", "dfew", "manifest")
    with pytest.raises(TrainDataError, match="only emotion targets"):
        open_training_data("mer2023", out, processor, tasks=["reason"])
    with pytest.raises(TrainDataError, match="'fold' is for the dfew"):
        open_training_data("mer2023", out, processor, fold=1)
    with pytest.raises(TrainDataError, match="'min_confidence' is for the pseudo"):
        open_training_data("folder", out, processor, min_confidence=0.5)
    with pytest.raises(TrainDataError, match="needs 'fold'"):
        open_training_data("dfew", out, processor)
    with pytest.raises(TrainDataError, match=r"unknown data option.*colour"):
        DataSpec.from_mapping({"format": "folder", "path": out, "colour": "red"})
    with pytest.raises(TrainDataError, match="no such file or folder"):
        open_training_data("mer2024", out / "nowhere", processor)


def test_folder_format_matches_the_folder_reader(
    synth: tuple[Path, list[dict]], cfg: EmotionLlamaConfig, processor: Any, model: Any
) -> None:
    out, _ = synth
    ds = open_training_data("folder", out, processor, split="train", tasks=["emotion", "reason"], seed=5)
    direct = read_training_folder(out, cfg, split="train")
    assert ds.names() == sorted({s.name for s in direct})
    assert ds.summary["tasks"] == {"emotion": len(ds), "reason": len(ds)}
    assert ds.summary["skipped"] == 0 and ds.seed == 5
    _forward(ds, model)


# -- MER2023 / MER2024 -------------------------------------------------------------------------------
def test_mer2023_label_list_with_subtitles(
    synth: tuple[Path, list[dict]], processor: Any, model: Any
) -> None:
    out, clips = synth
    ds = open_training_data("mer2023", out, processor)
    by_name = {c["name"]: c for c in clips}
    assert ds.names() == sorted(by_name)
    for clip in ds.clips:
        (s,) = clip
        assert s.task == "emotion" and s.target == by_name[s.name]["label"]
        assert s.subtitle == by_name[s.name]["subtitle"] and s.instruction is None
    # The label list file itself also works, and split.json beside it restricts the clips.
    train = json.loads((out / "split.json").read_text())["train"]
    ds2 = open_training_data("mer2023", out / "labels.txt", processor, split="train")
    assert ds2.names() == sorted(train)
    item = ds[0]
    assert item["task"] == "emotion" and item["name"] == ds.names()[0]
    assert EMOTION_INSTRUCTION in item["encoded"].text
    _forward(ds, model)


def test_mer2024_csv_labels_normalised_and_transcription(
    synth: tuple[Path, list[dict]], tmp_path: Path, processor: Any, model: Any
) -> None:
    out, clips = synth
    names = [c["name"] for c in clips]
    folder = tmp_path / "mer2024"
    labels = ["Happy", "SAD.", "neutral", "worried!", "angry", "surprise", "", "happy"]
    _write_csv(
        folder / "label-disdim.csv",
        ["name", "discrete", "valence"],
        [[n, lab, -10] for n, lab in zip(names, labels, strict=True)],
    )
    _write_csv(
        folder / "label-transcription.csv",
        ["name", "chinese", "english"],
        [[n, "你好", f"words of {n}"] for n in names],
    )
    ds = open_training_data("mer2024", folder, processor, features=out)
    got = {c[0].name: (c[0].target, c[0].subtitle) for c in ds.clips}
    want_labels = ["happy", "sad", "neutral", "worried", "angry", "surprise", None, "happy"]
    assert got == {n: (lab, f"words of {n}") for n, lab in zip(names, want_labels, strict=True) if lab}
    assert ds.summary["sources"][0]["unlabelled"] == 1
    _forward(ds, model)


def test_mer_authors_layout_features(tmp_path: Path, cfg: EmotionLlamaConfig, processor: Any) -> None:
    clips = make_synthetic_dataset(tmp_path / "auth", n=4, config=cfg, layout="authors")
    ds = open_training_data("mer2023", tmp_path / "auth", processor)
    assert ds.names() == sorted(c["name"] for c in clips)
    assert all(c[0].frame.parent.name == "first_frames" for c in ds.clips)  # type: ignore[union-attr]


# -- missing features --------------------------------------------------------------------------------
def test_missing_feature_reported_once_and_skipped(
    tmp_path: Path, cfg: EmotionLlamaConfig, processor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "data"
    clips = make_synthetic_dataset(root, n=6, config=cfg, seed=2)
    victim = clips[0]["name"]
    (root / "clips" / f"{victim}.npz").unlink()
    # Listed twice (emotion and reason lines) in JSONL: still one report.
    lines = [{"name": c["name"], "label": c["label"]} for c in clips]
    lines += [{"name": victim, "reasoning": "a reason", "task": "reason"}]
    (root / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for fmt, path in (("mer2023", root), ("jsonl", root / "train.jsonl"), ("folder", root)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="emotion_llama.train"):
            ds = open_training_data(fmt, path, processor)
        assert victim not in ds.names() and len(ds) == 5, fmt
        assert ds.summary["skipped"] == 1 and len(ds.skipped) == 1, fmt
        assert victim in ds.skipped[0] and str(root / "clips") in ds.skipped[0], fmt
        logged = [r.getMessage() for r in caplog.records if victim in r.getMessage()]
        assert len(logged) == 1 and str(root / "clips") in logged[0], fmt
        # Nothing zero-filled: every clip kept has its stored, non-zero vectors.
        assert all(float(np.abs(c[0].features.local).sum()) > 0 for c in ds.clips)
    # Every clip missing: a clear error naming what was skipped, not an empty dataset.
    with pytest.raises(TrainDataError, match="no such feature folder"):
        open_training_data("mer2023", root, processor, features=tmp_path / "no_store")
    (tmp_path / "empty_store").mkdir()
    with pytest.raises(TrainDataError, match=r"no training samples.*6 skipped"):
        open_training_data("mer2023", root, processor, features=tmp_path / "empty_store")


# -- pseudo-labels -----------------------------------------------------------------------------------
def test_pseudo_labels_confidence_filter(
    synth: tuple[Path, list[dict]], tmp_path: Path, cfg: EmotionLlamaConfig, processor: Any, model: Any
) -> None:
    out, clips = synth
    names = [c["name"] for c in clips]
    confs = [0.95, 0.2, 0.8, 0.5, 0.99, 0.7, 0.79, 0.81]
    path = _write_csv(
        tmp_path / "pseudo.csv",
        ["name", "pseudo_label", "confidence"],
        [[n, "Worried" if i % 2 else "happy", c] for i, (n, c) in enumerate(zip(names, confs, strict=True))],
    )
    ds = open_training_data("pseudo", path, processor, features=out, subtitles=out / "subtitles.csv")
    assert len(ds) == N and ds.summary["filtered"] == 0
    ds = open_training_data(
        "pseudo", path, processor, features=out, subtitles=out / "subtitles.csv", min_confidence=0.8
    )
    kept = {n for n, c in zip(names, confs, strict=True) if c >= 0.8}
    assert set(ds.names()) == kept and ds.summary["filtered"] == N - len(kept)
    subs = {c["name"]: c["subtitle"] for c in clips}
    for clip in ds.clips:
        (s,) = clip
        i = names.index(s.name)
        assert s.task == "emotion" and s.target == ("worried" if i % 2 else "happy")
        assert s.subtitle == subs[s.name]
    _forward(ds, model)


def test_pseudo_label_text_json_and_errors(
    synth: tuple[Path, list[dict]], tmp_path: Path, cfg: EmotionLlamaConfig
) -> None:
    out, clips = synth
    names = [c["name"] for c in clips]
    text = tmp_path / "pseudo.txt"
    text.write_text(
        f"# model X\n{names[0]} happy 0.9\n{names[1]} sad 0.3\n\n{names[2]} 12 angry -0.5\n{names[3]} doubt\n"
    )
    got = read_pseudo_labels(text, cfg, features=out, min_confidence=0.5)
    assert [(s.name, s.target) for s in got] == [
        (names[0], "happy"),
        (names[2], "angry"),
        (names[3], "doubt"),
    ]
    js = tmp_path / "pseudo.json"
    js.write_text(json.dumps({names[0]: "Fear", names[1]: {"pseu_emotion": "sad", "score": 0.1}}))
    got = read_pseudo_labels(js, cfg, features=out, min_confidence=0.5)
    assert [(s.name, s.target) for s in got] == [(names[0], "fear")]
    # No confidence column: min_confidence cannot apply; kept whole, with a note.
    plain = _write_csv(tmp_path / "plain.csv", ["video", "label"], [[n, "happy"] for n in names[:3]])
    assert len(read_pseudo_labels(plain, cfg, features=out, min_confidence=0.9)) == 3
    bad = _write_csv(
        tmp_path / "bad.csv",
        ["name", "label", "conf"],
        [[names[0], "happy", "0.9"], [names[1], "sad", "high"]],
    )
    with pytest.raises(TrainDataError, match=r"bad\.csv:3: confidence 'high'"):
        read_pseudo_labels(bad, cfg, features=out)
    twice = tmp_path / "twice.txt"
    twice.write_text(f"{names[0]} happy\n{names[0]} sad\n")
    with pytest.raises(TrainDataError, match=r"twice\.txt:2: clip .* again"):
        read_pseudo_labels(twice, cfg, features=out)
    nocol = _write_csv(tmp_path / "nocol.csv", ["clipname", "label"], [["a", "happy"]])
    with pytest.raises(TrainDataError, match="needs a clip column"):
        read_pseudo_labels(nocol, cfg, features=out)


# -- DFEW ----------------------------------------------------------------------------------------------
def _dfew(root: Path, cfg: EmotionLlamaConfig) -> dict[int, dict[str, list[tuple[int, int]]]]:
    """DFEW's own layout: 10 clips, two folds; fold k tests clips k-1, k+1, ... (every other)."""
    folds: dict[int, dict[str, list[tuple[int, int]]]] = {}
    clips = [(i, (i - 1) % 7 + 1) for i in range(1, 11)]  # (video number, label number)
    for k in (1, 2):
        test = [c for c in clips if c[0] % 2 == k % 2]
        train = [c for c in clips if c not in test]
        folds[k] = {"train": train, "test": test}
        for split, rows in folds[k].items():
            _write_csv(
                root / "EmoLabel_DataSplit" / f"{split}(single-labeled)" / f"set_{k}.csv",
                ["video_name", "label"],
                [list(r) for r in rows],
            )
    _store(root / "features", cfg, [f"{i:05d}" for i, _ in clips])
    return folds


def test_dfew_folds_splits_and_numeric_labels(
    tmp_path: Path, cfg: EmotionLlamaConfig, processor: Any, model: Any
) -> None:
    root = tmp_path / "DFEW"
    folds = _dfew(root, cfg)
    assert find_dfew_split(root, 2, "test").parts[-2:] == ("test(single-labeled)", "set_2.csv")
    assert [c.name for c in read_dfew_split(find_dfew_split(root, 1, "train"))][:2] == ["00002", "00004"]
    for k in (1, 2):
        for split in ("train", "test"):
            ds = open_training_data("dfew", root, processor, fold=k, split=split, features=root / "features")
            want = {f"{i:05d}": DFEW_LABELS[lab - 1] for i, lab in folds[k][split]}
            assert {c[0].name: c[0].target for c in ds.clips} == want, (k, split)
            assert all(c[0].subtitle == "" and c[0].instruction == DFEW_INSTRUCTION for c in ds.clips)
    # Default split is train; the labels 1..7 = happy, sad, neutral, angry, surprise, disgust, fear.
    ds = open_training_data("dfew", root, processor, fold=1, features=root / "features")
    assert {c[0].target for c in ds.clips} == {"sad", "angry", "disgust", "happy", "neutral"}
    assert ds.clips[0][0].name == "00002" and ds.clips[0][0].target == "sad"
    # The prompt is the evaluation's DFEW question, which offers "disgust".
    assert BENCHMARKS["dfew"].instruction == DFEW_INSTRUCTION
    assert DFEW_INSTRUCTION in ds[0]["encoded"].text
    _forward(ds, model)
    with pytest.raises(TrainDataError, match="no DFEW split file for fold 3"):
        open_training_data("dfew", root, processor, fold=3, features=root / "features")
    with pytest.raises(TrainDataError, match=r"fold must be 1..5"):
        open_training_data("dfew", root, processor, fold=6)
    with pytest.raises(TrainDataError, match="'train' or 'test'"):
        open_training_data("dfew", root, processor, fold=1, split="val")
    bad = _write_csv(
        tmp_path / "bad" / "test(single-labeled)" / "set_1.csv", ["video_name", "label"], [[1, 9]]
    )
    with pytest.raises(DataError, match=r"set_1\.csv:2: label number 9 outside 1..7"):
        read_dfew_split(bad)


def test_dfew_evaluation_fold_layout(tmp_path: Path, cfg: EmotionLlamaConfig, processor: Any) -> None:
    root = tmp_path / "dfew_eval"
    for k in (1, 2, 3):
        names = [f"f{k}_{j}" for j in range(2)]
        (root / f"fold{k}").mkdir(parents=True)
        (root / f"fold{k}" / "labels.txt").write_text(f"{names[0]} 16 {k} 0\n{names[1]} 16 fear 0\n")
        _store(root / f"fold{k}", cfg, names, layout="authors")
    test = open_training_data("dfew", root, processor, fold=2, split="test")
    assert {c[0].name: c[0].target for c in test.clips} == {"f2_0": "sad", "f2_1": "fear"}
    train = open_training_data("dfew", root, processor, fold=2, split="train")
    assert train.names() == ["f1_0", "f1_1", "f3_0", "f3_1"]
    assert [c[0].target for c in train.clips] == ["happy", "fear", "neutral", "fear"]
    with pytest.raises(TrainDataError, match="no fold5/"):
        open_training_data("dfew", root, processor, fold=5)


# -- JSONL ---------------------------------------------------------------------------------------------
def test_jsonl_samples_tasks_and_frames(
    synth: tuple[Path, list[dict]], tmp_path: Path, cfg: EmotionLlamaConfig, processor: Any, model: Any
) -> None:
    out, clips = synth
    names = [c["name"] for c in clips]
    frame = out / "frames" / f"{names[3]}.jpg"
    lines = [
        {"name": names[0], "label": "Pleasantly Surprised!", "subtitle": "oh hello"},
        {
            "video": f"videos/{names[1]}.mp4",
            "label": "sad",
            "reasoning": "Tears (visible).",
            "task": "reason_v2",
        },
        {"name": names[2], "reasoning": "She smiles.", "extra": "ignored"},
        {"name": names[3], "label": "angry", "task": "emotion", "frame": str(frame)},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    got = read_jsonl(path, cfg, features=out)
    assert [(s.name, s.task, s.target, s.subtitle) for s in got] == [
        (names[0], "emotion", "pleasantly surprised", "oh hello"),
        (names[1], "emotion", "sad", ""),
        (names[1], "reason_v2", "Tears (visible).", ""),
        (names[2], "reason", "She smiles.", ""),
        (names[3], "emotion", "angry", ""),
    ]
    assert got[-1].frame == frame
    ds = open_training_data("jsonl", path, processor, features=out)
    assert ds.summary["tasks"] == {"emotion": 3, "reason": 1, "reason_v2": 1}
    only = open_training_data("jsonl", path, processor, features=out, tasks=["reason", "reason_v2"])
    assert only.names() == sorted(names[1:3])
    # The reasoning target is normalised when encoded, as every target (SPEC 2.3).
    enc = ds.item(ds.names().index(names[1]), task="reason_v2")["encoded"]
    assert enc.text.endswith("tears visible</s>")
    _forward(ds, model)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"label": "happy"}', "needs 'name' or 'video'"),
        ('{"name": "a"}', "no target"),
        ('{"name": "a", "label": 3}', "'label' must be a string"),
        ('{"name": "a", "label": "happy", "task": "classify"}', "unknown task 'classify'"),
        ('{"name": "a", "task": "reason", "label": "happy"}', "task 'reason' needs a 'reasoning'"),
        ('{"name": "a", "task": "emotion", "reasoning": "x"}', "task 'emotion' needs a 'label'"),
        ('{"name": "a/b", "label": "happy"}', "cannot be a clip name"),
        ('{"name": "a", "label": "..."}', "empty once normalised"),
    ],
)
def test_jsonl_bad_line_names_file_and_line(
    synth: tuple[Path, list[dict]], tmp_path: Path, cfg: EmotionLlamaConfig, line: str, message: str
) -> None:
    out, clips = synth
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"name": clips[0]["name"], "label": "happy"})
    path.write_text(f"{good}\n\n{line}\n{good}\n")
    with pytest.raises(TrainDataError, match=rf"bad\.jsonl:3: .*{message}"):
        read_jsonl(path, cfg, features=out)


# -- mixing ------------------------------------------------------------------------------------------
def test_mix_concatenates_sources(
    synth: tuple[Path, list[dict]], tmp_path: Path, cfg: EmotionLlamaConfig, processor: Any, model: Any
) -> None:
    out, clips = synth
    names = [c["name"] for c in clips]
    # Stage 1 with pseudo-labels: MERR coarse (emotion + reason) plus extra emotion-only clips.
    extra = tmp_path / "extra"
    _store(extra, cfg, ["unlabelled_1", "unlabelled_2"])
    pseudo = _write_csv(
        extra / "pseudo.csv",
        ["name", "label", "confidence"],
        [["unlabelled_1", "doubt", 0.9], ["unlabelled_2", "sad", 0.1]],
    )
    ds = open_training_mix(
        [
            {"format": "folder", "path": str(out), "tasks": ["emotion", "reason"]},
            DataSpec("pseudo", pseudo, min_confidence=0.5),
        ],
        processor,
        seed=3,
    )
    assert ds.names() == sorted([*names, "unlabelled_1"])
    assert ds.summary["tasks"] == {"emotion": N + 1, "reason": N}
    assert ds.summary["filtered"] == 1 and [s["source"].split()[0] for s in ds.summary["sources"]] == [
        "folder",
        "pseudo",
    ]
    _forward(ds, model)
    # The same name for a different clip (another frame) is refused.
    _store(tmp_path / "clash", cfg, [names[0]])
    clash = _write_csv(tmp_path / "clash" / "p.csv", ["name", "label"], [[names[0], "happy"]])
    with pytest.raises(TrainDataError, match=f"clip name '{names[0]}' means two clips"):
        open_training_mix([DataSpec("mer2023", out), {"fmt": "pseudo", "path": clash}], processor)
    with pytest.raises(TrainDataError, match="no data sources"):
        open_training_mix([], processor)
