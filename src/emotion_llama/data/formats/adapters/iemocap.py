"""IEMOCAP (Busso et al. 2008): the session folders of ``IEMOCAP_full_release``.

Layout::

    ROOT/                                    (IEMOCAP_full_release, or the folder holding it)
      Session1/ .. Session5/
        dialog/EmoEvaluation/{dialog}.txt    "[START - END]<TAB>TURN<TAB>emo<TAB>[V, A, D]" lines
        dialog/transcriptions/{dialog}.txt   "TURN [START-END]: words" lines (optional)
        dialog/avi/DivX/{dialog}.avi         the dialogue's video (optional)
        sentences/wav/{dialog}/{turn}.wav    each turn's audio (optional)

The class sets are the two conventions of the literature: 4 classes (the utterances labelled
neutral, happy, excited, angry or sad, excited merged into happy: 5,531 utterances) and 6 classes
(neutral, happy, excited, angry, sad, frustrated: 7,433 utterances, as DialogueRNN and its
successors use). Turns with any other majority label (``xxx`` = no agreement, ``oth``,
``sur``, ``fea``, ``dis``) are left out.
"""

from __future__ import annotations

import re
from pathlib import Path

from emotion_llama.data.formats.adapters.common import (
    Videos,
    check_choice,
    dataset_folder,
    finish,
    number,
    read_lines,
)
from emotion_llama.data.formats.manifest import ManifestEntry
from emotion_llama.data.samples import DataError

#: IEMOCAP's label codes -> the 4-class set (excited merged into happy).
IEMOCAP4: dict[str, str] = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}
#: IEMOCAP's label codes -> the 6-class set.
IEMOCAP6: dict[str, str] = {
    "neu": "neutral",
    "hap": "happy",
    "exc": "excited",
    "ang": "angry",
    "sad": "sad",
    "fru": "frustrated",
}

_TURN = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]\s*$")
_TRANSCRIPT = re.compile(r"^(\S+)\s+\[[^\]]*\]:\s?(.*)$")
_TURN_FORMAT = "'[START - END]<TAB>TURN_NAME<TAB>emo<TAB>[V, A, D]'"


def read_iemocap(
    root: str | Path,
    *,
    classes: int = 4,
    test_session: int | None = 5,
    media: str = "auto",
    require_videos: bool = False,
) -> list[ManifestEntry]:
    """IEMOCAP's turns in the ``classes`` (4 or 6) set as manifest entries, from every
    ``Session1`` .. ``Session5`` folder present.

    A clip is the turn (``Ses01F_impro01_F000``); ``speaker`` is the actor (``Ses01_F``: the
    session and the turn's F/M), ``valence`` the turn's V of ``[V, A, D]`` (1-5 scale),
    ``subtitle`` its line of ``dialog/transcriptions``. ``split``: ``test`` for the turns of
    session ``test_session`` and ``train`` for the others (the usual leave-session-5-out split);
    ``test_session=None`` names each turn's session instead (``session1`` ..) for
    cross-validation. ``media``: ``video`` cuts the turn from its dialogue's DivX video
    (``path`` the .avi, ``start``/``end`` the turn's seconds), ``audio`` takes the turn's wav,
    ``auto`` the video when present, else the wav. A turn with neither gets no ``path``
    (refused with ``require_videos``).
    """
    check_choice("IEMOCAP", "classes", classes, (4, 6))
    check_choice("IEMOCAP", "media", media, ("auto", "video", "audio"))
    check_choice("IEMOCAP", "test_session", test_session, (None, 1, 2, 3, 4, 5))
    root = dataset_folder(root, "IEMOCAP")
    if (
        not any((root / f"Session{k}").is_dir() for k in range(1, 6))
        and (root / "IEMOCAP_full_release").is_dir()
    ):
        root = root / "IEMOCAP_full_release"
    sessions = [(k, root / f"Session{k}") for k in range(1, 6) if (root / f"Session{k}").is_dir()]
    if not sessions:
        raise DataError(
            f"IEMOCAP: {root} has no Session1 .. Session5 folder "
            "(expected Session1/dialog/EmoEvaluation/*.txt)"
        )
    mapping = IEMOCAP4 if classes == 4 else IEMOCAP6
    videos = Videos("IEMOCAP", require_videos)
    entries: list[ManifestEntry] = []
    for k, session in sessions:
        evaluation = session / "dialog" / "EmoEvaluation"
        if not evaluation.is_dir():
            raise DataError(f"IEMOCAP: {session} has no dialog/EmoEvaluation folder")
        files = sorted(p for p in evaluation.glob("*.txt") if not p.name.startswith("."))
        if not files:
            raise DataError(f"IEMOCAP: {evaluation} has no {{dialog}}.txt evaluation file")
        split = f"session{k}" if test_session is None else "test" if k == test_session else "train"
        for file in files:
            dialog = file.stem
            words = _transcript(session / "dialog" / "transcriptions" / f"{dialog}.txt")
            avi = session / "dialog" / "avi" / "DivX" / f"{dialog}.avi"
            for where, start, end, turn, code, valence in _turns(file):
                label = mapping.get(code)
                if label is None:
                    continue
                wav = session / "sentences" / "wav" / dialog / f"{turn}.wav"
                choices = {"video": (avi,), "audio": (wav,), "auto": (avi, wav)}[media]
                path = videos.file(*choices)
                cut = path is not None and path == avi
                entries.append(
                    ManifestEntry(
                        name=turn,
                        path=path,
                        label=label,
                        subtitle=words.get(turn),
                        split=split,
                        valence=valence,
                        speaker=_speaker(turn),
                        start=start if cut else None,
                        end=end if cut else None,
                        where=where,
                    )
                )
    videos.finish()
    return finish(entries, "IEMOCAP", root)


