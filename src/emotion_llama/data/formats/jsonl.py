"""JSONL files as training samples: one clip per line, your own data (docs/dataset.md,
"Training on your own data")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.data.formats.clips import ClipResolver, label_target, open_feature_store
from emotion_llama.data.samples import ReadReport, TrainDataError, TrainSample
from emotion_llama.files import jsonl_objects
from emotion_llama.prompts import TASKS

#: Keys a JSONL line may have; other keys are ignored.
JSONL_KEYS: tuple[str, ...] = ("name", "video", "label", "subtitle", "reasoning", "task", "frame")


@dataclass(frozen=True)
class _JsonlEntry:
    line: int
    name: str
    subtitle: str
    frame: Path | None
    video: Path | None
    targets: tuple[tuple[str, str], ...]  # (task, target)


def read_jsonl(
    path: str | Path,
    config: EmotionLlamaConfig,
    *,
    features: str | Path | None = None,
    tasks: Sequence[str] | None = None,
    report: ReadReport | None = None,
) -> list[TrainSample]:
    """Samples from a JSONL file, one object per line (docs/dataset.md, "Training on your own
    data")::

        {"name": "clip_001", "label": "happy", "subtitle": "...", "reasoning": "...", "task": "reason"}
        {"video": "videos/clip_002.mp4", "label": "pleasantly surprised", "frame": "frames/clip_002.jpg"}

    - ``name``, or ``video`` (its file stem is the name); the clip's features are ``name`` in the
      feature store (``features``, default the file's folder);
    - ``label`` -> an ``emotion`` sample (any words: open vocabulary; normalised as targets are);
    - ``reasoning`` -> a ``reason`` sample, or of the task ``task`` names (``reason_v2``);
      ``task: "emotion"`` means the label only;
    - ``subtitle``: what the person says (default empty);
    - ``frame``: the image (or video) for the global encoder; by default the store's frame, then
      ``video``. Relative paths are relative to the JSONL file's folder.

    ``tasks`` keeps only those tasks (default: all). Every line is checked before any feature
    is read; a bad line raises :class:`TrainDataError` naming the file and the line number.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainDataError(f"{path}: no such JSONL file")
    report = report if report is not None else ReadReport(f"jsonl {path}")
    entries = _read_jsonl_entries(path)
    store = open_feature_store(features if features is not None else path.parent, config)
    resolver = ClipResolver(store, report, frame_roots=[path.parent])
    samples: list[TrainSample] = []
    for e in entries:
        targets = [(t, x) for t, x in e.targets if tasks is None or t in tasks]
        if not targets:
            continue
        frame = e.frame
        if (
            frame is None
            and e.video is not None
            and e.video.is_file()
            and not store.frame_path(e.name).is_file()
        ):
            frame = e.video
        found = resolver.get(e.name, frame)
        if found is None:
            continue
        feats, frame_path = found
        for task, target in targets:
            samples.append(TrainSample(e.name, e.subtitle, task, target, frame_path, feats))
    resolver.finish(samples)
    return samples


def _read_jsonl_entries(path: Path) -> list[_JsonlEntry]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TrainDataError(f"{path}: not UTF-8 text ({exc})") from None
    entries = [
        _jsonl_entry(obj, path.parent, f"{path}:{i}", i)
        for i, obj in jsonl_objects(path, text, error=TrainDataError)
    ]
    if not entries:
        raise TrainDataError(f"{path}: no lines")
    return entries


def _jsonl_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TrainDataError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return value


def _jsonl_entry(obj: dict[str, Any], base: Path, where: str, line: int) -> _JsonlEntry:
    name = _jsonl_str(obj, "name", where)
    video_text = _jsonl_str(obj, "video", where)
    video = _resolve_path(base, video_text) if video_text else None
    if not name:
        if not video_text:
            raise TrainDataError(f"{where}: needs 'name' or 'video'")
        name = Path(video_text).stem
    name = name.strip()
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise TrainDataError(
            f"{where}: {name!r} cannot be a clip name (it names a file in the feature store)"
        )
    label = _jsonl_str(obj, "label", where)
    reasoning = _jsonl_str(obj, "reasoning", where)
    task = _jsonl_str(obj, "task", where)
    subtitle = (_jsonl_str(obj, "subtitle", where) or "").strip()
    frame_text = _jsonl_str(obj, "frame", where)
    if task is not None and task not in TASKS:
        raise TrainDataError(f"{where}: unknown task {task!r}; choose from {', '.join(TASKS)}")
    if label is not None and not label.strip():
        raise TrainDataError(f"{where}: 'label' is empty")
    if reasoning is not None and not reasoning.strip():
        raise TrainDataError(f"{where}: 'reasoning' is empty")
    targets: list[tuple[str, str]] = []
    if task == "emotion":
        if label is None:
            raise TrainDataError(f"{where}: task 'emotion' needs a 'label'")
        if reasoning is not None:
            raise TrainDataError(
                f"{where}: task 'emotion' takes the label only; "
                "give 'reasoning' with task reason or reason_v2"
            )
    elif task is not None and reasoning is None:
        raise TrainDataError(f"{where}: task {task!r} needs a 'reasoning'")
    if label is not None:
        targets.append(("emotion", label_target(label, where)))
    if reasoning is not None:
        targets.append((task or "reason", reasoning))
    if not targets:
        raise TrainDataError(f"{where}: no target; give 'label' and/or 'reasoning'")
    frame = _resolve_path(base, frame_text) if frame_text else None
    return _JsonlEntry(line, name, subtitle, frame, video, tuple(targets))


def _resolve_path(base: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p
