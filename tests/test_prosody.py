"""Tone of voice from prosody: words at the documented thresholds, syllables and z-scores by hand,
and real measurements that move the right way when espeak-ng says the same sentence higher,
faster, louder or rougher, with or without long pauses between its phrases."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.media.audio import load_audio
from emotion_llama.perception import prosody
from emotion_llama.perception.prosody import (
    MEASURES,
    MIN_DURATION_S,
    PEAKS_RATE_REFERENCE,
    REFERENCE,
    Prosody,
    ProsodyError,
    count_syllables,
    describe_tone,
    fit_reference,
    measure_prosody,
    zscores,
)
from emotion_llama.perception.transcript import Word

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
    """Prosody at the reference mean, moved by ``z`` standard deviations per named measure (the
    rate counted from words, which is what :data:`REFERENCE`'s speaking rate is for)."""
    values = {name: mean + z.get(name, 0.0) * sd for name, (mean, sd) in REFERENCE.items()}
    return Prosody(**values, voiced_ratio=0.6, speech_s=3.0, pause_ratio=0.2, rate_source="words")


def _words(text: str, start: float, end: float) -> list[Word]:
    """``text``'s words spread evenly over ``start``-``end`` seconds (as a recogniser would time them)."""
    parts = text.split()
    step = (end - start) / len(parts)
    return [Word(w, start + i * step, start + (i + 1) * step, 1.0) for i, w in enumerate(parts)]


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
    assert list(d) == [*MEASURES, "voiced_ratio", "speech_s", "pause_ratio", "rate_source", "words_per_min"]
    assert d["pitch_semitones"] == REFERENCE["pitch_semitones"][0]
    assert Prosody(**d) == p
    assert json.loads(json.dumps(d, allow_nan=False)) == d  # strict JSON: no NaN, None is null
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.loudness = 1.0  # type: ignore[misc]
    # The fields added with the VAD have defaults, so the eight measures alone still build one.
    old = Prosody(*(REFERENCE[m][0] for m in MEASURES), 0.6)
    assert (old.speech_s, old.pause_ratio, old.rate_source, old.words_per_min) == (0.0, 0.0, "peaks", None)


# -- zscores by hand --------------------------------------------------------------------------------
def test_zscores_by_hand() -> None:
    p = dataclasses.replace(
        _typical(), pitch_semitones=33.0, loudness=0.25, speaking_rate=6.0, jitter=math.nan
    )
    reference = {
        "pitch_semitones": (30.0, 2.0),
        "loudness": (0.5, 0.25),
        "speaking_rate": (4.0, 0.5),
        "jitter": (0.02, 0.01),
    }
    # (33 - 30) / 2 = 1.5; (0.25 - 0.5) / 0.25 = -1; (6 - 4) / 0.5 = 4; jitter is NaN: left out;
    # measures missing from the reference are left out.
    assert zscores(p, reference) == pytest.approx(
        {"pitch_semitones": 1.5, "loudness": -1.0, "speaking_rate": 4.0}
    )
    assert zscores(None) == {}
    assert set(zscores(_typical())) == set(MEASURES)
    assert all(z == pytest.approx(0.0, abs=1e-12) for z in zscores(_typical()).values())
    # A record's stored dict scores the same; a dict from before rate_source counted peaks.
    assert zscores(p.to_dict(), reference) == zscores(p, reference)
    assert zscores({"speaking_rate": 5.0, "loudness": "loud", "pitch_semitones": None}, reference) == {
        "speaking_rate": 2.0
    }
    # describe_tone puts words to exactly these numbers.
    assert describe_tone(p, reference)[1] == ["high-pitched", "soft", "very fast"]
    with pytest.raises(ProsodyError, match="zscores: unknown reference measures"):
        zscores(p, {"pitch": (30.0, 5.0)})
    with pytest.raises(ProsodyError, match="sd > 0"):
        zscores(p, {"loudness": (0.5, -1.0)})


def test_a_peaks_rate_is_scored_against_its_own_reference() -> None:
    peaks_mean, peaks_sd = PEAKS_RATE_REFERENCE
    words_mean, words_sd = REFERENCE["speaking_rate"]
    # Loudness peaks outnumber syllables: the same number is faster as syllables than as peaks.
    assert peaks_mean > words_mean
    rate = peaks_mean + 1.5 * peaks_sd
    as_peaks = dataclasses.replace(_typical(), speaking_rate=rate, rate_source="peaks")
    as_words = dataclasses.replace(as_peaks, rate_source="words")
    assert zscores(as_peaks)["speaking_rate"] == pytest.approx(1.5)
    assert zscores(as_words)["speaking_rate"] == pytest.approx((rate - words_mean) / words_sd)
    assert zscores(dataclasses.replace(as_peaks, speaking_rate=peaks_mean))["speaking_rate"] == pytest.approx(
        0.0
    )
    assert describe_tone(as_peaks)[1] == ["fast"]
    assert describe_tone(as_words)[1] == ["very fast"]
    legacy = {k: v for k, v in as_peaks.to_dict().items() if k != "rate_source"}
    assert zscores(legacy)["speaking_rate"] == pytest.approx(1.5)
    # A copy of the built-in reference behaves the same; any other reference is used as given.
    assert zscores(as_peaks, dict(REFERENCE)) == zscores(as_peaks)
    custom = {"speaking_rate": (5.0, 1.0)}
    assert zscores(as_peaks, custom)["speaking_rate"] == pytest.approx(rate - 5.0)


# -- syllables --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("word", "syllables"),
    [
        # checked by hand against a dictionary's syllable breaks
        ("the", 1),
        ("make", 1),
        ("cake", 1),
        ("there", 1),
        ("whole", 1),
        ("eyes", 1),
        ("don't", 1),
        ("you", 1),
        ("yes", 1),
        ("loved", 1),
        ("played", 1),
        ("makes", 1),
        ("they're", 1),
        ("table", 2),
        ("little", 2),
        ("people", 2),
        ("wanted", 2),
        ("needed", 2),
        ("boxes", 2),
        ("places", 2),
        ("wishes", 2),
        ("tables", 2),
        ("being", 2),
        ("crying", 2),
        ("saying", 2),
        ("beyond", 2),
        ("player", 2),
        ("married", 2),
        ("hearted", 2),
        ("disposed", 2),
        ("leisure", 2),
        ("goodbye", 2),
        ("social", 2),
        ("nation", 2),
        ("language", 2),
        ("Mr.", 2),
        ("OK", 2),
        ("piano", 3),
        ("radio", 3),
        ("yesterday", 3),
        ("beautiful", 3),
        ("afternoon", 3),
        ("prudently", 3),
        ("everyone", 3),
        ("curious", 3),
        ("actual", 3),
        ("consider", 3),
        ("amiable", 4),
        ("respectable", 4),
        ("situation", 4),
        ("Afternoon!", 3),
        ("HELLO,", 2),
        ("cold-hearted", 3),
        ("señor", 2),
        ("7", 2),
        ("0", 2),
        ("2023", 5),
        ("COVID-19", 4),
        ("—", 0),
        ("...", 0),
        ("", 0),
    ],
)
def test_count_syllables_english(word: str, syllables: int) -> None:
    assert count_syllables(word) == syllables


