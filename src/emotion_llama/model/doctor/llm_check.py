"""The base LLM: is it the chat model the released files were trained on?"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emotion_llama.model.doctor.findings import PAPER_LLM, Finding


# -- the base LLM ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalLLMInfo:
    """What a local model folder says about itself."""

    path: str
    name_or_path: str | None = None
    model_type: str | None = None
    has_chat_template: bool = False


@dataclass(frozen=True)
class LLMCheck:
    name: str | None
    #: Where the name came from: ``--llm``, the checkpoint's config, the preset.
    origin: str
    is_chat: bool | None
    evidence: str
    #: The LLM the authors' training config names (``config.model.llama_model``).
    trained_with: str | None = None
    trained_with_chat: bool | None = None


_CHAT_MARK = re.compile(r"(?:^|[-_. ])(chat|instruct|it|sft|dpo|rlhf|assistant)(?:$|[-_. v\d])", re.I)
_BASE_NAMES = (
    re.compile(r"llama[-_ ]?\d(?:\.\d)?[-_ ]\d+b(?:[-_ ]hf)?$", re.I),
    re.compile(r"qwen[\d.]*[-_ ]\d+(?:\.\d+)?b$", re.I),
    re.compile(r"mistral[-_ ]\d+b(?:[-_ ]v\d(?:\.\d)?)?$", re.I),
    re.compile(r"gemma[-_ ]?\d?[-_ ]\d+b$", re.I),
)


def read_local_llm_info(path: str | Path) -> LocalLLMInfo | None:
    """``config.json``'s ``_name_or_path``/``model_type`` and whether a chat template is there
    (``tokenizer_config.json``'s ``chat_template`` or ``chat_template.jinja``); ``None`` when
    ``path`` is not a local folder."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return None

    def read(name: str) -> dict[str, Any]:
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    config, tok = read("config.json"), read("tokenizer_config.json")
    template = tok.get("chat_template")
    has_template = bool(template) or (folder / "chat_template.jinja").is_file()
    name = config.get("_name_or_path")
    return LocalLLMInfo(
        path=str(folder),
        name_or_path=name if isinstance(name, str) and name else None,
        model_type=config.get("model_type") if isinstance(config.get("model_type"), str) else None,
        has_chat_template=has_template,
    )


def _basename(name: str) -> str:
    return Path(name.rstrip("/")).name or name


def chat_verdict(name: str | None, local: LocalLLMInfo | None = None) -> tuple[bool | None, str]:
    """Whether an LLM is a chat (instruction-tuned) model: ``True``, ``False`` or ``None`` (cannot
    tell), and why. A chat template in a local folder says chat; then the names (the folder's own
    ``_name_or_path`` first) are read for chat/instruct markers or a base model's pattern."""
    if name is None:
        return None, "no LLM named: random weights (a test model), not a chat model"
    if local is not None and local.has_chat_template:
        return True, f"{local.path} has a chat template"
    names = [n for n in ((local.name_or_path if local else None), name) if n]
    for n in names:
        base = _basename(n)
        if _CHAT_MARK.search(base):
            return True, f"{base!r} is a chat/instruct model by its name"
        if any(p.search(base) for p in _BASE_NAMES):
            return (
                False,
                f"{base!r} is a base (pretrained) model, not the chat model: every released file was "
                f"trained on {PAPER_LLM}, and with the base model the answer repeats the prompt",
            )
    shown = ", ".join(repr(_basename(n)) for n in names)
    return (
        None,
        f"cannot tell whether {shown} is a chat model (no chat/instruct in its name, no chat template)",
    )


def check_llm(name: str | None, origin: str, trained_with: str | None = None) -> LLMCheck:
    """The base-LLM check (reads a local folder's config files; asks no hub)."""
    local = read_local_llm_info(name) if name else None
    is_chat, why = chat_verdict(name, local)
    trained_chat = chat_verdict(trained_with)[0] if trained_with else None
    return LLMCheck(name, origin, is_chat, why, trained_with, trained_chat)


def llm_findings(check: LLMCheck) -> list[Finding]:
    out: list[Finding] = []
    if check.name is None:
        out.append(Finding("base LLM", "warn", f"{check.evidence}: its answers are noise"))
    elif check.is_chat is False:
        out.append(Finding("base LLM", "problem", f"{check.name} ({check.origin}): {check.evidence}"))
    elif check.is_chat is None:
        out.append(Finding("base LLM", "warn", f"{check.name} ({check.origin}): {check.evidence}"))
    else:
        out.append(Finding("base LLM", "ok", f"{check.name} ({check.origin}): {check.evidence}"))
    if check.trained_with and check.trained_with_chat is False:
        out.append(
            Finding(
                "base LLM",
                "warn",
                f"the file's training config names {_basename(check.trained_with)} as its LLM: it was "
                "trained on a base model, not the chat model",
            )
        )
    elif check.trained_with:
        out.append(
            Finding(
                "base LLM",
                "note",
                f"trained with {_basename(check.trained_with)} (config model.llama_model of the file)",
            )
        )
    return out
