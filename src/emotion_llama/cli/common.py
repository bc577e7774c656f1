"""What every command shares: the consoles, the error boundary, output-path checks, option
aliases, and the config with the speech overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.names import printable

if TYPE_CHECKING:
    from emotion_llama.config import EmotionLlamaConfig
    from emotion_llama.perception.engines import Engine
    from emotion_llama.shards import Shard


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
        "(default: the preset's, en). Other than en needs a multilingual --asr-model "
        "(offline-multilingual, base...).",
    ),
]
AsrModelOpt = Annotated[
    str | None,
    typer.Option(
        "--asr-model",
        help="Speech recognition model: offline (Whisper tiny.en from its offline package, English "
        "only), offline-multilingual (Whisper base from its offline packages: Mandarin and other "
        "languages, auto detection), a faster-whisper size name (tiny, base, small, medium, "
        "large-v3...), a hub repo id or a local CTranslate2 folder (default: the preset's, offline).",
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
ModelDtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        help="Precision of --model (the Emotion-LLaMA model and its encoders): auto, float32, float16, "
        "bfloat16 (default auto: bfloat16 on a CUDA GPU that has it, else float16 on CUDA, float32 on "
        "the CPU).",
    ),
]
LoadIn8bitOpt = Annotated[
    bool,
    typer.Option(
        "--load-in-8bit",
        help="Load the LLM of --model with 8-bit weights (bitsandbytes LLM.int8: about half the "
        "memory of bfloat16; pip install 'emotion-llama\\[quantize]'). The ViT, encoders, projections "
        "and LoRA keep --dtype.",
    ),
]
LoadIn4bitOpt = Annotated[
    bool,
    typer.Option(
        "--load-in-4bit",
        help="Load the LLM of --model with 4-bit NF4 weights (bitsandbytes, double quantization, "
        "--dtype matmuls: about a quarter of bfloat16, so a 24 GB GPU runs the paper model; "
        "docs/serving.md lists the memory).",
    ),
]
Fp8Opt = Annotated[
    bool,
    typer.Option(
        "--fp8",
        help="The LLM of --model with FP8 matmuls (e4m3 weights and activations, per-row scales, "
        "LoRA merged first; inference only). Needs a GPU of compute capability 8.9+ (Ada, Hopper) "
        "and bfloat16; runs on the CPU too, slowly. Labels within FP8 rounding (docs/serving.md).",
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
FullModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        "-m",
        help="An Emotion-LLaMA checkpoint folder (converted, or a training run folder or its best/last "
        "pointer): the full model instead of the clue pipeline.",
    ),
]
ModelDeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda... (the model, or a local --llm)")]
VideoRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--video-root",
        help="With a manifest: the folder its relative paths (and NAME.* videos) are in (default: "
        "the manifest's folder).",
    ),
]
ModalitiesOpt = Annotated[
    str | None,
    typer.Option(
        "--modalities",
        help="What to answer from: all (default) or a comma list of video, audio, text. The others "
        "are not fed at all (no positions in the model's prompt, no clues), and the result says so.",
    ),
]


EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Where the clips run: local (a process pool on this machine, --workers) or ray (a Ray "
        "cluster: clips as CPU tasks, encoders on a GPU device as an actor pool; pip install "
        "'emotion-llama\\[ray]'). Same outputs either way; either can finish what the other started.",
    ),
]
ModelEngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Who decodes: local (the model in this process), ray (Ray actors, one per GPU; pip "
        "install 'emotion-llama\\[ray]') or vllm (vLLM decodes the prompts the model computes: "
        "--vllm-url or --vllm-model; greedy; pip install 'emotion-llama\\[vllm]', a CUDA GPU).",
    ),
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="The model's label scoring through torch.compile and its generation with a static KV "
        "cache (compiled on a GPU); the first batches pay the compile. Same answers.",
    ),
]
VllmUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--vllm-url",
        help="--engine vllm: a running `vllm serve LLM --enable-prompt-embeds` (http://HOST:PORT), "
        "LLM being the merged export's llm/ folder (docs/serving.md).",
    ),
]
VllmModelOpt = Annotated[
    str | None,
    typer.Option(
        "--vllm-model",
        help="--engine vllm: with --vllm-url the served model's name (default: the only one); "
        "without, the folder vLLM loads in this process (the merged export's llm/, or the base "
        "LLM with --vllm-lora).",
    ),
]
VllmLoraOpt = Annotated[
    str | None,
    typer.Option(
        "--vllm-lora",
        help="--engine vllm in this process: the checkpoint's LoRA as a PEFT adapter folder "
        "(export-merged --adapter) on the base LLM --vllm-model.",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="--engine ray: the cluster (auto, HOST:PORT of `ray start --head`, or ray://HOST:PORT); "
        "default: $RAY_ADDRESS, else a Ray started on this machine for this run.",
    ),
]
EncoderActorsOpt = Annotated[
    int,
    typer.Option(
        "--encoder-actors",
        help="--engine ray: the encoders' actor pool. With a GPU --device, at most this many actors of "
        "one GPU each (0: one per GPU of the cluster); on the CPU, N actors of one CPU each, on the "
        "nodes where Ray finds a free CPU (0: the encoders run in this process, which bounds a "
        "cluster's rate with the paper's encoders; docs/scale-out.md).",
    ),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="i/N: only shard i of N of the clips (by a hash of the clip name; e.g. "
        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT), into OUT/shards/i-of-N; once all N have "
        "finished, `emotion-llama merge OUT` makes one output (docs/scale-out.md).",
    ),
]


def _engine(kind: str, address: str | None, workers: int = 2, encoder_actors: int = 0) -> Engine:
    """The --engine/--address/--workers/--encoder-actors options as an engine, checked before any
    work (Ray importable, an address and encoder actors only with ray)."""
    from emotion_llama.perception.engines import Engine

    engine = Engine(
        kind=kind.strip().lower(), workers=max(1, workers), address=address, encoder_actors=encoder_actors
    )
    if engine.kind == "ray":
        from emotion_llama.perception.ray_engine import import_ray

        import_ray()
    return engine


def _shard(text: str | None) -> Shard | None:
    from emotion_llama.shards import parse_shard

    return parse_shard(text)


def _print_shard_done(shard: Shard, out: Path) -> None:
    """Where a shard's output went and what makes one output of the shards."""
    console.print(
        f"shard {shard}: wrote {printable(shard.folder(out))}; once all {shard.count} shards have "
        f"finished: emotion-llama merge {printable(out)}"
    )


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
            raise EmotionLlamaError(
                "--asr-model: give offline, offline-multilingual, a model size, a hub repo id or a folder"
            )
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

    WhisperTranscriber.from_config(config.perception)


