"""The tone of voice of a clip, measured from prosody: the "audio tone" clue of a MERR caption.

The authors of Emotion-LLaMA asked an audio LLM (Qwen-Audio) to describe each clip's tone (SPEC
section 6, step 6). Here the tone is measured instead: :func:`measure_prosody` finds the speech
with a voice activity detector, cuts the pauses out, and runs openSMILE's eGeMAPS v02
functionals (Eyben et al. 2016) on the speech alone; :func:`zscores` places each measure against
a reference population in standard deviations, and :func:`describe_tone` turns those z-scores
into words. This is reproducible, runs offline in about 0.1 s per clip of a few seconds on two
CPU cores (openSMILE most of it, the VAD 10-20 ms), and every word can be traced to a number.

Speech and pauses. Measured over the whole clip, a pause lowers the mean loudness and the rate in
proportion to its length (a loud 230 words-a-minute shout with pauses was once described as
"low-pitched and slow"). So the measures are taken over speech only. Silero VAD v6 (the ONNX
model in faster-whisper's package assets; offline, CPU) marks speech in the 16 kHz audio with
these settings:

=========================  =======  ============================================================
``VAD_THRESHOLD``          0.5      speech probability above which a 32 ms frame is speech
``VAD_MIN_SILENCE_MS``     250      a pause at least this long ends a speech segment: the usual
                                    boundary between a pause and the gaps inside articulation
                                    (Goldman-Eisler 1968)
``VAD_MIN_SPEECH_MS``      100      shorter bursts (a click, a breath) are dropped
``VAD_SPEECH_PAD_MS``      30       added each side of a segment (Silero's own default), so word
                                    onsets and final consonants are not clipped
=========================  =======  ============================================================

The segments are joined end to end (a 5 ms fade at each edge, so a join makes no click) and every
measure below is taken over that speech-only signal. ``speech_s`` is the length of the segments,
padding included; ``pause_ratio`` = 1 - ``speech_s`` / clip duration. The same espeak-ng
utterance with 1.8 s of silence between its two phrases reads within 4% of the pause-free one in
loudness and rate (five voices: default, slow, fast, soft, loud); the old whole-clip measure read
it 25-34% softer and slower. The VAD costs about 3 ms per second of audio on two CPU cores, plus
about 0.2 s once to load the model (and about 1 s to import faster-whisper, if nothing has yet).

Measures (eGeMAPS v02 functional each comes from, over the speech):

===========================  ===================================================================
``pitch_semitones``          ``F0semitoneFrom27.5Hz_sma3nz_amean``: mean F0 of voiced frames, in
                             semitones above 27.5 Hz (120 Hz = 25.5, 210 Hz = 35.2)
``pitch_range_semitones``    ``F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2``: the 20th-80th percentile
                             range of F0 in semitones (robust to octave errors, unlike the maximum)
``loudness``                 ``loudness_sma3_amean``: mean auditory loudness. It follows the level of
                             the recording (about amplitude ** 0.66), not only the speaker's effort
``speaking_rate``            syllables per second of speech: from the words when given, else
                             ``loudnessPeaksPerSec`` (see "Speaking rate")
``jitter``                   ``jitterLocal_sma3nz_amean``: cycle-to-cycle F0 perturbation (ratio)
``shimmer_db``               ``shimmerLocaldB_sma3nz_amean``: cycle-to-cycle amplitude perturbation
``hnr_db``                   ``HNRdBACF_sma3nz_amean``: harmonics-to-noise ratio (autocorrelation)
``voiced_ratio``             ``VoicedSegmentsPerSec * MeanVoicedSegmentLengthSec``: the share of the
                             speech inside voiced stretches (stretches cut by the edges are not
                             counted, so it reads a little low)
===========================  ===================================================================

Speaking rate (``rate_source`` records which):

* ``"words"``: with ``words`` (a transcript's timed words, e.g. ``Transcript.words``), the rate is
  the syllables of the words divided by ``speech_s``: an articulation rate, syllables per second
  with pauses of 250 ms or more left out. A word counts when its ``[start, end]`` overlaps a speech
  segment widened by ``WORD_SLACK_S`` = 0.2 s each side (Whisper's word edges are that loose); a
  word in what the VAD heard as silence (text a recogniser invents in a pause) counts in neither
  the syllables nor the time. ``words_per_min`` = 60 * counted words / ``speech_s``.
* ``"peaks"``: without words (no transcript, a subtitle without timings), or with none in the
  speech, the rate is openSMILE's loudness peaks per second of the speech-only signal, a pseudo
  syllable rate; ``words_per_min`` is ``None``. Peaks outnumber syllables (on the LibriVox clips
  below 4.78 peaks against 4.09 syllables per second of speech; on espeak-ng 5.57 against 5.18),
  so a peaks rate is scored against its own :data:`PEAKS_RATE_REFERENCE`, not the words' one.

Syllables (:func:`count_syllables`) are counted from the spelling. The text is folded (lower
case, accents off Latin letters, full-width forms to ASCII) and split into runs:

* English words: vowel groups (a, e, i, o, u, and y except as a consonant before a vowel at the
  start of a word or after a vowel: yes, be-yond, play-er); plus one for i + a/o/u not after c, g,
  s, t or x (pi-a-no, ra-di-o; not so-cial, na-tion) and for u + a not after q or g (ac-tu-al;
  not qual-i-ty), and for -ing after a vowel (be-ing); minus one for a silent final e after a
  consonant (make, there; not a consonant + le: ta-ble), for -es after a consonant other than
  s, x, z, c, g, ch, sh and not -les (makes; box-es, ta-bles), and for -ed after a consonant other
  than t or d (loved; want-ed); at least 1 a word; apostrophes ignored (don't = 1); a few
  abbreviations said in full (Mr. and Mrs. 2, Dr. 2, OK 2). It counts the five LibriVox
  transcripts exactly (30, 9, 20, 27 and 13 syllables by hand); it misses some words (ca-fé 1,
  rhy-thm 1, mil-lion 3).
* CJK: each Han character, Hangul block and kana is one syllable (Mandarin and Cantonese are one
  syllable per character); small kana glide into the one before and count 0; punctuation 0.
* Digits: each digit is its English name, digit by digit (0 and 7 have 2 syllables, the others
  1): "2023" counts 5, as "twenty twenty-three"; "100" counts 5 against "one hundred"'s 3.
* Any other script: 1 per run of letters, a floor.

A norm check: the LibriVox reader reads at 4.09 syllables per second of speech with Whisper
tiny.en's words (4.23 with the real transcript: Whisper heard "ill disposed" as "old-sposed"), and
178 words per minute of speech. Published articulation rates of American English are about 4.5-
5.5 syllables per second in conversation and slower in reading aloud (Jacewicz, Fox, O'Neill &
Salmons 2009, Language Variation and Change 21), and reading aloud averages 183 words per minute
with its pauses (Brysbaert 2019, Journal of Memory and Language 109). So the reference is a
somewhat slow reader: against it espeak-ng's default 175 words per minute (5.4 syllables per
second of speech) is "fast", and so is most conversation (5 syllables per second is z = +1.2).

No voiced speech (:func:`measure_prosody` returns ``None``) when any of these holds:

* the clip is shorter than ``MIN_DURATION_S`` = 0.5 s, or the VAD finds less than 0.5 s of
  speech in it (none in silence, noise or a steady tone; rates and ranges need a few syllables);
* ``voiced_ratio`` < ``MIN_VOICED_RATIO`` = 0.1 of the speech (whispering: F0 is undefined);
* voiced time ``voiced_ratio * speech_s`` < ``MIN_VOICED_S`` = 0.25 s;
* fewer than ``MIN_PEAKS`` = 2 loudness peaks in the speech (a steady tone or hum has no
  syllables).

Words (``z = (value - mean) / sd`` with :data:`REFERENCE`, from :func:`zscores`; boundaries are
inclusive):

=========================  ==============  =========  =========  ==========  ============
measure                    z <= -2         z <= -1    z >= +1    z >= +2     phrase slot
=========================  ==============  =========  =========  ==========  ============
pitch_semitones            very low-       low-       high-      very high-  adjective
                           pitched         pitched    pitched    pitched
loudness                   very soft       soft       loud       very loud   adjective
speaking_rate              very slow       slow       fast       very fast   adjective
pitch_range_semitones      very monotone   monotone   lively     very        "... with X
                                                                 lively      intonation"
=========================  ==============  =========  =========  ==========  ============

Against this reference, speaking rate words fall at (per second of speech, syllables of words /
peaks): slow <= 3.33 / 4.01, very slow <= 2.57 / 3.24, fast >= 4.85 / 5.55, very fast >= 5.61 /
6.32; loudness words at soft <= 0.431, very soft <= 0.281, loud >= 0.731, very loud >= 0.881 (the
LibriVox level is 0.581; -6 dB of gain gives 0.368, +6 dB 0.906). A z-score only grows with its
measure, so a faster or louder voice never gets a slower or softer word than a slower or softer
one measured the same way.

Voice quality has words only far from typical, at 1.5 SD: ``rough`` when the mean of the jitter
and shimmer z-scores is >= +1.5 (both perturbations together: shimmer alone also rises with fast
loudness changes, as in fast or low-pitched synthesis), ``breathy`` when the harmonics-to-noise
ratio's z <= -1.5, and ``hoarse`` in place of both when both hold (roughness plus breathiness is
the clinical picture of hoarseness). High HNR or low perturbation gets no word: HNR rises with
F0, so a "clear" or "tense" word from it would mostly restate the pitch; tension shows in
spectral tilt, not measured here.

The phrase is ``"a {adjectives} voice with {range} intonation"``, the adjectives in the order
pitch, voice quality, loudness, rate, joined as "a, b and c"; e.g. "a high-pitched, loud and
fast voice with lively intonation". With no word at all it is
``"a voice of moderate pitch, loudness and pace"``.

Reference (:data:`REFERENCE`, mean and standard deviation per measure) and where it comes from;
``benchmarks/prosody_reference.py`` measures it again and prints this table:

* ``pitch_semitones`` 30.4 +- 5.2: published adult norms, not measured here. Typical speaking
  F0 is 120 Hz for men and 210 Hz for women (Traunmüller & Eriksson 1995), 25.5 and 35.2
  semitones; between-speaker SDs of about 12 and 24 Hz (Holmberg, Hillman & Perkell 1989) are
  about 1.8 and 2.0 semitones. An equal mix of men and women has mean 30.4 and SD
  sqrt(1.9 ** 2 + 4.85 ** 2) = 5.2. So pitch words describe the voice as heard (a typical man is
  z = -0.9, a deep one "low-pitched"), not the speaker's pitch relative to their own sex.
* every other mean: measured with this module on the real read speech
  ``/usr/share/pocketsphinx/test/data/librivox/*.wav`` (5 clips, 3-7 s, one male reader of
  "Sense and Sensibility"), the speaking rate from the words and timings of Whisper tiny.en (the
  offline model) transcribing each clip; :data:`PEAKS_RATE_REFERENCE`'s mean is the same clips
  measured without words.
* every other SD: the larger of two spreads, each of which understates how voices differ: the
  LibriVox clip-to-clip SD (one reader), and the SD over espeak-ng 1.51 voices at default
  settings: all 101 variants (``en+<variant>``, default pitch, speed and amplitude; they differ in
  pitch, range, breathiness, roughness, speed and level) each reading the 5 LibriVox transcripts,
  500 clips once the ``whisper`` variant (no voiced speech) is left out (``female_whisper`` keeps
  enough voicing to be measured). Their syllable rate counts the sentence read, which is known
  (timing their words with Whisper instead, ``--whisper-variants``, gives an SD of 0.48 in place
  of 0.45). The LibriVox spread is the larger for the pitch range (1.68 against 0.61 semitones)
  and the syllable rate (0.76 against 0.45); the synthetic one for every other measure. The
  synthetic means are not used: synthesis is steadier and flatter than a person (jitter 0.0117
  against 0.0226, pitch range 2.33 against 4.74 semitones). Checks: the synthetic pitch spread
  (3.8 semitones) is below the published 5.2, as synthetic voices vary less than people; the
  loudness SD is about the change +3 or -4 dB of gain makes around the LibriVox level, so a
  voice one step of vocal effort above it (about 6 dB between normal, raised and loud in the
  speech spectra of ANSI S3.5-1997) is "very loud" (+6 dB gives 0.906, z = +2.2).

=========================  ========  ======  ======================================
measure                    mean      SD      source (mean / SD)
=========================  ========  ======  ======================================
pitch_semitones            30.4      5.2     published norms (above)
pitch_range_semitones      4.74      1.68    LibriVox / LibriVox clip-to-clip
loudness                   0.581     0.150   LibriVox / espeak-ng variants
speaking_rate (words)      4.09      0.76    LibriVox + Whisper / LibriVox clip-to-clip
speaking_rate (peaks)      4.78      0.77    LibriVox / espeak-ng variants
jitter                     0.0226    0.0066  LibriVox / espeak-ng variants
shimmer_db                 1.371     0.255   LibriVox / espeak-ng variants
hnr_db                     3.94      1.68    LibriVox / espeak-ng variants
=========================  ========  ======  ======================================

The reference is English read speech. For another language or corpus (MER2023 is Mandarin TV
drama, and F0 varies more in tone languages, Traunmüller & Eriksson 1995; conversation is faster
than reading), measure the clips, build a reference with :func:`fit_reference` and pass it to
:func:`zscores` / :func:`describe_tone`, so that each clip is described relative to its own
corpus.

openSMILE and the VAD are imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import math
import numbers
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Protocol

import numpy as np

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.perception.syllables import count_syllables

if TYPE_CHECKING:
    import opensmile

__all__ = [
    "MEASURES",
    "MIN_DURATION_S",
    "MIN_PEAKS",
    "MIN_VOICED_RATIO",
    "MIN_VOICED_S",
    "PEAKS_RATE_REFERENCE",
    "REFERENCE",
    "SAMPLE_RATE",
    "VAD_MIN_SILENCE_MS",
    "VAD_MIN_SPEECH_MS",
    "VAD_SPEECH_PAD_MS",
    "VAD_THRESHOLD",
    "WORD_SLACK_S",
    "Prosody",
    "ProsodyError",
    "TimedWord",
    "count_syllables",
    "describe_tone",
    "fit_reference",
    "measure_prosody",
    "zscores",
]

#: The rate the VAD and openSMILE analyse at; other rates are resampled to it first, so that the
#: spectral measures (loudness, HNR) mean the same for every input and match :data:`REFERENCE`.
SAMPLE_RATE = 16000

MIN_DURATION_S = 0.5
MIN_VOICED_RATIO = 0.1
MIN_VOICED_S = 0.25
MIN_PEAKS = 2

#: Silero VAD settings (module docstring, "Speech and pauses").
VAD_THRESHOLD = 0.5
VAD_MIN_SILENCE_MS = 250
VAD_MIN_SPEECH_MS = 100
VAD_SPEECH_PAD_MS = 30
#: A word counts toward the syllable rate when its timing overlaps a speech segment widened by
#: this many seconds each side (Whisper's word edges are that loose).
WORD_SLACK_S = 0.2
# Raised-cosine fade at each edge of a speech segment, so that the joins of the concatenated
# speech do not click (a click is a loudness peak and a burst of "shimmer").
_FADE_S = 0.005

# Level words at |z| >= 1, "very" at |z| >= 2; voice quality only at 1.5 SD ("far off"),
# because perturbation and HNR also move with noise in the recording and with F0.
_Z_WORD = 1.0
_Z_VERY = 2.0
_Z_QUALITY = 1.5
# Slack for a value exactly on a boundary: (mean + 1.0 * sd - mean) / sd can come out as
# 0.9999999999999999, and a threshold table that says "inclusive" should mean it.
_EPS = 1e-9


class ProsodyError(EmotionLlamaError, ValueError):
    """Audio, words or a reference cannot be used as given, or openSMILE is not installed."""


class TimedWord(Protocol):
    """A recognised word with its timing, seconds from the start of the audio (as
    :class:`emotion_llama.perception.transcript.Word`)."""

    @property
    def text(self) -> str: ...

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...


@dataclass(frozen=True)
class Prosody:
    #: Mean F0 of voiced frames of the speech, semitones above 27.5 Hz.
    pitch_semitones: float
    #: 20th-80th percentile range of F0, semitones.
    pitch_range_semitones: float
    #: Mean auditory loudness of the speech (openSMILE's units; depends on the recording level).
    loudness: float
    #: Syllables per second of speech (``rate_source`` says how the syllables were counted).
    speaking_rate: float
    #: Local jitter (ratio of the mean period).
    jitter: float
    #: Local shimmer, dB.
    shimmer_db: float
    #: Harmonics-to-noise ratio, dB.
    hnr_db: float
    #: Share of the speech inside voiced stretches, 0-1.
    voiced_ratio: float
    #: Seconds of speech the VAD found (the time every measure above is taken over).
    speech_s: float = 0.0
    #: Share of the clip that is not speech, 0-1.
    pause_ratio: float = 0.0
    #: ``"words"``: syllables of the transcript's words; ``"peaks"``: loudness peaks.
    rate_source: str = "peaks"
    #: Words per minute of speech; ``None`` unless the rate came from words.
    words_per_min: float | None = None

    def to_dict(self) -> dict[str, float | str | None]:
        return asdict(self)


#: The measures :func:`describe_tone` turns into words (``voiced_ratio`` only gates speech).
MEASURES: tuple[str, ...] = (
    "pitch_semitones",
    "pitch_range_semitones",
    "loudness",
    "speaking_rate",
    "jitter",
    "shimmer_db",
    "hnr_db",
)

#: Mean and standard deviation per measure; sources in the module docstring.
REFERENCE: dict[str, tuple[float, float]] = {
    "pitch_semitones": (30.4, 5.2),
    "pitch_range_semitones": (4.74, 1.68),
    "loudness": (0.581, 0.150),
    "speaking_rate": (4.09, 0.76),
    "jitter": (0.0226, 0.0066),
    "shimmer_db": (1.371, 0.255),
    "hnr_db": (3.94, 1.68),
}

#: Mean and standard deviation of ``speaking_rate`` when it counts loudness peaks
#: (``rate_source == "peaks"``): peaks outnumber syllables, so such a rate is scored against
#: this in place of :data:`REFERENCE`'s (module docstring, "Speaking rate").
PEAKS_RATE_REFERENCE: tuple[float, float] = (4.78, 0.77)

# eGeMAPS v02 functional names behind each field.
_F0_MEAN = "F0semitoneFrom27.5Hz_sma3nz_amean"
_F0_RANGE = "F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2"
_LOUDNESS = "loudness_sma3_amean"
_PEAKS = "loudnessPeaksPerSec"
_JITTER = "jitterLocal_sma3nz_amean"
_SHIMMER = "shimmerLocaldB_sma3nz_amean"
_HNR = "HNRdBACF_sma3nz_amean"
_VOICED_PER_S = "VoicedSegmentsPerSec"
_VOICED_LEN = "MeanVoicedSegmentLengthSec"

# openSMILE's native component graph is not documented as safe for concurrent calls on one
# instance; a clip takes ~60 ms, so serialising callers costs little. (The VAD's onnxruntime
# session is safe to share and runs outside the lock.)
_LOCK = threading.Lock()


@functools.cache
def _smile() -> opensmile.Smile:
    try:
        import opensmile
    except ImportError as e:
        raise ProsodyError(f"prosody needs openSMILE: pip install opensmile ({e})") from None
    # The first build loads openSMILE's native library and parses the config (~0.2 s, a few
    # clips' worth); one instance serves every later call. Input is always 16 kHz already.
    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
        sampling_rate=SAMPLE_RATE,
        resample=True,
    )


def _as_mono_float(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ProsodyError(f"measure_prosody: expected mono 1-D audio, got shape {audio.shape}")
    if np.issubdtype(audio.dtype, np.integer):
        # PCM read with the wave module: scale to [-1, 1] by the type's full scale, since the
        # loudness measure (and so the reference) assumes that scale.
        return (audio.astype(np.float32) / float(-np.iinfo(audio.dtype).min)).astype(np.float32)
    if not np.issubdtype(audio.dtype, np.floating):
        raise ProsodyError(f"measure_prosody: expected float or integer PCM audio, got {audio.dtype}")
    audio = audio.astype(np.float32, copy=False)
    if audio.size and not np.isfinite(audio).all():
        raise ProsodyError("measure_prosody: audio holds NaN or infinite samples")
    return audio


def _to_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate == SAMPLE_RATE:
        return np.ascontiguousarray(audio)
    # audresample (libsoxr) comes with openSMILE's Python package and is what its Smile(resample=
    # True) uses: other rates are resampled just as openSMILE itself would.
    try:
        import audresample
    except ImportError as e:
        raise ProsodyError(
            f"prosody needs openSMILE and its audresample: pip install opensmile ({e})"
        ) from None

    return np.ascontiguousarray(audresample.resample(audio, int(sample_rate), SAMPLE_RATE)[0])


def _checked_words(words: Sequence[TimedWord] | None) -> list[tuple[str, float, float]]:
    if words is None:
        return []
    if isinstance(words, str | bytes):
        raise ProsodyError("measure_prosody: words must be a sequence of timed words, not a string")
    checked = []
    for w in words:
        try:
            text, start, end = w.text, float(w.start), float(w.end)
        except (AttributeError, TypeError, ValueError):
            raise ProsodyError(
                f"measure_prosody: each word needs .text, .start and .end (seconds), got {w!r}"
            ) from None
        if not isinstance(text, str) or not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise ProsodyError(f"measure_prosody: word {w!r} needs text and finite start <= end")
        checked.append((text, start, end))
    return checked


def _speech_segments(audio: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` sample ranges of speech in 16 kHz float32 ``audio``, by Silero VAD."""
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError as e:
        raise ProsodyError(
            f"prosody needs faster-whisper's Silero VAD: pip install faster-whisper ({e})"
        ) from None
    options = VadOptions(
        threshold=VAD_THRESHOLD,
        min_silence_duration_ms=VAD_MIN_SILENCE_MS,
        min_speech_duration_ms=VAD_MIN_SPEECH_MS,
        speech_pad_ms=VAD_SPEECH_PAD_MS,
    )
    stamps = get_speech_timestamps(audio, options, sampling_rate=SAMPLE_RATE)
    return [(int(s["start"]), int(s["end"])) for s in stamps if int(s["end"]) > int(s["start"])]


