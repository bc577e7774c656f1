"""One guided set-up of the paper model: every file it needs fetched (or placed by hand, where
only a browser can download it), verified, and turned into what loads fast.

``emotion-llama fetch paper`` runs :func:`setup_paper`:

1. fetches LLaMA-2-7B-chat, BLIP-2's EVA ViT-g, chinese-hubert-large (the hub, the LAVIS zoo) and
   looks for the authors' MAE/VideoMAE files and released checkpoints (Google Drive: a browser
   download, placed at the path it names); a file whose sha256 nobody publishes is pinned the
   first time (``sources.read_pins``) and verified against the pin afterwards;
2. converts the EVA ViT-g once to a 448 px ``.safetensors`` (later loads skip the 4 GB pickle);
3. writes ``paper-official.yaml``: the ``paper-official`` preset with every source a local path,
   so the model loads without the hub;
4. converts each released checkpoint that is there into a checkpoint folder with that config.

Each step reports what it did or what is missing, and one missing file never stops the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from emotion_llama.config import EmotionLlamaConfig, paper_official_config
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.sources import SOURCES, Source, cache_dir, fetch

#: What the paper model needs: role -> source.
PAPER_SOURCES: dict[str, str] = {
    "llm": "llama2_7b_chat",
    "vision": "eva_vit_g",
    "audio": "chinese_hubert_large",
    "local": "mae_emotion_llama",
    "temporal": "videomae_emotion_llama",
}
#: The released checkpoints: source -> the name of the checkpoint folder it becomes.
RELEASED: dict[str, str] = {
    "emotion_llama_demo": "emotion-llama-demo",
    "emotion_llama_mer2023": "emotion-llama-mer2023",
    "emotion_llama_mer2024": "emotion-llama-mer2024",
}
CONFIG_NAME = "paper-official.yaml"
EVA_448 = "eva_vit_g_448.safetensors"


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    path: Path | None
    detail: str


def _fetch_step(name: str, source: Source | str) -> Step:
    label = source if isinstance(source, str) else source.name
    try:
        return Step(name, True, fetch(source), f"{label}: ready")
    except EmotionLlamaError as exc:
        return Step(name, False, None, str(exc))


def _source_of(value: Source | str) -> Source | str:
    return SOURCES.get(value, value) if isinstance(value, str) else value


def _eva_448(eva: Path, config: EmotionLlamaConfig, out: Path) -> Step:
    from emotion_llama.model.builder import load_vision_weights
    from emotion_llama.weights import write_safetensors

    if out.is_file():
        return Step("vision (448 px)", True, out, "converted before")
    try:
        state = load_vision_weights(str(eva), config.vision)
    except EmotionLlamaError as exc:
        return Step("vision (448 px)", False, None, str(exc))
    meta = {"format": "blip2-vision", "image_size": str(config.vision.image_size)}
    write_safetensors(state, out, meta)
    return Step("vision (448 px)", True, out, f"converted once to {config.vision.image_size} px")


def official_config(base: EmotionLlamaConfig, paths: Mapping[str, Path]) -> EmotionLlamaConfig:
    """``base`` (the ``paper-official`` preset) with every source a local path."""
    return replace(
        base,
        llm=replace(base.llm, name_or_path=str(paths["llm"])),
        vision=replace(base.vision, weights=str(paths["vision"])),
        perception=replace(
            base.perception,
            local_encoder=str(paths["local"]),
            temporal_encoder=str(paths["temporal"]),
            audio_encoder=str(paths["audio"]),
        ),
    )


def write_config_yaml(config: EmotionLlamaConfig, path: Path) -> Path:
    """The config as a YAML file ``load_config`` reads: its preset and the fields that differ."""
    import yaml

    from emotion_llama.config import get_preset
    from emotion_llama.files import atomic_write_text

    preset = get_preset(config.name).to_dict()
    data: dict[str, object] = {"preset": config.name}
    for part, value in config.to_dict().items():
        if isinstance(value, dict):
            diff = {k: v for k, v in value.items() if preset[part].get(k) != v}
            if diff:
                data[part] = diff
    return atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def setup_paper(
    out: Path | None = None,
    *,
    base: EmotionLlamaConfig | None = None,
    sources: Mapping[str, Source | str] | None = None,
    released: Mapping[str, Source | str] | None = None,
) -> list[Step]:
    """Every step of the paper set-up, in order; ``out`` (default ``CACHE/paper``) receives the
    converted ViT, ``paper-official.yaml`` and ``checkpoints/NAME``. ``base``, ``sources``
    (role -> source) and ``released`` (folder name -> source) default to the paper's (tests give
    small stand-ins)."""
    from emotion_llama.model.checkpoint import convert_authors_checkpoint, is_checkpoint_folder

    out = out or cache_dir() / "paper"
    base = base or paper_official_config()
    roles = {k: _source_of(v) for k, v in (sources or PAPER_SOURCES).items()}
    steps = [_fetch_step(role, src) for role, src in roles.items()]
    got = {s.name: s.path for s in steps if s.ok and s.path is not None}
    if "vision" in got:
        eva = _eva_448(got["vision"], base, out / EVA_448)
        steps.append(eva)
        got["vision"] = eva.path if eva.ok else None
    missing = [role for role in roles if got.get(role) is None]
    config_path = out / CONFIG_NAME
    if missing:
        steps.append(Step("config", False, None, f"not written: {', '.join(missing)} missing (see above)"))
        config = None
    else:
        config = official_config(base, {k: v for k, v in got.items() if v is not None})
        write_config_yaml(config, config_path)
        steps.append(Step("config", True, config_path, f"preset {base.name}, every source a local path"))
    default_released = {folder: src for src, folder in RELEASED.items()}
    for name, src in (released or default_released).items():
        step = _fetch_step(name, _source_of(src))
        steps.append(step)
        if not step.ok or step.path is None or config is None:
            continue
        folder = out / "checkpoints" / name
        if is_checkpoint_folder(folder):
            steps.append(Step(f"{name} (folder)", True, folder, "converted before"))
            continue
        try:
            convert_authors_checkpoint(step.path, config, folder)
            steps.append(Step(f"{name} (folder)", True, folder, "converted: use it as --model"))
        except EmotionLlamaError as exc:
            steps.append(Step(f"{name} (folder)", False, None, str(exc)))
    return steps
