"""The three frozen feature encoders of Emotion-LLaMA (SPEC 2.1) and their builders.

* local: MAE ViT-L/16 (``ViTMAEModel``) on face crops; the CLS token after the final LayerNorm,
  per crop, averaged over the clip's crops;
* temporal: VideoMAE ViT-L/16 (``VideoMAEModel``) on 16 frames; the mean of its 1568 tokens
  (8 tubelets of 2 frames x 14 x 14 patches) after the final LayerNorm;
* audio: HuBERT-large (``HubertModel``) on the waveform; ``last_hidden_state`` (the last block's
  output after the encoder's final LayerNorm) averaged over the unpadded frames. transformers 4.x
  returned this same tensor as ``hidden_states[-1]``, the usual "last layer" of feature
  extraction scripts; transformers 5 returns the last block's output *before* that LayerNorm
  there, so ``hidden_states[-1]`` must not be used.

Choices, and why:

* **Local: no masking, no shuffling.** ``ViTMAEModel`` masks 75% of the patches by default and,
  even with ``mask_ratio=0``, permutes the tokens by the argsort of fresh random noise (drawing
  from the global RNG on every call). The CLS output does not depend on the order in exact
  arithmetic, but the float sums do; :class:`LocalEncoder` therefore passes ``noise = 0, 1, 2...``
  so the permutation is the identity: outputs are bit-identical from call to call and the RNG is
  not touched. The feature is the CLS row of ``last_hidden_state``, which ``ViTMAEModel`` has
  already passed through its final ``layernorm`` (the original's ``norm``), i.e. the normalised
  CLS "before fc_norm" (``fc_norm`` only exists in fine-tuned global-pool models).
* **Temporal: mean of normalised tokens.** The authors' "399" file is a VideoMAE *pretraining*
  checkpoint, whose encoder ends with ``norm`` applied to every token; the feature is the mean of
  those tokens. transformers maps that to ``use_mean_pooling=False`` (``VideoMAEModel.layernorm``
  then normalises every token). With ``use_mean_pooling=True`` (fine-tuned models) the model has
  no final norm and the original fine-tuned network computes ``fc_norm(mean(tokens))``: the
  builders load that ``fc_norm`` into :class:`TemporalEncoder` and apply it after the mean.
* **Audio: normalisation as the model's feature extractor does it.** HuBERT-large checkpoints ship
  a ``Wav2Vec2FeatureExtractor`` config; with ``do_normalize`` each waveform is shifted to zero mean
  and unit variance over its *valid* samples (eps 1e-7, padding kept at 0), exactly as
  ``feature_extractor(wav).input_values`` computes it. Without a config, the rule of the
  published checkpoints is used: normalise for the LayerNorm conv stack (large models), not for
  the GroupNorm one (base models). With the LayerNorm stack, padded batches give the same
  features as one clip at a time up to float rounding; the GroupNorm stack normalises over
  time, so there each padded clip is run alone.
* **One clip per forward, for bit-identical features.** A clip's features must not depend on
  which clips share its call (a resumed ``extract`` must write the same files as an uninterrupted
  one). Batched kernels do not give that: convolutions and matmuls choose their blocking by
  batch size, and padding changes the audio frames' rounding. Measured on the CPU: the tiny
  HuBERT's pooled vector differed by up to 3.6e-7 between a clip alone and the same clip in a
  batch of three clips of equal length (no padding: the conv stack already differs), and
  HuBERT-large's by 7.2e-7 for a padded clip. The ``encode_clip`` methods therefore run one
  clip with batch dimension 1, the audio at its own length with no padding and no mask;
  ``Encoders.encode``, ``AudioEncoder.encode_waveforms`` and ``perception.pipeline.encode`` are
  loops over them. ``forward`` (and ``LocalEncoder.encode_clips``) still take whole batches,
  for throughput where bit-exactness across batch compositions does not matter.
* Images: ImageNet mean/std (MAE's and VideoMAE's convention), RGB, values in [0, 1] first.
* Outputs are float32 whatever the weights' dtype: features are stored as float32 ``.npy`` files
  and the means over 1568 tokens are better summed in fp32.

Sources: a hub id or local transformers folder (``from_pretrained``), a name from
:data:`emotion_llama.sources.SOURCES`, a ``.pth`` file in the original repositories' format
(converted by :mod:`emotion_llama.encoders.convert`), or ``None``: a random tiny encoder (2 layers,
seeded) whose width is the requested feature size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    HubertConfig,
    HubertModel,
    VideoMAEConfig,
    VideoMAEModel,
    ViTMAEConfig,
    ViTMAEModel,
)

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.encoders.convert import (
    convert_mae_state,
    convert_videomae_state,
    mae_config_from_state,
    unwrap_state,
    videomae_config_from_state,
)
from emotion_llama.errors import CheckpointError, ConfigError, EmotionLlamaError
from emotion_llama.model.fp8 import check_fp8_device, convert_linears
from emotion_llama.precision import check_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAMPLE_RATE = 16000
#: Wav2Vec2FeatureExtractor's variance floor in zero-mean unit-variance normalisation.
WAVE_NORM_EPS = 1e-7
#: HuBERT's feature encoder (7 convolutions, 20 ms hop, 25 ms receptive field), kept in the tiny
#: configs too so that frame counts and padding behave like the real model's.
HUBERT_CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
HUBERT_CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)
ORIGINAL_SUFFIXES = (".pth", ".pt")

Kind = Literal["local", "temporal", "audio"]


class EncoderError(EmotionLlamaError):
    """An encoder cannot be built or cannot take the given input."""


# -- preprocessing ------------------------------------------------------------------------------
def preprocess_frames(
    frames: np.ndarray | torch.Tensor,
    size: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 RGB crops (F, H, W, 3) -> float32 (F, 3, S, S), scaled to [0, 1] then normalised with
    ``mean``/``std`` (ImageNet's by default, the MAE/VideoMAE convention). Crops that are not
    ``size`` x ``size`` are resized (bicubic, antialiased); ``size=None`` keeps them as they are."""
    x = torch.as_tensor(frames)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise EncoderError(f"expected RGB frames shaped (F, H, W, 3), got {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise EncoderError(f"expected uint8 frames (0-255), got {x.dtype}")
    x = x.permute(0, 3, 1, 2).float()
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp(0.0, 255.0)  # bicubic overshoots at edges
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x / 255.0 - m) / s


