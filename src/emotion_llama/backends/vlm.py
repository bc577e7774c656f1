"""The visual objective description of MERR (SPEC 6 step 5): a vision-language model describes
what the person in the peak frame is doing, through any OpenAI-compatible endpoint that accepts
images (vLLM serving Qwen2-VL / LLaVA / MiniGPT-style models, hosted APIs).

The frame travels as a JPEG data URL in the standard ``image_url`` content part. Answers go
through the same response cache as text LLMs (the key includes the image). When no describer is
configured, records say the description is absent; it is never invented.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from emotion_llama.backends.llm import ChatLLM, ChatParams, make_llm

PROMPT = (
    "Look at the person in this image. Complete the sentence with a short phrase about what the "
    "person is doing, their posture and where they are, without naming any emotion:\n"
    "The person in the image is ..."
)


def image_data_url(rgb: np.ndarray, max_side: int = 512, quality: int = 90) -> str:
    from PIL import Image

    im = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def clean_description(text: str) -> str | None:
    """``"The person in the image is sitting at a desk."`` -> ``"sitting at a desk"``."""
    text = text.strip().splitlines()[0].strip() if text.strip() else ""
    text = re.sub(
        r"^(the )?(person|man|woman) (in the (image|video|picture) )?is\s+", "", text, flags=re.IGNORECASE
    )
    text = text.strip().rstrip(".").strip()
    return text or None


class VisualDescriber:
    """Wraps a chat backend whose model accepts images."""

    def __init__(self, llm: ChatLLM, max_tokens: int = 60) -> None:
        self.llm = llm
        self.max_tokens = max_tokens
        self.name = llm.name

    def describe(self, frames: Sequence[np.ndarray]) -> list[str | None]:
        convs: list[Any] = [
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": PROMPT},
                        {"type": "image_url", "image_url": {"url": image_data_url(f)}},
                    ],
                }
            ]
            for f in frames
        ]
        replies = self.llm.chat_many(convs, ChatParams(max_tokens=self.max_tokens, temperature=0.0))
        return [clean_description(r) for r in replies]


def make_describer(
    spec: str | None, *, cache: Any = None, api_key: str | None = None
) -> VisualDescriber | None:
    """``openai:MODEL@BASE_URL`` (or ``hf:``/``offline`` text models are refused: they cannot see)."""
    if not spec:
        return None
    if not spec.startswith("openai:"):
        from emotion_llama.errors import EmotionLlamaError

        raise EmotionLlamaError(
            f"--vlm {spec!r}: give an OpenAI-compatible vision endpoint as openai:MODEL@BASE_URL"
        )
    return VisualDescriber(make_llm(spec, cache=cache, api_key=api_key))
