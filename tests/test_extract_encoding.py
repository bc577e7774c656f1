"""How ``extract`` runs its encoders (``EncodeSpec``: dtype, FP8, compile, batched) and how the
feature store records it: batched features equal the clip-by-clip ones up to float rounding, FP8
features hold their direction, and a rerun into a store cannot mix features made two ways."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emotion_llama.encoders.models import build_encoders, preprocess_frames
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.model.fp8 import fp8_layers
from emotion_llama.perception.pipeline import audio_groups, encode, encode_available
from emotion_llama.perception.workers import LEGACY_ENCODING, EncodeSpec
from test_encode_batching import MODALITIES, clip, random_clips


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_clip_by_clip_path_is_each_encoder_on_the_clip_alone(tiny_config):
    """The default path computes exactly what each encoder's ``encode_clip`` gives (bits)."""
    p = tiny_config.perception
    encoders = build_encoders(tiny_config)
    results = random_clips(p.face_size, p.local_frames, p.temporal_frames, seed=4)
    with torch.inference_mode():
        for r, f in zip(results, encode(results, encoders), strict=True):
            local = encoders.local.encode_clip(preprocess_frames(r.local_crops))
            temporal = encoders.temporal.encode_clip(preprocess_frames(r.temporal_crops))
            audio = encoders.audio.encode_clip(r.audio)
            assert np.array_equal(f.local, local.numpy())
            assert np.array_equal(f.temporal, temporal.numpy())
            assert np.array_equal(f.audio, audio.numpy())


def test_batched_encoding_equals_clip_by_clip_up_to_rounding(tiny_config):
    p = tiny_config.perception
    encoders = build_encoders(tiny_config)
    # crop counts alternate (two shapes: two local forwards), audio lengths differ (padded)
    results = random_clips(p.face_size, p.local_frames, p.temporal_frames, seed=5)
    no_face = clip("no_face", None, None, results[0].audio)
    no_audio = clip("no_audio", results[1].local_crops, results[1].temporal_crops, None)
    mixed = [*results[:3], no_face, *results[3:], no_audio]
    alone = encode_available(mixed, encoders)
    together = encode_available(mixed, encoders, batched=True)
    for r, (a, absent_a), (b, absent_b) in zip(mixed, alone, together, strict=True):
        assert absent_a == absent_b
        for m in MODALITIES:
            x, y = getattr(a, m), getattr(b, m)
            assert x.dtype == y.dtype == np.float32
            np.testing.assert_allclose(y, x, rtol=0, atol=2e-5, err_msg=f"{r.name} {m}")
    assert not together[3][0].local.any() and together[3][1] == {"face", "motion", "frame"}
    assert not together[-1][0].audio.any() and "audio" in together[-1][1]
    # a clip's batched vector is not just the first clip's copied
    assert not np.allclose(together[0][0].audio, together[1][0].audio)


def test_audio_groups_cap_the_padded_forward():
    assert audio_groups([]) == []
    assert audio_groups([30, 10, 20], budget=90) == [[0, 1, 2]]  # 3 x 30 fits: one, in order
    # 4 x 40 > 100: shortest first, each forward as many as fit (count x its longest <= 100)
    assert audio_groups([40, 10, 35, 20], budget=100) == [[1, 3], [2, 0]]  # 3 x 35 > 100
    assert audio_groups([500, 10, 12], budget=100) == [[1, 2], [0]]  # the long one alone
    assert audio_groups([10] * 12, budget=100) == [list(range(10)), [10, 11]]
    # the padding: 7 of 3 s with one of 30 s would be 240 s for 51 s of audio
    assert audio_groups([3, 3, 3, 30, 3, 3, 3, 3]) == [[0, 1, 2, 4, 5, 6, 7], [3]]
    assert audio_groups([2, 3, 4, 5, 6, 7, 8, 8]) == [list(range(8))]  # 64 <= 2 x 43: one
    assert audio_groups([1, 1, 4, 4], max_padding=1.5) == [[0, 1], [2, 3]]
    for lengths in ([7, 3, 9, 1, 4, 4, 8], [50] * 5, [1, 99, 2, 98], [5, 1, 1, 1, 1, 9, 2]):
        groups = audio_groups(lengths, budget=20)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        for g in groups:
            padded = len(g) * max(lengths[i] for i in g)
            assert len(g) == 1 or padded <= min(20, 2 * sum(lengths[i] for i in g)), (lengths, g)