def pad_waveforms(waves: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mono waveforms of any lengths -> (B, T) float32 padded on the right with zeros, and the
    (B, T) long attention mask (1 = real sample)."""
    if not waves:
        raise EncoderError("no waveforms given")
    tensors = [torch.as_tensor(w, dtype=torch.float32).reshape(-1) for w in waves]
    longest = max(t.numel() for t in tensors)
    batch = torch.zeros(len(tensors), longest)
    mask = torch.zeros(len(tensors), longest, dtype=torch.long)
    for i, t in enumerate(tensors):
        batch[i, : t.numel()] = t
        mask[i, : t.numel()] = 1
    return batch, mask


def normalize_waveforms(waves: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, T) float32: zero mean, unit variance over each row's valid samples (population
    variance + 1e-7), padded positions set to 0, as ``Wav2Vec2FeatureExtractor(do_normalize=True)``."""
    x = waves.float()
    m = mask.to(x.dtype)
    n = m.sum(dim=1, keepdim=True).clamp_min(1.0)
    mean = (x * m).sum(dim=1, keepdim=True) / n
    var = (((x - mean) * m) ** 2).sum(dim=1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + WAVE_NORM_EPS) * m


# -- the encoders -------------------------------------------------------------------------------
def _param_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


class _WrappedEncoder(nn.Module):
    """A frozen transformers model under ``self.model``: its width and input size from its config."""

    model: nn.Module

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)


