"""MER-Factory's per-clip output (``python main.py VIDEOS OUTPUT --type MER``).

Layout (MER-Factory's output folder; one sub-folder per clip, named by the clip's stem)::

    OUTPUT/
      {clip}/{clip}_merr_data.json       the MER pipeline's result (read)
      {clip}/{clip}_au_analysis.json ...  the partial results, OpenFace's {clip}.csv (not read)

``{clip}_merr_data.json`` holds ``source_path`` (the video as processed), ``audio_path``,
``chronological_emotion_peaks`` (``"Peak at 2.88s: angry (slight), contempt (slight)"``, or
``["neutral"]`` when the face shows no peak), ``overall_peak_frame_info`` (``frame_number``,
``timestamp``, ``top_aus_intensities`` such as ``{"AU06_r": 1.45}``),
``coarse_descriptions_at_peak`` (``visual_expression``, ``visual_objective``,
``audio_analysis``, ``video_content``), ``final_summary`` (the reasoning) and, when MER-Factory
was given a label file, ``ground_truth_label``. :func:`read_mer_factory_records` reads all of it;
:func:`read_mer_factory` turns it into manifest entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotion_llama.data.formats.adapters.common import (
    Videos,
    check_choice,
    dataset_folder,
    finish,
    one_line,
    project_word,
)
from emotion_llama.data.formats.manifest import ManifestEntry
from emotion_llama.data.samples import DataError
from emotion_llama.files import read_json

#: The keys every ``*_merr_data.json`` has (``source_path`` is used when present).
MER_FACTORY_KEYS: tuple[str, ...] = (
    "chronological_emotion_peaks",
    "overall_peak_frame_info",
    "coarse_descriptions_at_peak",
    "final_summary",
)

_PEAK = re.compile(r"Peak at\s+(\d+(?:\.\d+)?)s:\s*(.*)$")


@dataclass(frozen=True)
class MerFactoryRecord:
    """One clip of MER-Factory's output. ``label_source``: ``ground_truth`` (the label file
    MER-Factory was given) or ``au_peak`` (the first emotion of the AU peak at the overall peak
    frame, as MER-Factory's own export takes it); ``None`` with no label."""

    name: str
    video: Path | None
    label: str | None
    label_source: str | None
    peaks: tuple[str, ...]
    peak_frame: int | None
    peak_time: float | None
    peak_aus: dict[str, float] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    where: str = ""


def read_mer_factory_records(
    root: str | Path,
    *,
    label_from: str = "auto",
    video_root: str | Path | None = None,
    require_videos: bool = False,
) -> list[MerFactoryRecord]:
    """Every ``{clip}/{clip}_merr_data.json`` under ``root`` (MER-Factory's output folder), in
    clip order. ``label_from``: ``auto`` (the ground-truth label when the JSON has one, else the
    AU peak's emotion), ``ground_truth`` (only that; clips without stay unlabelled) or
    ``au_peak``. The video: ``{clip}.*`` in ``video_root`` when given, else ``source_path`` when
    it still exists, else ``{clip}.*`` beside the JSON; none found: ``video`` is ``None``
    (refused with ``require_videos``). A JSON without one of :data:`MER_FACTORY_KEYS`, or one
    that is not an object, is refused naming the file and key."""
    check_choice("MER-Factory", "label_from", label_from, ("auto", "ground_truth", "au_peak"))
    root = dataset_folder(root, "MER-Factory")
    roots = [Path(video_root).expanduser()] if video_root is not None else []
    if roots and not roots[0].is_dir():
        raise DataError(f"MER-Factory: the video root {roots[0]} is not a folder")
    files = _result_files(root)
    if not files:
        raise DataError(
            f"MER-Factory: no {{clip}}/{{clip}}_merr_data.json under {root} "
            "(MER-Factory's output of --type MER)"
        )
    videos = Videos("MER-Factory", require_videos)
    records: list[MerFactoryRecord] = []
    for name, file in files:
        data = read_json(file, error=DataError)
        if not isinstance(data, dict):
            raise DataError(f"MER-Factory: {file} is not a JSON object (got {type(data).__name__})")
        for key in MER_FACTORY_KEYS:
            if key not in data:
                raise DataError(
                    f"MER-Factory: {file} has no {key!r} key (its keys: {', '.join(map(str, data))})"
                )
        peaks = _strings(data["chronological_emotion_peaks"], file, "chronological_emotion_peaks")
        info = _mapping(data["overall_peak_frame_info"], file, "overall_peak_frame_info")
        label, source = _label(data, peaks, info, label_from)
        records.append(
            MerFactoryRecord(
                name=name,
                video=_video(videos, name, data.get("source_path"), roots, file.parent),
                label=label,
                label_source=source,
                peaks=tuple(peaks),
                peak_frame=_int(info.get("frame_number")),
                peak_time=_float(info.get("timestamp")),
                peak_aus={
                    str(k): float(v)
                    for k, v in _mapping(
                        info.get("top_aus_intensities", {}), file, "top_aus_intensities"
                    ).items()
                    if _float(v) is not None
                },
                descriptions={
                    str(k): str(v)
                    for k, v in _mapping(
                        data["coarse_descriptions_at_peak"], file, "coarse_descriptions_at_peak"
                    ).items()
                    if isinstance(v, str)
                },
                summary=str(data["final_summary"] or ""),
                where=str(file),
            )
        )
    videos.finish()
    return records


def read_mer_factory(
    root: str | Path,
    *,
    label_from: str = "auto",
    video_root: str | Path | None = None,
    require_videos: bool = False,
) -> list[ManifestEntry]:
    """MER-Factory's clips as manifest entries (:func:`read_mer_factory_records`): the clip's
    name, video and label (in the project's words: anger -> angry, happiness/joy -> happy,
    sadness -> sad). MER-Factory keeps no transcript (its ``audio_analysis`` is a description),
    so ``subtitle`` stays empty; the reasoning, AU peaks and descriptions are in the records."""
    root = dataset_folder(root, "MER-Factory")
    records = read_mer_factory_records(
        root, label_from=label_from, video_root=video_root, require_videos=require_videos
    )
    entries = [ManifestEntry(name=r.name, path=r.video, label=r.label, where=r.where) for r in records]
    return finish(entries, "MER-Factory", root)


def _result_files(root: Path) -> list[tuple[str, Path]]:
    """``(clip, json)`` for every sub-folder holding ``{clip}_merr_data.json`` (or a single
    ``*_merr_data.json``); hidden folders (``.llm_cache``) are skipped."""
    found: list[tuple[str, Path]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        exact = folder / f"{folder.name}_merr_data.json"
        if exact.is_file():
            found.append((folder.name, exact))
            continue
        others = sorted(folder.glob("*_merr_data.json"))
        if len(others) == 1:
            found.append((folder.name, others[0]))
    return found


def _label(
    data: dict[str, Any], peaks: list[str], info: dict[str, Any], label_from: str
) -> tuple[str | None, str | None]:
    truth = data.get("ground_truth_label")
    if label_from != "au_peak" and isinstance(truth, str | int) and str(truth).strip():
        return project_word(str(truth)), "ground_truth"
    if label_from == "ground_truth":
        return None, None
    word = peak_emotion(peaks, _float(info.get("timestamp")))
    return (project_word(word), "au_peak") if word else (None, None)


def peak_emotion(peaks: list[str], timestamp: float | None) -> str | None:
    """The emotion of the AU peak at ``timestamp`` (within 0.1 s; else the first peak): the first
    word after ``Peak at T s:``, its strength in brackets dropped; a peak list without times
    (``["neutral"]``, ``["neutral (AU rejected)"]``) gives its word."""
    if not peaks:
        return None
    chosen = peaks[0]
    if timestamp is not None:
        for peak in peaks:
            m = _PEAK.match(peak.strip())
            if m is not None and abs(float(m.group(1)) - timestamp) < 0.1:
                chosen = peak
                break
    m = _PEAK.match(chosen.strip())
    text = m.group(2) if m is not None else chosen
    first = text.split(",")[0].split("(")[0].strip().lower()
    return first or None


def _video(videos: Videos, name: str, source: Any, roots: list[Path], beside: Path) -> Path | None:
    if roots:
        return videos.by_stem(roots, name)
    if isinstance(source, str) and Path(source).is_absolute() and Path(source).is_file():
        return videos.file(Path(source))
    return videos.by_stem([beside], name)


def _strings(value: Any, file: Path, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(
            f"MER-Factory: {file}: {key!r} must be a list of texts, got {one_line(repr(value))[:80]}"
        )
    return list(value)


def _mapping(value: Any, file: Path, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DataError(f"MER-Factory: {file}: {key!r} must be an object, got {type(value).__name__}")
    return value


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    number = _float(value)
    return int(number) if number is not None and number.is_integer() else None
