"""The clues of a MERR caption in Chinese (``annotate --clue-language zh``). Pure functions, no torch.

The MER datasets are Chinese TV series; a Chinese dataset may want its coarse captions in Chinese.
The record keeps its clues in English (``visual_prior_list``, ``audio_prior_list``,
``visual_expression``, ``audio_tone``: the fusion and the faithfulness rules read them), and only
the caption is written in the clue language, from those English phrases through the tables below:

* :data:`AU_PHRASES_ZH`: the 18 action unit phrases of
  :data:`~emotion_llama.perception.action_units.AU_NAMES` and the eye phrases of
  :meth:`~emotion_llama.perception.action_units.EyeEvents.phrases`;
* :data:`TONE_WORDS_ZH`: every tone word :func:`~emotion_llama.perception.prosody.describe_tone`
  writes, and :data:`MODERATE_TONE_ZH` for its "a voice of moderate pitch, loudness and pace".

The Chinese caption (:func:`coarse_caption_zh`) follows the English template sentence by sentence::

    视频中的人物：{vo}。人物的表情和动作包括{ve}，说话时{at}。说道：{st}

with the same rule for absent parts (their clause is left out). The visual objective (a
vision-language model's text) and the subtitle are inserted as they are, in whatever language
they come. A phrase missing from the tables (a new one an AU source adds) stays in English rather
than being dropped; the tests check that every phrase the builder writes has its Chinese one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from emotion_llama.annotate.clues import CaptionText, coarse_caption
from emotion_llama.errors import EmotionLlamaError

#: The languages of ``--clue-language``; English is the default and the MERR original.
CLUE_LANGUAGES: tuple[str, ...] = ("en", "zh")

#: Facial action phrases (FACS names as the builder writes them) and eye phrases -> Chinese.
AU_PHRASES_ZH: dict[str, str] = {
    "inner brow raiser": "眉毛内侧上扬",
    "outer brow raiser": "眉毛外侧上扬",
    "brow lowerer": "皱眉",
    "upper lid raiser": "上眼睑上抬",
    "cheek raiser": "脸颊上抬",
    "lid tightener": "眼睑收紧",
    "nose wrinkler": "皱鼻",
    "upper lip raiser": "上唇上抬",
    "lip corner puller": "嘴角上扬",
    "dimpler": "挤出酒窝",
    "lip corner depressor": "嘴角下拉",
    "chin raiser": "下巴上抬",
    "lip stretcher": "嘴唇横向拉伸",
    "lip tightener": "嘴唇收紧",
    "lips part": "双唇分开",
    "jaw drop": "下颌下垂",
    "lip suck": "抿唇",
    "blink": "眨眼",
    "eyes closed": "闭眼",
    "frequent blinking": "频繁眨眼",
}

#: Tone words of :func:`~emotion_llama.perception.prosody.describe_tone` -> Chinese, each a short
#: predicate that reads after "说话时" ("when speaking").
TONE_WORDS_ZH: dict[str, str] = {
    "very low-pitched": "音调很低",
    "low-pitched": "音调低",
    "high-pitched": "音调高",
    "very high-pitched": "音调很高",
    "rough": "声音粗糙",
    "breathy": "带气声",
    "hoarse": "声音嘶哑",
    "very soft": "声音很轻",
    "soft": "声音轻",
    "loud": "声音响亮",
    "very loud": "声音非常响亮",
    "very slow": "语速很慢",
    "slow": "语速慢",
    "fast": "语速快",
    "very fast": "语速很快",
    "very monotone": "语调非常平淡",
    "monotone": "语调平淡",
    "lively": "语调生动",
    "very lively": "语调非常生动",
}

#: The tone of a voice that no measure sets apart ("a voice of moderate pitch, loudness and pace").
MODERATE_TONE_ZH = "音调、音量和语速适中"

# The enumeration comma between listed phrases, the full stop and colon of Chinese text.
_LIST_SEP = "、"
_FULL_STOP = "。"
_TRAILING_STOPS = (".", "。")


def check_clue_language(language: str, what: str = "clue language") -> str:
    """``language`` if it is one of :data:`CLUE_LANGUAGES`, else a one-line error naming ``what``
    (the option, for the command line)."""
    if language not in CLUE_LANGUAGES:
        raise EmotionLlamaError(
            f"{what} {language!r}: choose one of {', '.join(CLUE_LANGUAGES)} (en is the default)"
        )
    return language


def _strip(text: str | None, trim_stop: bool) -> str | None:
    if text is None:
        return None
    text = text.strip()
    if trim_stop and text.endswith(_TRAILING_STOPS) and not text.endswith(".."):
        text = text[:-1].rstrip()
    return text or None


def expression_zh(phrases: Sequence[str]) -> str | None:
    """The facial and eye phrases in Chinese, joined by the enumeration comma; ``None`` for none."""
    out = [AU_PHRASES_ZH.get(p.strip(), p.strip()) for p in phrases if p.strip()]
    return _LIST_SEP.join(out) or None


def tone_zh(tone: str | None, tone_words: Sequence[str]) -> str | None:
    """The tone clue in Chinese: ``tone_words`` (the record's ``audio_prior_list``) translated and
    joined; :data:`MODERATE_TONE_ZH` for a measured voice without a tone word; ``None`` when there
    is no tone clue (``tone`` is ``None``: no voiced speech)."""
    if _strip(tone, trim_stop=False) is None:
        return None
    words = [TONE_WORDS_ZH.get(w.strip(), w.strip()) for w in tone_words if w.strip()]
    return _LIST_SEP.join(words) if words else MODERATE_TONE_ZH


#: The coarse caption's sentences in Chinese (the same sentences as SPEC's English ones).
CAPTION_ZH = CaptionText(
    objective="视频中的人物：{vo}" + _FULL_STOP,
    both="人物的表情和动作包括{ve}，说话时{at}" + _FULL_STOP,
    expression="人物的表情和动作包括{ve}" + _FULL_STOP,
    tone="人物说话时{at}" + _FULL_STOP,
    said="说道：{st}",
    joiner="",
    stops=_TRAILING_STOPS,
)


def coarse_caption_zh(
    visual_objective: str | None,
    visual_expression: str | None,
    audio_tone: str | None,
    subtitle: str | None,
) -> str:
    """The coarse caption in Chinese from parts already in Chinese (:func:`expression_zh`,
    :func:`tone_zh`); the same sentences as :func:`~emotion_llama.annotate.clues.coarse_caption`,
    each present only with its parts, joined without spaces::

        视频中的人物：{vo}。人物的表情和动作包括{ve}，说话时{at}。说道：{st}

    The first three parts lose one trailing full stop (``.`` or ``。``); the subtitle is kept as it
    is apart from surrounding space. ``""`` with no part at all."""
    return coarse_caption(visual_objective, visual_expression, audio_tone, subtitle, CAPTION_ZH)


def record_caption(record: Mapping[str, Any], language: str = "en") -> str:
    """The coarse caption of a clue record in ``language``, from its fields (``visual_objective``,
    ``visual_expression`` / ``visual_prior_list``, ``audio_tone`` / ``audio_prior_list``,
    ``subtitle``). English is :func:`~emotion_llama.annotate.clues.coarse_caption` exactly."""
    from emotion_llama.annotate.clues import coarse_caption

    check_clue_language(language)
    subtitle = record.get("subtitle") or None
    if language == "en":
        return coarse_caption(
            record.get("visual_objective"),
            record.get("visual_expression"),
            record.get("audio_tone"),
            subtitle,
        )
    return coarse_caption_zh(
        record.get("visual_objective"),
        expression_zh(record.get("visual_prior_list") or []),
        tone_zh(record.get("audio_tone"), record.get("audio_prior_list") or []),
        subtitle,
    )
