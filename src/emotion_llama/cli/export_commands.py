"""export (a dataset folder as LLaMA-Factory's ShareGPT JSON and ms-swift's JSONL)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from emotion_llama.cli.common import _fail, _out_folder, app, console, err_console
from emotion_llama.names import printable

if TYPE_CHECKING:
    from emotion_llama.annotate.trainers import TrainerExport

ExportFormatOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--format",
        "-f",
        help="sharegpt (LLaMA-Factory: sharegpt.json and its dataset_info.json entry) or swift "
        "(ms-swift: swift.jsonl); repeat the option for both (default: both).",
    ),
]
ExportPathsOpt = Annotated[
    str,
    typer.Option(
        "--paths",
        help="Media paths: absolute, or relative to the dataset folder (LLaMA-Factory's media_dir, "
        "by default its dataset_dir, must then be the dataset folder; run ms-swift from it).",
    ),
]


def print_trainer_export(result: TrainerExport) -> None:
    """What the export wrote, and each record it skipped with the reason."""
    console.print(
        f"trainer exports: {result.samples} samples from {result.records} records "
        f"({result.videos} with their video, {result.images} with a frame image), "
        f"{len(result.skipped)} skipped"
    )
    for name, reason in result.skipped:
        err_console.print(f"[yellow]skipped[/] {escape(printable(name))}: {escape(printable(reason))}")
    console.print("wrote " + ", ".join(escape(printable(f)) for f in result.files))


@app.command("export")
def export_cmd(
    dataset_dir: Annotated[
        Path, typer.Argument(help="A dataset folder written by annotate (records/, merr_fine.json...).")
    ],
    formats: ExportFormatOpt = None,
    paths: ExportPathsOpt = "absolute",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for the files (default: the dataset folder).")
    ] = None,
    videos: Annotated[
        Path | None,
        typer.Option(
            "--videos",
            help="Where the clips' videos are now, found by file name (when the records' source paths "
            "no longer lead to them).",
        ),
    ] = None,
    system: Annotated[str | None, typer.Option("--system", help="A system prompt for every sample.")] = None,
    name: Annotated[str, typer.Option("--name", help="The dataset's name in dataset_info.json.")] = (
        "emotion_llama"
    ),
) -> None:
    """Export a dataset folder for other trainers: LLaMA-Factory (sharegpt.json, a ShareGPT list, and
    dataset_info.json) and ms-swift (swift.jsonl, its messages format). Each kept record gives an
    emotion sample (the label) and a reasoning sample (the fine reasoning), with the clip's video
    (<video>, "videos") or, when the video cannot be found, the clip's frame image from the dataset
    folder (<image>, "images"). A record without media is skipped and listed; exit code 1 then."""
    from emotion_llama.annotate.trainers import TRAINER_FORMATS, check_options, write_trainer_exports

    chosen, mode = check_options(formats or TRAINER_FORMATS, paths)  # before any file is read
    if not dataset_dir.is_dir():
        _fail(f"{printable(dataset_dir)}: no such folder")
    if videos is not None and not videos.is_dir():
        _fail(f"--videos {printable(videos)}: no such folder")
    target = _out_folder("--out", out) if out is not None else None
    result = write_trainer_exports(
        dataset_dir, chosen, mode, target, video_dir=videos, system=system, dataset_name=name
    )
    print_trainer_export(result)
    if result.skipped:
        raise typer.Exit(code=1)