def _concatenate(audio: np.ndarray, segments: list[tuple[int, int]]) -> np.ndarray:
    parts = []
    for start, end in segments:
        part = audio[start:end].astype(np.float32, copy=True)
        n = min(int(_FADE_S * SAMPLE_RATE), part.size // 2)
        if n:
            ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n, endpoint=False))).astype(np.float32)
            part[:n] *= ramp
            part[-n:] *= ramp[::-1]
        parts.append(part)
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _words_in_speech(
    words: list[tuple[str, float, float]], segments: list[tuple[int, int]]
) -> tuple[int, int]:
    """Syllables and words of the words whose timing overlaps the speech (widened by
    :data:`WORD_SLACK_S`); a word with no syllable-bearing character (punctuation) is skipped."""
    spans = [(a / SAMPLE_RATE - WORD_SLACK_S, b / SAMPLE_RATE + WORD_SLACK_S) for a, b in segments]
    syllables = counted = 0
    for text, start, end in words:
        n = count_syllables(text)
        if n and any(start <= b and end >= a for a, b in spans):
            syllables += n
            counted += 1
    return syllables, counted


def measure_prosody(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    words: Sequence[TimedWord] | None = None,
) -> Prosody | None:
    """The prosody of the speech in mono ``audio`` (float in [-1, 1], or integer PCM) at
    ``sample_rate``: pauses are cut out by the VAD before anything is measured.

    ``words`` (e.g. ``Transcript.words``, timings in seconds from the start of ``audio``) makes
    ``speaking_rate`` syllables of the words per second of speech; without words, or when none
    of them lies in the speech, it is loudness peaks per second of speech. ``None`` when the clip
    holds no voiced speech by the gates in the module docstring. :class:`ProsodyError` for audio
    that is not 1-D, not numeric or not finite, and for words without finite timings."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ProsodyError(f"measure_prosody: sample_rate must be a positive integer, got {sample_rate!r}")
    audio = _as_mono_float(audio)
    timed = _checked_words(words)
    if audio.size / sample_rate < MIN_DURATION_S:
        return None
    audio = _to_16k(audio, int(sample_rate))
    duration = audio.size / SAMPLE_RATE
    segments = _speech_segments(audio)
    speech_s = sum(end - start for start, end in segments) / SAMPLE_RATE
    if speech_s < MIN_DURATION_S:
        return None
    speech = _concatenate(audio, segments)
    smile = _smile()
    with _LOCK:
        row = smile.process_signal(speech, SAMPLE_RATE).iloc[0]
    values = {name: float(row[name]) for name in row.index}
    voiced_ratio = values[_VOICED_PER_S] * values[_VOICED_LEN]
    if not (
        math.isfinite(voiced_ratio)
        and voiced_ratio >= MIN_VOICED_RATIO
        and voiced_ratio * speech_s >= MIN_VOICED_S
        and values[_PEAKS] * speech_s >= MIN_PEAKS
    ):
        return None
    syllables, counted = _words_in_speech(timed, segments)
    if counted:
        rate, source, words_per_min = syllables / speech_s, "words", 60.0 * counted / speech_s
    else:
        rate, source, words_per_min = values[_PEAKS], "peaks", None
    prosody = Prosody(
        pitch_semitones=values[_F0_MEAN],
        pitch_range_semitones=values[_F0_RANGE],
        loudness=values[_LOUDNESS],
        speaking_rate=rate,
        jitter=values[_JITTER],
        shimmer_db=values[_SHIMMER],
        hnr_db=values[_HNR],
        voiced_ratio=voiced_ratio,
        speech_s=speech_s,
        pause_ratio=min(max(1.0 - speech_s / duration, 0.0), 1.0),
        rate_source=source,
        words_per_min=words_per_min,
    )
    # openSMILE fills NaN when a functional has too few frames; such a clip is not measurable.
    numeric = (
        getattr(prosody, f.name) for f in fields(prosody) if f.name not in ("rate_source", "words_per_min")
    )
    if not all(math.isfinite(v) for v in numeric):
        return None
    return prosody


# -- words ----------------------------------------------------------------------------------------
def _check_reference(reference: Mapping[str, tuple[float, float]], caller: str) -> None:
    unknown = sorted(set(reference) - set(MEASURES))
    if unknown:
        raise ProsodyError(f"{caller}: unknown reference measures {unknown}; known: {list(MEASURES)}")
    for name, pair in reference.items():
        mean, sd = pair
        if not (math.isfinite(mean) and math.isfinite(sd) and sd > 0):
            raise ProsodyError(f"{caller}: reference {name} needs a finite mean and sd > 0, got {pair}")


def _zscores(
    p: Prosody | Mapping[str, object] | None, reference: Mapping[str, tuple[float, float]], caller: str
) -> dict[str, float]:
    _check_reference(reference, caller)
    if p is None:
        return {}
    values = p if isinstance(p, Mapping) else asdict(p)
    z: dict[str, float] = {}
    # A measure left out of the reference is not scored: a caller can switch words off.
    for name in MEASURES:
        value = values.get(name)
        if name not in reference or isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        if not math.isfinite(float(value)):
            continue
        mean, sd = reference[name]
        if (
            name == "speaking_rate"
            and values.get("rate_source", "peaks") == "peaks"
            and (mean, sd) == REFERENCE[name]
        ):
            # The built-in syllable-rate reference is never applied to a peaks rate.
            mean, sd = PEAKS_RATE_REFERENCE
        z[name] = (float(value) - mean) / sd
    return z


def zscores(
    p: Prosody | Mapping[str, object] | None, reference: Mapping[str, tuple[float, float]] = REFERENCE
) -> dict[str, float]:
    """``(value - mean) / sd`` for each measure of ``p`` that is in ``reference`` and finite,
    keyed by measure name (``{}`` for ``None``): the numbers :func:`describe_tone` puts words to.
    ``p`` may also be a :meth:`Prosody.to_dict` mapping, as stored in a dataset record.

    With the built-in ``speaking_rate`` reference, a rate counted by loudness peaks is scored
    against :data:`PEAKS_RATE_REFERENCE` instead (a mapping without ``rate_source`` counts as
    peaks, as every rate did before words were used); any other reference is used as given.
    :class:`ProsodyError` for a reference with unknown measures or a non-positive sd."""
    return _zscores(p, reference, "zscores")


def _level(z: float | None, low: str, high: str) -> str | None:
    if z is None:
        return None
    if z <= -_Z_VERY + _EPS:
        return f"very {low}"
    if z <= -_Z_WORD + _EPS:
        return low
    if z >= _Z_VERY - _EPS:
        return f"very {high}"
    if z >= _Z_WORD - _EPS:
        return high
    return None


def _voice_quality(z: Mapping[str, float]) -> str | None:
    perturbation = [z[name] for name in ("jitter", "shimmer_db") if name in z]
    rough = bool(perturbation) and sum(perturbation) / len(perturbation) >= _Z_QUALITY - _EPS
    breathy = "hnr_db" in z and z["hnr_db"] <= -_Z_QUALITY + _EPS
    if rough and breathy:
        return "hoarse"
    return "rough" if rough else "breathy" if breathy else None


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def describe_tone(
    p: Prosody | None, reference: Mapping[str, tuple[float, float]] = REFERENCE
) -> tuple[str | None, list[str]]:
    """A short English phrase for the MERR caption and the tone words in it.

    ``(None, [])`` when ``p`` is ``None`` (no voiced speech). Words and thresholds are in the
    module docstring; measures missing from ``reference`` are not described.
    :class:`ProsodyError` for a reference with unknown measures or a non-positive sd."""
    if p is None:
        return None, []
    z = _zscores(p, reference, "describe_tone")
    pitch = _level(z.get("pitch_semitones"), "low-pitched", "high-pitched")
    quality = _voice_quality(z)
    loudness = _level(z.get("loudness"), "soft", "loud")
    rate = _level(z.get("speaking_rate"), "slow", "fast")
    intonation = _level(z.get("pitch_range_semitones"), "monotone", "lively")
    adjectives = [w for w in (pitch, quality, loudness, rate) if w is not None]
    words = [*adjectives, *([intonation] if intonation else [])]
    if not words:
        return "a voice of moderate pitch, loudness and pace", []
    phrase = f"a {_join(adjectives)} voice" if adjectives else "a voice"
    if intonation:
        phrase += f" with {intonation} intonation"
    return phrase, words


def fit_reference(samples: Iterable[Prosody | None]) -> dict[str, tuple[float, float]]:
    """Mean and sample SD of each measure over ``samples`` (``None`` entries skipped): a
    reference that describes each clip relative to its own corpus. Measure the corpus one way
    (every clip with words, or none): a peaks rate and a syllable rate are on different scales.

    :class:`ProsodyError` with fewer than two clips or a measure that does not vary."""
    kept = [s for s in samples if s is not None]
    if len(kept) < 2:
        raise ProsodyError(f"fit_reference: needs at least 2 measured clips, got {len(kept)}")
    reference: dict[str, tuple[float, float]] = {}
    for name in MEASURES:
        values = np.array([getattr(s, name) for s in kept], dtype=np.float64)
        sd = float(values.std(ddof=1))
        if not sd > 0:
            raise ProsodyError(f"fit_reference: {name} is the same in every clip, so it has no spread")
        reference[name] = (float(values.mean()), sd)
    return reference