def _write_json_file(path: Path, obj: Any) -> None:
    from emotion_llama.files import atomic_write_bytes
    from emotion_llama.names import json_bytes

    atomic_write_bytes(path, json_bytes(obj, indent=1))


MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl")


@dataclass
class VideoSource:
    """The videos a command perceives: a folder, or a manifest's clips linked (and cut) into
    ``folder``; ``problems`` are the manifest's clips that could not be placed, ``subtitles`` and
    ``labels`` what its rows give."""

    folder: Path
    problems: list[tuple[str, str]] = field(default_factory=list)
    subtitles: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


def _video_source(
    given: Path, work: Path, video_root: Path | None, shard: Shard | None = None
) -> VideoSource:
    """``given`` as a folder of videos, or (a .csv, .tsv or .jsonl file) as a manifest whose clips
    are linked into ``work/manifest_videos`` (with ``shard``, only that shard's clips: the shards
    of one ``work`` share the folder, each placing its own clips)."""
    if not (given.is_file() and given.suffix.lower() in MANIFEST_SUFFIXES):
        if video_root is not None:
            _fail(f"--video-root is for a manifest; {given} is not a .csv, .tsv or .jsonl file")
        return VideoSource(given)
    from emotion_llama.data.formats.manifest import (
        link_manifest_videos,
        manifest_labels,
        manifest_subtitles,
        read_manifest,
    )

    entries = read_manifest(given, video_root=video_root)
    if shard is not None:
        entries = shard.select(entries, lambda e: e.name)
    folder, problems = link_manifest_videos(entries, work / "manifest_videos")
    return VideoSource(folder, problems, manifest_subtitles(entries), manifest_labels(entries))