class LocalEncoder(_WrappedEncoder):
    """MAE ViT on face crops: the normalised CLS token per crop, averaged over a clip's crops."""

    def __init__(self, model: ViTMAEModel) -> None:
        super().__init__()
        # Masking is read from the config at every call: force it off whatever the source said.
        model.config.mask_ratio = 0.0
        self.model = model

    @property
    def num_patches(self) -> int:
        return int(self.model.embeddings.patch_embeddings.num_patches)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised crops -> (N, D) float32 CLS embeddings."""
        n, length = pixel_values.shape[0], self.num_patches
        # Increasing noise makes ViTMAE's argsort "shuffle" the identity: no reordering, no RNG use.
        noise = torch.arange(length, device=pixel_values.device, dtype=torch.float32).expand(n, length)
        out = self.model(pixel_values=pixel_values.to(_param_dtype(self)), noise=noise)
        return out.last_hidden_state[:, 0].float()

    def encode_clip(self, faces: torch.Tensor) -> torch.Tensor:
        """(F, 3, S, S) crops of one clip -> (D,) mean of their embeddings."""
        return self(faces).mean(dim=0)

    def encode_clips(self, faces: torch.Tensor) -> torch.Tensor:
        """(B, F, 3, S, S) -> (B, D): all B*F crops in one forward, then the mean per clip (for
        throughput: a row's rounding may depend on B; :meth:`encode_clip` per clip does not)."""
        b, f = faces.shape[:2]
        return self(faces.flatten(0, 1)).view(b, f, -1).mean(dim=1)


class TemporalEncoder(_WrappedEncoder):
    """VideoMAE on a clip's frames: the mean of all its tokens (1568 for ViT-L/16, 16 frames)."""

    def __init__(self, model: VideoMAEModel, fc_norm: nn.LayerNorm | None = None) -> None:
        super().__init__()
        if model.config.use_mean_pooling and fc_norm is None:
            raise EncoderError(
                "this VideoMAE has no final norm (use_mean_pooling=True): its fc_norm is needed"
            )
        self.model = model
        self.fc_norm = fc_norm

    @property
    def num_frames(self) -> int:
        return int(self.model.config.num_frames)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) normalised frames -> (B, D) float32 token means."""
        emb = self.model.embeddings
        # The fixed position table is a plain attribute, not a buffer: ``.to(device)`` leaves it
        # on the host and transformers would copy it host -> device on every call. Move it once.
        if emb.position_embeddings.device != pixel_values.device:
            emb.position_embeddings = emb.position_embeddings.to(pixel_values.device)
        tokens = self.model(pixel_values=pixel_values.to(_param_dtype(self))).last_hidden_state
        pooled = tokens.float().mean(dim=1)
        if self.fc_norm is not None:
            n = self.fc_norm
            pooled = F.layer_norm(pooled, (self.dim,), n.weight.float(), n.bias.float(), n.eps)
        return pooled

    def encode_clip(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, 3, S, S) -> (D,), alone in its forward (batch dimension 1)."""
        return self(frames[None])[0]


