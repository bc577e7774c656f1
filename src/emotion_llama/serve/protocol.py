"""What clients send: the chat request of ``POST /v1/chat/completions`` (OpenAI's format, plus our
``subtitle`` field) and what the server takes from it (:func:`parse_chat`): the video, the
question (``None`` for the standard emotion prompts) and the subtitle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from emotion_llama.serve.errors import ApiError


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    #: Our extension: the words spoken in the clip (replaces speech recognition).
    subtitle: str | None = None


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def _default_questions() -> frozenset[str]:
    from emotion_llama.prompts import EMOTION_INSTRUCTION, EMOTION_INSTRUCTION_6, REASON_INSTRUCTIONS

    generic = (
        "What is the emotion of the person in the video?",
        "What emotion is the person in the video feeling?",
        "What emotion is this?",
        "What is the emotion?",
        "Analyze this video.",
        "Analyse this video.",
        "Analyze the video.",
        "Describe the emotion in this video.",
    )
    return frozenset(
        _norm(q) for q in (EMOTION_INSTRUCTION, EMOTION_INSTRUCTION_6, *REASON_INSTRUCTIONS, *generic)
    )


DEFAULT_QUESTIONS = _default_questions()


def question_of(text: str | None) -> str | None:
    """The user's question, or ``None`` when the text is empty or one of the standard emotion
    prompts (then the answer is the label and its reasoning)."""
    text = (text or "").strip()
    return None if not text or _norm(text) in DEFAULT_QUESTIONS else text


@dataclass(frozen=True)
class ChatAsk:
    video: str
    question: str | None
    subtitle: str | None


_SUBTITLE = re.compile(r"^\s*subtitle\s*:\s*", re.I)


def parse_chat(req: ChatCompletionRequest) -> ChatAsk:
    """The video (the last ``video_url`` part of any user message), the question (the text of the
    last user message) and the subtitle (the request's ``subtitle`` field, else a text part of the
    last user message that starts with ``Subtitle:``)."""
    video: str | None = None
    last_texts: list[str] = []
    subtitle = req.subtitle
    for m in req.messages:
        if m.role != "user":
            continue
        parts = [{"type": "text", "text": m.content}] if isinstance(m.content, str) else (m.content or [])
        texts: list[str] = []
        for p in parts:
            kind = p.get("type")
            if kind in ("video_url", "video"):
                ref = p.get(kind)
                url = ref.get("url") if isinstance(ref, dict) else ref
                if not isinstance(url, str) or not url.strip():
                    raise ApiError(400, "a video_url part needs {'url': '...'}", code="invalid_video_url")
                video = url.strip()
            elif kind == "text":
                texts.append(str(p.get("text") or ""))
            elif kind in ("image_url", "input_image", "input_audio"):
                raise ApiError(400, f"content parts of type {kind!r} are not supported; send a video_url",
                               code="unsupported_content")  # fmt: skip
        last_texts = texts
    question_lines = []
    for t in last_texts:
        if _SUBTITLE.match(t):
            subtitle = subtitle if subtitle is not None else _SUBTITLE.sub("", t, count=1).strip()
        else:
            question_lines.append(t)
    if video is None:
        raise ApiError(
            400,
            "no video in the messages: add a content part "
            '{"type": "video_url", "video_url": {"url": "upload://ID | https://... | '
            'data:video/mp4;base64,... | file:///PATH"}}',
            code="missing_video",
        )
    return ChatAsk(video, question_of("\n".join(question_lines)), subtitle or None)
