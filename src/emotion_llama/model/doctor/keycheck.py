"""A checkpoint's keys against the preset's expected trainable keys: missing, extra, wrong
shape, adapters lost."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from emotion_llama.model.doctor.findings import Finding
from emotion_llama.model.keys import PROJECTIONS, few_keys

# -- the keys ---------------------------------------------------------------------------------------
_IGNORED = (re.compile(r"^attention\."), re.compile(r"\.rotary_emb\.inv_freq$"))


@dataclass(frozen=True)
class KeyCheck:
    """The trainable state against the preset's expected keys and shapes (SPEC 3)."""

    preset: str
    expected: int = 0
    matched: int = 0
    missing: tuple[str, ...] = ()
    wrong_shape: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    #: ``attention.*`` (an unused fusion head) and rotary buffers: known, not used.
    ignored: tuple[str, ...] = ()
    non_tensor: tuple[str, ...] = ()
    lora_expected: int = 0
    #: Adapted modules with both A and B present.
    lora_present: int = 0
    lora_zero_b: tuple[str, ...] = ()
    lora_zero_a: tuple[str, ...] = ()
    #: How the file names its LoRA keys: ``old-peft`` (no ``.default.``, as the authors saved
    #: them), ``default`` (PEFT's adapter segment), ``mixed`` or ``none``.
    lora_style: str = "none"
    projections_missing: tuple[str, ...] = ()
    projections_zero: tuple[str, ...] = ()
    #: Why the keys could not be checked (the preset's LLM sizes unknown...).
    error: str | None = None

    @property
    def has_projections(self) -> bool:
        return not self.projections_missing

    @property
    def projection_count(self) -> int:
        return len(PROJECTIONS) - len(self.projections_missing)


def _canonical(key: str) -> tuple[str, bool]:
    """A key under the authors' names, and whether it carried PEFT's ``.default.`` segment."""
    key = key.removeprefix("module.")
    new = re.sub(r"\.lora_([AB])\.default\.", r".lora_\1.", key)
    return new, new != key


def _is_zero(t: torch.Tensor) -> bool:
    """All elements zero. A dimension of stride 0 repeats one slice: only that slice is read."""
    if t.numel() == 0:
        return False
    one = tuple(slice(0, 1) if stride == 0 else slice(None) for stride in t.stride())
    return not bool(t[one].any())


def check_keys(state: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]], preset: str) -> KeyCheck:
    """Compare a trainable state (authors' or project key names) with ``expected``."""
    tensors: dict[str, torch.Tensor] = {}
    non_tensor: list[str] = []
    ignored: list[str] = []
    with_default = without_default = 0
    for raw_key, value in state.items():
        if not isinstance(raw_key, str):
            continue
        key, had_default = _canonical(raw_key)
        if any(p.search(key) for p in _IGNORED):
            ignored.append(raw_key)
            continue
        if ".lora_" in key:
            with_default += had_default
            without_default += not had_default
        if not isinstance(value, torch.Tensor):
            non_tensor.append(raw_key)
            continue
        tensors[key] = value
    missing = [k for k in expected if k not in tensors]
    wrong = [
        f"{k} {tuple(tensors[k].shape)} (expected {expected[k]})"
        for k in expected
        if k in tensors and tuple(tensors[k].shape) != tuple(expected[k])
    ]
    extra = [k for k in tensors if k not in expected]
    modules = sorted({k[: -len(".lora_A.weight")] for k in expected if k.endswith(".lora_A.weight")})
    present = [m for m in modules if f"{m}.lora_A.weight" in tensors and f"{m}.lora_B.weight" in tensors]
    zero_b = [m for m in present if _is_zero(tensors[f"{m}.lora_B.weight"])]
    zero_a = [m for m in present if _is_zero(tensors[f"{m}.lora_A.weight"])]
    style = (
        "none"
        if not (with_default or without_default)
        else "mixed"
        if with_default and without_default
        else "default"
        if with_default
        else "old-peft"
    )
    proj_missing = [
        p
        for p in PROJECTIONS
        if f"{p}.weight" in expected and not {f"{p}.weight", f"{p}.bias"} <= set(tensors)
    ]
    proj_zero = [
        p
        for p in PROJECTIONS
        if p not in proj_missing and f"{p}.weight" in tensors and _is_zero(tensors[f"{p}.weight"])
    ]
    return KeyCheck(
        preset=preset,
        expected=len(expected),
        matched=len(expected) - len(missing) - len(wrong),
        missing=tuple(missing),
        wrong_shape=tuple(wrong),
        extra=tuple(extra),
        ignored=tuple(ignored),
        non_tensor=tuple(non_tensor),
        lora_expected=len(modules),
        lora_present=len(present),
        lora_zero_b=tuple(zero_b),
        lora_zero_a=tuple(zero_a),
        lora_style=style,
        projections_missing=tuple(proj_missing),
        projections_zero=tuple(proj_zero),
    )


