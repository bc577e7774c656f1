"""``doctor``: which released file a checkpoint is, what it is for, and whether it will work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from emotion_llama.cli.common import app, console
from emotion_llama.names import printable

if TYPE_CHECKING:
    from emotion_llama.model.doctor import DoctorReport

_STYLE = {"ok": "green", "note": "dim", "warn": "yellow", "problem": "bold red"}


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def print_report(report: DoctorReport) -> None:
    ident = report.identity
    where = escape(printable(report.checkpoint))
    console.print(f"[bold]checkpoint[/] {where} ({report.format})", highlight=False)
    console.print(
        f"[bold]sha256[/] {report.sha256} of {escape(printable(Path(report.hashed_file).name))}, "
        f"{_size(report.size_bytes)}"
        + ("" if "hash" in ident.by else " (no released file has a published sha256: pin this one)"),
        highlight=False,
    )
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_row("what", escape(ident.title))
    table.add_row("by", ", ".join(ident.by))
    for line in ident.evidence:
        table.add_row("", f"- {escape(line)}")
    table.add_row("for", escape(ident.purpose))
    table.add_row("not for", escape(ident.not_for))
    console.print(table)
    checks = Table(title="checks")
    checks.add_column("check", no_wrap=True)
    checks.add_column("result", no_wrap=True)
    checks.add_column("detail")
    for f in report.findings:
        checks.add_row(f.check, f"[{_STYLE[f.level]}]{f.level}[/]", escape(f.message))
    console.print(checks)
    s = report.sanity
    if s.ran:
        console.print(f"[bold]sanity prompt[/] ({escape(s.message)}; {escape(s.media)})", highlight=False)
        console.print(f"  answer: {escape(repr(s.answer))}", highlight=False)
    verdict = (
        "[green]no problem found[/]"
        if report.ok
        else f"[bold red]{len(report.problems)} problem(s) found[/]: "
        + "; ".join(escape(f.check) for f in report.problems)
    )
    console.print(verdict)


@app.command()
def doctor(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="An authors' .pth (Emoation_LLaMA.pth, checkpoint_best.pth, MER2024-best.pth, "
            "minigptv2_checkpoint.pth) or a project checkpoint folder, run folder or best/last file."
        ),
    ],
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            "-p",
            help="Preset (paper, tiny) or config file the authors' file is checked against "
            "(default: paper). A project folder uses its own config.json.",
        ),
    ] = None,
    llm: Annotated[
        str | None,
        typer.Option("--llm", help="The base LLM to check and run with (hub id or local folder)."),
    ] = None,
    no_generate: Annotated[
        bool, typer.Option("--no-generate", help="Do not load the model for the sanity prompt.")
    ] = False,
    device: Annotated[
        str | None, typer.Option(help="Device of the sanity prompt (default: cuda when there is one).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Length of the sanity answer.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the sanity prompt's random media.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Which released file a checkpoint is, what it is for, and whether it will work.

    Recognises the file by its sha256, its keys, the training config saved in it and its name
    (the report says which), says what it is for and not for, and checks it: the expected keys
    and shapes, adapters present and non-zero, projections present, a chat base LLM, and a short
    greedy answer on seeded random media that must not repeat the prompt. Exit code 1 when a
    problem was found, 0 otherwise."""
    from emotion_llama.model.doctor import diagnose

    report = diagnose(
        checkpoint,
        preset=preset,
        llm=llm,
        generate=not no_generate,
        device=device,
        seed=seed,
        max_new_tokens=max_new_tokens,
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    if not report.ok:
        raise typer.Exit(code=1)