def test_count_syllables_cjk_and_sentences() -> None:
    # Mandarin: one syllable per character; punctuation is not spoken.
    assert count_syllables("我真的不敢相信你昨天下午对我做了那样的事。") == 20
    assert count_syllables("你好，世界！") == 4
    assert count_syllables("안녕하세요") == 5  # one Hangul block, one syllable
    assert count_syllables("ちょっと") == 2  # cho-tto: small kana glide into the one before
    assert count_syllables("ＯＫ ２") == 3  # full-width forms are folded first
    # The LibriVox transcripts, counted by hand: 30, 9, 20, 27 and 13 syllables.
    assert (
        count_syllables(
            "and mister john dashwood had then leisure to consider how much there might be prudently in "
            "his power to do for them"
        )
        == 30
    )
    assert count_syllables("he was not an ill disposed young man") == 9
    assert count_syllables("unless to be rather cold hearted and rather selfish is to be ill disposed") == 20
    assert (
        count_syllables(
            "had he married a more a amiable woman he might have been made still more respectable than he was"
        )
        == 27
    )
    assert count_syllables("he might even have been made amiable himself") == 13


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


def test_words_must_be_timed_words() -> None:
    audio = np.zeros(16000, np.float32)
    with pytest.raises(ProsodyError, match="not a string"):
        measure_prosody(audio, words="hello there")  # type: ignore[arg-type]
    with pytest.raises(ProsodyError, match=r"needs \.text, \.start and \.end"):
        measure_prosody(audio, words=[("hello", 0.0, 0.5)])  # type: ignore[list-item]
    with pytest.raises(ProsodyError, match="finite start <= end"):
        measure_prosody(audio, words=[Word("hello", 0.5, 0.2, 1.0)])
    with pytest.raises(ProsodyError, match="finite start <= end"):
        measure_prosody(audio, words=[Word("hello", 0.0, math.inf, 1.0)])


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
    # The reader starts after 0.26 s and reads on to the end: 6.6 s of speech in 7.1 s.
    assert 6.0 < p.speech_s < 7.1 and 0.0 < p.pause_ratio < 0.15
    assert p.rate_source == "peaks" and p.words_per_min is None
    assert 3 < p.speaking_rate < 6  # the clip has 30 syllables in 6.6 s of speech, 4.5 a second
    # With the transcript's words the rate is their syllables per second of speech.
    text = (
        "and mister john dashwood had then leisure to consider how much there might be prudently in "
        "his power to do for them"
    )
    w = measure_prosody(audio, words=_words(text, 0.26, 6.85))
    assert w is not None and w.rate_source == "words"
    assert w.speaking_rate == pytest.approx(30 / w.speech_s)
    assert w.words_per_min == pytest.approx(60 * 22 / w.speech_s)
    assert (w.pitch_semitones, w.loudness) == (p.pitch_semitones, p.loudness)
    phrase, words = describe_tone(p)
    assert phrase and phrase.startswith("a ") and "voice" in phrase
    # The reader is a man at about 100 Hz: low against the sex-pooled published norm.
    assert "low-pitched" in words
    # Under the minimum duration the same speech is not measured.
    assert measure_prosody(audio[: int(0.9 * MIN_DURATION_S * 16000)]) is None


