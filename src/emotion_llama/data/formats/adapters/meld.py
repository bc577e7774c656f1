"""MELD (Poria et al. 2019): the released ``*_sent_emo.csv`` tables and their utterance clips.

Layout (``MELD.Raw`` once its three archives are unpacked)::

    ROOT/
      train_sent_emo.csv  dev_sent_emo.csv  test_sent_emo.csv
      train_splits/dia{D}_utt{U}.mp4                 (train.tar.gz)
      dev_splits_complete/dia{D}_utt{U}.mp4          (dev.tar.gz)
      output_repeated_splits_test/dia{D}_utt{U}.mp4  (test.tar.gz)

The clip folders may also sit one level down (``train/train_splits/``). The tables' columns, as
released: ``Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID, Season,
Episode, StartTime, EndTime``; the adapter needs ``Utterance, Speaker, Emotion, Sentiment,
Dialogue_ID, Utterance_ID``.
"""

from __future__ import annotations

from pathlib import Path

from emotion_llama.data.formats.adapters.common import (
    SPLIT_NAMES,
    Videos,
    check_choice,
    dataset_folder,
    finish,
    project_word,
    read_table,
)
from emotion_llama.data.formats.manifest import ManifestEntry
from emotion_llama.data.samples import DataError

#: MELD's seven emotions and three sentiments, as its tables write them.
MELD_EMOTIONS: tuple[str, ...] = ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")
MELD_SENTIMENTS: tuple[str, ...] = ("neutral", "positive", "negative")

#: Each split: its table, and its clip folder (first the released name, then one level down).
MELD_SPLITS: dict[str, tuple[str, tuple[str, ...]]] = {
    "train": ("train_sent_emo.csv", ("train_splits", "train/train_splits", "train")),
    "dev": ("dev_sent_emo.csv", ("dev_splits_complete", "dev/dev_splits_complete", "dev")),
    "test": (
        "test_sent_emo.csv",
        ("output_repeated_splits_test", "test/output_repeated_splits_test", "test"),
    ),
}

_COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")


def read_meld(
    root: str | Path, *, task: str = "emotion", require_videos: bool = False
) -> list[ManifestEntry]:
    """MELD's utterances as manifest entries, from the split tables present under ``root`` (at
    least one of ``train_sent_emo.csv``, ``dev_sent_emo.csv``, ``test_sent_emo.csv``).

    A clip is named ``{split}_dia{D}_utt{U}`` (MELD numbers dialogues per split, so
    ``dia0_utt0`` exists three times) with ``split`` ``train``, ``val`` (MELD's dev) or
    ``test``; ``subtitle`` is ``Utterance`` (repaired where the released text is UTF-8 read as
    Latin-1, ``heâ\\x80\\x99s`` -> ``he’s``), ``speaker`` is ``Speaker``. ``task="emotion"``:
    the label is ``Emotion`` in the project's words (joy -> happy, sadness -> sad, anger ->
    angry; neutral, surprise, fear, disgust as they are); ``task="sentiment"``: ``Sentiment``
    (positive, negative, neutral). MELD gives no sentiment score, so ``valence`` stays empty;
    ``StartTime``/``EndTime`` are times in the TV episode, which MELD does not ship: the clips
    are already cut, so ``start``/``end`` stay empty. A clip whose mp4 is absent gets no
    ``path`` (refused with ``require_videos``); MELD's own release lacks a few.
    """
    check_choice("MELD", "task", task, ("emotion", "sentiment"))
    root = dataset_folder(root, "MELD")
    present = {s: root / table for s, (table, _) in MELD_SPLITS.items() if (root / table).is_file()}
    if not present:
        raise DataError(
            f"MELD: {root} has no train_sent_emo.csv, dev_sent_emo.csv or test_sent_emo.csv "
            "(MELD.Raw's split tables)"
        )
    videos = Videos("MELD", require_videos)
    entries: list[ManifestEntry] = []
    for split, table in present.items():
        folders = [root / f for f in MELD_SPLITS[split][1]]
        for where, row in read_table(table, "MELD", _COLUMNS):
            dia, utt = _index(row, "Dialogue_ID", where), _index(row, "Utterance_ID", where)
            stem = f"dia{dia}_utt{utt}"
            emotion = _word(row, "Emotion", MELD_EMOTIONS, where)
            sentiment = _word(row, "Sentiment", MELD_SENTIMENTS, where)
            entries.append(
                ManifestEntry(
                    name=f"{split}_{stem}",
                    path=videos.file(*(f / f"{stem}.mp4" for f in folders)),
                    label=project_word(emotion) if task == "emotion" else sentiment,
                    subtitle=repair_text(row["Utterance"]) or None,
                    split=SPLIT_NAMES[split],
                    speaker=row["Speaker"] or None,
                    where=where,
                )
            )
    videos.finish()
    return finish(entries, "MELD", root)


def _index(row: dict[str, str], column: str, where: str) -> int:
    text = row[column]
    if not (text.isascii() and text.isdigit()):
        raise DataError(f"MELD: {where}: {column} {text!r} is not a whole number")
    return int(text)


def _word(row: dict[str, str], column: str, known: tuple[str, ...], where: str) -> str:
    word = row[column].strip().lower()
    if word not in known:
        raise DataError(f"MELD: {where}: {column} {row[column]!r} is not one of {', '.join(known)}")
    return word


def repair_text(text: str) -> str:
    """``text`` decoded again when it is UTF-8 that was read as Latin-1 (``â\\x80\\x99`` for
    ``’``); text that does not decode so (real accented letters) is kept as it is."""
    if not any("\x80" <= c <= "\xff" for c in text):
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text
