"""A dataset folder as other trainers read it: LLaMA-Factory's ShareGPT JSON and ms-swift's JSONL.

The samples come from the folder's records (``records/{name}.json``), restricted to the records the
dataset kept (those of ``merr_fine.json``, which holds the final filtering; the records' own ``keep``
where that file is absent). Each kept record gives two samples, with the texts :mod:`export` builds
for ``chat.jsonl`` (:func:`~emotion_llama.annotate.export.chat_user_content`,
:func:`~emotion_llama.annotate.export.chat_rows`):

- ``emotion``: the subtitle and the emotion instruction -> the label;
- ``reason``: the subtitle and the reasoning instruction -> the fine reasoning (``smp_reason_caption``).

Each sample carries one medium: the clip's video when it can be found (the record's ``source``;
with ``video_dir``, a video of that name there first), else the frame image the dataset folder holds
(``peak_frame``, then ``first_frames/`` or ``frames/``), with ``<video>`` or ``<image>`` at the head
of the user turn and the path in ``videos`` or ``images``. A record whose media cannot be found is
skipped and listed; the others are exported.

Media paths are absolute, or relative to the dataset folder (``paths="relative"``): LLaMA-Factory
joins them to its ``media_dir`` (by default its ``dataset_dir``), ms-swift to its working directory.

Files (every one written atomically, through :mod:`emotion_llama.files`):

- ``sharegpt.json``: a JSON list of ``{"conversations": [{"from": "human", "value": "<video>..."},
  {"from": "gpt", "value": ...}], "videos": [path]}`` (``"system"`` with a system prompt);
- ``dataset_info.json``: LLaMA-Factory's registry, with one entry for ``sharegpt.json`` (the other
  entries of an existing file are kept);
- ``swift.jsonl``: one ``{"messages": [{"role": "user", "content": "<video>..."}, {"role":
  "assistant", "content": ...}], "videos": [path]}`` a line (a first ``system`` message with a
  system prompt).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from emotion_llama import files
from emotion_llama.annotate.export import chat_rows, chat_user_content
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.names import json_bytes, json_dumps, printable
from emotion_llama.prompts import EMOTION_INSTRUCTION, REASON_INSTRUCTIONS

TRAINER_FORMATS: tuple[str, ...] = ("sharegpt", "swift")
PATH_MODES: tuple[str, ...] = ("absolute", "relative")
SAMPLE_TASKS: tuple[str, ...] = ("emotion", "reason")
SHAREGPT_FILE = "sharegpt.json"
DATASET_INFO_FILE = "dataset_info.json"
SWIFT_FILE = "swift.jsonl"
#: The dataset's name in ``dataset_info.json`` (LLaMA-Factory's ``dataset:``).
DATASET_NAME = "emotion_llama"
#: LLaMA-Factory's ShareGPT tags for the ``from``/``value`` messages of :data:`SHAREGPT_FILE`.
SHAREGPT_TAGS: dict[str, str] = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
}

MediaKind = Literal["video", "image"]
PathMode = Literal["absolute", "relative"]
#: The media list's key in either format, by kind.
MEDIA_KEY: dict[str, str] = {"video": "videos", "image": "images"}
_IMAGE_FOLDERS = ("first_frames", "frames")
_IMAGE_SUFFIXES = (".jpg", ".png")


class TrainerExportError(EmotionLlamaError, ValueError):
    """A dataset folder cannot be exported for other trainers (no records, bad options)."""


@dataclass(frozen=True)
class TrainerSample:
    """One single-turn sample: the user turn (with its media tag) and the answer."""

    name: str
    task: str
    media_kind: MediaKind
    #: the media path as the files carry it (absolute, or relative to the dataset folder)
    media: str
    user: str
    assistant: str


@dataclass
class TrainerExport:
    """What :func:`write_trainer_exports` wrote."""

    files: list[Path] = field(default_factory=list)
    #: records exported (each with its media) and the samples they gave
    records: int = 0
    samples: int = 0
    #: records exported with their video, and with a frame image instead
    videos: int = 0
    images: int = 0
    #: (clip name, reason) for each record left out: media not found, unreadable record file
    skipped: list[tuple[str, str]] = field(default_factory=list)


def check_options(formats: Iterable[str], paths: str) -> tuple[tuple[str, ...], PathMode]:
    """The formats (de-duplicated, in order) and the path mode, or :class:`TrainerExportError` for
    an unknown one (callers check before any work)."""
    chosen = tuple(dict.fromkeys(f.strip().lower() for f in formats))
    unknown = [f for f in chosen if f not in TRAINER_FORMATS]
    if unknown or not chosen:
        given = ", ".join(map(repr, unknown)) or "(none)"
        raise TrainerExportError(f"export format {given}: choose {' or '.join(TRAINER_FORMATS)}")
    if paths not in PATH_MODES:
        raise TrainerExportError(f"media paths {paths!r}: choose {' or '.join(PATH_MODES)}")
    return chosen, cast(PathMode, paths)


# -- the records and their media ------------------------------------------------------------------
def dataset_records(dataset_dir: str | Path) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The kept records of a dataset folder, sorted by name, and (name, reason) for each record file
    that could not be read. Kept: named in ``merr_fine.json`` (the final filtering, near-duplicates
    included); where that file is absent, the records' own ``keep``."""
    root = Path(dataset_dir)
    folder = root / "records"
    if not folder.is_dir():
        raise TrainerExportError(
            f"{printable(root)}: no records/ folder (not a dataset folder written by annotate)"
        )
    fine_path = root / "merr_fine.json"
    kept: set[str] | None = None
    if fine_path.is_file():
        fine = files.read_json(fine_path, error=TrainerExportError)
        if not isinstance(fine, dict):
            raise TrainerExportError(f"{printable(fine_path)}: not a MERR dict keyed by clip name")
        kept = set(fine)
    records: list[dict[str, Any]] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for path in sorted(folder.glob("*.json")):
        try:
            rec = files.read_json(path, error=TrainerExportError)
        except TrainerExportError as exc:
            problems.append((path.stem, str(exc)))
            continue
        name = rec.get("name") if isinstance(rec, dict) else None
        if not isinstance(name, str) or not name:
            problems.append((path.stem, f"{printable(path)}: not a dataset record (no clip name)"))
            continue
        if name in seen:
            problems.append((name, f"{printable(path)}: another record has this clip name"))
            continue
        seen.add(name)
        keep = name in kept if kept is not None else bool(rec.get("keep"))
        if keep:
            records.append({**rec, "keep": True})
    return records, problems