def test_a_long_clip_does_not_pad_its_batch(tiny_config, monkeypatch):
    """One waveform much longer than the others: with a small budget the batch goes in forwards
    that each fit it (the long one alone, unpadded), and every vector still equals the clip alone
    up to rounding."""
    import emotion_llama.perception.pipeline as pipeline
    from emotion_llama.encoders.models import AudioEncoder

    p = tiny_config.perception
    encoders = build_encoders(tiny_config)
    results = random_clips(p.face_size, p.local_frames, p.temporal_frames, seed=8)
    long = np.tile(results[0].audio, 6)  # 240,000 samples beside 12,000-40,000
    results[2] = clip("long", results[2].local_crops, results[2].temporal_crops, long)
    budget = 4 * 40000
    monkeypatch.setattr(pipeline, "audio_groups", lambda n: audio_groups(n, budget=budget))
    shapes: list[tuple[int, int]] = []
    forward = AudioEncoder.forward

    def spy(self, waveforms, attention_mask=None):
        shapes.append(tuple(waveforms.shape))
        return forward(self, waveforms, attention_mask)

    monkeypatch.setattr(AudioEncoder, "forward", spy)
    together = encode_available(results, encoders, batched=True)
    assert sorted(shapes) == sorted([(4, 40000), (1, long.size)])
    shapes.clear()
    alone = encode_available(results, encoders)
    assert len(shapes) == len(results)
    for r, (a, _), (b, _) in zip(results, together, alone, strict=True):
        np.testing.assert_allclose(a.audio, b.audio, rtol=0, atol=2e-5, err_msg=r.name)


def test_spec_defaults_follow_the_device(tiny_config):
    cpu = EncodeSpec(tiny_config)
    assert cpu.info() == {"dtype": "float32", "fp8": False, "batched": False} == LEGACY_ENCODING
    gpu = EncodeSpec(tiny_config, "cuda")
    assert gpu.batches and EncodeSpec(tiny_config, "cuda", batched=False).batches is False
    assert EncodeSpec(tiny_config, "cpu", batched=True).batches
    want = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float16"
    assert gpu.resolved_dtype() == want
    assert EncodeSpec(tiny_config, dtype="bf16").info()["dtype"] == "bfloat16"
    with pytest.raises(EmotionLlamaError, match="unknown encoder dtype 'float8'"):
        EncodeSpec(tiny_config, dtype="float8").info()


def test_spec_builds_bfloat16_and_fp8_encoders(tiny_config):
    plain = EncodeSpec(tiny_config).build()
    half = EncodeSpec(tiny_config, dtype="bfloat16").build()
    assert {next(m.parameters()).dtype for m in (half.local, half.temporal, half.audio)} == {torch.bfloat16}
    fp8 = EncodeSpec(tiny_config, fp8=True).build()
    # the tiny widths: every linear layer whose sizes are multiples of 16 is converted
    for name in ("local", "temporal", "audio"):
        module = getattr(fp8, name)
        n = fp8_layers(module)
        aligned = sum(
            isinstance(m, torch.nn.Linear) and m.in_features % 16 == 0 and m.out_features % 16 == 0
            for m in getattr(plain, name).modules()
        )
        assert n == aligned, name
    p = tiny_config.perception
    results = random_clips(p.face_size, p.local_frames, p.temporal_frames, seed=6)
    for a, b, c in zip(encode(results, plain), encode(results, half), encode(results, fp8), strict=True):
        for m in MODALITIES:
            x = getattr(a, m)
            assert _cosine(x, getattr(b, m)) > 0.99, m
            if fp8_layers(getattr(fp8, m)):
                assert not np.array_equal(x, getattr(c, m)), m  # FP8 did run
            assert _cosine(x, getattr(c, m)) > 0.98, m


