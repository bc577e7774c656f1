"""One dataset from the shards of ``annotate --shard i/N`` (``emotion-llama merge OUT``).

Each shard's folder ``OUT/shards/i-of-N`` is a dataset of its clips. The merge copies their
per-clip files into ``OUT`` byte for byte (``work/``, ``records/``, the peak-frame thumbnails
``frames/``, the AU timelines ``au/``, and with ``--with-features`` the feature store), adds their
LLM answers to ``OUT/llm_cache.sqlite``, and reruns stage 3 over all the records: the filters
(near-duplicates are found across shards, as one run finds them), the exports and the report. The
result equals the dataset one unsharded run writes; only the answer cache differs in its bytes
(an SQLite file holds the same answers in another page order).
"""

from __future__ import annotations

import json
from pathlib import Path

from emotion_llama.annotate.pipeline import (
    AnnotateOptions,
    AnnotateSummary,
    export_dataset,
    merge_options,
)
from emotion_llama.encoders.store import atomic_write_bytes, merge_stores, open_store
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.shards import ShardFolder

#: The per-clip folders of a dataset.
CLIP_FOLDERS = ("work", "records", "frames", "au")


def merge_dataset(shards: list[ShardFolder], out: str | Path) -> AnnotateSummary:
    """Merge the finished annotate shards into the dataset ``out`` (see the module's text)."""
    from emotion_llama.backends.llm import merge_caches
    from emotion_llama.files import TMP_SUFFIX

    out = Path(out)
    options = _options(shards)
    summary = AnnotateSummary()
    for sh in shards:
        assert sh.done is not None
        summary.total += int(sh.done.get("total", 0))
        for sub in CLIP_FOLDERS:
            folder = sh.path / sub
            if not folder.is_dir():
                continue
            for f in sorted(folder.iterdir()):
                if f.is_file() and not f.name.endswith(TMP_SUFFIX):
                    target = out / sub / f.name
                    data = f.read_bytes()
                    if not (target.is_file() and target.read_bytes() == data):
                        atomic_write_bytes(target, data)
        for where, why in sh.done.get("failed", []):
            if (where, why) not in summary.failed:
                summary.failed.append((where, why))
    if options.with_features:
        parts = [open_store(sh.path, layout="authors") for sh in shards]
        merge_stores(parts, open_store(out, layout="authors"))
    merge_caches([sh.path / "llm_cache.sqlite" for sh in shards], out / "llm_cache.sqlite")
    already = set(summary.failed)
    export_dataset(out, _dataset_order(out), options, summary)
    summary.failed = list(dict.fromkeys([*already, *summary.failed]))
    return summary


def _options(shards: list[ShardFolder]) -> AnnotateOptions:
    """The stage-3 options the shards ran with (they must agree)."""
    keys = list(merge_options(AnnotateOptions()))
    seen = {json.dumps({k: (sh.done or {}).get(k) for k in keys}) for sh in shards}
    if len(seen) > 1:
        raise EmotionLlamaError(
            "the shards were annotated with different options (duplicate threshold, --drop-grounded, "
            "--with-features); rerun them alike"
        )
    stage3 = json.loads(seen.pop())
    return AnnotateOptions(**{k: v for k, v in stage3.items() if v is not None})


def _dataset_order(out: Path) -> list[tuple[str, str]]:
    """``(record id, video)`` of the records in ``out``, in the order one run over the videos'
    folder has them (the folder's sorted paths)."""
    clips = []
    for p in sorted((out / "records").glob("*.json")):
        try:
            source = json.loads(p.read_text(encoding="utf-8")).get("source") or p.stem
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            source = p.stem  # stage 3 reports it (it does not read back)
        clips.append((p.stem, str(source)))
    return sorted(clips, key=lambda c: Path(c[1]))
