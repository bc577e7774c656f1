"""The tone of voice of a clip, measured from prosody: the "audio tone" clue of a MERR caption.

The authors of Emotion-LLaMA asked an audio LLM (Qwen-Audio) to describe each clip's tone (SPEC
section 6, step 6). Here the tone is measured instead: :func:`measure_prosody` runs openSMILE's
eGeMAPS v02 functionals (Eyben et al. 2016) on the audio, and :func:`describe_tone` turns the
measures into words by how far each lies from a reference population, in standard deviations
(z-scores). This is reproducible, runs offline in about 60 ms per clip, and every word can be
traced to a number.

Measures (eGeMAPS v02 functional each comes from):

===========================  ===================================================================
``pitch_semitones``          ``F0semitoneFrom27.5Hz_sma3nz_amean``: mean F0 of voiced frames, in
                             semitones above 27.5 Hz (120 Hz = 25.5, 210 Hz = 35.2)
``pitch_range_semitones``    ``F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2``: the 20th-80th percentile
                             range of F0 in semitones (robust to octave errors, unlike the maximum)
``loudness``                 ``loudness_sma3_amean``: mean auditory loudness. It follows the level of
                             the recording (about amplitude ** 0.66), not only the speaker's effort
``speaking_rate``            ``loudnessPeaksPerSec``: loudness peaks per second over the whole clip,
                             pauses included; a pseudo syllable rate (on the LibriVox clips it
                             reads 0-0.8 above hand-counted syllables per second, 3.0-4.5)
``jitter``                   ``jitterLocal_sma3nz_amean``: cycle-to-cycle F0 perturbation (ratio)
``shimmer_db``               ``shimmerLocaldB_sma3nz_amean``: cycle-to-cycle amplitude perturbation
``hnr_db``                   ``HNRdBACF_sma3nz_amean``: harmonics-to-noise ratio (autocorrelation)
``voiced_ratio``             ``VoicedSegmentsPerSec * MeanVoicedSegmentLengthSec``: the share of the
                             clip inside voiced stretches (stretches cut by the clip's edges are not
                             counted, so it reads a little low)
===========================  ===================================================================

No voiced speech (:func:`measure_prosody` returns ``None``) when any of these holds:

* the clip is shorter than ``MIN_DURATION_S`` = 0.5 s (rates and ranges need a few syllables);
* ``voiced_ratio`` < ``MIN_VOICED_RATIO`` = 0.1 (silence, noise, whispering: F0 is undefined);
* voiced time ``voiced_ratio * duration`` < ``MIN_VOICED_S`` = 0.25 s;
* fewer than ``MIN_PEAKS`` = 2 loudness peaks (a steady tone or hum has no syllables).

Words (``z = (value - mean) / sd`` with :data:`REFERENCE`; boundaries are inclusive):

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

Voice quality has words only far from typical, at 1.5 SD: ``rough`` when the mean of the jitter
and shimmer z-scores is >= +1.5 (both perturbations together: shimmer alone also rises with fast
loudness changes, as in fast or low-pitched synthesis), ``breathy`` when the harmonics-to-noise
ratio's z <= -1.5, and ``hoarse`` in place of both when both hold (roughness plus breathiness is
the clinical picture of hoarseness). High HNR or low perturbation gets no word: HNR rises with
F0 (the espeak-ng female voices read 7-12 dB, the male ones 2-5 dB), so a "clear" or "tense" word
from it would mostly restate the pitch; tension shows in spectral tilt, not measured here.

The phrase is ``"a {adjectives} voice with {range} intonation"``, the adjectives in the order
pitch, voice quality, loudness, rate, joined as "a, b and c"; e.g. "a high-pitched, loud and
fast voice with lively intonation". With no word at all it is
``"a voice of moderate pitch, loudness and pace"``.

Reference (:data:`REFERENCE`, mean and standard deviation per measure) and where it comes from:

* ``pitch_semitones`` 30.4 +- 5.2: published adult norms, not measured here. Typical speaking
  F0 is 120 Hz for men and 210 Hz for women (Traunmüller & Eriksson 1995), 25.5 and 35.2
  semitones; between-speaker SDs of about 12 and 24 Hz (Holmberg, Hillman & Perkell 1989) are
  about 1.8 and 2.0 semitones. An equal mix of men and women has mean 30.4 and SD
  sqrt(1.9 ** 2 + 4.85 ** 2) = 5.2. So pitch words describe the voice as heard (a typical man is
  z = -0.9, a deep one "low-pitched"), not the speaker's pitch relative to their own sex.
* every other mean: measured with this module on the real read speech
  ``/usr/share/pocketsphinx/test/data/librivox/*.wav`` (5 clips, 3-7 s, one male reader of
  "Sense and Sensibility").
* every other SD: one reader cannot show how voices differ, so the SD is measured with this
  module over espeak-ng 1.51 voices at default settings: all 101 variants (``en+<variant>``,
  default pitch, speed and amplitude; they differ in pitch, range, breathiness, roughness, speed
  and level) each reading the 5 LibriVox sentences, 495 clips once the two whisper variants
  (no voiced speech) are left out. For the pitch range the LibriVox clip-to-clip SD (1.64) is
  larger than the synthetic one (1.02) and is used. The synthetic means are not used: synthesis
  is steadier and flatter than a person (jitter 0.013 against 0.025, pitch range 2.4 against
  4.9 semitones). Two checks: the synthetic pitch spread (5.5 semitones) agrees with the
  published 5.2; the loudness SD is about the change that +-5.5 dB of gain makes around the
  LibriVox mean (+-6 dB gives 0.34 and 0.86), and about 6 dB is the step between normal, raised
  and loud vocal effort in the speech spectra of ANSI S3.5-1997.

=========================  ========  ======  ======================================
measure                    mean      SD      source (mean / SD)
=========================  ========  ======  ======================================
pitch_semitones            30.4      5.2     published norms (above)
pitch_range_semitones      4.90      1.64    LibriVox / LibriVox clip-to-clip
loudness                   0.541     0.233   LibriVox / espeak-ng variants
speaking_rate              4.32      0.82    LibriVox / espeak-ng variants
jitter                     0.0248    0.0080  LibriVox / espeak-ng variants
shimmer_db                 1.375     0.324   LibriVox / espeak-ng variants
hnr_db                     3.85      2.45    LibriVox / espeak-ng variants
=========================  ========  ======  ======================================

The reference is English read speech. For another language or corpus (MER2023 is Mandarin TV
drama, and F0 varies more in tone languages, Traunmüller & Eriksson 1995), measure the clips,
build a reference with :func:`fit_reference` and pass it to :func:`describe_tone`, so that each
clip is described relative to its own corpus.

openSMILE is imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from emotion_llama.errors import EmotionLlamaError

if TYPE_CHECKING:
    import opensmile

__all__ = [
    "MEASURES",
    "MIN_DURATION_S",
    "MIN_PEAKS",
    "MIN_VOICED_RATIO",
    "MIN_VOICED_S",
    "REFERENCE",
    "SAMPLE_RATE",
    "Prosody",
    "ProsodyError",
    "describe_tone",
    "fit_reference",
    "measure_prosody",
]

#: The rate openSMILE analyses at; other rates are resampled to it first, so that the spectral
#: measures (loudness, HNR) mean the same for every input and match :data:`REFERENCE`.
SAMPLE_RATE = 16000

MIN_DURATION_S = 0.5
MIN_VOICED_RATIO = 0.1
MIN_VOICED_S = 0.25
MIN_PEAKS = 2

# Level words at |z| >= 1, "very" at |z| >= 2; voice quality only at 1.5 SD ("far off"),
# because perturbation and HNR also move with noise in the recording and with F0.
_Z_WORD = 1.0
_Z_VERY = 2.0
_Z_QUALITY = 1.5
# Slack for a value exactly on a boundary: (mean + 1.0 * sd - mean) / sd can come out as
# 0.9999999999999999, and a threshold table that says "inclusive" should mean it.
_EPS = 1e-9


class ProsodyError(EmotionLlamaError, ValueError):
    """Audio or a reference cannot be used as given, or openSMILE is not installed."""


@dataclass(frozen=True)
class Prosody:
    #: Mean F0 of voiced frames, semitones above 27.5 Hz.
    pitch_semitones: float
    #: 20th-80th percentile range of F0, semitones.
    pitch_range_semitones: float
    #: Mean auditory loudness (openSMILE's loudness units; depends on the recording level).
    loudness: float
    #: Loudness peaks per second, a pseudo syllable rate (pauses included).
    speaking_rate: float
    #: Local jitter (ratio of the mean period).
    jitter: float
    #: Local shimmer, dB.
    shimmer_db: float
    #: Harmonics-to-noise ratio, dB.
    hnr_db: float
    #: Share of the clip inside voiced stretches, 0-1.
    voiced_ratio: float

    def to_dict(self) -> dict[str, float]:
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
    "pitch_range_semitones": (4.90, 1.64),
    "loudness": (0.541, 0.233),
    "speaking_rate": (4.32, 0.82),
    "jitter": (0.0248, 0.0080),
    "shimmer_db": (1.375, 0.324),
    "hnr_db": (3.85, 2.45),
}

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
# instance; a clip takes ~60 ms, so serialising callers costs little.
_LOCK = threading.Lock()


@functools.cache
def _smile() -> opensmile.Smile:
    try:
        import opensmile
    except ImportError as e:
        raise ProsodyError(f"prosody needs openSMILE: pip install opensmile ({e})") from None
    # The first build loads openSMILE's native library and parses the config (~0.2 s, a few
    # clips' worth); one instance serves every later call.
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


def measure_prosody(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Prosody | None:
    """The prosody of mono ``audio`` (float in [-1, 1], or integer PCM) at ``sample_rate``.

    ``None`` when the clip holds no voiced speech by the thresholds in the module docstring
    (shorter than 0.5 s, under 10% or 0.25 s voiced, fewer than 2 loudness peaks).
    :class:`ProsodyError` for audio that is not 1-D, not numeric, or not finite."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ProsodyError(f"measure_prosody: sample_rate must be a positive integer, got {sample_rate!r}")
    audio = _as_mono_float(audio)
    duration = audio.size / sample_rate
    if duration < MIN_DURATION_S:
        return None
    smile = _smile()
    with _LOCK:
        row = smile.process_signal(audio, int(sample_rate)).iloc[0]
    values = {name: float(row[name]) for name in row.index}
    voiced_ratio = values[_VOICED_PER_S] * values[_VOICED_LEN]
    if not (
        math.isfinite(voiced_ratio)
        and voiced_ratio >= MIN_VOICED_RATIO
        and voiced_ratio * duration >= MIN_VOICED_S
        and values[_PEAKS] * duration >= MIN_PEAKS
    ):
        return None
    prosody = Prosody(
        pitch_semitones=values[_F0_MEAN],
        pitch_range_semitones=values[_F0_RANGE],
        loudness=values[_LOUDNESS],
        speaking_rate=values[_PEAKS],
        jitter=values[_JITTER],
        shimmer_db=values[_SHIMMER],
        hnr_db=values[_HNR],
        voiced_ratio=voiced_ratio,
    )
    # openSMILE fills NaN when a functional has too few frames; such a clip is not measurable.
    if not all(math.isfinite(v) for v in asdict(prosody).values()):
        return None
    return prosody


