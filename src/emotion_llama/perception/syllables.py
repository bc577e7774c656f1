"""Syllables of a text by a spelling heuristic, for the speaking rate of
:func:`~emotion_llama.perception.prosody.measure_prosody` (re-exported there as
:func:`~emotion_llama.perception.prosody.count_syllables`). Pure Python, no I/O.

The rules (English vowel groups with hiatus and silent-ending corrections, one syllable per CJK
character, digits by their English names, a floor of one per run of another script) and how they
were checked are in the :mod:`emotion_llama.perception.prosody` docstring, "Speaking rate".
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["count_syllables"]

# Syllables in the spoken name of each digit ("zero" and "seven" have two).
_DIGIT_SYLLABLES = {"0": 2, "7": 2}
_CJK = (
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"  # Han ideographs
    "\uac00-\ud7a3"  # Hangul syllable blocks
    "\u3041-\u3096\u30a1-\u30fa"  # kana
)
# Small kana and the long-vowel mark lengthen or glide into the mora before: no syllable of their own.
_NOT_SYLLABLES = frozenset("ぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶ")
_RUNS = re.compile(
    rf"(?P<latin>[a-z]+(?:'[a-z]+)*)|(?P<digit>[0-9])|(?P<cjk>[{_CJK}])|(?P<other>[^\W\d_a-z{_CJK}]+)"
)
_VOWELS = frozenset("aeiou")
# Abbreviations Whisper writes for words said in full (Mr. = mis-ter), and "OK" (o-kay).
_ABBREVIATIONS = {"mr": 2, "mrs": 2, "dr": 2, "jr": 2, "st": 1, "vs": 2, "etc": 4, "ok": 2}
# i + vowel is two syllables (pi-a-no, ra-di-o, me-di-um) except after c, g, s, t, x, where the
# i is a glide or part of a "sh"/"zh" sound (so-cial, na-tion, re-gion, vi-sion, anx-ious).
_HIATUS = re.compile(r"(?<![cgstx])i[aou]")
# u + a is two syllables (ac-tu-al, u-su-al, sit-u-a-tion) except after q and g (qua-li-ty, lan-guage).
_UA = re.compile(r"(?<![qg])ua")


def _fold(text: str) -> str:
    """Lower case, compatibility forms (full-width digits) folded, accents taken off Latin letters
    (café -> cafe; Hangul blocks are kept whole)."""
    out = []
    for ch in unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'"):
        base = unicodedata.normalize("NFD", ch)
        out.append(base[0] if not ch.isascii() and "a" <= base[0] <= "z" else ch)
    return "".join(out)


def _english_syllables(word: str) -> int:
    w = word.replace("'", "")
    if w in _ABBREVIATIONS:
        return _ABBREVIATIONS[w]
    # y is a consonant before a vowel at the start of a word or after a vowel (yes, be-yond,
    # play-er), otherwise a vowel (my, gym, cry-ing).
    vowel = [
        c in _VOWELS
        or (c == "y" and not ((i == 0 or w[i - 1] in _VOWELS) and i + 1 < len(w) and w[i + 1] in _VOWELS))
        for i, c in enumerate(w)
    ]
    n = sum(1 for i, v in enumerate(vowel) if v and (i == 0 or not vowel[i - 1]))
    # Hiatus: one vowel group that is two syllables.
    n += len(_HIATUS.findall(w)) + len(_UA.findall(w))
    if len(w) >= 4 and w.endswith("ing") and vowel[-4]:
        n += 1  # be-ing, go-ing, cry-ing
    # Silent endings, where the final e is a vowel group of its own after a consonant:
    if (
        n > 1
        and len(w) >= 3
        and w.endswith("e")
        and not vowel[-2]
        and not (w.endswith("le") and not vowel[-3])
    ):
        n -= 1  # make, there, whole; but ta-ble, lit-tle
    if n > 1 and len(w) >= 4 and not vowel[-3]:
        if w.endswith("es") and not (w[-3] in "sxzcg" or w[-4:-2] in ("ch", "sh") or w.endswith("les")):
            n -= 1  # makes, loves, eyes; but box-es, pla-ces, wish-es, ta-bles
        elif w.endswith("ed") and w[-3] not in "td":
            n -= 1  # loved, played; but want-ed, need-ed
    return max(n, 1)


def count_syllables(text: str) -> int:
    """Syllables in ``text`` by a spelling heuristic (:mod:`~emotion_llama.perception.prosody`
    docstring, "Speaking rate"): English vowel groups with silent-e rules, one per CJK character,
    digits by their English names."""
    total = 0
    for run in _RUNS.finditer(_fold(text)):
        kind = run.lastgroup
        if kind == "latin":
            total += _english_syllables(run.group())
        elif kind == "digit":
            total += _DIGIT_SYLLABLES.get(run.group(), 1)
        elif kind == "cjk":
            total += run.group() not in _NOT_SYLLABLES
        else:
            total += 1  # another script: a floor of one per run of letters
    return total
