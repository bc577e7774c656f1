"""The released files ``doctor`` knows, and what the authors' runner saved beside their weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emotion_llama.model.keys import few_keys


# -- the released files ------------------------------------------------------------------------
@dataclass(frozen=True)
class KnownFile:
    """One released file: what it is for and what not, and how to tell it."""

    kind: str
    #: File names it is distributed or commonly referred to under (the first is the release's).
    names: tuple[str, ...]
    title: str
    purpose: str
    not_for: str
    #: Pinned sha256; ``None``: the authors publish none (see ``emotion_llama.sources`` too).
    sha256: str | None = None
    size_bytes: int | None = None
    #: Its name in :data:`emotion_llama.sources.SOURCES`, if it has one.
    source: str | None = None
    where: str = ""


REASONING_FILE = "Emoation_LLaMA.pth"

KNOWN_FILES: tuple[KnownFile, ...] = (
    KnownFile(
        "minigptv2",
        ("minigptv2_checkpoint.pth",),
        "MiniGPT-v2 start point",
        purpose="the initialisation the authors trained Emotion-LLaMA from: MiniGPT-v2's LoRA "
        "adapters and llama_proj (a training start point)",
        not_for="answers: it has no feature projections (feats_llama_proj1-3, cls_tk_llama_proj), "
        "so the face, motion and audio features would pass through random layers and the model "
        f"repeats the prompt or rambles; for answers use {REASONING_FILE}",
        source="minigptv2",
        where="the Vision-CAIR/MiniGPT-v2 Hugging Face space (MiniGPT-4's original link is dead)",
    ),
    KnownFile(
        "reasoning",
        (REASONING_FILE, "Emotion_LLaMA.pth", "Emotion-LLaMA.pth"),
        "Emotion-LLaMA reasoning/demo model",
        purpose="emotion reasoning (an explanation and a label), the demo, open-vocabulary answers: "
        "the stage-2 model instruction-tuned on MERR fine (about 0.81 F1 on MER2023)",
        not_for="reproducing the MER2023 score of the paper (0.9036): that is the MER2023 "
        "classifier stage2/checkpoint_best.pth",
        source="emotion_llama_demo",
        where="Google Drive 1pNngqXdc3cKr9uLNW-Hu3SKvOpjzfzGY (the name is misspelt in the release)",
    ),
    KnownFile(
        "mer2023",
        ("checkpoint_best.pth",),
        "MER2023 classifier",
        purpose="emotion recognition on MER2023-SEMI (weighted F1 0.9036): it answers one label",
        not_for=f"reasoning: it answers one label and cannot explain it; for reasoning use {REASONING_FILE}",
        source="emotion_llama_mer2023",
        where="Google Drive 1NoPZDj5_392zBtVK1IHO8bepA4910iI_ (stage2/checkpoint_best.pth)",
    ),
    KnownFile(
        "mer2024",
        ("MER2024-best.pth",),
        "MER2024 classifier",
        purpose="emotion recognition on MER2024-NOISE (weighted F1 0.8452 in the paper): it answers "
        "one label",
        not_for="reasoning: asked to reason it repeats the subtitle (authors' tracker, issue 64); "
        f"for reasoning use {REASONING_FILE}",
        where="Google Drive folder 1d-Sg5fAskt2s6OOEUNXFaM2u-C055Whj (stage2/MER2024-best.pth)",
    ),
)
KNOWN_BY_KIND: dict[str, KnownFile] = {k.kind: k for k in KNOWN_FILES}

#: Data sets of MiniGPT-v2's own fine-tuning config (its runner saves them with the weights).
MINIGPTV2_DATASETS = frozenset(
    {
        "multitask_conversation",
        "llava_conversation",
        "unnatural_instruction",
        "refvg",
        "llava_detail",
        "llava_reason",
        "flickr_grounded_caption",
        "flickr_CaptionToPhrase",
        "flickr_ObjectToPhrase",
        "coco_caption",
        "textcaps_caption",
        "refcoco",
        "refcocop",
        "refcocog",
        "invrefcoco",
        "invrefcocop",
        "invrefcocog",
        "coco_vqa",
        "ok_vqa",
        "aok_vqa",
        "gqa",
        "ocrvqa",
    }
)


def pinned_sha256(known: KnownFile) -> str | None:
    """The sha256 pinned for a known file: its own, or the one its source entry carries."""
    if known.sha256:
        return known.sha256.lower()
    if known.source is None:
        return None
    from emotion_llama.sources import SOURCES

    src = SOURCES.get(known.source)
    return src.sha256.lower() if src is not None and src.sha256 else None


def known_by_hash(sha256: str | None, table: Sequence[KnownFile] = KNOWN_FILES) -> KnownFile | None:
    if not sha256:
        return None
    return next((k for k in table if pinned_sha256(k) == sha256.lower()), None)


def known_by_name(filename: str, table: Sequence[KnownFile] = KNOWN_FILES) -> KnownFile | None:
    name = Path(filename).name.lower()
    return next((k for k in table if name in (n.lower() for n in k.names)), None)


# -- what the authors' runner saved beside the weights ---------------------------------------------
@dataclass(frozen=True)
class TrainingMetadata:
    """The parts of an authors' ``.pth`` beside ``"model"`` that say how it was trained."""

    top_keys: tuple[str, ...] = ()
    epoch: str | None = None
    #: ``config["datasets"]``: the data sets it was trained on.
    datasets: tuple[str, ...] = ()
    #: Annotation files named under those data sets (``build_info.ann_path``...).
    ann_paths: tuple[str, ...] = ()
    #: ``config["model"]["ckpt"]``: the checkpoint the run started from.
    init_checkpoint: str | None = None
    #: ``config["model"]["llama_model"]``: the base LLM it was trained with.
    llama_model: str | None = None
    output_dir: str | None = None
    job_name: str | None = None
    has_optimizer: bool = False

    @property
    def has_config(self) -> bool:
        return bool(self.datasets or self.init_checkpoint or self.llama_model or self.output_dir)


