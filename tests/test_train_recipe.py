"""Training recipes: YAML + overrides, the ``synth`` and ``train`` commands, stage 2 from stage 1."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from emotion_llama.cli import app
from emotion_llama.model.checkpoint import read_safetensors, trainable_state
from emotion_llama.train.recipe import RecipeError, build_recipe_model, load_recipe, resolve_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "train"
runner = CliRunner()


def _invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_synth_train_resume_and_stage2(tmp_path: Path) -> None:
    data, run1, run2 = tmp_path / "data", tmp_path / "run1", tmp_path / "run2"
    assert "wrote 30 clips" in _invoke("synth", "--out", str(data), "--n", "30", "--seed", "1")
    tiny = str(CONFIGS / "tiny_synth.yaml")
    common = [f"data={data}", "train.iters_per_epoch=3", "train.batch_size=2"]
    out = _invoke("train", tiny, *common, f"out_dir={run1}", "train.epochs=1")
    assert (run1 / "epoch_0" / "model.safetensors").is_file() and (run1 / "last").is_file()
    assert "last checkpoint" in out and "epoch_0" in out
    # Same out_dir, one more epoch: resumes from OUT/last instead of starting over.
    out = _invoke("train", tiny, *common, f"out_dir={run1}", "train.epochs=2")
    assert "resumed from" in out and (run1 / "epoch_1").is_dir()

    # Stage 2 from the stage-1 run folder: the model starts from its last epoch's weights.
    overrides = [*common, f"out_dir={run2}", f"init_from={run1}", "tasks=reason_v2", "train.epochs=1"]
    recipe = load_recipe(
        CONFIGS / "stage2_fine.yaml", [*overrides, "train.device=cpu", "train.precision=fp32"]
    )
    assert resolve_checkpoint(run1) == run1 / "epoch_1"
    model, _ = build_recipe_model(recipe)
    saved = read_safetensors(run1 / "epoch_1" / "model.safetensors")
    loaded = trainable_state(model)
    assert set(loaded) == set(saved)
    for key in saved:
        torch.testing.assert_close(loaded[key], saved[key], atol=0, rtol=0)
    out = _invoke(
        "train", str(CONFIGS / "stage2_fine.yaml"), *overrides, "train.device=cpu", "train.precision=fp32"
    )
    assert (run2 / "epoch_0" / "model.safetensors").is_file()


def test_unknown_override_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"tiny_synth\.yaml: unknown key\(s\) 'train\.epoch'"):
        load_recipe(CONFIGS / "tiny_synth.yaml", ["train.epoch=2"])
    result = runner.invoke(app, ["train", str(CONFIGS / "tiny_synth.yaml"), "schedule.lr=1e-4"])
    assert result.exit_code == 2 and "schedule.lr" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: x\ntrain: {epochs: 1, speed: 3}\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml.*train\.speed"):
        load_recipe(bad)


def test_overrides_are_typed() -> None:
    r = load_recipe(
        CONFIGS / "tiny_synth.yaml", ["schedule.init_lr=2e-2", "train.epochs=3", "split.val=null"]
    )
    assert r.train.schedule.init_lr == pytest.approx(2e-2) and r.train.epochs == 3 and r.val_split is None
    with pytest.raises(RecipeError, match=r"train\.epochs"):
        load_recipe(CONFIGS / "tiny_synth.yaml", ["train.epochs=many"])


@pytest.mark.parametrize("name", ["stage1_coarse", "stage1_pseudo", "stage2_fine"])
def test_paper_recipes_carry_spec4(name: str) -> None:
    r = load_recipe(CONFIGS / f"{name}.yaml")
    t, s = r.train, r.train.schedule
    assert (t.epochs, t.iters_per_epoch, t.batch_size) == (30, 1000, 1)
    assert t.weight_decay == pytest.approx(0.05) and r.model == "paper"
    if name == "stage2_fine":
        assert s.kind == "constant" and s.init_lr == pytest.approx(1e-6)
        assert r.tasks == ("reason_v2",) and r.init_from == "runs/stage1_coarse"
        assert s.lr(0) == s.lr(29_999) == pytest.approx(1e-6)
        return
    assert s.kind == "warmup_cosine" and s.warmup_steps == 1000 and s.total_steps == 30_000
    assert (s.init_lr, s.warmup_lr, s.min_lr) == pytest.approx((1e-5, 1e-6, 1e-6))
    assert s.iters_per_epoch == 1000 and s.lr(0) == pytest.approx(1e-6)
    assert r.tasks == (("emotion", "reason") if name == "stage1_coarse" else ("emotion",))


def test_recipe_reads_other_formats_and_mixes_sources(tmp_path: Path, capsys) -> None:
    import json

    from emotion_llama.train.recipe import run_recipe

    data = tmp_path / "data"
    _invoke("synth", "--out", str(data), "--n", "12", "--seed", "2")
    names = sorted(json.loads((data / "split.json").read_text())["train"])
    jsonl = tmp_path / "custom.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps({"name": n, "label": "pleasantly surprised"}) for n in names[:4]) + "\n"
    )
    pseudo = tmp_path / "pseudo.csv"
    pseudo.write_text("name,pseudo_label,confidence\n" + "".join(f"{n},happy,0.9\n" for n in names[4:6]))
    base = [f"features={data}", "train.epochs=1", "train.iters_per_epoch=2", "train.log_with=none"]
    # a JSONL file of open-vocabulary labels, with a pseudo-label list mixed in
    recipe = load_recipe(
        CONFIGS / "tiny_synth.yaml",
        [
            *base,
            f"data={jsonl}",
            "data_format=jsonl",
            f"out_dir={tmp_path / 'run'}",
            "tasks=emotion",
        ],
    )
    recipe.extra_data = ({"format": "pseudo", "path": str(pseudo), "features": str(data)},)
    summary = run_recipe(recipe)
    assert summary["step"] == 2 and (tmp_path / "run" / "epoch_0").is_dir()
    with pytest.raises(RecipeError, match="data_format 'csv' is not one of"):
        run_recipe(load_recipe(CONFIGS / "tiny_synth.yaml", [*base, f"data={data}", "data_format=csv"]))
    with pytest.raises(RecipeError, match="DFEW's test split cannot be the validation split"):
        run_recipe(
            load_recipe(
                CONFIGS / "tiny_synth.yaml",
                [*base, f"data={data}", "data_format=dfew", "fold=1", "split.val=test", "tasks=emotion"],
            )
        )
    with pytest.raises(RecipeError, match=r"extra_data must be a list of \{format, path"):
        load_recipe(CONFIGS / "tiny_synth.yaml", [*base, f"data={data}", "extra_data=oops"])