def key_findings(kc: KeyCheck, *, authors_file: bool) -> list[Finding]:
    """What the key check means for a user, as findings."""
    if kc.error is not None:
        return [Finding("keys", "problem", f"cannot check the keys: {kc.error}")]
    out: list[Finding] = []
    if kc.non_tensor:
        out.append(
            Finding("keys", "problem", f"entries that are not tensors: {few_keys(list(kc.non_tensor))}")
        )
    if kc.lora_expected:
        if kc.lora_present == 0:
            out.append(
                Finding(
                    "adapters",
                    "problem",
                    f"no LoRA adapter weights at all ({kc.lora_expected} adapted modules expected): the "
                    "adapters were dropped (e.g. a state saved after a load that lost them); the model "
                    "would answer as the bare base LLM, not as Emotion-LLaMA",
                )
            )
        elif kc.lora_present < kc.lora_expected:
            out.append(
                Finding(
                    "adapters",
                    "problem",
                    f"{kc.lora_expected - kc.lora_present} of {kc.lora_expected} adapted modules lack their "
                    "LoRA A or B: adapters missing",
                )
            )
        if kc.lora_zero_b:
            every = len(kc.lora_zero_b) == kc.lora_present
            out.append(
                Finding(
                    "adapters",
                    "problem",
                    ("every" if every else f"{len(kc.lora_zero_b)} of {kc.lora_present}")
                    + " LoRA B is all zero: PEFT's fresh initialisation, so those adapters do nothing "
                    "(never trained, or lost: loading the authors' keys, which lack '.default.', into a "
                    "modern PEFT with strict=False leaves B at zero, and saving that model writes this)",
                )
            )
        if kc.lora_zero_a:
            out.append(
                Finding(
                    "adapters",
                    "problem",
                    f"{len(kc.lora_zero_a)} LoRA A matrices are all zero: those adapters do nothing",
                )
            )
        if kc.lora_present == kc.lora_expected and not kc.lora_zero_a and not kc.lora_zero_b:
            out.append(
                Finding(
                    "adapters",
                    "ok",
                    f"all {kc.lora_expected} adapted modules have LoRA A and B, none of them zero",
                )
            )
    if authors_file and kc.lora_style == "old-peft":
        out.append(
            Finding(
                "adapters",
                "note",
                "LoRA keys have no '.default.' segment (old PEFT, as the authors saved them): a modern "
                "PEFT's load_state_dict(strict=False) drops them without a word; `emotion-llama convert "
                "authors` maps them and checks the load",
            )
        )
    elif authors_file and kc.lora_style in ("default", "mixed"):
        out.append(
            Finding(
                "adapters",
                "note",
                f"LoRA keys carry PEFT's '.default.' segment ({kc.lora_style}; written by newer code): "
                "accepted",
            )
        )
    if kc.projections_missing:
        out.append(
            Finding(
                "projections",
                "problem",
                f"projection(s) missing: {', '.join(kc.projections_missing)}; loaded without them "
                "(strict=False) the features pass through random layers and the model repeats the prompt",
            )
        )
    elif kc.projections_zero:
        out.append(
            Finding(
                "projections", "problem", f"all-zero projection weights: {', '.join(kc.projections_zero)}"
            )
        )
    else:
        out.append(Finding("projections", "ok", f"all {len(PROJECTIONS)} projections present"))
    if kc.wrong_shape:
        out.append(
            Finding(
                "keys",
                "problem",
                f"{len(kc.wrong_shape)} tensor(s) of the wrong shape for preset {kc.preset!r} (a checkpoint "
                f"of another preset: other LoRA rank or LLM width?): {few_keys(list(kc.wrong_shape), 3)}",
            )
        )
    trainable_extra = [k for k in kc.extra if ".lora_" in k or k.split(".")[0] in PROJECTIONS]
    if trainable_extra:
        out.append(
            Finding(
                "keys",
                "problem",
                f"{len(trainable_extra)} adapter/projection key(s) the preset {kc.preset!r} does not have "
                f"(LoRA on other modules?): {few_keys(trainable_extra, 3)}",
            )
        )
    other_extra = [k for k in kc.extra if k not in trainable_extra]
    if other_extra:
        out.append(
            Finding(
                "keys", "warn", f"{len(other_extra)} unexpected key(s), not used: {few_keys(other_extra, 3)}"
            )
        )
    if kc.ignored:
        out.append(
            Finding(
                "keys",
                "note",
                f"{len(kc.ignored)} key(s) known and not used (attention.*: an unused fusion head; rotary "
                "buffers)",
            )
        )
    if kc.missing:
        out.append(
            Finding(
                "keys",
                "problem",
                f"{len(kc.missing)} of the {kc.expected} expected keys missing (preset {kc.preset!r}): "
                f"{few_keys(list(kc.missing), 3)}",
            )
        )
    if not kc.missing and not kc.wrong_shape:
        out.append(
            Finding(
                "keys",
                "ok",
                f"all {kc.expected} expected keys present with the shapes of preset {kc.preset!r}",
            )
        )
    return out