@needs_librivox
def test_reference_means_match_the_librivox_measurements() -> None:
    """The reference says its means were measured on these clips: re-measuring must agree (this
    fails if openSMILE's features or the VAD change meaning or name). Without words the rate is
    loudness peaks, whose mean is :data:`PEAKS_RATE_REFERENCE`'s."""
    measured = [measure_prosody(load_audio(f, 16000)) for f in sorted(LIBRIVOX.glob("*.wav"))]
    assert len(measured) == 5 and all(p is not None and p.rate_source == "peaks" for p in measured)
    for name in MEASURES:
        if name == "pitch_semitones":  # from published norms, not from these clips
            continue
        mean, sd = PEAKS_RATE_REFERENCE if name == "speaking_rate" else REFERENCE[name]
        got = float(np.mean([getattr(p, name) for p in measured]))
        assert got == pytest.approx(mean, abs=0.05 * sd), name


@pytest.mark.slow
@needs_librivox
def test_reference_syllable_rate_matches_whisper_words_on_librivox() -> None:
    """:data:`REFERENCE`'s speaking rate is the LibriVox mean with Whisper tiny.en's words, as
    ``benchmarks/prosody_reference.py`` measures it."""
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed")
    from emotion_llama.perception.transcript import WhisperTranscriber
    from emotion_llama.sources import offline_file

    try:
        offline_file("whisper_tiny_en")
    except EmotionLlamaError as exc:
        pytest.skip(f"offline Whisper tiny.en not available: {exc}")
    whisper = WhisperTranscriber("offline", language="en")
    rates = []
    for f in sorted(LIBRIVOX.glob("*.wav")):
        audio = load_audio(f, 16000)
        p = measure_prosody(audio, words=whisper.transcribe(audio).words)
        assert p is not None and p.rate_source == "words" and p.words_per_min is not None
        rates.append(p.speaking_rate)
    mean, sd = REFERENCE["speaking_rate"]
    assert float(np.mean(rates)) == pytest.approx(mean, abs=0.05 * sd)


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