def read_iemocap4(
    root: str | Path, *, test_session: int | None = 5, media: str = "auto", require_videos: bool = False
) -> list[ManifestEntry]:
    """IEMOCAP in 4 classes: neutral, happy (with excited), angry, sad (:func:`read_iemocap`)."""
    return read_iemocap(
        root, classes=4, test_session=test_session, media=media, require_videos=require_videos
    )


def read_iemocap6(
    root: str | Path, *, test_session: int | None = 5, media: str = "auto", require_videos: bool = False
) -> list[ManifestEntry]:
    """IEMOCAP in 6 classes: neutral, happy, excited, angry, sad, frustrated (:func:`read_iemocap`)."""
    return read_iemocap(
        root, classes=6, test_session=test_session, media=media, require_videos=require_videos
    )


def _turns(file: Path) -> list[tuple[str, float, float, str, str, float]]:
    """``(file:line, start, end, turn, code, valence)`` of every turn line (``[`` first) of an
    EmoEvaluation file; the other lines (``%`` header, the annotators' ``C-``/``A-`` lines) are
    not read."""
    turns: list[tuple[str, float, float, str, str, float]] = []
    for i, line in enumerate(read_lines(file, "IEMOCAP"), start=1):
        if not line.startswith("["):
            continue
        where = f"{file}:{i}"
        m = _TURN.match(line)
        if m is None:
            raise DataError(f"IEMOCAP: {where}: expected {_TURN_FORMAT}, got {line.strip()!r}")
        start = number(m.group(1), where, "IEMOCAP", "start")
        end = number(m.group(2), where, "IEMOCAP", "end")
        vad = [v.strip() for v in m.group(5).split(",")]
        if len(vad) != 3:
            raise DataError(f"IEMOCAP: {where}: expected [V, A, D], got [{m.group(5)}]")
        turns.append(
            (where, start, end, m.group(3), m.group(4).lower(), number(vad[0], where, "IEMOCAP", "V"))
        )
    if not turns:
        raise DataError(f"IEMOCAP: {file} has no turn line {_TURN_FORMAT}")
    return turns


def _transcript(file: Path) -> dict[str, str]:
    """``{turn: words}`` of a transcription file (``{}`` when there is none); lines that are not
    a turn (``M: breathing``) are skipped."""
    if not file.is_file():
        return {}
    words: dict[str, str] = {}
    for line in read_lines(file, "IEMOCAP"):
        m = _TRANSCRIPT.match(line.strip())
        if m is not None and m.group(2).strip():
            words.setdefault(m.group(1), m.group(2).strip())
    return words


def _speaker(turn: str) -> str | None:
    """``Ses01F_impro01_M003`` -> ``Ses01_M``: the session's actor of that gender."""
    last = turn.rsplit("_", 1)[-1]
    if len(turn) < 5 or not last or last[0] not in "FM":
        return None
    return f"{turn[:5]}_{last[0]}"