def _get(d: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(part)
    return d


def _strings_under(node: Any, key_hint: str) -> list[str]:
    """String values of keys containing ``key_hint``, anywhere below ``node``."""
    found: list[str] = []
    if isinstance(node, Mapping):
        for k, v in node.items():
            if isinstance(v, str) and key_hint in str(k):
                found.append(v)
            else:
                found.extend(_strings_under(v, key_hint))
    elif isinstance(node, list):
        for v in node:
            found.extend(_strings_under(v, key_hint))
    return found


def training_metadata(obj: Mapping[str, Any]) -> TrainingMetadata:
    """What an authors' ``torch.save`` dict says about its training (empty for a bare state dict)."""
    if "model" not in obj or not isinstance(obj.get("model"), Mapping):
        return TrainingMetadata()
    config = obj.get("config")
    datasets = _get(config, "datasets")
    names = tuple(str(n) for n in datasets) if isinstance(datasets, Mapping) else ()

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) and value else None

    epoch = obj.get("epoch")
    return TrainingMetadata(
        top_keys=tuple(str(k) for k in obj),
        epoch=None if epoch is None else str(epoch),
        datasets=names,
        ann_paths=tuple(_strings_under(datasets, "ann")),
        init_checkpoint=text(_get(config, "model", "ckpt")),
        llama_model=text(_get(config, "model", "llama_model")),
        output_dir=text(_get(config, "run", "output_dir")),
        job_name=text(_get(config, "run", "job_name")),
        has_optimizer=obj.get("optimizer") is not None,
    )


def kind_from_metadata(meta: TrainingMetadata) -> tuple[str | None, list[str]]:
    """The released file the training config points at, and the reasons (also when none)."""
    reasons: list[str] = []
    if meta.init_checkpoint:
        reasons.append(f"the run started from {Path(meta.init_checkpoint).name} (config model.ckpt)")
    ds = set(meta.datasets)
    if not ds:
        return None, reasons
    paths = [p.lower() for p in meta.ann_paths]
    shown = ", ".join(sorted(Path(p).name for p in meta.ann_paths)) or "none named"
    if "mer2024_caption" in ds or any("mer2024" in p for p in paths):
        reasons.insert(0, f"it was trained on the data set mer2024_caption (MER2024; annotations: {shown})")
        return "mer2024", reasons
    if "feature_face_caption" in ds:
        if any("merr_fine" in p for p in paths):
            reasons.insert(
                0, f"it was trained on MERR fine (stage-2 instruction tuning; annotations: {shown})"
            )
            return "reasoning", reasons
        if any(m in p for p in paths for m in ("mer2023", "ncev", "pseudo")):
            reasons.insert(0, f"it was trained on MER2023 emotion labels (annotations: {shown})")
            return "mer2023", reasons
        if any("merr_coarse" in p for p in paths):
            reasons.insert(0, f"it was trained on MERR coarse (stage-1 pre-training; annotations: {shown})")
            return None, reasons
        reasons.insert(0, f"it was trained on feature_face_caption with annotations: {shown}")
        return None, reasons
    if ds & MINIGPTV2_DATASETS:
        reasons.insert(
            0, f"it was trained on MiniGPT-v2's data sets ({few_keys(sorted(ds & MINIGPTV2_DATASETS), 3)})"
        )
        return "minigptv2", reasons
    reasons.insert(0, f"it was trained on data sets this doctor does not know: {few_keys(sorted(ds), 4)}")
    return None, reasons