def _video_candidates(rec: Mapping[str, Any], root: Path, video_dir: Path | None) -> Iterator[Path]:
    source = rec.get("source")
    if not isinstance(source, str) or not source:
        return
    src = Path(source)
    if video_dir is not None:
        yield video_dir / src.name
    yield src  # absolute, or relative to the working directory annotate ran in
    if not src.is_absolute():
        yield root / src


def _image_candidates(rec: Mapping[str, Any], root: Path) -> Iterator[Path]:
    frame = rec.get("peak_frame")
    if isinstance(frame, str) and frame:
        rel = Path(frame)
        if not rel.is_absolute() and ".." not in rel.parts:  # a path inside the dataset folder only
            yield root / rel
    name = str(rec["name"])
    for sub in _IMAGE_FOLDERS:
        for suffix in _IMAGE_SUFFIXES:
            yield root / sub / f"{name}{suffix}"


def find_media(
    rec: Mapping[str, Any], dataset_dir: str | Path, video_dir: str | Path | None = None
) -> tuple[MediaKind, Path] | None:
    """The record's video (absolute path) if it exists, else the dataset folder's frame image of
    the clip, else ``None``."""
    root = Path(dataset_dir)
    vdir = Path(video_dir) if video_dir is not None else None
    for path in _video_candidates(rec, root, vdir):
        if path.is_file():
            return "video", Path(os.path.abspath(path))
    for path in _image_candidates(rec, root):
        if path.is_file():
            return "image", Path(os.path.abspath(path))
    return None


