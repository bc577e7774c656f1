"""Commands that perceive videos: probe (one clip) and extract (a folder into a feature store)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from emotion_llama.cli.common import (
    AddressOpt,
    AsrModelOpt,
    EncoderActorsOpt,
    EngineOpt,
    FrameOpt,
    LanguageOpt,
    PresetOpt,
    ShardOpt,
    VideoRootOpt,
    _engine,
    _exit_on_failures,
    _load_config,
    _out_file,
    _out_folder,
    _print_shard_done,
    _shard,
    _video_source,
    _write_json_file,
    app,
    console,
)
from emotion_llama.names import printable

EncoderDtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        help="Precision of the encoders: auto, float32, float16, bfloat16 (default auto: bfloat16 on a "
        "CUDA GPU that has it, else float16 on CUDA, float32 on the CPU). Features are stored as float32 "
        "either way; the store records the precision, and a rerun into it must use the same.",
    ),
]
EncoderFp8Opt = Annotated[
    bool,
    typer.Option(
        "--fp8",
        help="The encoders' linear layers in FP8 matmuls (e4m3, per-row scales). Needs a GPU of compute "
        "capability 8.9+ (Ada, Hopper) and bfloat16; runs on the CPU too, slowly. Features within FP8 "
        "rounding (cosine 0.993-1.000 to the plain ones in the tests, docs/perception.md).",
    ),
]
EncoderCompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="Every transformer block of the encoders through torch.compile (the first clips wait for "
        "the compilation).",
    ),
]
BatchEncodersOpt = Annotated[
    bool | None,
    typer.Option(
        "--batch-encoders/--clip-by-clip",
        help="One forward per encoder for each --batch-size clips (the audio right-padded), or each clip "
        "alone (bit-identical features whatever the batch, so a resumed run writes the same bits). "
        "Default: batched on a CUDA GPU, clip by clip elsewhere.",
        show_default=False,
    ),
]


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

    # the options first (a speech model that cannot serve --language), then the clip and the
    # outputs: each fails in one line before the face model loads
    config = _load_config(preset, language=language, asr_model=asr_model)
    checked_path(video)
    _out_file("--json", json_out)
    png = plot or (json_out.with_suffix(".au.png") if json_out else Path(f"{video.stem}.au.png"))
    _out_file("--plot", png)
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


@app.command()
def extract(
    video_dir: Annotated[
        Path, typer.Argument(help="A folder of videos, or a manifest (.csv, .tsv, .jsonl; docs/manifest.md).")
    ],
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
    video_root: VideoRootOpt = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    encoder_actors: EncoderActorsOpt = 0,
    shard: ShardOpt = None,
    dtype: EncoderDtypeOpt = None,
    fp8: EncoderFp8Opt = False,
    compile_: EncoderCompileOpt = False,
    batch_encoders: BatchEncodersOpt = None,
) -> None:
    """Features for every video of a folder or clip of a manifest (named by its name; clips with
    start/end are cut once into OUT/manifest_videos): progress bar, parallel decoding, batched
    encoders, resumable (a rerun skips finished clips), a summary of failures. A manifest's
    subtitles replace speech recognition. Exit code 0 only when every clip succeeded. --engine ray
    runs the clips on a Ray cluster, --shard i/N one shard of them (docs/scale-out.md). On a GPU the
    encoders run in bfloat16, batched (--dtype, --batch-encoders; --fp8 and --compile are faster
    options, docs/perception.md)."""
    from emotion_llama.perception.engines import EncodeSpec
    from emotion_llama.perception.extract import extract_folder
    from emotion_llama.precision import check_dtype

    runner = _engine(engine, address, workers, encoder_actors)
    part = _shard(shard)
    _out_folder("--out", out)
    config = _load_config(preset, language=language, asr_model=asr_model)
    spec = EncodeSpec(
        config, device, dtype=check_dtype(dtype, "encoder"), fp8=fp8, compile=compile_, batched=batch_encoders
    )
    source = _video_source(video_dir, out, video_root, part)
    subs = dict(source.subtitles)
    if subtitles is not None:
        from emotion_llama.data.formats.lists import read_subtitles

        subs.update(read_subtitles(subtitles))
    summary = extract_folder(
        source.folder,
        out,
        config,
        layout=layout,
        frame=frame,
        workers=workers,
        device=device,
        batch_size=batch_size,
        subtitles=subs or None,
        problems=source.problems,
        engine=runner,
        shard=part,
        encode=spec,
    )
    console.print(
        f"{summary.total} videos: {summary.already_done} already done, {summary.written} written, "
        f"{len(summary.failed)} failed"
    )
    if part is not None:
        _print_shard_done(part, out)
    _exit_on_failures(summary.failed)