def test_fp8_encoders_on_an_old_gpu_are_refused_before_loading(tiny_config, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as if a GPU were here
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(EmotionLlamaError, match=r"compute capability 8\.9"):
        build_encoders(tiny_config, "cuda", torch.bfloat16, fp8=True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    with pytest.raises(EmotionLlamaError, match="bfloat16"):
        build_encoders(tiny_config, "cuda", torch.float16, fp8=True)


@pytest.mark.slow
def test_compiled_encoders_give_the_eager_features(tiny_config):
    p = tiny_config.perception
    plain = EncodeSpec(tiny_config).build()
    compiled = EncodeSpec(tiny_config, compile=True).build()
    results = random_clips(p.face_size, p.local_frames, p.temporal_frames, seed=7)[:3]
    for a, b in zip(encode(results, plain), encode(results, compiled), strict=True):
        for m in MODALITIES:
            np.testing.assert_allclose(getattr(b, m), getattr(a, m), rtol=0, atol=1e-4, err_msg=m)


# -- extract: the store records the encoding, a rerun cannot mix two -------------------------------
@pytest.mark.slow
def test_extract_records_the_encoding_and_refuses_another_into_the_same_store(tmp_path, tiny_config):
    from emotion_llama.encoders.store import open_store
    from emotion_llama.media.samples import SAMPLE_SENTENCES
    from emotion_llama.perception.extract import extract_folder
    from test_encode_batching import _sample_videos

    videos = _sample_videos(tmp_path / "videos")
    subtitles = {f"clip_{i}": s for i, s in enumerate(SAMPLE_SENTENCES[:4])}
    f = tiny_config.features
    dims = {"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim}

    def run(out, **spec):
        return extract_folder(
            videos, out, tiny_config, workers=1, batch_size=4, subtitles=subtitles, progress=False,
            encode=EncodeSpec(tiny_config, **spec),
        )  # fmt: skip

    plain, batched = tmp_path / "plain", tmp_path / "batched"
    assert run(plain).written == 4
    assert run(batched, batched=True).written == 4
    for out, want in ((plain, LEGACY_ENCODING), (batched, {**LEGACY_ENCODING, "batched": True})):
        assert json.loads((out / "manifest.json").read_text())["encoding"] == want
    a, b = open_store(plain, dims), open_store(batched, dims)
    for name in subtitles:
        for m in MODALITIES:
            x, y = getattr(a.read(name), m), getattr(b.read(name), m)
            np.testing.assert_allclose(y, x, rtol=0, atol=2e-5, err_msg=f"{name} {m}")
    was = "encoded with float32, clip by clip, this run would use"
    with pytest.raises(EmotionLlamaError, match=f"{was} float32, batched; rerun with"):
        run(plain, batched=True)
    with pytest.raises(EmotionLlamaError, match=f"{was} bfloat16, clip by clip"):
        run(plain, dtype="bfloat16")
    # a store written before the encoding was recorded holds float32 clip-by-clip features
    manifest = json.loads((plain / "manifest.json").read_text())
    del manifest["encoding"]
    (plain / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EmotionLlamaError, match="float32, batched; rerun with the options"):
        run(plain, batched=True)
    s = run(plain)
    assert s.already_done == 4 and s.written == 0
    assert json.loads((plain / "manifest.json").read_text())["encoding"] == LEGACY_ENCODING


def test_devices_the_machine_cannot_run_are_named_before_loading(tiny_config):
    from emotion_llama.precision import check_device

    check_device("cpu")
    with pytest.raises(EmotionLlamaError, match=r"--device 'cdua': not a device name"):
        build_encoders(tiny_config, "cdua")
    if not torch.cuda.is_available():
        with pytest.raises(EmotionLlamaError, match=r"--device cuda for the encoders: .*use --device cpu"):
            EncodeSpec(tiny_config, "cuda", fp8=True).build()


def test_extract_cli_refuses_a_bad_encoder_option_before_any_clip(tmp_path):
    import os
    import subprocess
    import sys

    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"not a video")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    base = [sys.executable, "-m", "emotion_llama.cli", "extract", str(videos), "--preset", "tiny"]
    bad = subprocess.run([*base, "--out", str(tmp_path / "a"), "--dtype", "float8"], capture_output=True,
                         text=True, env=env, timeout=120)  # fmt: skip
    assert bad.returncode != 0 and "unknown encoder dtype 'float8'" in bad.stdout + bad.stderr
    assert not (tmp_path / "a" / "manifest.json").exists()
    help_text = subprocess.run([*base[:4], "--help"], capture_output=True, text=True, env=env, timeout=120)
    for flag in ("--dtype", "--fp8", "--compile", "--batch-encoders", "--clip-by-clip"):
        assert flag in help_text.stdout


# -- one clip the encoders cannot take never stops the others --------------------------------------
@pytest.mark.slow
def test_a_clip_with_too_little_audio_fails_alone(tmp_path, tiny_config):
    """10 ms of audio (HuBERT's first frame needs 25 ms) stopped the whole extract with
    'audio shorter than 400 samples'; it is now that clip's missing audio."""
    import shutil
    import subprocess

    from emotion_llama.media.samples import real_media_dir
    from emotion_llama.perception.extract import extract_folder
    from test_encode_batching import _sample_videos

    videos = _sample_videos(tmp_path / "videos")
    face = real_media_dir() / "WolfgangLanger_Pexels.mp4"
    cmd = ["ffmpeg", "-loglevel", "error", "-y", "-i", str(face), "-f", "lavfi", "-i",
           "sine=f=440:d=0.01:sample_rate=16000", "-t", "2", "-map", "0:v", "-map", "1:a",
           "-c:v", "libx264", "-c:a", "pcm_s16le", str(videos / "short_audio.mkv")]  # fmt: skip
    assert shutil.which("ffmpeg") and subprocess.run(cmd).returncode == 0
    for batched in (False, True):
        s = extract_folder(
            videos, tmp_path / f"out_{batched}", tiny_config, workers=1, batch_size=8, progress=False,
            encode=EncodeSpec(tiny_config, batched=batched),
        )  # fmt: skip
        assert s.written == 4, s.failed
        assert [(p.rsplit("/", 1)[-1], why) for p, why in s.failed] == [
            ("short_audio.mkv", "audio: 10 ms, shorter than the 25 ms the audio encoder needs")
        ]


@pytest.mark.slow
def test_a_batch_the_encoders_fail_is_encoded_clip_by_clip(tmp_path, tiny_config, monkeypatch):
    """An encoder error in a batched forward (one clip's input, or the batch's memory) costs that
    batch nothing but the failing clip: each clip then goes alone, and only it is listed."""
    from emotion_llama.encoders.models import AudioEncoder, EncoderError
    from emotion_llama.perception.extract import extract_folder
    from test_encode_batching import _sample_videos

    videos = _sample_videos(tmp_path / "videos")
    forward = AudioEncoder.forward
    alone_calls = []

    def failing(self, waveforms, attention_mask=None):
        if waveforms.shape[0] > 1:
            raise EncoderError("the batch fails")
        alone_calls.append(waveforms.shape[1])
        if len(alone_calls) == 1:  # and then the first clip alone
            raise EncoderError("boom")
        return forward(self, waveforms, attention_mask)

    monkeypatch.setattr(AudioEncoder, "forward", failing)
    s = extract_folder(
        videos, tmp_path / "out", tiny_config, workers=1, batch_size=4, progress=False,
        encode=EncodeSpec(tiny_config, batched=True),
    )  # fmt: skip
    assert s.written == 3 and len(alone_calls) == 4
    assert len(s.failed) == 1 and s.failed[0][1] == "the encoders failed (EncoderError: boom)"
