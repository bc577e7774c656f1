"""What a file is, and on what evidence: hash, keys, saved training config, name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emotion_llama.model.doctor.findings import Finding, _and
from emotion_llama.model.doctor.keycheck import KeyCheck
from emotion_llama.model.doctor.known import (
    KNOWN_BY_KIND,
    REASONING_FILE,
    KnownFile,
    TrainingMetadata,
    kind_from_metadata,
    known_by_hash,
    known_by_name,
)
from emotion_llama.model.keys import PROJECTIONS


# -- what the file is ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """What a checkpoint is, on what evidence, and what it is for."""

    #: ``minigptv2``, ``reasoning``, ``mer2023``, ``mer2024`` (the released files), ``emotion-llama``
    #: (an Emotion-LLaMA checkpoint, which one unknown), ``project`` or ``unknown``.
    kind: str
    title: str
    #: The kinds of evidence the verdict rests on: ``hash``, ``keys``, ``metadata``, ``name``.
    by: tuple[str, ...]
    evidence: tuple[str, ...]
    purpose: str
    not_for: str
    #: Disagreements between the kinds of evidence.
    conflicts: tuple[str, ...] = ()


def _from_known(known: KnownFile, by: list[str], evidence: list[str], conflicts: list[str]) -> Identity:
    return Identity(
        kind=known.kind,
        title=f"{known.title} ({known.names[0]})",
        by=tuple(dict.fromkeys(by)),
        evidence=tuple(evidence),
        purpose=known.purpose,
        not_for=known.not_for,
        conflicts=tuple(conflicts),
    )


def identify(filename: str, sha256: str | None, keys: KeyCheck, meta: TrainingMetadata) -> Identity:
    """Which released file an authors' ``.pth`` is: by pinned hash, else by its keys, the training
    config saved with it, and its name, in that order of trust; every disagreement is kept."""
    evidence: list[str] = []
    conflicts: list[str] = []
    by_hash = known_by_hash(sha256)
    by_name = known_by_name(filename)
    meta_kind, meta_reasons = kind_from_metadata(meta)
    by_meta = KNOWN_BY_KIND.get(meta_kind) if meta_kind else None
    if by_hash is not None:
        evidence.append(f"its sha256 is the one pinned for {by_hash.names[0]}")
        return _from_known(by_hash, ["hash"], evidence, conflicts)
    has_lora = keys.lora_present > 0
    shape = (
        "emotion-llama"
        if keys.projection_count == len(PROJECTIONS)
        else "minigptv2"
        if "llama_proj" not in keys.projections_missing and keys.projection_count == 1 and has_lora
        else "other"
    )
    if keys.error is not None:
        shape = "unchecked"

    def disagree(known: KnownFile | None, what: str, chosen: KnownFile) -> None:
        if known is not None and known.kind != chosen.kind:
            conflicts.append(f"{what} says {known.title} ({known.names[0]}), but this is the {chosen.title}")

    if shape == "minigptv2":
        known = KNOWN_BY_KIND["minigptv2"]
        evidence.append("its keys are LoRA and llama_proj only, without the four feature projections")
        by = ["keys"]
        if by_meta is not None and by_meta.kind == "minigptv2":
            by.append("metadata")
            evidence.extend(meta_reasons)
        if by_name is not None and by_name.kind == "minigptv2":
            by.append("name")
        disagree(by_name, f"its name {Path(filename).name!r}", known)
        if by_name is not None and by_name.kind != "minigptv2":
            conflicts.append("a wrong download, or a file truncated to the MiniGPT-v2 part")
        disagree(by_meta, "its training config", known)
        return _from_known(known, by, evidence, conflicts)
    if shape == "emotion-llama":
        evidence.append(
            "its keys are Emotion-LLaMA's (LoRA and the five projections); the reasoning model and the "
            "two classifiers have the same keys, so the keys alone cannot tell them apart"
        )
        if by_meta is not None and by_meta.kind != "minigptv2":
            evidence.extend(meta_reasons)
            by = ["keys", "metadata"]
            if by_name is not None and by_name.kind == by_meta.kind:
                by.append("name")
            disagree(by_name, f"its name {Path(filename).name!r}", by_meta)
            return _from_known(by_meta, by, evidence, conflicts)
        if by_meta is not None:  # MiniGPT-v2's data sets, but Emotion-LLaMA's projections
            conflicts.append(
                "its training config lists MiniGPT-v2's data sets, but it has Emotion-LLaMA's projections"
            )
        evidence.extend(meta_reasons)
        if by_name is not None and by_name.kind != "minigptv2":
            evidence.append(f"its file name is {by_name.names[0]}")
            if not meta.has_config:
                evidence.append(
                    "the file holds no training config to confirm it; a renamed file would fool this"
                )
            return _from_known(by_name, ["keys", "name"], evidence, conflicts)
        if by_name is not None:
            conflicts.append(
                f"its name {Path(filename).name!r} is the MiniGPT-v2 start point's, but it has "
                "Emotion-LLaMA's projections"
            )
        return Identity(
            kind="emotion-llama",
            title="an Emotion-LLaMA checkpoint (which one cannot be told)",
            by=("keys",),
            evidence=tuple(evidence),
            purpose="an Emotion-LLaMA model (reasoning model, a classifier, or a fine-tune of either)",
            not_for="unknown: ask where it came from; the reasoning model is "
            f"{REASONING_FILE}, the classifiers answer one label",
            conflicts=tuple(conflicts),
        )
    evidence.extend(meta_reasons)
    if by_meta is not None or by_name is not None:
        known = by_meta or by_name
        assert known is not None
        conflicts.append(
            f"its keys are not those of the {known.title}: "
            + ("they could not be checked" if shape == "unchecked" else "a broken, truncated or other file")
        )
    return Identity(
        kind="unknown",
        title="not one of the released files (its keys match none of them)",
        by=("keys",),
        evidence=tuple(evidence),
        purpose="unknown",
        not_for="unknown",
        conflicts=tuple(conflicts),
    )


def identify_project(folder: Path, source_name: str | None, preset: str, run: bool) -> Identity:
    """A project checkpoint folder: converted from a released file (the name ``convert authors``
    records), or trained by this project."""
    where = "a checkpoint of a training run of this project" if run else "a project checkpoint"
    known = known_by_name(source_name) if source_name else None
    evidence = [f"{folder.name}/ holds config.json (preset {preset!r}) and model.safetensors"]
    if known is not None:
        evidence.append(
            f"model.safetensors records it was converted from {source_name} (`emotion-llama convert "
            "authors`); the name is all that says which file that was"
        )
        return Identity(
            kind=known.kind,
            title=f"{where}, converted from the {known.title} ({source_name})",
            by=("name",),
            evidence=tuple(evidence),
            purpose=known.purpose,
            not_for=known.not_for,
        )
    if source_name:
        evidence.append(f"model.safetensors records it was converted from {source_name}, not a released name")
    return Identity(
        kind="project",
        title=f"{where} (preset {preset!r})",
        by=("metadata",),
        evidence=tuple(evidence),
        purpose="what it was trained or converted for: its run's recipe says",
        not_for="unknown",
    )


#: The released files that keys cannot tell apart.
_SAME_KEYS = ("reasoning", "mer2023", "mer2024")


def identity_findings(identity: Identity, sha256_pinned: bool) -> list[Finding]:
    out: list[Finding] = []
    by = identity.by
    if identity.kind in ("unknown", "emotion-llama"):
        out.append(Finding("identity", "warn", identity.title))
    elif "hash" in by:
        out.append(Finding("identity", "ok", f"{identity.title}, by its pinned sha256"))
    elif identity.kind in _SAME_KEYS and "metadata" not in by:
        out.append(
            Finding(
                "identity",
                "warn",
                f"{identity.title}: by its file name only (the three Emotion-LLaMA files have the same keys "
                "and nothing else in it says which it is); a renamed file would be misnamed",
            )
        )
    else:
        out.append(Finding("identity", "ok", f"{identity.title}, by {_and(by)}"))
    out.extend(Finding("identity", "warn", c) for c in identity.conflicts)
    if not sha256_pinned and identity.kind in KNOWN_BY_KIND:
        out.append(
            Finding(
                "identity",
                "note",
                f"no sha256 is published for this file: recognised by {_and(by)}, not by hash",
            )
        )
    return out