# -- espeak-ng: the same sentence, one setting changed --------------------------------------------
# Two phrases of one utterance, for inserting a pause between them.
PHRASES = (
    "I really cannot believe you did that to me",
    "yesterday afternoon, and I am still angry about it.",
)
PAUSE_S = 1.8


@pytest.fixture(scope="module")
def espeak(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., np.ndarray]:
    folder = tmp_path_factory.mktemp("espeak")
    cache: dict[tuple[tuple[str, ...], str], np.ndarray] = {}

    def say(*args: str, text: str = SENTENCE) -> np.ndarray:
        if (args, text) not in cache:
            out = folder / f"{len(cache)}.wav"
            subprocess.run([ESPEAK, "-w", str(out), *args, text], check=True, capture_output=True)
            cache[args, text] = load_audio(out, 16000)
        return cache[args, text]

    return say


def _measure(audio: np.ndarray, words: list[Word] | None = None) -> tuple[Prosody, list[str]]:
    p = measure_prosody(audio, words=words)
    assert p is not None
    return p, describe_tone(p)[1]


def _sentence_words(audio: np.ndarray, text: str = SENTENCE) -> list[Word]:
    return _words(text, 0.0, audio.size / 16000)


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
@pytest.mark.parametrize("with_words", [False, True], ids=["peaks", "words"])
def test_faster_speech_is_measured_and_described_faster(
    espeak: Callable[..., np.ndarray], with_words: bool
) -> None:
    slow_audio, fast_audio = espeak("-s", "120"), espeak("-s", "260")
    slow, slow_words = _measure(slow_audio, _sentence_words(slow_audio) if with_words else None)
    fast, fast_words = _measure(fast_audio, _sentence_words(fast_audio) if with_words else None)
    assert slow.rate_source == fast.rate_source == ("words" if with_words else "peaks")
    assert fast.speaking_rate > 1.6 * slow.speaking_rate  # espeak's -s is words per minute
    assert _score(slow_words, _RATE) < _score(fast_words, _RATE)
    assert _score(fast_words, _RATE) > 0  # 260 words a minute is fast by any count
    assert not {"slow", "very slow"} & set(fast_words)
    assert not {"fast", "very fast"} & set(slow_words)
    if with_words:
        # The sentence has 18 syllables ("real-ly" counts 2): the rate is those per second of speech.
        assert count_syllables(SENTENCE) == 18
        assert fast.speaking_rate == pytest.approx(18 / fast.speech_s)
        assert slow.words_per_min == pytest.approx(60 * 11 / slow.speech_s)
    else:
        # Slower still (espeak-ng's default is 175), the rate has a word.
        assert _score(_measure(espeak("-s", "100"))[1], _RATE) < 0