def media_path(path: str | Path, dataset_dir: str | Path, paths: PathMode = "absolute") -> str:
    """``path`` as the exports write it: absolute, or relative to the dataset folder (``/``
    separators; ``..`` for a video outside it)."""
    absolute = os.path.abspath(path)
    if paths == "absolute":
        return absolute
    try:
        return Path(os.path.relpath(absolute, os.path.abspath(dataset_dir))).as_posix()
    except ValueError:  # another drive (Windows): no relative path leads there
        return absolute


# -- the samples and the two formats --------------------------------------------------------------
def record_samples(
    rec: Mapping[str, Any],
    media: str,
    media_kind: MediaKind = "video",
    *,
    instruction: str = REASON_INSTRUCTIONS[0],
    tasks: Sequence[str] = SAMPLE_TASKS,
) -> list[TrainerSample]:
    """A kept record's samples: ``emotion`` (-> the label) and ``reason`` (-> the fine reasoning,
    the line ``chat.jsonl`` has for it), each where the record has the text."""
    if not rec.get("keep"):
        return []
    token = f"<{media_kind}>"
    name = str(rec["name"])
    out: list[TrainerSample] = []
    label = rec.get("label")
    if "emotion" in tasks and isinstance(label, str) and label.strip():
        user = chat_user_content(rec.get("subtitle") or "", EMOTION_INSTRUCTION, token)
        out.append(TrainerSample(name, "emotion", media_kind, media, user, label.strip()))
    if "reason" in tasks:
        for row in chat_rows([rec], instruction, token):
            user, answer = (str(m["content"]) for m in row["messages"])
            out.append(TrainerSample(name, "reason", media_kind, media, user, answer))
    return out


def sharegpt_record(sample: TrainerSample, system: str | None = None) -> dict[str, Any]:
    """One LLaMA-Factory ShareGPT sample."""
    rec: dict[str, Any] = {
        "conversations": [
            {"from": SHAREGPT_TAGS["user_tag"], "value": sample.user},
            {"from": SHAREGPT_TAGS["assistant_tag"], "value": sample.assistant},
        ]
    }
    if system:
        rec["system"] = system
    rec[MEDIA_KEY[sample.media_kind]] = [sample.media]
    return rec


def swift_record(sample: TrainerSample, system: str | None = None) -> dict[str, Any]:
    """One ms-swift sample (its standard ``messages`` format)."""
    messages = [{"role": "system", "content": system}] if system else []
    messages += [
        {"role": "user", "content": sample.user},
        {"role": "assistant", "content": sample.assistant},
    ]
    return {"messages": messages, MEDIA_KEY[sample.media_kind]: [sample.media]}


def dataset_info_entry(
    samples: Sequence[TrainerSample],
    *,
    paths: PathMode = "absolute",
    system: str | None = None,
    file_name: str = SHAREGPT_FILE,
    media_root: str | None = None,
) -> dict[str, Any]:
    """The ``dataset_info.json`` entry of the ShareGPT file: formatting, columns (the media columns
    the samples use), tags, and a ``comment`` (ignored by LLaMA-Factory) on how the media paths
    resolve. ``media_root``: the dataset folder, named in the comment when it is not the folder of
    ``dataset_info.json``."""
    columns: dict[str, str] = {"messages": "conversations"}
    if system:
        columns["system"] = "system"
    for kind in ("video", "image"):
        if any(s.media_kind == kind for s in samples):
            columns[MEDIA_KEY[kind]] = MEDIA_KEY[kind]
    if paths == "absolute":
        comment = "media paths are absolute"
    else:
        where = (
            f"the dataset folder {media_root}"
            if media_root
            else "this folder (its default with dataset_dir set to this folder)"
        )
        comment = f"media paths are relative to the dataset folder: LLaMA-Factory's media_dir must be {where}"
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": columns,
        "tags": dict(SHAREGPT_TAGS),
        "comment": comment,
    }


