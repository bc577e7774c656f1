"""Tone of voice from prosody: words at the documented thresholds, and real measurements that move
the right way when espeak-ng says the same sentence higher, faster, louder or rougher."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.media.audio import load_audio
from emotion_llama.perception.prosody import (
    MEASURES,
    MIN_DURATION_S,
    REFERENCE,
    Prosody,
    ProsodyError,
    describe_tone,
    fit_reference,
    measure_prosody,
)

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
SENTENCE = "I really cannot believe you did that to me yesterday afternoon."
ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(ESPEAK is None, reason="needs espeak-ng")
needs_librivox = pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="needs pocketsphinx's LibriVox test clips")

# A word's place on its scale, so that "the higher one is described as higher" is a comparison.
_PITCH = {"very low-pitched": -2, "low-pitched": -1, "high-pitched": 1, "very high-pitched": 2}
_LOUD = {"very soft": -2, "soft": -1, "loud": 1, "very loud": 2}
_RATE = {"very slow": -2, "slow": -1, "fast": 1, "very fast": 2}


def _score(words: list[str], scale: dict[str, int]) -> int:
    hits = [scale[w] for w in words if w in scale]
    assert len(hits) <= 1, words
    return hits[0] if hits else 0


def _typical(**z: float) -> Prosody:
    """Prosody at the reference mean, moved by ``z`` standard deviations per named measure."""
    values = {name: mean + z.get(name, 0.0) * sd for name, (mean, sd) in REFERENCE.items()}
    return Prosody(**values, voiced_ratio=0.6)


# -- describe_tone on hand-made values ------------------------------------------------------------
def test_none_gives_no_description() -> None:
    assert describe_tone(None) == (None, [])


def test_typical_voice_has_no_words_but_a_phrase() -> None:
    assert describe_tone(_typical()) == ("a voice of moderate pitch, loudness and pace", [])


@pytest.mark.parametrize(
    ("measure", "low", "high"),
    [
        ("pitch_semitones", "low-pitched", "high-pitched"),
        ("loudness", "soft", "loud"),
        ("speaking_rate", "slow", "fast"),
        ("pitch_range_semitones", "monotone", "lively"),
    ],
)
@pytest.mark.parametrize(
    ("z", "expected"),
    [
        (0.99, None),
        (1.0, "{high}"),
        (1.99, "{high}"),
        (2.0, "very {high}"),
        (3.5, "very {high}"),
        (-0.99, None),
        (-1.0, "{low}"),
        (-1.99, "{low}"),
        (-2.0, "very {low}"),
    ],
)
def test_level_words_at_the_thresholds(
    measure: str, low: str, high: str, z: float, expected: str | None
) -> None:
    _, words = describe_tone(_typical(**{measure: z}))
    assert words == ([] if expected is None else [expected.format(low=low, high=high)])


@pytest.mark.parametrize(
    ("z", "expected"),
    [
        ({"jitter": 1.5, "shimmer_db": 1.5}, ["rough"]),
        ({"jitter": 3.0, "shimmer_db": 0.0}, ["rough"]),  # the mean of the two z-scores counts
        ({"jitter": 2.9, "shimmer_db": 0.0}, []),
        ({"shimmer_db": 2.9}, []),  # shimmer alone also rises with fast loudness changes
        ({"hnr_db": -1.5}, ["breathy"]),
        ({"hnr_db": -1.49}, []),
        ({"hnr_db": 4.0}, []),  # high HNR mostly restates high pitch: no word
        ({"jitter": 2.0, "shimmer_db": 2.0, "hnr_db": -2.0}, ["hoarse"]),
        ({"jitter": -3.0, "shimmer_db": -3.0}, []),
    ],
)
def test_voice_quality_words_only_far_off(z: dict[str, float], expected: list[str]) -> None:
    _, words = describe_tone(_typical(**z))
    assert words == expected


def test_phrase_for_the_caption() -> None:
    p = _typical(pitch_semitones=1.2, loudness=1.5, speaking_rate=1.1, pitch_range_semitones=1.3)
    phrase, words = describe_tone(p)
    assert phrase == "a high-pitched, loud and fast voice with lively intonation"
    assert words == ["high-pitched", "loud", "fast", "lively"]
    assert describe_tone(_typical(pitch_semitones=-1.0)) == ("a low-pitched voice", ["low-pitched"])
    assert describe_tone(_typical(pitch_range_semitones=-2.5)) == (
        "a voice with very monotone intonation",
        ["very monotone"],
    )
    rough_soft = _typical(jitter=2.0, shimmer_db=2.0, loudness=-1.2)
    assert describe_tone(rough_soft) == ("a rough and soft voice", ["rough", "soft"])


def test_custom_reference_and_its_checks() -> None:
    p = _typical(pitch_semitones=1.5, loudness=1.5)
    # A measure left out of the reference is not described.
    only_pitch = {"pitch_semitones": REFERENCE["pitch_semitones"]}
    assert describe_tone(p, only_pitch)[1] == ["high-pitched"]
    # The same voice is ordinary against a reference centred on it.
    centred = {name: (getattr(p, name), sd) for name, (_, sd) in REFERENCE.items()}
    assert describe_tone(p, centred)[1] == []
    with pytest.raises(ProsodyError, match="unknown reference measures"):
        describe_tone(p, {"pitch": (30.0, 5.0)})
    with pytest.raises(ProsodyError, match="sd > 0"):
        describe_tone(p, {"loudness": (0.5, 0.0)})
    assert issubclass(ProsodyError, EmotionLlamaError)


def test_fit_reference_describes_relative_to_the_corpus() -> None:
    # Three clips whose every measure differs, the pitch at -1, 0 and +1 global SD.
    corpus = [_typical(**{m: z + 0.1 * i for i, m in enumerate(MEASURES)}) for z in (-1.0, 0.0, 1.0)]
    fitted = fit_reference([*corpus, None])
    assert set(fitted) == set(MEASURES)
    pitches = [p.pitch_semitones for p in corpus]
    assert fitted["pitch_semitones"] == pytest.approx((np.mean(pitches), np.std(pitches, ddof=1)))
    # Against its own corpus the middle clip is ordinary in every measure and the top one is
    # "high-pitched" (z = +1), whatever the global reference says about them.
    assert describe_tone(corpus[1], fitted)[1] == []
    assert "high-pitched" in describe_tone(corpus[2], fitted)[1]
    with pytest.raises(ProsodyError, match="at least 2"):
        fit_reference([corpus[0], None])
    with pytest.raises(ProsodyError, match="same in every clip"):
        fit_reference([corpus[0], corpus[0]])


def test_prosody_to_dict() -> None:
    p = _typical()
    d = p.to_dict()
    assert list(d) == [*MEASURES, "voiced_ratio"]
    assert d["pitch_semitones"] == REFERENCE["pitch_semitones"][0]
    assert Prosody(**d) == p
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.loudness = 1.0  # type: ignore[misc]


# -- measure_prosody: input checks and no-speech cases -------------------------------------------
@pytest.mark.parametrize(
    ("audio", "rate", "match"),
    [
        (np.zeros((2, 16000), np.float32), 16000, "mono 1-D"),
        (np.full(16000, np.nan, np.float32), 16000, "NaN or infinite"),
        (np.zeros(16000, np.complex64), 16000, "float or integer PCM"),
        (np.zeros(16000, np.float32), 0, "positive integer"),
        (np.zeros(16000, np.float32), 16000.0, "positive integer"),
    ],
)
def test_bad_input_is_an_error(audio: np.ndarray, rate: int, match: str) -> None:
    with pytest.raises(ProsodyError, match=match):
        measure_prosody(audio, rate)


def test_silence_noise_and_a_steady_tone_are_not_speech() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(3 * 16000) / 16000
    for audio in (
        np.zeros(3 * 16000, np.float32),
        (0.3 * rng.standard_normal(t.size)).astype(np.float32),  # white noise: no F0
        (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32),  # voiced, but no syllables
        np.zeros(0, np.float32),
    ):
        p = measure_prosody(audio)
        assert p is None
        assert describe_tone(p) == (None, [])


@needs_librivox
def test_real_read_speech_is_described() -> None:
    audio = load_audio(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav", 16000)
    p = measure_prosody(audio)
    assert p is not None
    assert 15 < p.pitch_semitones < 35  # 60-210 Hz: an adult voice
    assert 0.3 < p.voiced_ratio < 0.9
    assert 3 < p.speaking_rate < 6  # the clip has 30 syllables in 7.1 s
    phrase, words = describe_tone(p)
    assert phrase and phrase.startswith("a ") and "voice" in phrase
    # The reader is a man at about 100 Hz: low against the sex-pooled published norm.
    assert "low-pitched" in words
    # Under the minimum duration the same speech is not measured.
    assert measure_prosody(audio[: int(0.9 * MIN_DURATION_S * 16000)]) is None


@needs_librivox
def test_reference_means_match_the_librivox_measurements() -> None:
    """The reference says its means were measured on these clips: re-measuring must agree (this
    fails if openSMILE's features change meaning or name)."""
    measured = [measure_prosody(load_audio(f, 16000)) for f in sorted(LIBRIVOX.glob("*.wav"))]
    assert len(measured) == 5 and all(p is not None for p in measured)
    for name in MEASURES:
        if name == "pitch_semitones":  # from published norms, not from these clips
            continue
        mean, sd = REFERENCE[name]
        got = float(np.mean([getattr(p, name) for p in measured]))
        assert got == pytest.approx(mean, abs=0.05 * sd), name


@needs_librivox
def test_integer_pcm_other_rates_and_threads_agree() -> None:
    path = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0930.wav"
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        rate = w.getframerate()
    as_float = measure_prosody(load_audio(path, rate), rate)
    as_int = measure_prosody(pcm, rate)
    assert as_float is not None and as_int is not None
    assert as_int.loudness == pytest.approx(as_float.loudness, rel=1e-3)
    assert as_int.pitch_semitones == pytest.approx(as_float.pitch_semitones, abs=1e-3)
    # Another input rate is resampled to 16 kHz first, so the measures barely move.
    at_22k = measure_prosody(load_audio(path, 22050), 22050)
    assert at_22k is not None
    assert at_22k.pitch_semitones == pytest.approx(as_float.pitch_semitones, abs=0.3)
    assert at_22k.loudness == pytest.approx(as_float.loudness, rel=0.05)
    audio = load_audio(path, 16000)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(measure_prosody, [audio] * 4))
    assert all(r == results[0] for r in results)


