"""What the training readers share: the feature store of a source and the clips found in it.

Every reader goes through :class:`ClipResolver`, so a clip whose features or frame are missing is
reported once (a :class:`~emotion_llama.data.samples.ReadReport` line, logged) and skipped, never
zero-filled. The helpers: a source's feature store (:func:`open_feature_store`), a split of
``split.json`` (:func:`restrict_to_split`), the subtitles beside a list (:func:`subtitles_for`),
label words as targets (:func:`label_target`, SPEC 2.3) and emotion samples from
``(name, target)`` rows (:func:`emotion_samples`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.data.formats.lists import find_frame_source, find_subtitles, read_subtitles
from emotion_llama.data.samples import LOG_SKIPPED, ReadReport, TrainDataError, TrainSample, finish_report
from emotion_llama.encoders.store import ClipFeatures, FeatureError, FeatureStore, open_store
from emotion_llama.files import read_json
from emotion_llama.prompts import normalize_target

log = logging.getLogger(__name__)


class ClipResolver:
    """Features and frame of each clip from one store, read once per clip.

    A clip whose features are missing or unreadable, or that has no frame, is reported once: a
    line naming the clip and the path tried goes to ``report.skipped`` (and ``warnings`` when
    given) and to the log; :meth:`get` then returns ``None`` for it, every time. Frames are
    looked for as the store names them, then as ``first_frames/``, ``frames/`` or ``video/``
    files in the store and in ``frame_roots``.
    """

    def __init__(
        self,
        store: FeatureStore,
        report: ReadReport,
        *,
        frame_roots: Iterable[Path] = (),
        warnings: list[str] | None = None,
    ) -> None:
        self.store = store
        self.report = report
        self.frame_roots = [store.root, *(Path(r) for r in frame_roots if Path(r) != store.root)]
        self.warnings = warnings
        self._cache: dict[str, tuple[ClipFeatures, Path] | None] = {}

    def has(self, name: str) -> bool:
        """Whether the store holds vectors for ``name`` (no report, no caching)."""
        return self.store.has(name)

    def get(self, name: str, frame: Path | None = None) -> tuple[ClipFeatures, Path] | None:
        """``(features, frame path)``, or ``None`` for a skipped clip. ``frame`` is an explicit
        frame file, used before the store's."""
        if name in self._cache:
            return self._cache[name]
        result: tuple[ClipFeatures, Path] | None = None
        try:
            feats = self.store.read(name)
        except FeatureError as exc:
            self._skip(name, str(exc))
        else:
            found = self._frame(name, frame)
            if found is None:
                tried = frame if frame is not None else self.store.frame_path(name)
                self._skip(name, f"no frame at {tried} (nor first_frames/, frames/ or video/ files)")
            else:
                result = (feats, found)
        self._cache[name] = result
        return result

    def _frame(self, name: str, frame: Path | None) -> Path | None:
        if frame is not None:
            return frame if frame.is_file() else None
        own = self.store.frame_path(name)
        if own.is_file():
            return own
        for root in self.frame_roots:
            src = find_frame_source(root, name)
            if src is not None:
                return src
        return None

    def _skip(self, name: str, why: str) -> None:
        message = f"skipped clip {name!r}: {why}"
        n = len(self.report.skipped)
        if n < LOG_SKIPPED:
            log.warning("%s: %s", self.report.source, message)
        else:
            log.debug("%s: %s", self.report.source, message)
        self.report.skipped.append(message)
        if self.warnings is not None:
            self.warnings.append(message)

    def finish(self, samples: Sequence[TrainSample]) -> None:
        """Count ``samples`` into the report and log its summary line."""
        finish_report(self.report, samples)


def feature_dims(config: EmotionLlamaConfig) -> dict[str, int]:
    f = config.features
    return {"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim}


def open_feature_store(root: str | Path, config: EmotionLlamaConfig) -> FeatureStore:
    """The store at ``root`` with the model's dimensions; a missing folder is an error rather
    than a store in which every clip is missing."""
    root = Path(root)
    if not root.is_dir():
        raise TrainDataError(f"{root}: no such feature folder")
    return open_store(root, feature_dims(config))


def read_json_dict(path: Path) -> dict[str, Any]:
    data = read_json(path, error=TrainDataError)
    if not isinstance(data, dict):
        raise TrainDataError(f"{path}: expected a JSON object keyed by clip name")
    return data


def restrict_to_split(names: Sequence[str], split_path: Path, split: str) -> list[str]:
    """The names listed under ``split`` in the JSON file ``split_path`` (``{split: [names]}``)."""
    splits = read_json_dict(split_path)
    if split not in splits:
        raise TrainDataError(f"{split_path}: no split {split!r} (has {', '.join(splits)})")
    wanted = set(splits[split])
    return [n for n in names if n in wanted]


def locate(path: Path) -> tuple[Path, Path | None]:
    """``(folder, file)``: a file and its folder, or a folder and ``None``."""
    if path.is_file():
        return path.parent, path
    if path.is_dir():
        return path, None
    raise TrainDataError(f"{path}: no such file or folder")


def subtitles_for(explicit: str | Path | None, folder: Path) -> dict[str, str]:
    if explicit is not None:
        return read_subtitles(explicit)
    found = find_subtitles(folder)
    return read_subtitles(found) if found is not None else {}


def label_target(label: str, where: str) -> str:
    target = normalize_target(label)
    if not target:
        raise TrainDataError(f"{where}: label {label!r} is empty once normalised")
    return target


def emotion_samples(
    rows: Sequence[tuple[str, str]],
    resolver: ClipResolver,
    subtitles: Mapping[str, str],
    instruction: str | None = None,
) -> list[TrainSample]:
    """One emotion sample per ``(name, normalised label)`` row whose clip resolves."""
    samples: list[TrainSample] = []
    for name, target in rows:
        found = resolver.get(name)
        if found is None:
            continue
        feats, frame = found
        samples.append(
            TrainSample(name, subtitles.get(name, ""), "emotion", target, frame, feats, instruction)
        )
    return samples
