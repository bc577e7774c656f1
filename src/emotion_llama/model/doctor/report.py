"""The whole report, and the edges: reading the files, loading the model (:func:`diagnose`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from emotion_llama.config import EmotionLlamaConfig, load_config
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.model.doctor.findings import Finding
from emotion_llama.model.doctor.identity import Identity, identify, identify_project, identity_findings
from emotion_llama.model.doctor.keycheck import KeyCheck, check_keys, key_findings
from emotion_llama.model.doctor.known import KNOWN_FILES, TrainingMetadata, pinned_sha256, training_metadata
from emotion_llama.model.doctor.llm_check import LLMCheck, check_llm, llm_findings
from emotion_llama.model.doctor.sanity import SanityResult, run_sanity_prompt, sanity_findings
from emotion_llama.model.keys import expected_trainable_shapes


@dataclass(frozen=True)
class DoctorReport:
    path: str
    #: ``authors .pth`` or ``project checkpoint``.
    format: str
    #: The file or folder examined (a run folder resolves to one of its checkpoints).
    checkpoint: str
    #: The file the size and sha256 are of.
    hashed_file: str
    size_bytes: int
    sha256: str | None
    identity: Identity
    keys: KeyCheck
    llm: LLMCheck
    sanity: SanityResult
    findings: tuple[Finding, ...]
    metadata: TrainingMetadata = field(default_factory=TrainingMetadata)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "problem"]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["problems"] = [asdict(f) for f in self.problems]
        return out


def assemble_findings(
    identity: Identity,
    keys: KeyCheck,
    llm: LLMCheck,
    sanity: SanityResult,
    *,
    authors_file: bool,
    sha256_pinned: bool,
) -> tuple[Finding, ...]:
    return (
        *identity_findings(identity, sha256_pinned),
        *key_findings(keys, authors_file=authors_file),
        *llm_findings(llm),
        *sanity_findings(sanity),
    )


# -- the edges: files and models ---------------------------------------------------------------------
def is_torch_file(path: Path) -> bool:
    """A file that starts as ``torch.save`` output does (a zip archive or a pickle)."""
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")


def _with_llm(config: EmotionLlamaConfig, llm: str | None) -> EmotionLlamaConfig:
    """The config with another base LLM (its sizes kept: the file's shapes are the preset's)."""
    if llm is None:
        return config
    return replace(config, llm=replace(config.llm, name_or_path=llm, tokenizer=None))


def _expected(config: EmotionLlamaConfig) -> tuple[dict[str, tuple[int, ...]], str | None]:
    from emotion_llama.model.builder import resolve_llm_sizes

    try:
        return expected_trainable_shapes(resolve_llm_sizes(config)), None
    except EmotionLlamaError as exc:
        return {}, str(exc)


def llm_unavailable(name: str | None, revision: str | None = None) -> str | None:
    """Why the base LLM cannot be loaded here without a download, or ``None`` when it can (a local
    folder, random weights, or a hub id already in the Hugging Face cache)."""
    if name is None:
        return None
    if Path(name).expanduser().is_dir():
        return None if (Path(name).expanduser() / "config.json").is_file() else f"{name} has no config.json"
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:  # an id the hub library refuses (a path that does not exist...)
        cached = None
    if isinstance(cached, str):
        return None
    return (
        f"the base LLM {name} is not here (not a local folder, not in the Hugging Face cache); "
        "download it (`hf download`) or pass --llm with a local copy"
    )


def _default_device(device: str | None) -> tuple[str, torch.dtype]:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def _skipped(message: str, failed: bool = False) -> SanityResult:
    return SanityResult(ran=False, message=message, failed=failed)


@dataclass(frozen=True)
class _Options:
    """What :func:`diagnose` was asked for, handed to the two readers."""

    preset: str | None
    llm: str | None
    generate: bool
    device: str | None
    seed: int
    max_new_tokens: int


def diagnose(
    path: str | Path,
    *,
    preset: str | None = None,
    llm: str | None = None,
    generate: bool = True,
    device: str | None = None,
    seed: int = 0,
    max_new_tokens: int = 16,
) -> DoctorReport:
    """Examine an authors' ``.pth`` or a project checkpoint (folder, run folder, pointer file).

    ``preset`` (authors' files; default ``paper``) gives the expected keys and the LLM; ``llm``
    replaces the base LLM for the check and the sanity prompt; ``generate=False`` skips the
    prompt. A file that cannot be read raises :class:`CheckpointError` naming it."""
    p = Path(path)
    torch_like = is_torch_file(p) or (p.is_file() and p.suffix.lower() in (".pth", ".pt", ".bin"))
    options = _Options(preset, llm, generate, device, seed, max_new_tokens)
    if torch_like and p.name not in ("config.json", "model.safetensors"):
        return _diagnose_authors(p, options)
    return _diagnose_project(p, options)


def _diagnose_authors(p: Path, o: _Options) -> DoctorReport:
    from emotion_llama.model.checkpoint import authors_state_of
    from emotion_llama.sources import sha256_of
    from emotion_llama.weights import read_torch_file

    obj = read_torch_file(p)
    state = authors_state_of(obj, p)
    meta = training_metadata(obj)
    config = _with_llm(load_config(o.preset or "paper"), o.llm)
    expected, error = _expected(config)
    keys = check_keys(state, expected, config.name) if error is None else KeyCheck(config.name, error=error)
    sha = sha256_of(p)
    identity = identify(p.name, sha, keys, meta)
    origin = "--llm" if o.llm else f"preset {config.name!r}"
    llm_check = check_llm(config.llm.name_or_path, origin, meta.llama_model)
    if not o.generate:
        sanity = _skipped("skipped (--no-generate)")
    elif (why := llm_unavailable(config.llm.name_or_path, config.llm.revision)) is not None:
        sanity = _skipped(f"not run: {why}")
    else:
        sanity = _sanity_authors(state, config, p, o.device, o.seed, o.max_new_tokens)
    pinned = any(pinned_sha256(k) for k in KNOWN_FILES if k.kind == identity.kind)
    findings = assemble_findings(identity, keys, llm_check, sanity, authors_file=True, sha256_pinned=pinned)
    return DoctorReport(
        path=str(p),
        format="authors .pth",
        checkpoint=str(p),
        hashed_file=str(p),
        size_bytes=p.stat().st_size,
        sha256=sha,
        identity=identity,
        keys=keys,
        llm=llm_check,
        sanity=sanity,
        findings=findings,
        metadata=meta,
    )


def _sanity_authors(
    state: dict[str, Any],
    config: EmotionLlamaConfig,
    p: Path,
    device: str | None,
    seed: int,
    max_new_tokens: int,
) -> SanityResult:
    """Convert in memory with the preset, build the model (the ViT never runs: one random layer
    stands in for it and no EVA weights are read) and ask the sanity prompt."""
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import convert_authors_state, load_trainable
    from emotion_llama.model.tokenizer import load_tokenizer

    dev, dtype = _default_device(device)
    try:
        trainable, _ = convert_authors_state(state, config, p)
        quick = replace(config, vision=replace(config.vision, weights=None, num_layers=1))
        model = build_model(quick, device=dev, dtype=dtype)
        load_trainable(model, trainable, p)
        return run_sanity_prompt(model, load_tokenizer(config), seed=seed, max_new_tokens=max_new_tokens)
    except (EmotionLlamaError, OSError, RuntimeError, ValueError) as exc:
        return _skipped(f"could not run: {exc}", failed=True)


def _diagnose_project(p: Path, o: _Options) -> DoctorReport:
    from emotion_llama.model.checkpoint import (
        CONFIG_FILE,
        FROZEN_FILE,
        TRAIN_CLIPS_FILE,
        WEIGHTS_FILE,
        read_safetensors,
        resolve_checkpoint,
    )
    from emotion_llama.sources import sha256_of

    folder = resolve_checkpoint(p)
    config = _with_llm(EmotionLlamaConfig.from_json(folder / CONFIG_FILE), o.llm)
    weights = folder / WEIGHTS_FILE
    state = read_safetensors(weights)
    expected, error = _expected(config)
    keys = check_keys(state, expected, config.name) if error is None else KeyCheck(config.name, error=error)
    named = {folder.resolve(), (folder / CONFIG_FILE).resolve(), weights.resolve()}
    run = p.resolve() not in named or (folder.parent / TRAIN_CLIPS_FILE).is_file()
    source, source_sha, training = _converted_from(_safetensors_meta(weights))
    if source is not None and (source_sha is not None or training.has_config):
        # converted from an authors' file: recognised as that file would be, by what was recorded
        identity = identify(source, source_sha, keys, training)
        identity = replace(identity, title=f"converted from {source}: {identity.title}")
    else:
        identity = identify_project(folder, source, config.name, run)
    origin = "--llm" if o.llm else "the checkpoint's config.json"
    llm_check = check_llm(config.llm.name_or_path, origin)
    frozen = folder / FROZEN_FILE
    if config.llm.name_or_path is None and frozen.is_file():
        llm_check = replace(
            llm_check, evidence=f"random weights saved in {FROZEN_FILE} (a test model), not a chat model"
        )
    if not o.generate:
        sanity = _skipped("skipped (--no-generate)")
    elif (why := llm_unavailable(config.llm.name_or_path, config.llm.revision)) is not None:
        sanity = _skipped(f"not run: {why}")
    else:
        sanity = _sanity_project(folder, config, o.llm, o.device, o.seed, o.max_new_tokens)
    findings = list(
        assemble_findings(identity, keys, llm_check, sanity, authors_file=False, sha256_pinned=False)
    )
    if o.preset is not None:
        findings.insert(
            0, Finding("keys", "note", f"--preset {o.preset} ignored: the folder's config.json is used")
        )
    return DoctorReport(
        path=str(p),
        format="project checkpoint",
        checkpoint=str(folder),
        hashed_file=str(weights),
        size_bytes=weights.stat().st_size,
        sha256=sha256_of(weights),
        identity=identity,
        keys=keys,
        llm=llm_check,
        sanity=sanity,
        findings=tuple(findings),
        metadata=training,
    )


def _safetensors_meta(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            return dict(fh.metadata() or {})
    except Exception:  # unreadable metadata: read_safetensors already read the tensors
        return {}


def _converted_from(meta: dict[str, str]) -> tuple[str | None, str | None, TrainingMetadata]:
    """What ``convert authors`` recorded: the source file's name, its sha256, and the training
    config the authors saved with it (as :func:`training_metadata` reads it from the ``.pth``)."""
    source = meta.get("source") or None
    config: Any = None
    if meta.get("authors_config"):
        try:
            config = json.loads(meta["authors_config"])
        except ValueError:
            config = None
    saved: dict[str, Any] = {"model": {}}
    if isinstance(config, dict):
        saved["config"] = config
    if meta.get("authors_epoch"):
        saved["epoch"] = meta["authors_epoch"]
    training = training_metadata(saved) if len(saved) > 1 else TrainingMetadata()
    return source, meta.get("source_sha256") or None, training


def _sanity_project(
    folder: Path,
    config: EmotionLlamaConfig,
    llm: str | None,
    device: str | None,
    seed: int,
    max_new_tokens: int,
) -> SanityResult:
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import FROZEN_FILE, WEIGHTS_FILE, load_pretrained, load_trainable
    from emotion_llama.model.tokenizer import load_tokenizer
    from emotion_llama.weights import read_safetensors

    dev, dtype = _default_device(device)
    try:
        if llm is None and config.vision.weights is None:  # everything is in the folder
            model = load_pretrained(folder, device=dev, dtype=dtype)
        else:
            # The ViT never runs here (seeded ViT output stands in), so its weights are not read:
            # one random layer is built instead. With --llm the folder's weights go on that LLM.
            frozen_path = folder / FROZEN_FILE
            frozen = read_safetensors(frozen_path) if frozen_path.is_file() else {}
            if llm is not None:
                frozen = {k: v for k, v in frozen.items() if not k.startswith("llm_base.")}
            if config.vision.weights is not None:
                config = replace(config, vision=replace(config.vision, weights=None, num_layers=1))
                frozen = {k: v for k, v in frozen.items() if not k.startswith("global_encoder.")}
            model = build_model(config, device=dev, dtype=dtype, frozen_state=frozen)
            load_trainable(model, read_safetensors(folder / WEIGHTS_FILE), folder / WEIGHTS_FILE)
        return run_sanity_prompt(model, load_tokenizer(config), seed=seed, max_new_tokens=max_new_tokens)
    except (EmotionLlamaError, OSError, RuntimeError, ValueError) as exc:
        return _skipped(f"could not run: {exc}", failed=True)
