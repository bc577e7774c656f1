"""merge: one output from the shards of ``extract``, ``annotate`` or ``evaluate --shard i/N``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emotion_llama.cli.common import _exit_on_failures, app, console
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.names import printable


@app.command()
def merge(
    out: Annotated[
        Path, typer.Argument(help="The OUT the shards ran with (their outputs are in OUT/shards/i-of-N).")
    ],
) -> None:
    """Make one output in OUT from its shards, once all N have finished: extract's feature store
    (each clip's files byte for byte, one manifest), annotate's dataset (the clips' files, the LLM
    answers, then the filters, exports and report over all the records) or evaluate's
    predictions (then score them with `emotion-llama score OUT/predictions.jsonl`). Equal to what
    one unsharded run writes; a rerun copies nothing new. Exit code 1 when clips failed in a
    shard (the table lists them)."""
    from emotion_llama.shards import find_shards

    shards = find_shards(out)
    kinds = sorted({str((sh.done or {}).get("kind")) for sh in shards})
    if len(kinds) != 1:
        raise EmotionLlamaError(f"{printable(out)}: shards of different commands ({', '.join(kinds)})")
    kind = kinds[0]
    n = len(shards)
    if kind == "features":
        from emotion_llama.encoders.store import merge_stores, open_store

        layouts = {str((sh.done or {}).get("layout")) for sh in shards}
        if len(layouts) != 1:
            raise EmotionLlamaError(f"{printable(out)}: shards of different layouts ({', '.join(layouts)})")
        layout = layouts.pop()
        parts = [open_store(sh.path, layout=layout) for sh in shards]
        into = open_store(out, layout=layout)
        copied = merge_stores(parts, into)
        failed = [(w, why) for sh in shards for w, why in (sh.done or {}).get("failed", [])]
        total = sum(int((sh.done or {}).get("total", 0)) for sh in shards)
        console.print(
            f"{n} shards, {total} videos: {len(copied)} clips merged now, "
            f"{len(into.manifest.get('clips', {}))} in {printable(out)}, {len(failed)} failed"
        )
        _exit_on_failures(failed)
    elif kind == "dataset":
        from emotion_llama.annotate.merge import merge_dataset
        from emotion_llama.cli.analyze_commands import print_annotate_summary

        s = merge_dataset(shards, out)
        console.print(f"{n} shards merged into {printable(out)}")
        print_annotate_summary(s)
        _exit_on_failures(s.failed)
    elif kind == "predictions":
        from emotion_llama.evaluate.runner import PREDICTIONS, merge_predictions

        benchmarks = sorted({str((sh.done or {}).get("benchmark")) for sh in shards})
        r = merge_predictions(shards, out)
        console.print(
            f"{n} shards, {r.total} clips: {r.predicted} predictions merged now "
            f"({r.already_done} there already), {len(r.skipped)} skipped"
        )
        console.print(
            f"score them: emotion-llama score {printable(Path(out) / PREDICTIONS)} "
            f"--benchmark {benchmarks[0] if len(benchmarks) == 1 else 'BENCHMARK'}"
        )
        if r.skipped:
            raise typer.Exit(code=1)
    else:
        raise EmotionLlamaError(f"{printable(out)}: shards of an unknown kind {kind!r}")