@needs_espeak
def test_louder_speech_is_measured_and_described_louder(espeak: Callable[..., np.ndarray]) -> None:
    soft, soft_words = _measure(espeak("-a", "40"))
    loud, loud_words = _measure(espeak("-a", "180"))
    assert loud.loudness > 2 * soft.loudness
    assert _score(soft_words, _LOUD) < _score(loud_words, _LOUD)
    assert _score(loud_words, _LOUD) > 0
    assert not {"soft", "very soft"} & set(loud_words)
    # Scaling the samples down changes the loudness words and nothing else that is measured.
    normal = espeak()
    scaled, scaled_words = _measure(normal * 0.1)
    same, same_words = _measure(normal)
    assert scaled.loudness < same.loudness / 3
    assert _score(scaled_words, _LOUD) < 0
    assert scaled.pitch_semitones == pytest.approx(same.pitch_semitones, abs=0.2)
    assert [w for w in scaled_words if w not in _LOUD] == [w for w in same_words if w not in _LOUD]


# -- pauses: the same utterance with and without 1.8 s of silence between its phrases ----------------
# Cutting the pause out leaves the measures within this share of the pause-free utterance's (the
# VAD's segment edges move by a few tens of ms; espeak-ng's own 0.3 s gap between the phrases is
# under the VAD's 250 ms-plus-padding and stays in the pause-free version).
PAUSE_TOLERANCE = 0.06


def _with_pause(
    espeak: Callable[..., np.ndarray], *args: str, noise: float = 0.0
) -> tuple[tuple[np.ndarray, list[Word]], tuple[np.ndarray, list[Word]]]:
    """The two phrases said with ``args``, joined as espeak-ng ends them and with ``PAUSE_S`` of
    silence (or faint noise, ``noise`` RMS) between, each with its words timed to its phrase."""
    a, b = (espeak(*args, text=t) for t in PHRASES)
    pause = (noise * np.random.default_rng(0).standard_normal(int(PAUSE_S * 16000))).astype(np.float32)
    da, db = a.size / 16000, b.size / 16000
    joined = np.concatenate([a, b])
    paused = np.concatenate([a, pause, b])
    joined_words = _words(PHRASES[0], 0.0, da) + _words(PHRASES[1], da, da + db)
    paused_words = _words(PHRASES[0], 0.0, da) + _words(PHRASES[1], da + PAUSE_S, da + PAUSE_S + db)
    return (joined, joined_words), (paused, paused_words)


# About 1.5 s each: the default voice in silence runs always, the other cases with the slow tests.
_PAUSE_CASES = [
    pytest.param(
        args, noise, id=f"{'-'.join(args) or 'default'}-{'noise' if noise else 'silence'}", marks=marks
    )
    for args in [(), ("-s", "120"), ("-s", "260"), ("-a", "40"), ("-a", "180")]
    for noise in (0.0, 0.003)
    for marks in [() if (args, noise) == ((), 0.0) else (pytest.mark.slow,)]
]


@needs_espeak
@pytest.mark.parametrize(("args", "noise"), _PAUSE_CASES)
def test_a_long_pause_changes_neither_loudness_nor_rate(
    espeak: Callable[..., np.ndarray], args: tuple[str, ...], noise: float
) -> None:
    (joined, joined_words), (paused, paused_words) = _with_pause(espeak, *args, noise=noise)
    without = measure_prosody(joined)
    with_pause = measure_prosody(paused)
    assert without is not None and with_pause is not None
    assert with_pause.loudness == pytest.approx(without.loudness, rel=PAUSE_TOLERANCE)
    assert with_pause.speaking_rate == pytest.approx(without.speaking_rate, rel=PAUSE_TOLERANCE)
    assert with_pause.pitch_semitones == pytest.approx(without.pitch_semitones, abs=0.5)
    assert with_pause.speech_s == pytest.approx(without.speech_s, rel=PAUSE_TOLERANCE)
    # The pause is seen: 1.8 s of a 6-9 s clip.
    assert with_pause.pause_ratio > without.pause_ratio + 0.15
    # The syllable rate from words agrees too (the same 27 syllables over about the same speech).
    words_without = measure_prosody(joined, words=joined_words)
    words_with = measure_prosody(paused, words=paused_words)
    assert words_without is not None and words_with is not None
    assert words_with.rate_source == words_without.rate_source == "words"
    assert words_with.speaking_rate == pytest.approx(words_without.speaking_rate, rel=PAUSE_TOLERANCE)
    # The old method, openSMILE over the whole clip, reads the paused utterance softer and slower
    # by about the pause's share of the clip.
    whole = prosody._smile().process_signal(paused, 16000).iloc[0]
    assert whole["loudness_sma3_amean"] < 0.85 * without.loudness
    assert whole["loudnessPeaksPerSec"] < 0.85 * without.speaking_rate


