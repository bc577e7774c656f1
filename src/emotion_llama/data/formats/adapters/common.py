"""What the dataset adapters share: reading a released table with the columns it must have, finding
clip videos without requiring them, the sentiment rule, label words, and the final checks.

Every refusal is a :class:`~emotion_llama.data.samples.DataError` of one line that starts with the
dataset's name and says which file or column is missing (``MELD: .../train_sent_emo.csv:1 has no
'Emotion' column (its columns: ...)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from emotion_llama.data.formats.lists import read_csv_table
from emotion_llama.data.formats.manifest import ManifestEntry
from emotion_llama.data.samples import DataError, finite_number
from emotion_llama.files import read_text

#: Video file suffixes looked for when a dataset's clips may come in several containers.
VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".flv")

#: Dataset emotion words that have another word in the project's label sets
#: (:data:`emotion_llama.prompts.LABELS`, :data:`~emotion_llama.prompts.DFEW_LABELS`). The map is
#: one-to-one on every dataset's classes, so class-wise scores are unchanged by it.
PROJECT_WORDS: dict[str, str] = {
    "anger": "angry",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
}

#: The split names every adapter writes (a dataset's ``dev`` or ``valid`` becomes ``val``).
SPLIT_NAMES: dict[str, str] = {"train": "train", "dev": "val", "valid": "val", "val": "val", "test": "test"}


def project_word(word: str) -> str:
    """``word`` lower-cased, in the project's words where it has one (``joy`` -> ``happy``)."""
    word = word.strip().lower()
    return PROJECT_WORDS.get(word, word)


def one_line(text: str) -> str:
    """``text`` with its line breaks and tabs as spaces (for quoting file content in an error)."""
    return " ".join(text.split())


def dataset_folder(root: str | Path, dataset: str) -> Path:
    """``root`` as a folder, or the refusal naming it."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{dataset}: {root} is not a folder")
    return root


def require_file(path: Path, dataset: str, what: str) -> Path:
    """``path`` when it is a file, else the refusal: ``DATASET: no PATH (WHAT)``."""
    if not path.is_file():
        raise DataError(f"{dataset}: no {path} ({what})")
    return path


def read_lines(path: Path, dataset: str) -> list[str]:
    """The lines of a UTF-8 text file; a missing or undecodable file is the refusal naming it."""
    return read_text(path, what=f"{dataset} file", error=DataError).splitlines()


def read_table(
    path: Path, dataset: str, required: Sequence[str], optional: Sequence[str] = ()
) -> list[tuple[str, dict[str, str]]]:
    """The rows of a released CSV table, each as ``(file:line, {column: cell})`` keyed by the
    names in ``required`` and ``optional`` (as released; the header is matched ignoring case and
    surrounding spaces). The first column of ``required`` the header lacks is the refusal:
    ``DATASET: FILE:LINE has no 'COLUMN' column (its columns: ...)``. Malformed CSV (a row with
    too many fields, a quote left open) is refused naming its line."""
    try:
        header, at, rows = read_csv_table(path)
    except DataError as exc:
        raise DataError(f"{dataset}: {exc}") from None
    if not header:
        raise DataError(f"{dataset}: {path} is empty (expected the header {','.join(required)})")
    by_key = {h.strip().lower(): h for h in header}
    for column in required:
        if column.strip().lower() not in by_key:
            has = one_line(", ".join(h.strip() for h in header))
            raise DataError(f"{dataset}: {path}:{at} has no {column!r} column (its columns: {has})")
    wanted = [c for c in (*required, *optional) if c.strip().lower() in by_key]
    return [
        (f"{path}:{line}", {c: row[by_key[c.strip().lower()]].strip() for c in wanted}) for line, row in rows
    ]


def number(text: str, where: str, dataset: str, what: str) -> float:
    """``text`` as a finite number, else the refusal naming ``where``."""
    return finite_number(text, f"{dataset}: {where}: {what}")


def sentiment_label(score: float, classes: int) -> str | None:
    """The sentiment class of a score: ``classes=3``: ``positive`` above 0, ``negative`` below,
    ``neutral`` at 0; ``classes=2``: the common binary rule that leaves zeros out (``None``)."""
    if score > 0:
        return "positive"
    if score < 0:
        return "negative"
    return "neutral" if classes == 3 else None


def check_choice(dataset: str, option: str, value: object, choices: Iterable[object]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise DataError(f"{dataset}: {option} must be one of {', '.join(map(str, choices))}, not {value!r}")


class Videos:
    """Finds the clips' videos without requiring them: a clip whose video is not there gets no
    ``path`` (the manifest then names it only; commands that need the video report it). With
    ``require``, :meth:`finish` refuses the import when any is missing, naming the first."""

    def __init__(self, dataset: str, require: bool = False) -> None:
        self.dataset = dataset
        self.require = require
        self.looked = 0
        self.missing: list[str] = []
        self._index: dict[Path, dict[str, Path]] = {}

    def file(self, *candidates: Path) -> Path | None:
        """The first of ``candidates`` that is a file."""
        self.looked += 1
        for path in candidates:
            if path.is_file():
                return path
        self.missing.append(str(candidates[0]) if candidates else "?")
        return None

    def by_stem(self, folders: Sequence[Path], stem: str) -> Path | None:
        """The video ``STEM.*`` (any of :data:`VIDEO_SUFFIXES`) in the first of ``folders`` that
        has one; each folder is listed once."""
        self.looked += 1
        for folder in folders:
            found = self._listing(folder).get(stem)
            if found is not None:
                return found
        self.missing.append(f"{stem}.* in {folders[0] if folders else '?'}")
        return None

    def _listing(self, folder: Path) -> dict[str, Path]:
        if folder not in self._index:
            found: dict[str, Path] = {}
            try:
                for p in sorted(folder.iterdir()):
                    if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".") and p.is_file():
                        found.setdefault(p.stem, p)
            except OSError:
                pass
            self._index[folder] = found
        return self._index[folder]

    def finish(self) -> None:
        if self.require and self.missing:
            raise DataError(
                f"{self.dataset}: {len(self.missing)} of {self.looked} clips have no video "
                f"(the first: {self.missing[0]}); import without require_videos to list them anyway"
            )


def finish(entries: list[ManifestEntry], dataset: str, source: Path) -> list[ManifestEntry]:
    """``entries`` once checked: at least one, and no clip name twice (the manifest files
    features under the name)."""
    if not entries:
        raise DataError(f"{dataset}: {source} holds no clips")
    seen: dict[str, str] = {}
    for e in entries:
        if e.name in seen:
            raise DataError(f"{dataset}: {e.where}: the clip {e.name!r} is also on {seen[e.name]}")
        seen[e.name] = e.where
    return entries
