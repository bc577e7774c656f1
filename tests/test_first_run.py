"""Train -> evaluate for a first-timer: run folders and their pointers are checkpoints everywhere,
``evaluate --split``, the warning when evaluated clips are training clips, and the warning when
a run ends at chance."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from emotion_llama.cli import app
from emotion_llama.errors import CheckpointError
from emotion_llama.model.checkpoint import (
    TRAIN_CLIPS_FILE,
    load_pretrained,
    resolve_checkpoint,
    save_pretrained,
)

runner = CliRunner()


def _flat(text: str) -> str:
    """Rich wraps long lines at 80 columns: compare on single spaces."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    """A 12-clip synthetic folder (labels, features, frames, split.json: 8 train, 2 val, 2 test)
    that reads as a mer2023 benchmark, and its splits."""
    from emotion_llama.config import tiny_config
    from emotion_llama.data.synth import make_synthetic_dataset

    data = tmp_path_factory.mktemp("first_run") / "synth"
    make_synthetic_dataset(data, n=12, config=tiny_config(), seed=0)
    return data, json.loads((data / "split.json").read_text())


def _pointer(run: Path, which: str, folder: str, **facts: Any) -> None:
    (run / which).write_text(json.dumps({"dir": folder, **facts}))


@pytest.fixture()
def run(tmp_path: Path, tiny_model: Any, bench: tuple[Path, dict[str, list[str]]]) -> Path:
    """A run folder as ``train`` leaves it: two epoch checkpoints, ``best`` on the first, ``last``
    on the second, and the names of the training split in ``train_clips.txt``."""
    out = tmp_path / "run"
    for k in (0, 1):
        save_pretrained(tiny_model, out / f"epoch_{k}")
    _pointer(out, "best", "epoch_0", epoch=0, val_loss=1.5)
    _pointer(out, "last", "epoch_1", epoch=1, step=8)
    (out / TRAIN_CLIPS_FILE).write_text("".join(f"{n}\n" for n in sorted(bench[1]["train"])))
    return out


# -- the resolver ------------------------------------------------------------------------------------
def test_resolver_takes_run_folders_and_pointers(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert resolve_checkpoint(run / "epoch_1") == run / "epoch_1"  # a checkpoint folder: itself
    assert resolve_checkpoint(run / "epoch_1" / "config.json") == run / "epoch_1"
    assert capsys.readouterr().err == ""  # nothing to say
    assert resolve_checkpoint(run) == run / "epoch_0"  # best first
    assert "using its best checkpoint epoch_0 (epoch 0, validation loss 1.5000)" in capsys.readouterr().err
    assert resolve_checkpoint(run, prefer=("last", "best")) == run / "epoch_1"
    assert resolve_checkpoint(run / "last") == run / "epoch_1"
    assert "points at the checkpoint" in capsys.readouterr().err
    (run / "best").unlink()
    assert resolve_checkpoint(run) == run / "epoch_1"  # no best: last
    (run / "last").unlink()
    os.utime(run / "epoch_0" / "model.safetensors", (2e9, 2e9))  # written after epoch_1
    assert resolve_checkpoint(run) == run / "epoch_0"  # no pointer: the newest checkpoint
    assert "using its newest checkpoint epoch_0" in capsys.readouterr().err
    assert load_pretrained(run / "epoch_0").config.name == "tiny"


def test_wrong_paths_are_one_clear_error(tmp_path: Path, run: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope: not a checkpoint folder, a run folder or a pointer"):
        resolve_checkpoint(tmp_path / "nope")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match=r"junk: not a checkpoint folder .* it holds notes\.txt"):
        resolve_checkpoint(junk)
    with pytest.raises(CheckpointError, match=r"notes\.txt: a file, but not a checkpoint pointer"):
        resolve_checkpoint(junk / "notes.txt")
    _pointer(run, "best", "epoch_7")
    with pytest.raises(CheckpointError, match=r"best: points at .*epoch_7, which is not a checkpoint"):
        resolve_checkpoint(run / "best")
    from emotion_llama.serve.predictor import Predictor

    with pytest.raises(CheckpointError, match="nope: not a checkpoint folder"):
        Predictor(model_dir=tmp_path / "nope")
    # The command line: exit code 2 and one line naming the path, never a traceback.
    r = runner.invoke(app, ["export-merged", str(junk), "--out", str(tmp_path / "merged")])
    assert r.exit_code == 2 and "junk: not a checkpoint folder" in _flat(r.output)
    assert "Traceback" not in r.output


# -- evaluate: a run folder or a pointer, --split, the overlap warning -----------------------------
def _evaluate(model: Path, data: Path, out: Path, *extra: str) -> tuple[str, dict[str, Any], list[str]]:
    r = runner.invoke(
        app,
        ["evaluate", "-b", "mer2023", "--model", str(model), "--data", str(data), "--out", str(out),
         "--max-new-tokens", "2", "--batch-size", "4", *extra],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    names = [json.loads(line)["name"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    return _flat(r.output), json.loads((out / "metrics.json").read_text()), names


def test_evaluate_run_folder_split_and_overlap(
    tmp_path: Path, run: Path, bench: tuple[Path, dict[str, list[str]]], one_thread: None
) -> None:
    data, split = bench
    # The run folder, all clips: its training clips are among them, and it says so.
    output, metrics, names = _evaluate(run, data, tmp_path / "all")
    assert len(names) == metrics["n"] == 12
    assert "using its best checkpoint epoch_0" in output
    assert "warning: 8 of the 12 evaluated clips are training clips of this model" in output
    assert len(metrics["warnings"]) == 1 and "8 of the 12" in metrics["warnings"][0]
    assert "SPEC 6" in metrics["warnings"][0] and metrics["model"] == "emotion-llama:epoch_0"
    assert "**warning**: 8 of the 12" in (tmp_path / "all" / "report.md").read_text()

    # The pointer file and --split test: only the test clips, no overlap, no warning.
    output, metrics, names = _evaluate(run / "last", data, tmp_path / "test", "--split", "test")
    assert sorted(names) == sorted(split["test"]) and metrics["n"] == len(split["test"]) == 2
    assert "warning" not in output and "warnings" not in metrics

    # The same output folder with another split: the report scores that split's clips only.
    _, metrics, names = _evaluate(run / "last", data, tmp_path / "test", "--split", "val")
    assert metrics["n"] == 2 and set(names) == set(split["test"]) | set(split["val"])

    r = runner.invoke(
        app,
        ["evaluate", "-b", "mer2023", "--model", str(run), "--data", str(data), "--out", str(tmp_path / "x"),
         "--split", "tset"],
    )  # fmt: skip
    assert r.exit_code == 2 and "split.json: no split 'tset' (has train, val, test)" in _flat(r.output)


def test_overlap_without_a_record_uses_train_clips(
    tmp_path: Path, tiny_model: Any, bench: tuple[Path, dict[str, list[str]]], one_thread: None
) -> None:
    """A converted checkpoint records no training clips: on the MER2023 pool a note says the
    overlap is unchecked; --train-clips with a MERR JSON (SPEC 6) checks it."""
    data, split = bench
    ckpt = save_pretrained(tiny_model, tmp_path / "converted")
    output, metrics, _ = _evaluate(ckpt, data, tmp_path / "a", "--split", "test")
    assert "overlap with the benchmark is unchecked" in output and "warnings" not in metrics
    merr = tmp_path / "merr_coarse.json"
    merr.write_text(json.dumps({n: {"caption": "..."} for n in split["test"][:1]}))
    output, metrics, _ = _evaluate(ckpt, data, tmp_path / "b", "--split", "test", "--train-clips", str(merr))
    assert "warning: 1 of the 2 evaluated clips are training clips" in output
    assert "merr_coarse.json" in metrics["warnings"][0]


# -- train: the record of training clips, the warning at chance ----------------------------------------
def test_untrained_run_warns_at_chance_and_records_its_clips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    from emotion_llama.config import tiny_config
    from emotion_llama.data.formats.folder import read_training_folder
    from emotion_llama.data.synth import make_synthetic_dataset
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.processor import EmotionLlamaProcessor
    from emotion_llama.model.tokenizer import load_tokenizer
    from emotion_llama.train.config import TrainConfig
    from emotion_llama.train.data import TrainDataset
    from emotion_llama.train.loop import train
    from emotion_llama.train.schedule import Schedule

    cfg = tiny_config()
    data = tmp_path / "data"
    make_synthetic_dataset(data, n=24, config=cfg, seed=0)
    proc = EmotionLlamaProcessor(load_tokenizer(cfg), cfg)
    train_set = TrainDataset(read_training_folder(data, cfg, split="train"), proc, seed=0)
    val_set = TrainDataset(read_training_folder(data, cfg, split="val"), proc, seed=1)
    tc = TrainConfig(
        schedule=Schedule("constant", 1e-6, 1e-6, 1e-6, 0, 2), epochs=1, iters_per_epoch=2, batch_size=2,
        out_dir=tmp_path / "run", log_with="none", eval_metrics=True, eval_max_clips=8,
    )  # fmt: skip
    summary = train(build_model(cfg), proc, train_set, tc, val_dataset=val_set, also_trained_on={"elsewhere"})
    assert summary["val_metrics"][-1]["accuracy"] <= 0.3  # 4 labels: chance 0.25
    (warning,) = summary["warnings"]
    assert "at chance (1 in 4 labels = 0.250)" in warning
    assert "ran 2 optimiser steps (train.epochs=1 x train.iters_per_epoch=2" in warning
    assert f"warning: {warning}" in capsys.readouterr().out
    recorded = (tmp_path / "run" / TRAIN_CLIPS_FILE).read_text().splitlines()
    split = json.loads((data / "split.json").read_text())
    assert recorded == sorted([*split["train"], "elsewhere"])


def test_chance_warning_threshold() -> None:
    from emotion_llama.train.config import TrainConfig
    from emotion_llama.train.validate import chance_warning

    cfg = TrainConfig(epochs=2, iters_per_epoch=10)
    assert chance_warning([{"accuracy": 0.2}], 6, cfg) is not None  # 1/6 + 0.05 = 0.217
    assert chance_warning([{"accuracy": 0.9}, {"accuracy": 0.21}], 6, cfg) is not None  # the last counts
    assert chance_warning([{"accuracy": 0.25}], 6, cfg) is None
    assert chance_warning([], 6, cfg) is None and chance_warning([{"accuracy": 0.0}], 1, cfg) is None