@needs_librivox
def test_measuring_a_clip_is_fast() -> None:
    audio = load_audio(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0930.wav", 16000)  # 3.3 s
    measure_prosody(audio)  # builds openSMILE once
    times = []
    for _ in range(3):
        start = time.perf_counter()
        measure_prosody(audio)
        times.append(time.perf_counter() - start)
    # ~50 ms here; the bound leaves room for a busy machine but not for a second openSMILE pass.
    assert min(times) < 0.25


# -- espeak-ng: the same sentence, one setting changed --------------------------------------------
@pytest.fixture(scope="module")
def espeak(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., np.ndarray]:
    folder = tmp_path_factory.mktemp("espeak")
    cache: dict[tuple[str, ...], np.ndarray] = {}

    def say(*args: str) -> np.ndarray:
        if args not in cache:
            out = folder / f"{len(cache)}.wav"
            subprocess.run([ESPEAK, "-w", str(out), *args, SENTENCE], check=True, capture_output=True)
            cache[args] = load_audio(out, 16000)
        return cache[args]

    return say


def _measure(audio: np.ndarray) -> tuple[Prosody, list[str]]:
    p = measure_prosody(audio)
    assert p is not None
    return p, describe_tone(p)[1]


@needs_espeak
def test_higher_pitch_is_measured_and_described_higher(espeak: Callable[..., np.ndarray]) -> None:
    low, low_words = _measure(espeak("-p", "20"))
    mid, mid_words = _measure(espeak("-p", "50"))
    high, high_words = _measure(espeak("-p", "80"))
    assert low.pitch_semitones + 3 < mid.pitch_semitones < high.pitch_semitones - 3
    assert _score(low_words, _PITCH) < _score(high_words, _PITCH)
    assert _score(low_words, _PITCH) <= _score(mid_words, _PITCH) <= _score(high_words, _PITCH)
    assert _score(low_words, _PITCH) < 0  # espeak's -p 20 is a very deep voice: about 86 Hz


@needs_espeak
def test_faster_speech_is_measured_and_described_faster(espeak: Callable[..., np.ndarray]) -> None:
    slow, slow_words = _measure(espeak("-s", "110"))
    fast, fast_words = _measure(espeak("-s", "260"))
    assert fast.speaking_rate > 2 * slow.speaking_rate
    assert _score(slow_words, _RATE) < 0 < _score(fast_words, _RATE)
    assert "slow" in slow_words


@needs_espeak
def test_louder_speech_is_measured_and_described_louder(espeak: Callable[..., np.ndarray]) -> None:
    soft, soft_words = _measure(espeak("-a", "40"))
    loud, loud_words = _measure(espeak("-a", "180"))
    assert loud.loudness > 2 * soft.loudness
    assert _score(soft_words, _LOUD) < _score(loud_words, _LOUD)
    assert _score(loud_words, _LOUD) > 0
    # Scaling the samples down changes the loudness words and nothing else that is measured.
    normal = espeak()
    scaled, scaled_words = _measure(normal * 0.1)
    same, same_words = _measure(normal)
    assert scaled.loudness < same.loudness / 3
    assert _score(scaled_words, _LOUD) < 0
    assert scaled.pitch_semitones == pytest.approx(same.pitch_semitones, abs=0.2)
    assert [w for w in scaled_words if w not in _LOUD] == [w for w in same_words if w not in _LOUD]


@needs_espeak
def test_rough_voice_is_described_rough(espeak: Callable[..., np.ndarray]) -> None:
    rough, rough_words = _measure(espeak("-v", "en+croak"))  # espeak's croak adds F0 flutter
    plain, plain_words = _measure(espeak())
    assert rough.jitter > 2 * plain.jitter
    assert "rough" in rough_words or "hoarse" in rough_words
    assert not {"rough", "hoarse", "breathy"} & set(plain_words)


@needs_espeak
def test_whispering_has_no_voiced_speech(espeak: Callable[..., np.ndarray]) -> None:
    assert measure_prosody(espeak()) is not None
    assert measure_prosody(espeak("-v", "en+whisper")) is None