class AudioEncoder(_WrappedEncoder):
    """HuBERT on 16 kHz mono audio: the last hidden layer averaged over the unpadded frames."""

    def __init__(self, model: HubertModel, *, do_normalize: bool, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        self.model = model
        self.do_normalize = do_normalize
        self.sample_rate = sample_rate

    @property
    def min_samples(self) -> int:
        """Shortest waveform that yields one frame (the conv stack's receptive field: 400)."""
        field, hop = 1, 1
        for k, s in zip(self.model.config.conv_kernel, self.model.config.conv_stride, strict=True):
            field += (k - 1) * hop
            hop *= s
        return field

    def frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        """(B,) valid samples -> (B,) valid frames (each convolution without padding)."""
        n = sample_lengths.long()
        for k, s in zip(self.model.config.conv_kernel, self.model.config.conv_stride, strict=True):
            n = torch.div(n - k, s, rounding_mode="floor") + 1
        return n

    def forward(self, waveforms: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) float waveforms, right-padded, with a (B, T) mask (1 = sample, 0 = padding;
        ``None``: no padding) -> (B, D) float32."""
        if waveforms.ndim != 2:
            raise EncoderError(f"expected waveforms shaped (B, T), got {tuple(waveforms.shape)}")
        b, t = waveforms.shape
        mask = (
            torch.ones(b, t, dtype=torch.long, device=waveforms.device)
            if attention_mask is None
            else attention_mask.to(device=waveforms.device, dtype=torch.long)
        )
        lengths = mask.sum(dim=1)
        if int(lengths.min()) < self.min_samples:
            ms = self.min_samples / self.sample_rate * 1e3
            raise EncoderError(f"audio shorter than {self.min_samples} samples ({ms:.0f} ms)")
        x = normalize_waveforms(waveforms, mask) if self.do_normalize else waveforms.float() * mask
        padded = attention_mask is not None and int(lengths.min()) < t
        if padded and self.model.config.feat_extract_norm == "group":
            # GroupNorm over time would see the padding: run each clip at its own length.
            return torch.cat([self._pool(x[i : i + 1, : int(lengths[i])], None) for i in range(b)])
        return self._pool(x, mask if padded else None)

    def _pool(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # Without padding the model gets no mask: SDPA can then use its fastest (maskless) kernels.
        hidden = self.model(x.to(_param_dtype(self)), attention_mask=mask).last_hidden_state.float()
        if mask is None:
            return hidden.mean(dim=1)
        frames = self.frame_lengths(mask.sum(dim=1))
        valid = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < frames[:, None]
        return (hidden * valid[..., None]).sum(dim=1) / frames[:, None].to(hidden.dtype)

    def encode_clip(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """One mono waveform (any length >= :attr:`min_samples`) -> (D,): alone in its forward, at
        its own length, without padding or mask, so the result does not depend on other clips."""
        device = next(self.parameters()).device
        x = torch.as_tensor(wave, dtype=torch.float32).reshape(1, -1).to(device)
        return self(x)[0]

    def encode_waveforms(self, waves: Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
        """Waveforms of any lengths -> (B, D), one :meth:`encode_clip` each: row i is
        bit-identical to encoding waveform i alone (a padded batch is not, see the module
        docstring)."""
        if not waves:
            raise EncoderError("no waveforms given")
        return torch.stack([self.encode_clip(w) for w in waves])


@dataclass
class Encoders:
    """The three frozen feature encoders, in eval mode."""

    local: LocalEncoder
    temporal: TemporalEncoder
    audio: AudioEncoder

    @property
    def dims(self) -> dict[str, int]:
        return {"local": self.local.dim, "temporal": self.temporal.dim, "audio": self.audio.dim}

    def encode(
        self,
        faces: torch.Tensor,
        frames: torch.Tensor,
        waveforms: torch.Tensor,
        audio_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """A batch of B clips -> {"local": (B, Dl), "temporal": (B, Dt), "audio": (B, Da)} float32.

        ``faces`` (B, F, 3, S, S) crops for the local encoder, ``frames`` (B, T, 3, S, S) for the
        temporal one, ``waveforms`` (B, L) right-padded, with an optional (B, L) padding mask.
        Each clip is encoded alone (its waveform cut to its mask's length), so row i is
        bit-identical whatever the other rows hold."""
        if audio_mask is None:
            lengths = [waveforms.shape[1]] * waveforms.shape[0]
        else:
            lengths = [int(n) for n in audio_mask.sum(dim=1)]
        with torch.inference_mode():
            return {
                "local": torch.stack([self.local.encode_clip(f) for f in faces]),
                "temporal": torch.stack([self.temporal.encode_clip(t) for t in frames]),
                "audio": torch.stack(
                    [self.audio.encode_clip(w[:n]) for w, n in zip(waveforms, lengths, strict=True)]
                ),
            }


# -- configurations -----------------------------------------------------------------------------
def _tiny_heads(dim: int) -> int:
    return next(h for h in (4, 2, 1) if dim % h == 0)


def _tiny_patch(image_size: int) -> int:
    if image_size % 16 == 0 and image_size // 16 >= 4:
        return 16
    if image_size % 8 == 0:
        return 8
    raise ConfigError(f"image size {image_size} is not a multiple of 8 (the tiny encoders' patch size)")


#: The tiny models' MAE decoder (unused by the encoders, but a ViTMAE/VideoMAE config has one).
_TINY_DECODER: dict[str, int] = {
    "decoder_hidden_size": 8,
    "decoder_num_hidden_layers": 1,
    "decoder_num_attention_heads": 1,
    "decoder_intermediate_size": 8,
}


def _vit_sizes(dim: int, layers: int, heads: int, inter: int, image_size: int, patch: int) -> dict[str, int]:
    return {
        "hidden_size": dim,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": inter,
        "image_size": image_size,
        "patch_size": patch,
    }


def _tiny_vit_sizes(dim: int, image_size: int) -> dict[str, int]:
    return _vit_sizes(dim, 2, _tiny_heads(dim), 2 * dim, image_size, _tiny_patch(image_size))


def tiny_mae_config(dim: int, image_size: int) -> ViTMAEConfig:
    """2 layers of width ``dim``, patch 16 (8 below 64 px); MAE's sin-cos table needs dim % 4 == 0."""
    if dim % 4:
        raise ConfigError(f"a random MAE needs a width divisible by 4 (its 2-D sin-cos table), got {dim}")
    return ViTMAEConfig(
        **_tiny_vit_sizes(dim, image_size), layer_norm_eps=1e-6, mask_ratio=0.0, **_TINY_DECODER
    )


def large_mae_config(image_size: int = 224) -> ViTMAEConfig:
    """MAE ViT-L/16: 24 layers, width 1024, 16 heads, MLP 4096, LayerNorm eps 1e-6."""
    return ViTMAEConfig(**_vit_sizes(1024, 24, 16, 4096, image_size, 16), layer_norm_eps=1e-6, mask_ratio=0.0)


#: VideoMAE as pretrained: tubelet 2, no mean pooling (the final norm on every token).
_VIDEOMAE_LAYOUT: dict[str, Any] = {"tubelet_size": 2, "use_mean_pooling": False, "layer_norm_eps": 1e-6}


def tiny_videomae_config(dim: int, image_size: int, num_frames: int) -> VideoMAEConfig:
    if num_frames % 2:
        raise ConfigError(f"VideoMAE takes frames in pairs (tubelet 2); {num_frames} frames asked for")
    return VideoMAEConfig(
        **_tiny_vit_sizes(dim, image_size), num_frames=num_frames, **_VIDEOMAE_LAYOUT, **_TINY_DECODER
    )


def large_videomae_config(image_size: int = 224, num_frames: int = 16) -> VideoMAEConfig:
    """VideoMAE ViT-L/16 as pretrained (tubelet 2, q/v biases, final norm on every token)."""
    return VideoMAEConfig(
        **_vit_sizes(1024, 24, 16, 4096, image_size, 16), num_frames=num_frames, **_VIDEOMAE_LAYOUT
    )


def _hubert_config(
    dim: int, layers: int, heads: int, inter: int, conv: int, pos: int, groups: int
) -> HubertConfig:
    return HubertConfig(
        hidden_size=dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        conv_dim=(conv,) * len(HUBERT_CONV_KERNEL),
        conv_kernel=HUBERT_CONV_KERNEL,
        conv_stride=HUBERT_CONV_STRIDE,
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=pos,
        num_conv_pos_embedding_groups=groups,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.0,
        apply_spec_augment=False,
    )


def tiny_hubert_config(dim: int) -> HubertConfig:
    """2 layers of width ``dim`` on HuBERT's real conv layout (16 channels): 50 frames a second."""
    return _hubert_config(dim, 2, _tiny_heads(dim), 2 * dim, conv=16, pos=16, groups=_tiny_heads(dim))


def large_hubert_config() -> HubertConfig:
    """HuBERT-large (as ``chinese-hubert-large``): 24 layers, width 1024, LayerNorm conv stack."""
    return _hubert_config(1024, 24, 16, 4096, conv=512, pos=128, groups=16)


# -- sources ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Random initialisation from ``seed`` without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _resolve(source: str) -> tuple[Literal["file", "pretrained"], str]:
    """A source string -> ("file", path of an original checkpoint) or ("pretrained", hub id or
    folder for ``from_pretrained``)."""
    from emotion_llama.sources import SOURCES, fetch

    if source in SOURCES:
        src = SOURCES[source]
        if src.hub_repo is not None and src.filename is None:
            return "pretrained", src.hub_repo
        return "file", str(fetch(src))
    path = Path(source).expanduser()
    if path.is_dir():
        return "pretrained", str(path)
    if path.is_file() or path.suffix in ORIGINAL_SUFFIXES:
        return "file", str(path)  # a missing file is reported by the reader
    return "pretrained", source


def read_original_checkpoint(path: str | Path) -> dict[str, Any]:
    """An original MAE/VideoMAE training checkpoint -> its dict (tensors under ``model``).

    Their ``save_model`` also pickles the run's ``argparse.Namespace``; it is allowed through the
    ``weights_only`` loader (a plain attribute bag), everything else beyond tensors is refused."""
    from emotion_llama.weights import read_torch_file

    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = read_torch_file(path)
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dict of tensors, found a {type(obj).__name__}")
    return obj


def _from_pretrained(cls: Any, location: str, kind: Kind, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EncoderError(f"cannot load the {kind} encoder from {location!r}: {first}") from None


def _load_converted(model: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as exc:  # converter and class disagree: a bug, but name the file anyway
        raise CheckpointError(path, f"converted weights do not load: {str(exc).splitlines()[0]}") from None


def _check(kind: Kind, source: str | None, what: str, got: int, want: int | None, field: str) -> None:
    if want is not None and got != want:
        raise ConfigError(f"{source}: the {kind} encoder's {what} is {got}, but {field} is {want}")


def build_local_encoder(
    source: str | None, dim: int | None = None, image_size: int = 224, *, seed: int = 0
) -> LocalEncoder:
    """The MAE face encoder from ``source`` (see the module docstring); ``dim`` and ``image_size``
    are checked against the source's (``dim`` is required for ``None``)."""
    if source is None:
        if dim is None:
            raise ConfigError("a random local encoder needs its width (dim)")
        with _seeded(seed):
            model = ViTMAEModel(tiny_mae_config(dim, image_size))
    else:
        how, where = _resolve(source)
        if how == "file":
            raw = unwrap_state(read_original_checkpoint(where))
            cfg = mae_config_from_state(raw, where)
            with torch.device("meta"):  # weights come from the file: skip random initialisation
                model = ViTMAEModel(cfg)
            model.to_empty(device="cpu")
            _load_converted(model, convert_mae_state(raw, cfg, where), where)
        else:
            model = _from_pretrained(ViTMAEModel, where, "local", mask_ratio=0.0)
    enc = LocalEncoder(model)
    _check("local", source, "width", enc.dim, dim, "features.local_dim")
    _check("local", source, "image size", enc.image_size, image_size, "perception.face_size")
    return enc


def build_temporal_encoder(
    source: str | None,
    dim: int | None = None,
    image_size: int = 224,
    num_frames: int = 16,
    *,
    seed: int = 0,
) -> TemporalEncoder:
    """The VideoMAE encoder from ``source``; ``dim``, ``image_size`` and ``num_frames`` are
    checked against the source's (its position table is fixed by them)."""
    fc_norm: nn.LayerNorm | None = None
    if source is None:
        if dim is None:
            raise ConfigError("a random temporal encoder needs its width (dim)")
        with _seeded(seed):
            model = VideoMAEModel(tiny_videomae_config(dim, image_size, num_frames))
    else:
        how, where = _resolve(source)
        if how == "file":
            raw = unwrap_state(read_original_checkpoint(where))
            cfg = videomae_config_from_state(raw, image_size, num_frames, where)
            state = convert_videomae_state(raw, cfg, where)
            with torch.device("meta"):
                model = VideoMAEModel(cfg)
            model.to_empty(device="cpu")
            if cfg.use_mean_pooling:
                fc_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
                fc_norm.load_state_dict(
                    {"weight": state.pop("fc_norm.weight"), "bias": state.pop("fc_norm.bias")}
                )
            _load_converted(model, state, where)
        else:
            model, fc_norm = _pretrained_videomae(where)
    enc = TemporalEncoder(model, fc_norm)
    _check("temporal", source, "width", enc.dim, dim, "features.temporal_dim")
    _check("temporal", source, "image size", enc.image_size, image_size, "perception.face_size")
    _check("temporal", source, "frame count", enc.num_frames, num_frames, "perception.temporal_frames")
    return enc


def _pretrained_videomae(where: str) -> tuple[VideoMAEModel, nn.LayerNorm | None]:
    from transformers import AutoConfig, VideoMAEForVideoClassification

    cfg = _from_pretrained(AutoConfig, where, "temporal")
    if not getattr(cfg, "use_mean_pooling", False):
        return _from_pretrained(VideoMAEModel, where, "temporal"), None
    # A fine-tuned model: its fc_norm (which normalises the token mean) lives in the classifier.
    clf, info = _from_pretrained(VideoMAEForVideoClassification, where, "temporal", output_loading_info=True)
    if any(k.startswith("fc_norm") for k in info.get("missing_keys", ())):
        raise CheckpointError(where, "VideoMAE with use_mean_pooling=True but no fc_norm weights")
    return clf.videomae, clf.fc_norm


def build_audio_encoder(source: str | None, dim: int | None = None, *, seed: int = 0) -> AudioEncoder:
    """The HuBERT encoder from ``source`` (a hub id or folder; ``None``: random tiny)."""
    if source is None:
        if dim is None:
            raise ConfigError("a random audio encoder needs its width (dim)")
        with _seeded(seed):
            model = HubertModel(tiny_hubert_config(dim))
        do_normalize = _default_do_normalize(model.config)
    else:
        how, where = _resolve(source)
        if how == "file":
            raise EncoderError(
                f"{where}: an audio encoder loads from a transformers folder or hub id, not .pth"
            )
        model = _from_pretrained(HubertModel, where, "audio")
        do_normalize = _read_do_normalize(where, model.config)
    enc = AudioEncoder(model, do_normalize=do_normalize)
    _check("audio", source, "width", enc.dim, dim, "features.audio_dim")
    return enc


def _default_do_normalize(config: HubertConfig) -> bool:
    # The published checkpoints: LayerNorm conv stack (large) trained on normalised input,
    # GroupNorm stack (base) on raw input.
    return config.feat_extract_norm == "layer"


def _read_do_normalize(where: str, config: HubertConfig) -> bool:
    """``do_normalize`` of the model's feature-extractor config, when it has one."""
    local = Path(where) / "preprocessor_config.json"
    if local.is_file():
        data = json.loads(local.read_text(encoding="utf-8"))
        return bool(data.get("do_normalize", _default_do_normalize(config)))
    try:
        from transformers import Wav2Vec2FeatureExtractor

        return bool(Wav2Vec2FeatureExtractor.from_pretrained(where).do_normalize)
    except (OSError, ValueError):  # no preprocessor config published: fall back to the rule
        return _default_do_normalize(config)


def build_encoders(
    config: EmotionLlamaConfig,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    fp8: bool = False,
    compile: bool = False,
) -> Encoders:
    """The three encoders a config names (``config.perception`` sources, ``config.features`` dims),
    as :func:`prepare_encoders` makes them. FP8 is refused (where it cannot run) before any loading."""
    check_device(device)
    if fp8:
        check_fp8_device(device, dtype)
    p, f = config.perception, config.features
    local = build_local_encoder(p.local_encoder, f.local_dim, p.face_size, seed=config.seed)
    temporal = build_temporal_encoder(
        p.temporal_encoder, f.temporal_dim, p.face_size, p.temporal_frames, seed=config.seed + 1
    )
    audio = build_audio_encoder(p.audio_encoder, f.audio_dim, seed=config.seed + 2)
    encoders = Encoders(local=local, temporal=temporal, audio=audio)
    return prepare_encoders(encoders, device, dtype, fp8=fp8, compile=compile)


def prepare_encoders(
    encoders: Encoders,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    fp8: bool = False,
    compile: bool = False,
) -> Encoders:
    """``encoders`` frozen, in eval mode, on ``device`` in ``dtype``, in place. ``fp8``: then their
    linear layers in FP8 matmuls (:mod:`emotion_llama.model.fp8`). ``compile``: every transformer
    block through ``torch.compile`` (:func:`compile_blocks`; dynamic shapes once audio lengths differ)."""
    if fp8:
        check_fp8_device(device, dtype)
    for m in (encoders.local, encoders.temporal, encoders.audio):
        m.requires_grad_(False).eval().to(device=device, dtype=dtype)
        if fp8:
            convert_linears(m)
        if compile:
            compile_blocks(m, dynamic=None)
    return encoders


def compile_blocks(module: nn.Module, dynamic: bool | None = False) -> int:
    """Every transformer block of ``module`` through ``torch.compile`` (regional: one block's compile
    time, not the network's; ``dynamic`` as ``torch.compile`` takes it). Returns how many blocks."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    blocks = [m for m in module.modules() if isinstance(m, GradientCheckpointingLayer)]
    for m in blocks:
        m.compile(dynamic=dynamic)
    return len(blocks)