@needs_espeak
@pytest.mark.parametrize("with_words", [False, True], ids=["peaks", "words"])
def test_with_pauses_fast_and_loud_are_still_fast_and_loud(
    espeak: Callable[..., np.ndarray], with_words: bool
) -> None:
    def paused(*args: str) -> tuple[Prosody, list[str]]:
        _, (audio, words) = _with_pause(espeak, *args)
        return _measure(audio, words if with_words else None)

    slow, slow_words = paused("-s", "120")
    fast, fast_words = paused("-s", "260")
    soft, soft_words = paused("-a", "40")
    loud, loud_words = paused("-a", "180")
    assert fast.speaking_rate > 1.6 * slow.speaking_rate
    assert loud.loudness > 2 * soft.loudness
    assert _score(fast_words, _RATE) > 0 and not {"slow", "very slow"} & set(fast_words)
    assert not {"fast", "very fast"} & set(slow_words)
    assert _score(loud_words, _LOUD) > 0 and not {"soft", "very soft"} & set(loud_words)
    assert _score(soft_words, _LOUD) < _score(loud_words, _LOUD)


# -- the syllable rate from words, by hand ----------------------------------------------------------
@needs_espeak
def test_rate_from_words_by_hand(espeak: Callable[..., np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    audio = espeak()  # 3.4 s of speech for openSMILE; the speech segments are set by hand
    monkeypatch.setattr(prosody, "_speech_segments", lambda _: [(0, 16000), (24000, 48000)])
    words = [
        Word("Hello,", 0.10, 0.40, 0.9),  # 2 syllables
        Word("beautiful", 0.50, 0.95, 0.9),  # 3
        Word("—", 0.95, 0.96, 0.9),  # punctuation: no syllable, not a word
        Word("world.", 1.60, 1.90, 0.9),  # 1
        Word("Yesterday", 2.00, 2.60, 0.9),  # 3
        Word("ghost", 3.25, 3.35, 0.2),  # 1, but 0.25 s past the speech (slack 0.2 s): not counted
    ]
    p = measure_prosody(audio, words=words)
    assert p is not None
    # Speech: 0-1 s and 1.5-3 s = 2.5 s of the 3.35 s clip; 9 syllables and 4 words in it.
    assert p.speech_s == pytest.approx(2.5)
    assert p.pause_ratio == pytest.approx(1 - 2.5 / (audio.size / 16000))
    assert p.rate_source == "words"
    assert p.speaking_rate == pytest.approx(9 / 2.5)  # 3.6 syllables per second of speech
    assert p.words_per_min == pytest.approx(60 * 4 / 2.5)  # 96
    # A word just inside the slack counts; no words, or none in the speech, fall back to peaks.
    near = measure_prosody(audio, words=[*words[:-1], Word("ghost", 3.15, 3.35, 0.2)])
    assert near is not None and near.speaking_rate == pytest.approx(10 / 2.5)
    for none_in_speech in ([], [Word("ghost", 3.3, 3.35, 0.2)], [Word("...", 0.1, 0.2, 1.0)]):
        peaks = measure_prosody(audio, words=none_in_speech)
        assert peaks is not None and peaks.rate_source == "peaks" and peaks.words_per_min is None
        assert peaks.speaking_rate != p.speaking_rate


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
