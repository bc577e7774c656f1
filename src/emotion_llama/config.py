"""Configuration of every part of Emotion-LLaMA, as plain dataclasses with named presets.

This module never imports torch: it is the foundation that prompts, metrics, the CLI's help and
the serving layer read without paying for the model stack.

Presets
-------
``paper``
    The published system: LLaMA-2-7B-chat, EVA ViT-g/14 at 448 px, three 1024-d features,
    LoRA r=64, alpha=16, dropout 0.05 on ``q_proj`` and ``v_proj``.
``tiny``
    The same classes at toy sizes with random weights and a toy tokenizer, for tests and for
    trying the pipeline on a laptop in seconds.

Another Hugging Face causal LM (Llama-3, Qwen2.5, Mistral...)
----------------------------------------------------------
Set ``llm.name_or_path`` to a hub id or a local folder and leave the sizes at ``None``: the
builder reads the model's own config and the projections follow its ``hidden_size``::

    cfg = paper_config().with_llm("Qwen/Qwen2.5-7B-Instruct")

``with_llm`` clears the LLaMA-2 sizes; any size you do give is checked against the model's.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from emotion_llama.errors import ConfigError
from emotion_llama.files import atomic_write_text, read_json, read_yaml

Layout = Literal["training", "inference"]
FrameChoice = Literal["first", "middle", "peak", "random"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionConfig:
    """The global encoder: EVA ViT-g/14 (BLIP-2's frozen ViT), read through ``Blip2VisionModel``."""

    hidden_size: int = 1408
    intermediate_size: int = 6144
    num_layers: int = 39
    num_heads: int = 16
    patch_size: int = 14
    image_size: int = 448
    #: Resolution the released weights were trained at; their position grid is interpolated.
    pretrained_image_size: int = 224
    layer_norm_eps: float = 1e-6
    #: eps of the separate, freshly initialised ``ln_vision`` LayerNorm (PyTorch default).
    ln_vision_eps: float = 1e-5
    #: Consecutive patch tokens of one row concatenated into one LLM token (1024 -> 256).
    group_size: int = 4
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    #: Which frame of a clip feeds this encoder. The official checkpoints expect ``first``.
    frame: FrameChoice = "first"
    #: Where the weights come from: a source name from ``emotion_llama.sources`` or a path to
    #: BLIP-2's ``eva_vit_g.pth``; ``None`` means random weights (tests).
    weights: str | None = "eva_vit_g"

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def num_groups(self) -> int:
        return self.num_patches // self.group_size

    @property
    def grouped_dim(self) -> int:
        return self.hidden_size * self.group_size


@dataclass(frozen=True)
class FeatureConfig:
    """Dimensions of the three pre-extracted features (local MAE, temporal VideoMAE, audio HuBERT)."""

    local_dim: int = 1024
    temporal_dim: int = 1024
    audio_dim: int = 1024


@dataclass(frozen=True)
class LLMConfig:
    """The language model. Sizes may be ``None`` when ``name_or_path`` is given: they are then read
    from the model's own config at build time."""

    #: Hub id or local folder of a Hugging Face causal LM; ``None`` builds random weights from the
    #: sizes below (tests, ``inspect``).
    name_or_path: str | None = "meta-llama/Llama-2-7b-chat-hf"
    #: Tokenizer location; ``None`` means the same as ``name_or_path``; ``"toy"`` is the built-in
    #: toy tokenizer of the ``tiny`` preset.
    tokenizer: str | None = None
    model_type: str = "llama"
    hidden_size: int | None = 4096
    intermediate_size: int | None = 11008
    num_layers: int | None = 32
    num_heads: int | None = 32
    num_kv_heads: int | None = 32
    vocab_size: int | None = 32000
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    #: Revision pinned for the hub download (``None``: the default branch).
    revision: str | None = None

    def sizes_known(self) -> bool:
        return all(
            v is not None
            for v in (
                self.hidden_size,
                self.intermediate_size,
                self.num_layers,
                self.num_heads,
                self.vocab_size,
            )
        )


@dataclass(frozen=True)
class LoRAConfig:
    r: int = 64
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")

    @property
    def scale(self) -> float:
        return self.alpha / self.r


@dataclass(frozen=True)
class PromptConfig:
    """How text and features become one sequence (see ``emotion_llama.prompts``)."""

    #: ``inference``: the authors' evaluation/demo layout (the published scores);
    #: ``training``: the layout their training code builds.
    layout: Layout = "inference"
    template: str = "[INST] {} [/INST]"
    pad_token: str = "$$"
    max_answer_tokens: int = 1024
    max_eval_answer_tokens: int = 500
    max_context_tokens: int = 3800
    #: Cut targets to this many words after normalisation.
    max_target_words: int = 200


@dataclass(frozen=True)
class GenerationConfig:
    """Demo defaults; evaluation uses greedy decoding (``do_sample=False``)."""

    max_new_tokens: int = 500
    do_sample: bool = True
    top_p: float = 0.9
    temperature: float = 0.2
    repetition_penalty: float = 1.05


@dataclass(frozen=True)
class PerceptionConfig:
    """From a raw video to the model's inputs (see ``emotion_llama.perception``).

    Encoder sources are hub ids, local folders, or the authors' checkpoint files
    (``mae_checkpoint-340.pth``, the VideoMAE "399" file); ``None`` builds a random encoder whose
    output size is the matching ``features`` dimension (the ``tiny`` preset, tests)."""

    local_encoder: str | None = "facebook/vit-mae-large"
    temporal_encoder: str | None = "MCG-NJU/videomae-large"
    audio_encoder: str | None = "TencentGameMate/chinese-hubert-large"
    #: Aligned face crop size for the local and temporal encoders.
    face_size: int = 224
    #: Face frames fed to VideoMAE (sampled uniformly over the clip).
    temporal_frames: int = 16
    #: Face frames whose MAE embeddings are averaged (uniform; all frames when the clip is shorter).
    local_frames: int = 16
    #: Frames per second analysed for faces and action units (peak frame, AU timeline).
    analysis_fps: float = 10.0
    #: None: faces on every frame at ``analysis_fps``. A number: coarse to fine in time, the frame
    #: between two analysed ones analysed only when their faces differ (an AU by more than this, on
    #: the 0-5 scale; a face appearing, leaving, moving; the eyes); else it takes the earlier one's
    #: faces (perception/frame_loop.py; docs/perception.md, "Speed").
    analysis_refine: float | None = None
    #: Longest side frames are scaled to before face analysis (speed; crops use full resolution).
    analysis_max_side: int = 640
    #: Also search square tiles of wide frames for small faces (finds more people, about 2x slower).
    face_tiles: bool = False
    #: Whisper model: a size name (tiny.en, base, small...), a local CTranslate2 folder, "offline"
    #: (tiny.en, English only) or "offline-multilingual" (base, any language; both from PyPI packages).
    asr_model: str = "offline"
    #: Beam width of speech recognition (5 halves tiny.en's errors on read speech for ~30% more time).
    asr_beam_size: int = 5
    #: None: Whisper's own windows (the speech padded to 30 s). A number (10 or more): the speech
    #: padded by only that many seconds: 2.5x faster on short utterances, but not the same
    #: transcripts (docs/perception.md, "Speed").
    asr_pad_s: float | None = None
    #: Spoken language, a Whisper code (en, zh...); None: detected (with a multilingual model).
    language: str | None = "en"
    sample_rate: int = 16000


@dataclass(frozen=True)
class EmotionLlamaConfig:
    name: str = "paper"
    vision: VisionConfig = field(default_factory=VisionConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)
    #: Seed used to initialise random weights (parts without a weight source).
    seed: int = 0

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def num_multimodal_tokens(self) -> int:
        """[256 EVA groups, local, temporal, audio, EVA CLS] for the paper sizes: 260."""
        return self.vision.num_groups + 4

    # -- helpers -------------------------------------------------------------------------------
    def with_llm(self, name_or_path: str, tokenizer: str | None = None) -> EmotionLlamaConfig:
        """The same system on another Hugging Face causal LM; its sizes are read at build time."""
        llm = replace(
            self.llm,
            name_or_path=name_or_path,
            tokenizer=tokenizer,
            model_type="auto",
            hidden_size=None,
            intermediate_size=None,
            num_layers=None,
            num_heads=None,
            num_kv_heads=None,
            vocab_size=None,
        )
        return replace(self, llm=llm)

    def validate(self, source: str | Path | None = None) -> EmotionLlamaConfig:
        """Raise :class:`ConfigError` naming ``source`` (a file, or the preset) on inconsistency."""
        where = f"{source}: " if source is not None else f"config {self.name!r}: "
        problems: list[str] = []
        v = self.vision
        if v.image_size % v.patch_size:
            problems.append(
                f"vision.image_size {v.image_size} is not a multiple of patch_size {v.patch_size}"
            )
        if v.pretrained_image_size % v.patch_size:
            problems.append(
                f"vision.pretrained_image_size {v.pretrained_image_size} is not a multiple of "
                f"patch_size {v.patch_size}"
            )
        if v.hidden_size % v.num_heads:
            problems.append(f"vision.hidden_size {v.hidden_size} is not divisible by num_heads {v.num_heads}")
        if v.group_size < 1 or v.grid % v.group_size:
            problems.append(
                f"vision.group_size {v.group_size} must divide the patch grid width {v.grid} "
                "(groups are consecutive patches of one row)"
            )
        if len(v.mean) != 3 or len(v.std) != 3:
            problems.append("vision.mean and vision.std need three values (RGB)")
        for name in ("local_dim", "temporal_dim", "audio_dim"):
            if getattr(self.features, name) < 1:
                problems.append(f"features.{name} must be positive")
        m = self.llm
        if m.name_or_path is None and not m.sizes_known():
            problems.append("llm: random weights (name_or_path: null) need every size set")
        if m.hidden_size is not None and m.num_heads:
            if m.hidden_size % m.num_heads:
                problems.append(
                    f"llm.hidden_size {m.hidden_size} is not divisible by num_heads {m.num_heads}"
                )
            if m.num_kv_heads and m.num_heads % m.num_kv_heads:
                problems.append(
                    f"llm.num_heads {m.num_heads} is not a multiple of num_kv_heads {m.num_kv_heads}"
                )
        if self.lora.r < 1:
            problems.append("lora.r must be at least 1")
        if not 0.0 <= self.lora.dropout < 1.0:
            problems.append("lora.dropout must be in [0, 1)")
        if not self.lora.target_modules:
            problems.append("lora.target_modules is empty")
        if self.prompt.template.count("{}") != 1:
            problems.append("prompt.template must contain exactly one '{}'")
        if problems:
            raise ConfigError(where + "; ".join(problems))
        return self

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path) -> None:
        """Write the config; local paths among its weight sources (:data:`PATH_FIELDS`) are
        written relative to the file's folder (``./llm``, ``../models/Llama-2-7b-chat-hf``), and
        also as they were under ``_absolute_paths``, so a checkpoint folder moved with its models,
        or moved alone on the same machine, still finds them. Hub ids and source names stay as
        they are."""
        path = Path(path)
        data = portable_paths(self.to_dict(), path.parent)
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> EmotionLlamaConfig:
        where = f"{source}: " if source is not None else ""
        try:
            return _build_dataclass(cls, data, where).validate(source)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{where}{exc}") from exc

    @classmethod
    def from_json(cls, path: str | Path) -> EmotionLlamaConfig:
        path = Path(path)
        data = read_json(path, error=ConfigError)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object at the top level")
        return cls.from_dict(located_paths(data, path.parent), source=path)


