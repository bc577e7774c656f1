"""The three feature encoders: shapes, determinism, padding, the original-format converters
(checked against a plain-tensor forward written here) and the builders' errors."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emotion_llama.encoders.convert import (
    convert_mae_state,
    convert_videomae_state,
    mae_config_from_state,
    videomae_config_from_state,
)
from emotion_llama.encoders.models import (
    AudioEncoder,
    EncoderError,
    LocalEncoder,
    TemporalEncoder,
    build_audio_encoder,
    build_encoders,
    build_local_encoder,
    build_temporal_encoder,
    normalize_waveforms,
    pad_waveforms,
    preprocess_frames,
)
from emotion_llama.errors import CheckpointError, ConfigError, EmotionLlamaError

IMAGE, PATCH, FRAMES = 32, 8, 4
MAE_D, MAE_MLP = 24, 48
VMAE_D, VMAE_MLP = 20, 40
LAYERS = 2
EPS = 1e-6  # LayerNorm eps of the original repositories


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module")
def encoders(tiny_config):
    return build_encoders(tiny_config)


# -- random checkpoints in the ORIGINAL repositories' key format ----------------------------------
def _rand(g: torch.Generator, *shape: int, scale: float = 0.3) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


def _original_blocks(g: torch.Generator, d: int, mlp: int, videomae: bool) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    for i in range(LAYERS):
        b = f"blocks.{i}."
        for norm in ("norm1", "norm2"):
            sd[f"{b}{norm}.weight"] = 1 + _rand(g, d, scale=0.1)
            sd[f"{b}{norm}.bias"] = _rand(g, d, scale=0.1)
        sd[f"{b}attn.qkv.weight"] = _rand(g, 3 * d, d)
        if videomae:
            sd[f"{b}attn.q_bias"] = _rand(g, d, scale=0.1)
            sd[f"{b}attn.v_bias"] = _rand(g, d, scale=0.1)
        else:
            sd[f"{b}attn.qkv.bias"] = _rand(g, 3 * d, scale=0.1)
        sd[f"{b}attn.proj.weight"] = _rand(g, d, d)
        sd[f"{b}attn.proj.bias"] = _rand(g, d, scale=0.1)
        sd[f"{b}mlp.fc1.weight"] = _rand(g, mlp, d)
        sd[f"{b}mlp.fc1.bias"] = _rand(g, mlp, scale=0.1)
        sd[f"{b}mlp.fc2.weight"] = _rand(g, d, mlp)
        sd[f"{b}mlp.fc2.bias"] = _rand(g, d, scale=0.1)
    return sd


def original_mae_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """MAE pretraining checkpoint keys (models_mae.MaskedAutoencoderViT), decoder included."""
    g = torch.Generator().manual_seed(seed)
    n = (IMAGE // PATCH) ** 2
    sd = {
        "cls_token": _rand(g, 1, 1, MAE_D),
        "pos_embed": _rand(g, 1, n + 1, MAE_D),
        "patch_embed.proj.weight": _rand(g, MAE_D, 3, PATCH, PATCH, scale=0.1),
        "patch_embed.proj.bias": _rand(g, MAE_D, scale=0.1),
        "norm.weight": 1 + _rand(g, MAE_D, scale=0.1),
        "norm.bias": _rand(g, MAE_D, scale=0.1),
        "mask_token": _rand(g, 1, 1, 8),
        "decoder_embed.weight": _rand(g, 8, MAE_D),
        "decoder_pos_embed": _rand(g, 1, n + 1, 8),
        "decoder_blocks.0.norm1.weight": _rand(g, 8),
        "decoder_norm.weight": _rand(g, 8),
        "decoder_pred.weight": _rand(g, PATCH * PATCH * 3, 8),
    }
    sd.update(_original_blocks(g, MAE_D, MAE_MLP, videomae=False))
    return sd


def original_videomae_state(seed: int = 0, finetuned: bool = False) -> dict[str, torch.Tensor]:
    """VideoMAE checkpoint keys: pretraining (``encoder.`` prefix, ``norm``, a decoder) or
    fine-tuned (no prefix, ``fc_norm`` and a ``head``)."""
    g = torch.Generator().manual_seed(seed)
    enc = {
        "patch_embed.proj.weight": _rand(g, VMAE_D, 3, 2, PATCH, PATCH, scale=0.1),
        "patch_embed.proj.bias": _rand(g, VMAE_D, scale=0.1),
        **_original_blocks(g, VMAE_D, VMAE_MLP, videomae=True),
    }
    norm = {"weight": 1 + _rand(g, VMAE_D, scale=0.1), "bias": _rand(g, VMAE_D, scale=0.1)}
    if finetuned:
        enc.update({f"fc_norm.{k}": v for k, v in norm.items()})
        enc["head.weight"] = _rand(g, 7, VMAE_D)
        enc["head.bias"] = _rand(g, 7)
        return enc
    enc.update({f"norm.{k}": v for k, v in norm.items()})
    sd = {f"encoder.{k}": v for k, v in enc.items()}
    sd["encoder_to_decoder.weight"] = _rand(g, 8, VMAE_D)
    sd["mask_token"] = _rand(g, 1, 1, 8)
    sd["decoder.blocks.0.norm1.weight"] = _rand(g, 8)
    sd["decoder.head.weight"] = _rand(g, 2 * PATCH * PATCH * 3, 8)
    return sd


# -- an independent forward over the original weights, in float64 ----------------------------------
def _ref_blocks(x: torch.Tensor, sd: dict[str, torch.Tensor], heads: int) -> torch.Tensor:
    """timm's pre-norm ViT blocks: x + proj(attn(norm1(x))), then x + fc2(gelu(fc1(norm2(x))))."""
    bsz, n, d = x.shape
    hd = d // heads
    for i in range(LAYERS):
        w = {k[len(f"blocks.{i}.") :]: v.double() for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        h = F.layer_norm(x, (d,), w["norm1.weight"], w["norm1.bias"], EPS)
        if "attn.qkv.bias" in w:
            qkv_bias = w["attn.qkv.bias"]
        else:  # VideoMAE / EVA: q and v biases, none for k
            qkv_bias = torch.cat([w["attn.q_bias"], torch.zeros_like(w["attn.q_bias"]), w["attn.v_bias"]])
        qkv = h @ w["attn.qkv.weight"].T + qkv_bias
        q, k, v = qkv.reshape(bsz, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        o = (att @ v).transpose(1, 2).reshape(bsz, n, d)
        x = x + o @ w["attn.proj.weight"].T + w["attn.proj.bias"]
        h = F.layer_norm(x, (d,), w["norm2.weight"], w["norm2.bias"], EPS)
        h = F.gelu(h @ w["mlp.fc1.weight"].T + w["mlp.fc1.bias"])
        x = x + h @ w["mlp.fc2.weight"].T + w["mlp.fc2.bias"]
    return x


def ref_mae_cls(sd: dict[str, torch.Tensor], pixels: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, 3, S, S) -> (N, D): patches + pos, CLS (+ its pos) in front, blocks, norm, CLS row."""
    s = {k: v.double() for k, v in sd.items()}
    x = F.conv2d(pixels.double(), s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2) + s["pos_embed"][:, 1:]
    cls = (s["cls_token"] + s["pos_embed"][:, :1]).expand(x.shape[0], -1, -1)
    x = _ref_blocks(torch.cat([cls, x], dim=1), s, heads)
    return F.layer_norm(x, (MAE_D,), s["norm.weight"], s["norm.bias"], EPS)[:, 0]


def sinusoid_table(n: int, d: int) -> torch.Tensor:
    """VideoMAE's fixed table: angle pos / 10000^(2*(j//2)/d); sin on even j, cos on odd j."""
    angle = np.arange(n)[:, None] / np.power(10000.0, 2 * (np.arange(d)[None, :] // 2) / d)
    angle[:, 0::2] = np.sin(angle[:, 0::2])
    angle[:, 1::2] = np.cos(angle[:, 1::2])
    return torch.from_numpy(angle)[None]


def ref_videomae_mean(
    sd: dict[str, torch.Tensor], video: torch.Tensor, heads: int, finetuned: bool
) -> torch.Tensor:
    """(B, T, 3, S, S) -> (B, D): Conv3d tubelets (2 x p x p) in (t, h, w) order + the sinusoid
    table, blocks, then mean(norm(x)) (pretraining) or fc_norm(mean(x)) (fine-tuned)."""
    s = {k.removeprefix("encoder."): v.double() for k, v in sd.items()}
    x = F.conv3d(
        video.double().permute(0, 2, 1, 3, 4),
        s["patch_embed.proj.weight"],
        s["patch_embed.proj.bias"],
        stride=(2, PATCH, PATCH),
    )
    x = x.flatten(2).transpose(1, 2)
    x = _ref_blocks(x + sinusoid_table(x.shape[1], VMAE_D), s, heads)
    if finetuned:
        return F.layer_norm(x.mean(dim=1), (VMAE_D,), s["fc_norm.weight"], s["fc_norm.bias"], EPS)
    return F.layer_norm(x, (VMAE_D,), s["norm.weight"], s["norm.bias"], EPS).mean(dim=1)


# -- shapes and the tiny end-to-end build --------------------------------------------------------
def test_build_encoders_tiny_end_to_end(encoders, tiny_config):
    f, p = tiny_config.features, tiny_config.perception
    assert encoders.dims == {"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim}
    for enc in (encoders.local, encoders.temporal, encoders.audio):
        assert not enc.training
        assert not any(q.requires_grad for q in enc.parameters())
    g = torch.Generator().manual_seed(0)
    faces = torch.randn(2, p.local_frames, 3, p.face_size, p.face_size, generator=g)
    frames = torch.randn(2, p.temporal_frames, 3, p.face_size, p.face_size, generator=g)
    waves = torch.randn(2, 12000, generator=g)
    out = encoders.encode(faces, frames, waves)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "local": (2, f.local_dim),
        "temporal": (2, f.temporal_dim),
        "audio": (2, f.audio_dim),
    }
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())


def test_single_clip_shapes(encoders, tiny_config):
    s = tiny_config.perception.face_size
    with torch.inference_mode():
        crops = torch.randn(5, 3, s, s)
        assert encoders.local(crops).shape == (5, encoders.local.dim)
        clip = encoders.local.encode_clip(crops)
        assert clip.shape == (encoders.local.dim,)
        assert torch.allclose(clip, encoders.local(crops).mean(0))
        frames = torch.randn(tiny_config.perception.temporal_frames, 3, s, s)
        assert encoders.temporal.encode_clip(frames).shape == (encoders.temporal.dim,)
        two = encoders.audio.encode_waveforms([np.zeros(8000), np.ones(5000)])
        assert two.shape == (2, encoders.audio.dim)


def test_build_is_seeded_and_leaves_the_rng_alone(tiny_config):
    state = torch.get_rng_state()
    a, b = build_encoders(tiny_config), build_encoders(tiny_config)
    assert torch.equal(torch.get_rng_state(), state)
    for x, y in ((a.local, b.local), (a.temporal, b.temporal), (a.audio, b.audio)):
        for (k, v), w in zip(x.state_dict().items(), y.state_dict().values(), strict=True):
            assert torch.equal(v, w), k


# -- local: no masking, no shuffling -----------------------------------------------------------
def test_local_encoder_is_deterministic_and_unmasked(encoders):
    local: LocalEncoder = encoders.local
    x = torch.randn(3, 3, local.image_size, local.image_size, generator=torch.Generator().manual_seed(1))
    state = torch.get_rng_state()
    with torch.inference_mode():
        first, second = local(x), local(x)
        assert torch.equal(first, second)
        assert torch.equal(torch.get_rng_state(), state)  # no noise drawn from the global RNG
        n = local.num_patches
        out = local.model(pixel_values=x, noise=torch.arange(n, dtype=torch.float32).expand(3, n))
        assert out.last_hidden_state.shape[1] == n + 1  # every patch kept
        assert torch.equal(out.ids_restore, torch.arange(n).expand(3, n))  # in raster order
        assert torch.equal(first, out.last_hidden_state[:, 0])
        # A shuffled order changes nothing but float rounding: CLS attends to every patch either way.
        shuffled = local.model(pixel_values=x).last_hidden_state[:, 0]
        assert torch.allclose(shuffled, first, atol=1e-5)


def test_local_encoder_forces_mask_ratio_zero():
    from transformers import ViTMAEModel

    from emotion_llama.encoders.models import tiny_mae_config

    cfg = tiny_mae_config(MAE_D, IMAGE)
    cfg.mask_ratio = 0.75  # the hub configs' value
    enc = LocalEncoder(ViTMAEModel(cfg)).eval()
    with torch.inference_mode():
        n = enc.num_patches
        out = enc.model(pixel_values=torch.randn(1, 3, IMAGE, IMAGE), noise=torch.arange(n)[None].float())
    assert out.last_hidden_state.shape[1] == n + 1


# -- audio: padding, normalisation ---------------------------------------------------------------
def test_audio_mean_ignores_padding(encoders):
    audio: AudioEncoder = encoders.audio
    g = torch.Generator().manual_seed(2)
    waves = [torch.randn(16000, generator=g), torch.randn(9137, generator=g), torch.randn(4000, generator=g)]
    with torch.inference_mode():
        batch = audio(*pad_waveforms(waves))  # the padded forward: equal up to float rounding
        alone = torch.cat([audio(w[None]) for w in waves])
        assert torch.equal(audio.encode_waveforms(waves), alone)  # one clip per forward: exact
    assert rel_err(batch, alone) < 1e-5
    # and the padding really is excluded: the mean over all frames of the padded row differs
    padded, mask = pad_waveforms(waves)
    with torch.inference_mode():
        naive = audio(normalize_waveforms(padded, mask))[2]
    assert rel_err(naive, alone[2]) > 1e-3


def test_audio_frame_lengths_match_the_model(encoders):
    audio = encoders.audio
    lengths = torch.tensor([400, 401, 719, 720, 16000, 160000])
    ours = audio.frame_lengths(lengths)
    theirs = audio.model._get_feat_extract_output_lengths(lengths)
    assert torch.equal(ours, theirs)
    assert ours.tolist()[:2] == [1, 1] and int(ours[-1]) == 499  # 10 s -> 499 frames
    assert audio.min_samples == 400


def test_waveform_normalisation_matches_the_feature_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    rng = np.random.default_rng(0)
    waves = [rng.normal(0.3, 2.0, 3000).astype(np.float32), rng.normal(-1, 0.5, 1800).astype(np.float32)]
    fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    ref = fe(waves, sampling_rate=16000, padding=True, return_tensors="pt")
    batch, mask = pad_waveforms(waves)
    assert torch.equal(mask, ref["attention_mask"].long())
    assert torch.allclose(normalize_waveforms(batch, mask), ref["input_values"], atol=1e-5)


def test_audio_too_short(encoders):
    with pytest.raises(EncoderError, match="shorter than 400 samples"):
        encoders.audio(torch.randn(1, 399))
    with pytest.raises(EmotionLlamaError, match=r"\(B, T\)"):
        encoders.audio(torch.randn(16000))


# -- preprocessing -------------------------------------------------------------------------------
def test_preprocess_frames():
    crops = np.full((2, 16, 16, 3), 255, dtype=np.uint8)
    crops[1] = 0
    x = preprocess_frames(crops)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    assert np.allclose(x[0, :, 0, 0].numpy(), (1 - mean) / std, atol=1e-6)
    assert np.allclose(x[1, :, 0, 0].numpy(), -mean / std, atol=1e-6)
    assert preprocess_frames(crops, size=32).shape == (2, 3, 32, 32)
    assert torch.allclose(preprocess_frames(crops, size=32)[0], x[0, :, :1, :1].expand(3, 32, 32), atol=1e-5)
    with pytest.raises(EncoderError, match="uint8"):
        preprocess_frames(crops.astype(np.float32))
    with pytest.raises(EncoderError, match=r"\(F, H, W, 3\)"):
        preprocess_frames(crops[0])


# -- converters against the reference forward ---------------------------------------------------
def test_mae_converter_matches_reference():
    from transformers import ViTMAEModel

    raw = original_mae_state()
    cfg = mae_config_from_state(raw)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size) == (MAE_D, LAYERS, MAE_MLP)
    assert (cfg.image_size, cfg.patch_size, cfg.mask_ratio) == (IMAGE, PATCH, 0.0)
    model = ViTMAEModel(cfg)
    model.load_state_dict(convert_mae_state({"model": raw, "epoch": 340}, cfg), strict=True)
    enc = LocalEncoder(model).eval()
    x = torch.randn(4, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ours = enc(x)
    ref = ref_mae_cls(raw, x, cfg.num_attention_heads)
    assert rel_err(ours, ref) < 1e-5
    assert rel_err(ours, ref) < 1e-2 * rel_err(ours, ref_mae_cls(raw, x.flip(-1), cfg.num_attention_heads))


@pytest.mark.parametrize("finetuned", [False, True], ids=["pretraining", "finetuned"])
def test_videomae_converter_matches_reference(finetuned):
    from transformers import VideoMAEModel

    raw = original_videomae_state(finetuned=finetuned)
    cfg = videomae_config_from_state(raw, IMAGE, FRAMES)
    assert (cfg.hidden_size, cfg.tubelet_size, cfg.patch_size, cfg.qv_bias) == (VMAE_D, 2, PATCH, True)
    assert cfg.use_mean_pooling is finetuned
    state = convert_videomae_state(raw, cfg)
    fc_norm = None
    if finetuned:
        fc_norm = torch.nn.LayerNorm(VMAE_D, eps=cfg.layer_norm_eps)
        fc_norm.load_state_dict({"weight": state.pop("fc_norm.weight"), "bias": state.pop("fc_norm.bias")})
    model = VideoMAEModel(cfg)
    model.load_state_dict(state, strict=True)
    enc = TemporalEncoder(model, fc_norm).eval()
    video = torch.randn(2, FRAMES, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        ours = enc(video)
    ref = ref_videomae_mean(raw, video, cfg.num_attention_heads, finetuned)
    assert ours.shape == (2, VMAE_D)
    assert rel_err(ours, ref) < 1e-5


def test_videomae_token_count_at_paper_size():
    from emotion_llama.encoders.models import large_videomae_config

    cfg = large_videomae_config()
    assert (cfg.num_frames // cfg.tubelet_size) * (cfg.image_size // cfg.patch_size) ** 2 == 1568


def test_converters_report_missing_keys():
    raw = original_mae_state()
    cfg = mae_config_from_state(raw)
    del raw["blocks.1.attn.qkv.weight"], raw["norm.bias"]
    with pytest.raises(CheckpointError, match=r"2 MAE key\(s\) missing: .*blocks\.1\.attn\.qkv\.weight"):
        convert_mae_state(raw, cfg, "mae.pth")
    vraw = original_videomae_state()
    vcfg = videomae_config_from_state(vraw, IMAGE, FRAMES)
    del vraw["encoder.blocks.0.attn.v_bias"]
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.v_bias") as info:
        convert_videomae_state(vraw, vcfg, "videomae.pth")
    assert str(info.value).startswith("videomae.pth: ")


def test_converters_refuse_unknown_keys_and_wrong_shapes():
    raw = original_mae_state()
    cfg = mae_config_from_state(raw)
    with pytest.raises(CheckpointError, match=r"unexpected MAE key.*gamma_1"):
        convert_mae_state({**raw, "blocks.0.gamma_1": torch.ones(MAE_D)}, cfg)
    raw["blocks.0.mlp.fc1.weight"] = torch.zeros(MAE_MLP + 1, MAE_D)
    with pytest.raises(CheckpointError, match=r"fc1\.weight \(49, 24\) \(expected \(48, 24\)\)"):
        convert_mae_state(raw, cfg)
    vraw = original_videomae_state()
    vcfg = videomae_config_from_state(vraw, IMAGE, FRAMES)
    n = (FRAMES // 2) * (IMAGE // PATCH) ** 2
    ok = {**vraw, "encoder.pos_embed": sinusoid_table(n, VMAE_D).float()}
    assert convert_videomae_state(ok, vcfg).keys() == convert_videomae_state(vraw, vcfg).keys()
    with pytest.raises(CheckpointError, match="pos_embed differs"):
        convert_videomae_state({**vraw, "encoder.pos_embed": torch.randn(1, n, VMAE_D)}, vcfg)


# -- builders: files, folders, errors -------------------------------------------------------------
def _save_original(path: Path, sd: dict[str, torch.Tensor], epoch: int) -> Path:
    # As the original repos' save_model: the run's argparse.Namespace rides along.
    torch.save({"model": sd, "epoch": epoch, "args": argparse.Namespace(lr=1.5e-4, model="vit_large")}, path)
    return path


def test_build_from_original_files(tmp_path):
    mae_raw, vmae_raw = original_mae_state(), original_videomae_state()
    mae = _save_original(tmp_path / "mae_checkpoint-340.pth", mae_raw, 340)
    vmae = _save_original(tmp_path / "checkpoint-399.pth", vmae_raw, 399)
    local = build_local_encoder(str(mae), MAE_D, IMAGE).eval()
    temporal = build_temporal_encoder(str(vmae), VMAE_D, IMAGE, FRAMES).eval()
    x = torch.randn(2, 3, IMAGE, IMAGE)
    v = torch.randn(1, FRAMES, 3, IMAGE, IMAGE)
    with torch.inference_mode():
        assert rel_err(local(x), ref_mae_cls(mae_raw, x, 4)) < 1e-5
        assert rel_err(temporal(v), ref_videomae_mean(vmae_raw, v, 4, False)) < 1e-5
    with pytest.raises(ConfigError, match=r"width is 24, but features.local_dim is 1024"):
        build_local_encoder(str(mae), 1024, IMAGE)
    with pytest.raises(ConfigError, match=r"image size is 32, but perception.face_size is 224"):
        build_local_encoder(str(mae), MAE_D, 224)
    with pytest.raises(ConfigError, match="temporal_dim"):
        build_temporal_encoder(str(vmae), 1024, IMAGE, FRAMES)
    with pytest.raises(CheckpointError, match="no such file"):
        build_local_encoder(str(tmp_path / "absent.pth"), MAE_D, IMAGE)


def test_build_from_pretrained_folders(tmp_path, encoders, tiny_config):
    f, p = tiny_config.features, tiny_config.perception
    encoders.local.model.save_pretrained(tmp_path / "mae")
    encoders.temporal.model.save_pretrained(tmp_path / "videomae")
    encoders.audio.model.save_pretrained(tmp_path / "hubert")
    local = build_local_encoder(str(tmp_path / "mae"), f.local_dim, p.face_size).eval()
    temporal = build_temporal_encoder(
        str(tmp_path / "videomae"), f.temporal_dim, p.face_size, p.temporal_frames
    ).eval()
    audio = build_audio_encoder(str(tmp_path / "hubert"), f.audio_dim).eval()
    assert audio.do_normalize is True  # no preprocessor config: the LayerNorm-stack rule
    x = torch.randn(2, 3, p.face_size, p.face_size)
    v = torch.randn(1, p.temporal_frames, 3, p.face_size, p.face_size)
    w = torch.randn(1, 8000)
    with torch.inference_mode():
        assert torch.allclose(local(x), encoders.local(x), atol=1e-6)
        assert torch.allclose(temporal(v), encoders.temporal(v), atol=1e-6)
        assert torch.allclose(audio(w), encoders.audio(w), atol=1e-6)
    (tmp_path / "hubert" / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    assert build_audio_encoder(str(tmp_path / "hubert"), f.audio_dim).do_normalize is False
    with pytest.raises(ConfigError, match=r"audio encoder's width is 16, but features.audio_dim is 1024"):
        build_audio_encoder(str(tmp_path / "hubert"), 1024)
    with pytest.raises(ConfigError, match=r"frame count is 4, but perception\.temporal_frames is 16"):
        build_temporal_encoder(str(tmp_path / "videomae"), f.temporal_dim, p.face_size, 16)


def test_builder_errors(tmp_path):
    with pytest.raises(ConfigError, match="needs its width"):
        build_local_encoder(None)
    with pytest.raises(ConfigError, match="divisible by 4"):
        build_local_encoder(None, 30, IMAGE)
    with pytest.raises(ConfigError, match="in pairs"):
        build_temporal_encoder(None, VMAE_D, IMAGE, 3)
    with pytest.raises(EncoderError, match="cannot load the audio encoder"):
        build_audio_encoder(str(tmp_path / "no-such-model-folder"))
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 8)}}, bad)
    with pytest.raises(CheckpointError, match=r"MAE key\(s\) missing"):
        build_local_encoder(str(bad), 8, IMAGE)
