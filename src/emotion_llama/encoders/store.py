"""Feature stores: the authors' released layout and the project's own, behind one interface.

Authors' layout (SPEC 5), one ``(1024,)`` ``.npy`` per clip and modality::

    HL-UTT/{name}.npy        audio    (HuBERT-large, mean over time)
    mae_340_UTT/{name}.npy   local    (MAE ViT-L on face crops, mean over frames)
    maeV_399_UTT/{name}.npy  temporal (VideoMAE ViT-L on 16 face frames)
    first_frames/{name}.jpg  the frame for the global encoder (as the authors released them)

Users hold these released features; reading this layout directly means their downloads work as
they are. The project's own layout keeps a clip in one file and says how it was made::

    manifest.json            encoders, frame choice, dimensions; per clip: sha256, source video
    clips/{name}.npz         local, temporal, audio (float32 vectors)
    frames/{name}.jpg        the frame for the global encoder
    clues/{name}.json        what perception found (faces, AU timeline, peak frame, transcript)

Both write atomically (temporary file, then rename) and record finished clips in
``manifest.json``, so an interrupted extraction resumes without redoing or half-writing a clip.
A missing or malformed feature raises :class:`FeatureError` naming the file; it is never
replaced by zeros.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.files import atomic_write_bytes, clean_partial
from emotion_llama.names import json_bytes

__all__ = ["atomic_write_bytes"]  # kept here too: the stores' writer

AUTHORS_DIRS = {"audio": "HL-UTT", "local": "mae_340_UTT", "temporal": "maeV_399_UTT"}
MODALITIES = ("local", "temporal", "audio")
MANIFEST = "manifest.json"
FORMAT = "emotion-llama-features/1"


class FeatureError(EmotionLlamaError):
    """A feature file is missing or unreadable."""


@dataclass(frozen=True)
class ClipFeatures:
    local: np.ndarray
    temporal: np.ndarray
    audio: np.ndarray


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a, dtype=np.float32).reshape(-1))
    return buf.getvalue()


def jpeg_bytes(rgb: np.ndarray, quality: int = 95) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class FeatureStore:
    """Common behaviour: the manifest, frames and clue records. Subclasses place the vectors."""

    layout = "base"

    def __init__(self, root: str | Path, dims: dict[str, int] | None = None) -> None:
        self.root = Path(root)
        self.dims = dims
        self._manifest: dict[str, Any] | None = None

    # -- manifest --------------------------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any]:
        if self._manifest is None:
            path = self.root / MANIFEST
            if path.is_file():
                try:
                    self._manifest = json.loads(path.read_text(encoding="utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise FeatureError(f"{path}: not a readable manifest ({exc})") from None
            else:
                self._manifest = {"format": FORMAT, "layout": self.layout, "clips": {}}
        return self._manifest

    def set_info(self, **info: Any) -> None:
        """Record how the features are made (encoders, frame choice, dimensions)."""
        m = self.manifest
        for k, v in info.items():
            if k in m and m[k] != v and m.get("clips"):
                raise FeatureError(
                    f"{self.root / MANIFEST}: {k} was {m[k]!r} when these features were made, now {v!r}; "
                    "use another output folder"
                )
            m[k] = v
        self._save_manifest()

    def _save_manifest(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.manifest, indent=1, sort_keys=True) + "\n"
        atomic_write_bytes(self.root / MANIFEST, text.encode("utf-8"))

    def is_done(self, name: str) -> bool:
        """Finished and intact: in the manifest, and the vectors still match their checksum."""
        entry = self.manifest.get("clips", {}).get(name)
        return bool(entry) and self.has(name) and entry.get("sha256") == self._checksum(name)

    # -- vectors (subclasses) --------------------------------------------------------------------
    def has(self, name: str) -> bool:
        raise NotImplementedError

    def read(self, name: str) -> ClipFeatures:
        raise NotImplementedError

    def _write_vectors(self, name: str, features: ClipFeatures) -> None:
        raise NotImplementedError

    def _vector_files(self, name: str) -> list[Path]:
        raise NotImplementedError

    def _checksum(self, name: str) -> str:
        h = hashlib.sha256()
        for p in self._vector_files(name):
            h.update(p.read_bytes())
        return h.hexdigest()

    def _check_dims(self, name: str, modality: str, a: np.ndarray, where: Path) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32).reshape(-1)
        want = None if self.dims is None else self.dims.get(modality)
        if want is not None and a.shape[0] != want:
            raise FeatureError(
                f"{where}: {modality} feature has {a.shape[0]} values, the model expects {want}"
            )
        if not np.all(np.isfinite(a)):
            raise FeatureError(f"{where}: {modality} feature of clip {name!r} holds NaN or inf")
        return a

    # -- whole clips -----------------------------------------------------------------------------
    def frame_path(self, name: str) -> Path:
        raise NotImplementedError

    def clue_path(self, name: str) -> Path:
        return self.root / "clues" / f"{name}.json"

    def write(
        self,
        name: str,
        features: ClipFeatures,
        *,
        frame: np.ndarray | None = None,
        clues: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> None:
        """Vectors, frame and clues first, each atomically; the manifest entry last, so a clip
        is either finished or absent from the manifest."""
        for m in MODALITIES:
            self._check_dims(name, m, getattr(features, m), self.root)
        self._write_vectors(name, features)
        if frame is not None:
            atomic_write_bytes(self.frame_path(name), jpeg_bytes(frame))
        if clues is not None:
            atomic_write_bytes(self.clue_path(name), json_bytes(clues, indent=1, default=_json_default))
        entry: dict[str, Any] = {"sha256": self._checksum(name)}
        if source is not None:
            entry["source"] = source
        self.manifest.setdefault("clips", {})[name] = entry
        self._save_manifest()

    def read_frame(self, name: str) -> np.ndarray:
        from emotion_llama.media.frames import read_frame

        return read_frame(self.frame_path(name))

    def names(self) -> list[str]:
        raise NotImplementedError

    def clip_files(self, name: str) -> list[Path]:
        """The files of clip ``name`` that exist: its vectors, its frame, its clue record."""
        candidates = [*self._vector_files(name), self.frame_path(name), self.clue_path(name)]
        return [p for p in candidates if p.is_file()]

    def info(self) -> dict[str, Any]:
        """How the features were made (what :meth:`set_info` recorded), without the clips."""
        return {k: v for k, v in self.manifest.items() if k not in ("clips", "format")}

    def clean_partial(self) -> int:
        """Remove temporary files left by an interrupted run; returns how many."""
        return clean_partial(self.root)


class AuthorsLayoutStore(FeatureStore):
    """``{root}/{HL-UTT,mae_340_UTT,maeV_399_UTT}/{name}.npy`` and ``first_frames/{name}.jpg``."""

    layout = "authors"

    def path(self, modality: str, name: str) -> Path:
        return self.root / AUTHORS_DIRS[modality] / f"{name}.npy"

    def _vector_files(self, name: str) -> list[Path]:
        return [self.path(m, name) for m in MODALITIES]

    def frame_path(self, name: str) -> Path:
        return self.root / "first_frames" / f"{name}.jpg"

    def has(self, name: str) -> bool:
        return all(p.is_file() for p in self._vector_files(name))

    def read(self, name: str) -> ClipFeatures:
        arrays = {}
        for m in MODALITIES:
            p = self.path(m, name)
            if not p.is_file():
                raise FeatureError(f"{p}: missing {m} feature for clip {name!r}")
            try:
                a = np.load(p, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise FeatureError(f"{p}: not a readable .npy file ({exc})") from None
            arrays[m] = self._check_dims(name, m, a, p)
        return ClipFeatures(**arrays)

    def _write_vectors(self, name: str, features: ClipFeatures) -> None:
        for m in MODALITIES:
            atomic_write_bytes(self.path(m, name), _npy_bytes(getattr(features, m)))

    def names(self) -> list[str]:
        folder = self.root / AUTHORS_DIRS["audio"]
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.npy") if self.has(p.stem))


class NativeStore(FeatureStore):
    """``clips/{name}.npz`` with the three vectors, ``frames/{name}.jpg``, ``clues/{name}.json``."""

    layout = "native"

    def clip_path(self, name: str) -> Path:
        return self.root / "clips" / f"{name}.npz"

    def _vector_files(self, name: str) -> list[Path]:
        return [self.clip_path(name)]

    def frame_path(self, name: str) -> Path:
        return self.root / "frames" / f"{name}.jpg"

    def has(self, name: str) -> bool:
        return self.clip_path(name).is_file()

    def read(self, name: str) -> ClipFeatures:
        p = self.clip_path(name)
        if not p.is_file():
            raise FeatureError(f"{p}: missing features for clip {name!r}")
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {m: self._check_dims(name, m, z[m], p) for m in MODALITIES}
        except KeyError as exc:
            raise FeatureError(f"{p}: lacks the {exc} feature") from None
        except (ValueError, OSError, EOFError) as exc:
            raise FeatureError(f"{p}: not a readable .npz file ({exc})") from None
        return ClipFeatures(**arrays)

    def _write_vectors(self, name: str, features: ClipFeatures) -> None:
        buf = io.BytesIO()
        np.savez(
            buf, **{m: np.asarray(getattr(features, m), dtype=np.float32).reshape(-1) for m in MODALITIES}
        )
        atomic_write_bytes(self.clip_path(name), buf.getvalue())

    def names(self) -> list[str]:
        return sorted(self.manifest.get("clips", {}))


def open_store(
    root: str | Path, dims: dict[str, int] | None = None, layout: str | None = None
) -> FeatureStore:
    """The store at ``root``: ``layout`` when given, else what its manifest or folders say
    (the authors' folders, or the project's ``clips/``); an empty folder is native."""
    root = Path(root)
    if layout is None:
        manifest = root / MANIFEST
        if manifest.is_file():
            try:
                layout = json.loads(manifest.read_text(encoding="utf-8")).get("layout")
            except (json.JSONDecodeError, UnicodeDecodeError):
                layout = None
        if layout is None:
            layout = "authors" if any((root / d).is_dir() for d in AUTHORS_DIRS.values()) else "native"
    if layout == "authors":
        return AuthorsLayoutStore(root, dims)
    if layout == "native":
        return NativeStore(root, dims)
    raise FeatureError(f"{root}: unknown feature layout {layout!r} (authors or native)")


def merge_stores(parts: list[FeatureStore], into: FeatureStore) -> list[str]:
    """Copy the finished clips of ``parts`` (the shards' stores) into ``into``, each clip's files
    byte for byte, then their manifest entries: the store an unsharded run writes. The parts must
    have been made the same way (encoders, frame, dimensions: :meth:`FeatureStore.info`). A clip
    ``into`` already holds intact with the same checksum is left as it is (a rerun copies
    nothing); one it holds with other features is an error. Returns the names copied."""
    infos = {json.dumps(p.info(), sort_keys=True): p for p in parts if p.manifest.get("clips")}
    if len(infos) > 1:
        a, b = list(infos.values())[:2]
        raise FeatureError(f"{a.root} and {b.root}: made with different settings; they are not one store")
    if infos:
        into.set_info(**next(iter(infos.values())).info())
    copied: list[str] = []
    clips = into.manifest.setdefault("clips", {})
    for part in parts:
        for name, entry in sorted(part.manifest.get("clips", {}).items()):
            if not part.is_done(name):
                continue  # listed but its files changed since: the shard's rerun redoes it
            if into.is_done(name):
                if clips[name].get("sha256") != entry.get("sha256"):
                    raise FeatureError(
                        f"{into.root}: clip {name!r} is there with other features than {part.root}'s"
                    )
                continue
            for f in part.clip_files(name):
                atomic_write_bytes(into.root / f.relative_to(part.root), f.read_bytes())
            clips[name] = dict(entry)
            copied.append(name)
    into._save_manifest()  # the entries last: a merge stopped midway leaves files, not entries
    return copied


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