#: The config fields that may name a local file or folder (the rest are sizes and switches).
PATH_FIELDS: tuple[tuple[str, str], ...] = (
    ("llm", "name_or_path"),
    ("llm", "tokenizer"),
    ("vision", "weights"),
    ("perception", "local_encoder"),
    ("perception", "temporal_encoder"),
    ("perception", "audio_encoder"),
    ("perception", "asr_model"),
)
ABSOLUTE_PATHS = "_absolute_paths"
_RELATIVE = ("./", "../")


def _is_local_path(value: str) -> bool:
    """A value that names an existing local file or folder by a path (hub ids, source names and
    size names such as ``tiny.en`` have no such form or do not exist here)."""
    looks_like_path = "/" in value or value.startswith((".", "~"))
    return looks_like_path and Path(value).expanduser().exists()


def portable_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``data`` (a config dict) with its local paths made relative to ``folder``; the absolute
    paths are kept under ``_absolute_paths`` (``{"llm.name_or_path": "/models/..."}``)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    base = folder.resolve()
    absolute: dict[str, str] = {}
    for part, name in PATH_FIELDS:
        value = out.get(part, {}).get(name)
        if isinstance(value, str) and not value.startswith(_RELATIVE) and _is_local_path(value):
            path = Path(value).expanduser().resolve()
            rel = os.path.relpath(path, base)
            out[part][name] = rel if rel.startswith("../") else f"./{rel}"
            absolute[f"{part}.{name}"] = str(path)
    if absolute:
        out[ABSOLUTE_PATHS] = absolute
    return out


