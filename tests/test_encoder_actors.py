"""The Ray engine's encoder actors (``ray_engine._Encoders``), called as Ray Data calls them: a
batch of rows in numpy format (pickled results), their features back in the same rows. They
encode as the driver does (``pipeline.encode_each``): clip by clip the same bits as ``encode``,
batched within float rounding, a clip the encoders fail on failing alone. Ray itself is not
needed here; tests/test_ray_engine.py runs the actors on a cluster."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest

from emotion_llama.encoders.models import AudioEncoder, EncoderError
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.perception.pipeline import encode, encode_each
from emotion_llama.perception.ray_engine import _Encoders
from emotion_llama.perception.workers import EncodeSpec, Engine
from test_encode_batching import MODALITIES, random_clips


def _batch(results: list) -> dict[str, np.ndarray]:
    """Rows as Ray Data's numpy batch format gives them: an int column, object columns of bytes."""
    rows = np.empty(len(results), dtype=object)
    rows[:] = [pickle.dumps(r, protocol=5) for r in results]
    return {"i": np.arange(len(results)), "result": rows}


def _unpack(out: dict) -> tuple[list, list]:
    return [pickle.loads(b) for b in out["result"]], [pickle.loads(b) for b in out["features"]]


@pytest.fixture(scope="module")
def clips(tiny_config):
    p = tiny_config.perception
    return random_clips(p.face_size, p.local_frames, p.temporal_frames, seed=7)


def test_actor_clip_by_clip_gives_the_drivers_bits(tiny_config, clips):
    broken = EmotionLlamaError("broken.mp4: not a video")
    actor = _Encoders(EncodeSpec(tiny_config, batched=False), threads=1)
    results, features = _unpack(actor(_batch([clips[0], broken, *clips[1:]])))
    assert isinstance(results[1], EmotionLlamaError) and features[1] is None  # an error passes through
    reference = encode(clips, actor.encoders)
    got = [features[0], *features[2:]]
    for r, a, b in zip(clips, got, reference, strict=True):
        for m in MODALITIES:
            assert np.array_equal(getattr(a, m), getattr(b, m)), f"{r.name} {m}"


def test_actor_batched_equals_clip_by_clip_up_to_rounding(tiny_config, clips):
    actor = _Encoders(EncodeSpec(tiny_config, batched=True))
    assert actor.spec.batches
    _, features = _unpack(actor(_batch(clips)))
    for r, a, b in zip(clips, features, encode(clips, actor.encoders), strict=True):
        for m in MODALITIES:
            x, y = getattr(a, m), getattr(b, m)
            np.testing.assert_allclose(x, y, rtol=0, atol=2e-5, err_msg=f"{r.name} {m}")
    assert not np.allclose(features[0].audio, features[1].audio)


def test_a_clip_the_encoders_fail_fails_alone_in_the_actor(tiny_config, clips, monkeypatch):
    forward = AudioEncoder.forward
    bad = clips[2].audio.shape[0]

    def failing(self, waveforms, attention_mask=None):
        if waveforms.shape[0] > 1:
            raise EncoderError("the batch fails")
        if waveforms.shape[1] == bad:
            raise EncoderError("boom")
        return forward(self, waveforms, attention_mask)

    monkeypatch.setattr(AudioEncoder, "forward", failing)
    actor = _Encoders(EncodeSpec(tiny_config, batched=True))
    results, features = _unpack(actor(_batch(clips)))
    assert [i for i, f in enumerate(features) if f is None] == [2]
    assert str(results[2]) == "clip_2.mp4: encoders failed (EncoderError: boom)"
    assert all(f is not None for i, f in enumerate(features) if i != 2)
    # the same rule in the driver's batches
    each = encode_each(clips, actor.encoders, batched=True)
    assert isinstance(each[2], EncoderError) and all(f is not None for i, f in enumerate(each) if i != 2)


def test_where_the_encoders_run(tiny_config):
    cpu, gpu = EncodeSpec(tiny_config), EncodeSpec(tiny_config, device="cuda")
    ray, local = Engine(kind="ray"), Engine()
    assert not cpu.in_actors(ray) and not cpu.in_actors(local)  # the driver, by default on the CPU
    assert cpu.in_actors(replace(ray, encoder_actors=2))
    assert gpu.in_actors(ray) and not gpu.in_actors(local)
    with pytest.raises(EmotionLlamaError, match="--encoder-actors is for --engine ray"):
        Engine(encoder_actors=1)
    with pytest.raises(EmotionLlamaError, match="--encoder-actors must be 0 or more"):
        Engine(kind="ray", encoder_actors=-1)


def test_a_missing_encoder_file_fails_in_the_driver(tiny_config, tmp_path):
    """The actors load the encoders, so the driver checks the files first (one clear line, not
    an error from every actor of the cluster)."""
    from emotion_llama.errors import CheckpointError

    def spec(**sources: str | None) -> EncodeSpec:
        return EncodeSpec(replace(tiny_config, perception=replace(tiny_config.perception, **sources)))

    with pytest.raises(CheckpointError, match=r"/nonexistent/mae\.pth: no such file"):
        spec(local_encoder="/nonexistent/mae.pth").check_files()
    with pytest.raises(CheckpointError, match=r"videomae_399\.pt: no such file"):
        spec(temporal_encoder=str(tmp_path / "videomae_399.pt")).check_files()
    (tmp_path / "mae.pth").write_bytes(b"")
    spec(
        local_encoder=str(tmp_path / "mae.pth"), audio_encoder="TencentGameMate/chinese-hubert-large"
    ).check_files()
    spec().check_files()  # the tiny preset's random encoders: no file at all
