"""data import / check / schema: datasets into the manifest every command takes (docs/manifest.md,
docs/datasets.md)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from emotion_llama.cli.common import VideoRootOpt, _fail, _out_file, app, console

data_app = typer.Typer(
    help="Your own data: import a dataset's released files as a manifest, check one, print its schema.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


def _print_counts(entries: list, what: str) -> None:  # type: ignore[type-arg]
    labels = Counter(e.label for e in entries if e.label)
    splits = Counter(e.split for e in entries if e.split)
    videos = sum(1 for e in entries if e.path is not None and e.path.is_file())
    console.print(f"{len(entries)} clips {what}; {videos} with their video found")
    if labels:
        console.print("labels: " + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    if splits:
        console.print("splits: " + ", ".join(f"{k} {v}" for k, v in sorted(splits.items())))


@data_app.command("import")
def import_(
    name: Annotated[
        str,
        typer.Argument(
            help="meld, iemocap4, iemocap6, mafw, ch-sims, ch-sims-v2, mosi, mosei, dfew-csv or mer-factory."
        ),
    ],
    root: Annotated[Path, typer.Argument(help="The dataset's folder, as released (docs/datasets.md).")],
    options: Annotated[
        list[str] | None,
        typer.Argument(
            help="The adapter's options as KEY=VALUE (fold=2, classes=2, require_videos=true...)."
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The manifest to write: .csv, .tsv or .jsonl.")
    ] = Path("manifest.csv"),
    absolute: Annotated[
        bool,
        typer.Option("--absolute", help="Write absolute video paths (default: relative to the manifest)."),
    ] = False,
) -> None:
    """Read a dataset's own released files (labels, splits, transcripts, times) into a manifest:
    the one file extract, annotate, train (data_format: manifest) and evaluate (-b manifest) take.
    A wrong layout is refused with one line naming the missing file or column."""
    from emotion_llama.data.formats.adapters import adapter_options, import_dataset
    from emotion_llama.data.formats.manifest import write_manifest

    kwargs: dict[str, str] = {}
    for item in options or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            known = ", ".join(adapter_options(name)) or "none"
            _fail(f"{item!r}: give options as KEY=VALUE (the options of {name}: {known})")
        kwargs[key.strip()] = value
    if out.suffix.lower() not in (".csv", ".tsv", ".jsonl"):
        _fail(f"--out {out}: a manifest is a .csv, .tsv or .jsonl file")
    _out_file("--out", out)
    entries = import_dataset(name, root, **kwargs)
    write_manifest(entries, out, relative=not absolute)
    _print_counts(entries, f"of {name}")
    console.print(f"wrote {escape(str(out))}")


@data_app.command("check")
def check(
    manifest: Annotated[Path, typer.Argument(help="A manifest: .csv, .tsv or .jsonl.")],
    video_root: VideoRootOpt = None,
) -> None:
    """Check every row of a manifest (the first bad one is named by file and line) and count its
    clips, labels, splits and the videos found. Exit code 1 when a video is missing."""
    from emotion_llama.data.formats.manifest import read_manifest

    entries = read_manifest(manifest, video_root=video_root)
    _print_counts(entries, "listed")
    missing = [e for e in entries if e.path is None or not e.path.is_file()]
    for e in missing[:20]:
        console.print(f"[yellow]no video[/] {escape(e.where)}: {escape(e.name)}")
    if len(missing) > 20:
        console.print(f"... and {len(missing) - 20} more")
    if missing:
        raise typer.Exit(code=1)


@data_app.command("schema")
def schema() -> None:
    """Print the JSON schema of a manifest row (as published in docs/manifest.md)."""
    from emotion_llama.data.formats.manifest import MANIFEST_SCHEMA

    typer.echo(json.dumps(MANIFEST_SCHEMA, indent=2, ensure_ascii=False))