def located_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The inverse of :func:`portable_paths`: each ``./``/``../`` path resolved against the
    config file's folder, else (the file was moved without what it names) the absolute path it
    was written from; when neither exists, the first (and the error that follows names it)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    absolute = out.pop(ABSOLUTE_PATHS, None)
    absolute = absolute if isinstance(absolute, dict) else {}
    for part, name in PATH_FIELDS:
        value = out.get(part, {}).get(name) if isinstance(out.get(part), dict) else None
        if not isinstance(value, str) or not value.startswith(_RELATIVE):
            continue
        candidates = [folder / value]
        if isinstance(absolute.get(f"{part}.{name}"), str):
            candidates.append(Path(absolute[f"{part}.{name}"]))
        found = next((c for c in candidates if c.exists()), candidates[0])
        out[part][name] = str(found.resolve())
    return out


def _build_dataclass(cls: Any, data: dict[str, Any], where: str) -> Any:
    """Nested dataclass from a dict; unknown keys are an error (typos must not pass silently)."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}unknown {cls.__name__} field(s): {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        f = known[name]
        default = (
            f.default_factory()  # type: ignore[misc]
            if f.default_factory is not dataclasses.MISSING
            else f.default
        )
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{name} must be an object")
            kwargs[name] = _build_dataclass(type(default), value, where)
        elif isinstance(default, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


# -- presets -----------------------------------------------------------------------------------
def paper_config() -> EmotionLlamaConfig:
    """The published Emotion-LLaMA (SPEC 2)."""
    return EmotionLlamaConfig(name="paper")


def tiny_config() -> EmotionLlamaConfig:
    """Random-weight toy sizes of the same classes: 56 px images of 14 px patches (a 4x4 grid,
    4 groups), 3 vision layers, a 2-layer 64-wide LLaMA with the toy tokenizer."""
    return EmotionLlamaConfig(
        name="tiny",
        vision=VisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_layers=3,
            num_heads=4,
            patch_size=14,
            image_size=56,
            pretrained_image_size=28,
            weights=None,
        ),
        features=FeatureConfig(local_dim=24, temporal_dim=20, audio_dim=16),
        llm=LLMConfig(
            name_or_path=None,
            tokenizer="toy",
            hidden_size=64,
            intermediate_size=128,
            num_layers=2,
            num_heads=4,
            num_kv_heads=4,
            vocab_size=512,
            max_position_embeddings=2048,
        ),
        lora=LoRAConfig(r=4, alpha=8, dropout=0.0),
        generation=GenerationConfig(max_new_tokens=16),
        perception=PerceptionConfig(
            local_encoder=None,
            temporal_encoder=None,
            audio_encoder=None,
            face_size=32,
            temporal_frames=4,
            local_frames=4,
        ),
    )


def paper_official_config() -> EmotionLlamaConfig:
    """``paper`` with the authors' own MAE and VideoMAE files as the local and temporal encoders
    (source names ``mae_emotion_llama``, ``videomae_emotion_llama``): the released checkpoints
    were trained on their features, and the public MAE/VideoMAE give other ones. The files are a
    browser download from the authors' Google Drive (``emotion-llama fetch paper`` says where to
    put them)."""
    return EmotionLlamaConfig(
        name="paper-official",
        perception=PerceptionConfig(
            local_encoder="mae_emotion_llama", temporal_encoder="videomae_emotion_llama"
        ),
    )


PRESETS = {"paper": paper_config, "paper-official": paper_official_config, "tiny": tiny_config}


def get_preset(name: str) -> EmotionLlamaConfig:
    try:
        return PRESETS[name]().validate()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}") from None


def load_config(preset_or_path: str | Path) -> EmotionLlamaConfig:
    """A preset name, a ``config.json`` file, or a checkpoint folder holding one."""
    text = str(preset_or_path)
    if text in PRESETS:
        return get_preset(text)
    path = Path(text)
    if path.is_dir():
        path = path / "config.json"
    if path.suffix.lower() in {".yaml", ".yml"}:
        data = read_yaml(path, error=ConfigError)  # yaml is imported only where YAML is asked for
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        base = data.pop("preset", None)
        merged = _deep_merge(get_preset(base).to_dict(), data) if base else data
        return EmotionLlamaConfig.from_dict(merged, source=path)
    if not path.exists() and path.suffix == "" and "/" not in text:
        raise ConfigError(f"unknown preset {text!r}; choose one of: {', '.join(sorted(PRESETS))}")
    return EmotionLlamaConfig.from_json(path)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