def _merged_info(path: Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """An existing ``dataset_info.json`` with ``name`` set to ``entry`` (other entries kept); a
    file that is not a JSON object is replaced."""
    info: Any = {}
    if path.is_file():
        try:
            info = files.read_json(path, error=TrainerExportError)
        except TrainerExportError:
            info = {}
    info = dict(info) if isinstance(info, dict) else {}
    info[name] = entry
    return info


# -- everything ------------------------------------------------------------------------------------
def collect_samples(
    dataset_dir: str | Path,
    *,
    paths: PathMode = "absolute",
    video_dir: str | Path | None = None,
    instruction: str = REASON_INSTRUCTIONS[0],
    tasks: Sequence[str] = SAMPLE_TASKS,
) -> tuple[list[TrainerSample], TrainerExport]:
    """The samples of a dataset folder's kept records, and the counts (files still empty)."""
    records, problems = dataset_records(dataset_dir)
    result = TrainerExport(skipped=list(problems))
    samples: list[TrainerSample] = []
    for rec in records:
        found = find_media(rec, dataset_dir, video_dir)
        if found is None:
            result.skipped.append(
                (
                    rec["name"],
                    f"no media: the video {printable(rec.get('source'))} is not there and the dataset "
                    "folder has no frame image of the clip",
                )
            )
            continue
        kind, path = found
        got = record_samples(
            rec, media_path(path, dataset_dir, paths), kind, instruction=instruction, tasks=tasks
        )
        if not got:
            continue
        samples += got
        result.records += 1
        result.videos += kind == "video"
        result.images += kind == "image"
    result.samples = len(samples)
    return samples, result


def write_trainer_exports(
    dataset_dir: str | Path,
    formats: Iterable[str] = TRAINER_FORMATS,
    paths: str = "absolute",
    out: str | Path | None = None,
    *,
    video_dir: str | Path | None = None,
    system: str | None = None,
    instruction: str = REASON_INSTRUCTIONS[0],
    tasks: Sequence[str] = SAMPLE_TASKS,
    dataset_name: str = DATASET_NAME,
) -> TrainerExport:
    """Write the trainer files of ``formats`` (``sharegpt``: :data:`SHAREGPT_FILE` and
    :data:`DATASET_INFO_FILE`; ``swift``: :data:`SWIFT_FILE`) into ``out`` (default: the dataset
    folder). Media paths are ``absolute`` or ``relative`` to the dataset folder, whichever folder the
    files go to. Records whose media are missing are skipped and listed in the result."""
    chosen, mode = check_options(formats, paths)
    unknown_tasks = [t for t in tasks if t not in SAMPLE_TASKS]
    if unknown_tasks or not tasks:
        raise TrainerExportError(f"sample tasks {list(tasks)!r}: choose from {', '.join(SAMPLE_TASKS)}")
    if not dataset_name.strip():
        raise TrainerExportError("the dataset_info.json name must not be empty")
    root = Path(dataset_dir)
    target = Path(out) if out is not None else root
    samples, result = collect_samples(
        root, paths=mode, video_dir=video_dir, instruction=instruction, tasks=tasks
    )
    system = system.strip() if system and system.strip() else None
    if "sharegpt" in chosen:
        rows = [sharegpt_record(s, system) for s in samples]
        result.files.append(files.atomic_write_bytes(target / SHAREGPT_FILE, json_bytes(rows, indent=1)))
        same = os.path.abspath(target) == os.path.abspath(root)
        entry = dataset_info_entry(
            samples, paths=mode, system=system, media_root=None if same else os.path.abspath(root)
        )
        info_path = target / DATASET_INFO_FILE
        info = _merged_info(info_path, dataset_name.strip(), entry)
        result.files.append(files.atomic_write_bytes(info_path, json_bytes(info, indent=2)))
    if "swift" in chosen:
        text = "".join(json_dumps(swift_record(s, system)) + "\n" for s in samples)
        result.files.append(files.atomic_write_text(target / SWIFT_FILE, text))
    return result
