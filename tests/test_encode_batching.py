"""A clip's features do not depend on the clips encoded with it: ``encode`` on a batch and on each
clip alone give bit-identical float32 vectors (np.array_equal, not allclose), so a resumed
``extract`` writes the same files, and the same manifest checksums, as an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emotion_llama.encoders.models import Encoders
from emotion_llama.perception.pipeline import Perception, encode

MODALITIES = ("local", "temporal", "audio")
#: Audio lengths of real 2.5 s sample clips (AAC ends them short of 40000 samples): the batch pads.
AUDIO_LENGTHS = (40000, 36368, 37728, 40000, 12000)
#: Crop size for the paper-size architectures (224 in the paper; the widths, hence the kernels,
#: are the same at 112, for a quarter of the CPU time).
LARGE_SIZE = 112


def clip(name: str, crops: np.ndarray, temporal: np.ndarray, audio: np.ndarray | None) -> Perception:
    """What ``encode`` reads of a perception result; the rest left empty."""
    return Perception(
        name=name, source=f"{name}.mp4", info={}, timeline=None, peak=None, peak_time=None,
        face_choice={}, transcript=None, global_frame=None, peak_frame=None, global_frame_time=None,
        local_crops=crops, temporal_crops=temporal, audio=audio,
    )  # fmt: skip


def random_clips(size: int, local_frames: int, temporal_frames: int, seed: int = 0) -> list[Perception]:
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(AUDIO_LENGTHS):
        crops = rng.integers(0, 256, (local_frames - i % 2, size, size, 3), dtype=np.uint8)
        frames = rng.integers(0, 256, (temporal_frames, size, size, 3), dtype=np.uint8)
        wave = (0.1 * rng.standard_normal(n) * np.sin(np.arange(n) / 400.0)).astype(np.float32)
        out.append(clip(f"clip_{i}", crops, frames, wave))
    return out


def assert_batch_independent(results: list[Perception], encoders: Encoders) -> None:
    together = encode(results, encoders)
    alone = [encode([r], encoders)[0] for r in results]
    reordered = encode(results[::-1], encoders)[::-1]
    pairs = [f for k in range(0, len(results), 2) for f in encode(results[k : k + 2], encoders)]
    assert all(f is not None for f in together)
    for r, a, b, c, d in zip(results, together, alone, reordered, pairs, strict=True):
        for m in MODALITIES:
            x = getattr(a, m)
            assert x.dtype == np.float32 and np.isfinite(x).all()
            for other in (b, c, d):
                y = getattr(other, m)
                diff = float(np.abs(x - y).max())
                assert np.array_equal(x, y), f"{r.name} {m}: max abs diff {diff:.3g}"


def test_encode_is_bit_identical_in_a_batch_and_alone(tiny_config):
    from emotion_llama.encoders.models import build_encoders

    p = tiny_config.perception
    encoders = build_encoders(tiny_config)
    results = random_clips(p.face_size, p.local_frames, p.temporal_frames)
    assert_batch_independent(results, encoders)
    # a clip that cannot be encoded changes nothing for the others
    broken = clip("no_audio", results[0].local_crops, results[0].temporal_crops, None)
    mixed = encode([results[1], broken, results[2]], encoders)
    assert mixed[1] is None
    for m in MODALITIES:
        assert np.array_equal(getattr(mixed[0], m), getattr(encode([results[1]], encoders)[0], m))


def test_encoder_batch_apis_match_one_clip_at_a_time(tiny_config):
    from emotion_llama.encoders.models import build_encoders, pad_waveforms, preprocess_frames

    p = tiny_config.perception
    encoders = build_encoders(tiny_config)
    results = random_clips(p.face_size, p.local_frames, p.temporal_frames, seed=1)
    waves = [r.audio for r in results]
    padded, mask = pad_waveforms(waves)
    n = p.local_frames - 1  # the same crop count for every clip: one (B, F, ...) tensor
    faces = torch.stack([preprocess_frames(r.local_crops[:n]) for r in results])
    frames = torch.stack([preprocess_frames(r.temporal_crops) for r in results])
    with torch.inference_mode():
        out = encoders.encode(faces, frames, padded, mask)
        rows = encoders.audio.encode_waveforms(waves)
        for i, w in enumerate(waves):
            alone = encoders.audio.encode_clip(w)
            assert torch.equal(rows[i], alone) and torch.equal(out["audio"][i], alone)
            assert torch.equal(out["local"][i], encoders.local.encode_clip(faces[i]))
            assert torch.equal(out["temporal"][i], encoders.temporal.encode_clip(frames[i]))


# -- real clips through extract, and the paper-size architectures ---------------------------------
def _sample_videos(root: Path) -> Path:
    import shutil

    from emotion_llama.errors import EmotionLlamaError
    from emotion_llama.media.samples import SAMPLE_SENTENCES, make_speaking_clip, real_media_dir

    for tool in ("ffmpeg", "espeak-ng"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup.sh installs it)")
    try:
        face = real_media_dir() / "WolfgangLanger_Pexels.mp4"
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))
    root.mkdir(parents=True)
    for i, text in enumerate(SAMPLE_SENTENCES[:4]):
        # as long as the speech: every clip has its own audio length, so a batch pads
        make_speaking_clip(face, text, root / f"clip_{i}.mp4", start=2.0 * i)
    return root


@pytest.mark.slow
def test_extract_in_one_batch_and_one_by_one_writes_identical_files(tmp_path, tiny_config):
    from emotion_llama.encoders.store import open_store
    from emotion_llama.media.samples import SAMPLE_SENTENCES
    from emotion_llama.perception.extract import extract_folder

    videos = _sample_videos(tmp_path / "videos")
    subtitles = {f"clip_{i}": s for i, s in enumerate(SAMPLE_SENTENCES[:4])}
    stores = {}
    for batch in (4, 1):
        out = tmp_path / f"batch{batch}"
        s = extract_folder(
            videos, out, tiny_config, workers=1, batch_size=batch, subtitles=subtitles, progress=False
        )
        assert s.written == 4 and not s.failed
        stores[batch] = out
    f = tiny_config.features
    dims = {"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim}
    a, b = (open_store(stores[k], dims) for k in (4, 1))
    for name in subtitles:
        fa, fb = a.read(name), b.read(name)
        for m in MODALITIES:
            x, y = getattr(fa, m), getattr(fb, m)
            assert np.array_equal(x, y), f"{name} {m}: max abs diff {float(np.abs(x - y).max()):.3g}"
    clips = [json.loads((stores[k] / "manifest.json").read_text())["clips"] for k in (4, 1)]
    assert {n: c["sha256"] for n, c in clips[0].items()} == {n: c["sha256"] for n, c in clips[1].items()}


def _random_large(cls: type, config: object, seed: int) -> torch.nn.Module:
    """A paper-size model with seeded small random weights, without the slow default init."""
    with torch.device("meta"):
        model = cls(config)
    model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.named_parameters():
            if t.ndim > 1:
                t.normal_(0.0, 0.02, generator=g)
            else:
                t.fill_(1.0 if name.endswith("weight") else 0.0)
    return model.eval()


@pytest.mark.slow
def test_paper_size_encoders_are_batch_independent():
    """The default (paper) encoders' architectures, random weights (their checkpoints are not
    available offline): MAE ViT-L/16, VideoMAE ViT-L/16 on 16 frames, HuBERT-large, on
    ``LARGE_SIZE`` px crops."""
    from transformers import HubertModel, VideoMAEModel, ViTMAEModel

    from emotion_llama.encoders.models import (
        AudioEncoder,
        LocalEncoder,
        TemporalEncoder,
        large_hubert_config,
        large_mae_config,
        large_videomae_config,
    )

    encoders = Encoders(
        local=LocalEncoder(_random_large(ViTMAEModel, large_mae_config(LARGE_SIZE), 0)),
        temporal=TemporalEncoder(_random_large(VideoMAEModel, large_videomae_config(LARGE_SIZE), 1)),
        audio=AudioEncoder(_random_large(HubertModel, large_hubert_config(), 2), do_normalize=True),
    )
    rng = np.random.default_rng(3)
    results = []
    for i, n in enumerate((16000, 12345)):  # the second one is padded in a batch
        crops = rng.integers(0, 256, (2, LARGE_SIZE, LARGE_SIZE, 3), dtype=np.uint8)
        frames = rng.integers(0, 256, (16, LARGE_SIZE, LARGE_SIZE, 3), dtype=np.uint8)
        wave = (0.1 * rng.standard_normal(n)).astype(np.float32)
        results.append(clip(f"clip_{i}", crops, frames, wave))
    together = encode(results, encoders)
    for r, a in zip(results, together, strict=True):
        b = encode([r], encoders)[0]
        for m in MODALITIES:
            x, y = getattr(a, m), getattr(b, m)
            assert np.isfinite(x).all()
            assert np.array_equal(x, y), f"{r.name} {m}: max abs diff {float(np.abs(x - y).max()):.3g}"