def _check_reference(reference: Mapping[str, tuple[float, float]]) -> None:
    unknown = sorted(set(reference) - set(MEASURES))
    if unknown:
        raise ProsodyError(f"describe_tone: unknown reference measures {unknown}; known: {list(MEASURES)}")
    for name, pair in reference.items():
        mean, sd = pair
        if not (math.isfinite(mean) and math.isfinite(sd) and sd > 0):
            raise ProsodyError(f"describe_tone: reference {name} needs a finite mean and sd > 0, got {pair}")


def _z(p: Prosody, name: str, reference: Mapping[str, tuple[float, float]]) -> float | None:
    # A measure left out of the reference is not described: a caller can switch words off.
    if name not in reference:
        return None
    value = getattr(p, name)
    if not math.isfinite(value):
        return None
    mean, sd = reference[name]
    return (value - mean) / sd


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


def _voice_quality(p: Prosody, reference: Mapping[str, tuple[float, float]]) -> str | None:
    perturbation = [z for z in (_z(p, "jitter", reference), _z(p, "shimmer_db", reference)) if z is not None]
    rough = bool(perturbation) and sum(perturbation) / len(perturbation) >= _Z_QUALITY - _EPS
    hnr = _z(p, "hnr_db", reference)
    breathy = hnr is not None and hnr <= -_Z_QUALITY + _EPS
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
    _check_reference(reference)
    pitch = _level(_z(p, "pitch_semitones", reference), "low-pitched", "high-pitched")
    quality = _voice_quality(p, reference)
    loudness = _level(_z(p, "loudness", reference), "soft", "loud")
    rate = _level(_z(p, "speaking_rate", reference), "slow", "fast")
    intonation = _level(_z(p, "pitch_range_semitones", reference), "monotone", "lively")
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
    reference that describes each clip relative to its own corpus.

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
