"""analyze (label, reasoning and clues of clips) and annotate (a MERR-style dataset)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer
from rich.markup import escape

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.names import json_dumps, printable, text_for_file

if TYPE_CHECKING:
    from emotion_llama.annotate.pipeline import AnnotateSummary
    from emotion_llama.perception.engines import Engine
    from emotion_llama.serve.predictor import Predictor
from emotion_llama.cli.common import (
    AddressOpt,
    AsrModelOpt,
    EncoderActorsOpt,
    EngineOpt,
    Fp8Opt,
    FrameOpt,
    FullModelOpt,
    LabelSetOpt,
    LanguageOpt,
    LLMDtypeOpt,
    LLMOpt,
    LoadIn4bitOpt,
    LoadIn8bitOpt,
    MaxNewTokensOpt,
    ModalitiesOpt,
    ModelDeviceOpt,
    ModelDtypeOpt,
    PresetOpt,
    ShardOpt,
    VideoRootOpt,
    VLMOpt,
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
    err_console,
)

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
    model: FullModelOpt = None,
    llm: LLMOpt = "offline",
    vlm: VLMOpt = None,
    preset: PresetOpt = "paper",
    frame: FrameOpt = "first",
    device: ModelDeviceOpt = "cpu",
    dtype: ModelDtypeOpt = None,
    load_in_8bit: LoadIn8bitOpt = False,
    load_in_4bit: LoadIn4bitOpt = False,
    fp8: Fp8Opt = False,
    llm_dtype: LLMDtypeOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    label_set: LabelSetOpt = "merr9",
    language: LanguageOpt = None,
    asr_model: AsrModelOpt = None,
    subtitle: Annotated[
        str | None, typer.Option(help="Use this text instead of speech recognition (every clip).")
    ] = None,
    modalities: ModalitiesOpt = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    shard: ShardOpt = None,
) -> None:
    """The emotion of the person in a video, with the reasoning and the clues behind it. By default
    the clue pipeline (faces, action units, tone, transcript) with a local instruct LLM; with
    --model, the full multimodal Emotion-LLaMA model. Folders contribute their videos; clips go in
    batches of 8; a broken clip gets its error in its place and the others go on (exit code 1 when
    any failed). Writes the AU timeline PNG next to the JSON/JSONL. --engine ray perceives the
    clips on a Ray cluster (the LLM or model stage stays in this process); --shard i/N analyses
    one shard of them (give each shard its own --json/--jsonl/--csv)."""
    with ExitStack() as stack:
        from emotion_llama.model.quantize import quantization_flags
        from emotion_llama.prompts import resolve_label_set
        from emotion_llama.serve.predictor import Predictor
        from emotion_llama.shards import select

        runner = _engine(engine, address)
        part = _shard(shard)
        _out_file("--json", json_out)
        clips = select(_video_inputs(videos), part, lambda v: v.stem)
        if not clips:
            raise EmotionLlamaError(f"shard {part}: none of the videos is in this shard")
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
            dtype=dtype,
            quantization=quantization_flags(load_in_8bit, load_in_4bit, fp8),
            max_new_tokens=max_new_tokens,
            label_set=labels,
            language=language,
            asr_model=asr_model,
            modalities=modalities,
        )
        analyzer = stack.enter_context(predictor)
        failed = _analyze_clips(
            analyzer, clips, subtitle, json_out, jsonl, table, engine=runner if runner.kind == "ray" else None
        )
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
    *,
    engine: Engine | None = None,
) -> list[tuple[str, str]]:
    """``analyze``'s loop: chunks through ``analyze_many``, each clip written as it finishes; the
    failed clips and their reasons come back. ``engine``: perceive the clips there (in order,
    streaming) instead of in the predictor's own perceiver."""
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
    stream = None
    if engine is not None:
        from emotion_llama.perception.engines import perceive_clips

        p = analyzer.perceiver
        subs = {v.stem: subtitle for v in clips} if subtitle is not None else {}
        stream = perceive_clips(clips, p.config, p.frame, subs, engine, ordered=True)
    for start in range(0, len(clips), ANALYZE_CHUNK):
        chunk = clips[start : start + ANALYZE_CHUNK]
        given = [next(stream).result for _ in chunk] if stream is not None else None
        try:
            results: list[Any] = analyzer.analyze_many(
                chunk, subtitles=[subtitle] * len(chunk), perceived=given
            )
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
    video_dir: Annotated[
        Path, typer.Argument(help="A folder of videos, or a manifest (.csv, .tsv, .jsonl; docs/manifest.md).")
    ],
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
    clue_language: Annotated[
        str,
        typer.Option(
            "--clue-language",
            help="Language of the coarse captions' clue phrases and tone words: en (MERR's) or zh "
            "(Chinese); the subtitle goes in as it is. The record's clue fields stay English.",
        ),
    ] = "en",
    drop_grounded: Annotated[
        bool,
        typer.Option(
            "--drop-grounded",
            help="Filter out records whose reasoning had to be written from the clues (every LLM "
            "answer failed the faithfulness check); by default they are kept.",
        ),
    ] = False,
    video_root: VideoRootOpt = None,
    export: Annotated[
        list[str] | None,
        typer.Option(
            "--export",
            help="Also export for other trainers at the end: sharegpt (LLaMA-Factory) or swift (ms-swift); "
            "repeat for both (as the export command).",
        ),
    ] = None,
    export_paths: Annotated[
        str, typer.Option("--export-paths", help="--export media paths: absolute, or relative to OUT.")
    ] = "absolute",
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    encoder_actors: EncoderActorsOpt = 0,
    shard: ShardOpt = None,
) -> None:
    """Build a MERR-style dataset from a folder of videos: AU-guided clues, tone, transcript, the
    coarse caption, a label from face, voice and words, LLM fine reasoning checked for faithfulness,
    filtering; exports MERR JSON (coarse and fine), NCEV labels, subtitles, chat JSONL, and a report
    (Markdown + HTML with images). A manifest's labels and subtitles count as --labels and
    --subtitles (the options win). Resumable; exit code 1 when any clip failed. --engine ray
    perceives the clips on a Ray cluster (the LLM stage goes to --llm, e.g. a vLLM server),
    --shard i/N one shard of them (docs/scale-out.md)."""
    from emotion_llama.annotate.pipeline import AnnotateOptions, annotate_folder, load_labels
    from emotion_llama.data.formats.lists import read_subtitles
    from emotion_llama.precision import check_dtype
    from emotion_llama.prompts import resolve_label_set

    check_dtype(llm_dtype)  # before any clip is perceived
    from emotion_llama.annotate.clue_text_zh import check_clue_language

    check_clue_language(clue_language, "--clue-language")
    runner = _engine(engine, address, workers, encoder_actors)
    part = _shard(shard)
    if export:
        if part is not None:
            raise EmotionLlamaError(
                "--export with --shard: export the merged dataset (emotion-llama export OUT)"
            )
        from emotion_llama.annotate.trainers import check_options

        check_options(export, export_paths)
    _out_folder("--out", out)
    source = _video_source(video_dir, out, video_root, part)
    known = {**source.labels, **(load_labels(labels) if labels else {})}
    subs = {**source.subtitles, **(read_subtitles(subtitles) if subtitles else {})}
    options = AnnotateOptions(
        llm=llm,
        workers=workers,
        labels=known or None,
        subtitles=subs or None,
        label_set=resolve_label_set(label_set),
        with_features=with_features,
        device=device,
        vlm=vlm,
        llm_dtype=llm_dtype,
        max_new_tokens=max_new_tokens,
        drop_grounded=drop_grounded,
        clue_language=clue_language,
        engine=runner,
        shard=part,
    )
    config = _load_config(preset, language=language, asr_model=asr_model)
    s = annotate_folder(source.folder, out, config, options, problems=source.problems)
    print_annotate_summary(s)
    if part is not None:
        _print_shard_done(part, out)
    if export:
        from emotion_llama.annotate.trainers import write_trainer_exports
        from emotion_llama.cli.export_commands import print_trainer_export

        print_trainer_export(write_trainer_exports(out, export, export_paths))
    _exit_on_failures(s.failed)


def print_annotate_summary(s: AnnotateSummary) -> None:
    """What an annotate run (or the merge of its shards) did, in a few lines."""
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
