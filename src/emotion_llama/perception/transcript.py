"""What was said in a clip: Whisper (faster-whisper / CTranslate2) speech recognition, or a subtitle.

A user's subtitle CSV (``name,sentence``) is taken over recognition when it has a line for the
clip: see :func:`subtitle_transcript`. Otherwise :class:`WhisperTranscriber` runs Whisper on 16 kHz
mono audio with word timestamps. The model is one of

* ``"offline"``: Whisper tiny.en from the sha256-verified offline package (no network needed),
  English only,
* ``"offline-multilingual"``: Whisper base, multilingual (Mandarin and 98 other languages, language
  detection), from its two sha256-verified offline chunk packages, joined once into the cache,
* a size name (``tiny.en``, ``base``, ``small`` ...) or hub repo id, which faster-whisper
  downloads once into the Hugging Face cache,
* a local CTranslate2 model folder (holding ``model.bin``).

Languages: ``language`` is a Whisper code (``en``, ``zh``...) or ``None`` to detect it (a multilingual
model only; an English-only one always says ``en``). An English-only model asked for another language
is refused with a hint, never silently run as English. For Mandarin (given or detected) the decoder
is primed with a short simplified-Chinese sentence (:data:`LANGUAGE_PRIMERS`): without it Whisper
writes traditional characters and no punctuation about as often as not, while the MER datasets'
subtitles are simplified Chinese with punctuation.

faster-whisper is imported only when a transcriber is built, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from emotion_llama.errors import EmotionLlamaError

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

    from emotion_llama.config import PerceptionConfig

__all__ = [
    "LANGUAGE_PRIMERS",
    "MIN_PAD_S",
    "OFFLINE_ASR_MODELS",
    "SAMPLE_RATE",
    "Transcriber",
    "Transcript",
    "TranscriptError",
    "WhisperTranscriber",
    "Word",
    "subtitle_transcript",
]

#: The only rate Whisper's feature extractor is built for.
SAMPLE_RATE = 16000

# Peak amplitude below which audio counts as digital silence (about -80 dBFS). Whisper invents text
# ("you", "Thank you.") for silent input when VAD is off, so such audio never reaches the model.
_SILENCE_PEAK = 1e-4


#: Whisper's window: 30 s of 10 ms feature frames.
_WHISPER_FRAMES = 3000
#: The least padding after the speech that :class:`WhisperTranscriber` accepts (``pad_s``). On 32
#: recordings (espeak-ng sentences of 2-8 s, LibriVox read speech), 10 s of padding kept every
#: sentence whole (WER 10.1% against 9.3% with Whisper's 30 s windows; 15 of the 32 transcripts
#: differ, by a word or by capitals and punctuation); a window of 10 s in all (2.2 s of padding
#: after 7.8 s of speech) made Whisper add "Thank you." after the speech, and 5 s or 3 s windows
#: made it repeat phrases or return nothing.
MIN_PAD_S = 10.0


#: The offline model names (``--asr-model``) and the source in :mod:`emotion_llama.sources` of each.
OFFLINE_ASR_MODELS: dict[str, str] = {"offline": "whisper_tiny_en", "offline-multilingual": "whisper_base"}

#: Text the decoder is primed with (Whisper's ``initial_prompt``) per language, given or detected:
#: "The following are sentences in Mandarin." in simplified characters with a full stop, so that
#: Whisper writes simplified characters with punctuation ("我真的很生气，你为什么不告诉我。"), not
#: traditional ones without ("我真的很生氣你為什麼不告訴我").
LANGUAGE_PRIMERS: dict[str, str] = {"zh": "以下是普通话的句子。"}


# A word shorter than this was not spoken (word timings come in steps of 20 ms).
_TIMELESS_S = 0.02
# Whisper codes of languages written without spaces between words.
_UNSPACED_LANGUAGES = frozenset({"zh", "yue", "ja", "th", "lo", "km", "my", "bo"})


class TranscriptError(EmotionLlamaError, ValueError):
    """Audio cannot be transcribed as given, or the speech model cannot be loaded."""


@dataclass(frozen=True)
class Word:
    text: str
    #: Seconds from the start of the audio.
    start: float
    end: float
    #: The model's probability for the word's tokens (1.0 for subtitles, which carry no timing).
    probability: float


@dataclass(frozen=True)
class Transcript:
    text: str
    #: ISO 639-1 code; ``None`` when unknown (a subtitle file does not say).
    language: str | None
    words: list[Word]
    #: ``"whisper:<model>"`` or ``"subtitle:<file>"``.
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "language": self.language,
            "words": [asdict(w) for w in self.words],
            "source": self.source,
        }


class Transcriber(Protocol):
    def transcribe(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Transcript: ...


def subtitle_transcript(name: str, subtitles: dict[str, str], source: str) -> Transcript | None:
    """The subtitle line for clip ``name`` as a transcript, or ``None`` when there is none (or it is
    blank), in which case the caller falls back to speech recognition.

    ``subtitles`` is what :func:`emotion_llama.data.formats.lists.read_subtitles` returns; ``source``
    names the file it came from. ``name`` may be given with a folder or extension (``clip.mp4``):
    subtitle files key clips by bare name.
    """
    text = subtitles.get(name)
    if text is None:
        text = subtitles.get(Path(name).stem)
    if text is None or not text.strip():
        return None
    return Transcript(text=text.strip(), language=None, words=[], source=f"subtitle:{source}")


class WhisperTranscriber:
    """Whisper speech recognition with word timestamps; the model is loaded once, on construction.

    ``language=None`` lets a multilingual model detect the language; English-only models (``*.en``
    and ``"offline"``) accept only ``"en"`` or ``None``. ``cpu_threads=0`` leaves the thread count
    to CTranslate2. ``vad`` skips non-speech with Silero VAD, which also keeps Whisper from
    inventing text in long pauses. ``prime``: prime the decoder with the language's
    :data:`LANGUAGE_PRIMERS` sentence (Mandarin: simplified characters). ``pad_s``: ``None``
    encodes Whisper's own 30 s windows (the speech padded to 30 s); a number (at least
    :data:`MIN_PAD_S`) pads the speech by only that many seconds (:func:`_padded_model_class`):
    faster, and the transcript may differ.
    """

    def __init__(
        self,
        model: str = "offline",
        *,
        language: str | None = "en",
        device: str = "cpu",
        compute_type: str = "int8",
        vad: bool = True,
        beam_size: int = 1,
        cpu_threads: int = 0,
        prime: bool = True,
        pad_s: float | None = None,
    ) -> None:
        if beam_size < 1:
            raise TranscriptError(f"whisper model {model!r}: beam_size must be at least 1, got {beam_size}")
        if pad_s is not None and not (math.isfinite(pad_s) and pad_s >= MIN_PAD_S):
            raise TranscriptError(
                f"whisper model {model!r}: pad_s must be at least {MIN_PAD_S:g} seconds (or None: "
                f"Whisper's 30 s windows), got {pad_s:g}: with less Whisper adds or drops words"
            )
        self.model_name = model
        self.language = language
        self.vad = vad
        self.beam_size = beam_size
        self.prime = prime
        self.pad_s = pad_s
        self.source = f"whisper:{model}"
        # frames of 10 ms; 0: Whisper's own windows
        pad_frames = 0 if pad_s is None else math.ceil(pad_s * 100)
        self._model = _load_model(_resolve_model(model), device, compute_type, cpu_threads, pad_frames)
        if not self._model.model.is_multilingual and language not in (None, "en"):
            # faster-whisper would only log a warning and transcribe as English anyway.
            raise TranscriptError(
                f"whisper model {model!r} is English-only; it cannot transcribe language {language!r}: "
                "use --asr-model offline-multilingual (Whisper base, offline) or a multilingual size "
                "(base, small, large-v3...)"
            )

    @classmethod
    def from_config(cls, config: PerceptionConfig, **kwargs: Any) -> WhisperTranscriber:
        """The transcriber a :class:`~emotion_llama.config.PerceptionConfig` asks for."""
        kwargs.setdefault("beam_size", config.asr_beam_size)
        kwargs.setdefault("pad_s", config.asr_pad_s)
        return cls(config.asr_model, language=config.language, **kwargs)

    def transcribe(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Transcript:
        """Text, language and word timings of mono ``audio`` (resampled to 16 kHz when needed).

        Empty or silent audio gives an empty transcript, not an error.
        """
        wave = _prepare_audio(audio, sample_rate, self.source)
        if wave.size == 0 or float(np.abs(wave).max()) < _SILENCE_PEAK:
            return Transcript(text="", language=self.language, words=[], source=self.source)
        duration = wave.size / SAMPLE_RATE
        try:
            language = self.language
            if language is None and self._model.model.is_multilingual:
                # detected first (on the same speech Whisper would use), so that the decoder can be
                # primed for the language it found
                language = self._model.detect_language(wave, vad_filter=self.vad)[0]
            segments, info = self._model.transcribe(
                wave,
                language=language,
                beam_size=self.beam_size,
                word_timestamps=True,
                vad_filter=self.vad,
                initial_prompt=LANGUAGE_PRIMERS.get(language or "") if self.prime else None,
            )
            # ``segments`` is a lazy generator: decoding happens here, so errors surface here too.
            segments = list(segments)
        except (RuntimeError, ValueError) as exc:
            raise TranscriptError(f"{self.source}: transcription failed ({_first_line(exc)})") from None
        # a segment "spoken" in no time lies past the speech: Whisper repeating itself at the end
        segments = [seg for seg in segments if not _timeless(seg)]
        words: list[Word] = []
        for seg in segments:
            for w in seg.words or ():
                text = w.word.strip()
                if not text:
                    continue
                # Alignment can place the last word a few ms past the end of the audio; clamp so
                # that timings always index into the clip.
                start = min(max(float(w.start), 0.0), duration)
                end = min(max(float(w.end), start), duration)
                words.append(Word(text=text, start=start, end=end, probability=float(w.probability)))
        # languages written without spaces between words get none between segments either
        sep = "" if (info.language or language) in _UNSPACED_LANGUAGES else " "
        text = sep.join(seg.text.strip() for seg in segments if seg.text.strip())
        if not any(ch.isalnum() for ch in text):
            # on faint noise Whisper may "hear" only punctuation (". . . ."): nothing was said
            text, words = "", []
        return Transcript(text=text, language=info.language or self.language, words=words, source=self.source)


def _timeless(segment: Any) -> bool:
    """Whether most words of a segment (two or more) have no duration. Whisper sometimes repeats
    the clip's sentence after its end, every word aligned to the last instant (seen on Mandarin
    with a primed decoder and beam search); real words take time."""
    words = [w for w in segment.words or () if w.word.strip()]
    short = sum(float(w.end) - float(w.start) < _TIMELESS_S for w in words)
    return len(words) >= 2 and 2 * short > len(words)


# -- model loading ------------------------------------------------------------------------------
def _resolve_model(model: str) -> str:
    """A local CTranslate2 folder, or a size name / hub repo id for faster-whisper to download."""
    if model in OFFLINE_ASR_MODELS:
        from emotion_llama.sources import offline_file

        # offline_file verifies model.bin (joining the chunks of the multilingual one into the cache
        # once); its folder also holds the config, tokenizer and vocabulary.
        return str(offline_file(OFFLINE_ASR_MODELS[model]).parent)
    local = Path(model).expanduser()
    if local.is_file() and local.name == "model.bin":
        local = local.parent
    if local.is_dir():
        if not (local / "model.bin").is_file():
            raise TranscriptError(f"{local}: not a CTranslate2 Whisper model folder (no model.bin)")
        return str(local)
    from faster_whisper.utils import available_models

    looks_like_repo = model.count("/") == 1 and not model.startswith((".", "/", "~"))
    if model in available_models() or looks_like_repo:
        return model
    raise TranscriptError(
        f"whisper model {model!r}: no such folder, and not one of "
        f"{', '.join([*map(repr, OFFLINE_ASR_MODELS), *available_models()])} or a hub repo id"
    )


@functools.lru_cache(maxsize=4)
def _load_model(
    path_or_name: str, device: str, compute_type: str, cpu_threads: int, pad_frames: int = 0
) -> WhisperModel:
    # Cached: a pipeline building several transcribers (or a test suite) pays the load once.
    # CTranslate2 models are safe to share between threads.
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise TranscriptError(
            "speech recognition needs faster-whisper; run `pip install faster-whisper`"
        ) from None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    cls = _padded_model_class() if pad_frames else WhisperModel
    try:
        model = cls(
            path_or_name,
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            local_files_only=offline,
        )
    except Exception as exc:  # the hub client and CTranslate2 raise many types; all mean "cannot load"
        hint = " (HF_HUB_OFFLINE is set and it is not in the cache)" if offline else ""
        where = f"whisper model {path_or_name!r}"
        raise TranscriptError(
            f"{where}: cannot load on {device}/{compute_type}{hint}: {_first_line(exc)}"
        ) from None
    if pad_frames:
        model.pad_frames = pad_frames  # type: ignore[attr-defined]
    return model


@functools.cache
def _padded_model_class() -> type[WhisperModel]:
    """faster-whisper's model with less padding after the speech.

    faster-whisper pads every window's features to Whisper's 30 s (3000 frames) with zeros and
    encodes all of it: for a 3 s utterance about 90% of the encoder's work is padding, and the
    encoder is most of the time (0.70 of 0.96 s on one core with tiny.en). This class cuts the
    zero padding to ``pad_frames`` after the last frame of speech before encoding (a window still
    holds up to 30 s of speech); the decoder and the word alignment read the shorter encoder
    output as they read the full one. Whisper was trained on 30 s windows only, so its transcript
    can differ (see :data:`MIN_PAD_S`).
    """
    from faster_whisper import WhisperModel

    class PaddedWhisperModel(WhisperModel):  # type: ignore[misc]
        pad_frames: int = _WHISPER_FRAMES

        def encode(self, features: np.ndarray) -> Any:
            batch = features if features.ndim == 3 else features[None]
            # faster-whisper's pad_or_trim pads with exact zeros: the speech ends at the last
            # column that is not all zero
            speech = np.flatnonzero(np.any(batch != 0, axis=(0, 1)))
            keep = (int(speech[-1]) + 1 if speech.size else 0) + self.pad_frames
            keep += keep % 2  # the encoder's second convolution has stride 2
            if keep < batch.shape[-1]:
                batch = np.ascontiguousarray(batch[..., :keep])
            return super().encode(batch)

    return PaddedWhisperModel


# -- audio checks -------------------------------------------------------------------------------
def _prepare_audio(audio: np.ndarray, sample_rate: int, source: str) -> np.ndarray:
    """Contiguous float32 mono at 16 kHz in [-1, 1]; integer PCM is scaled, other rates resampled."""
    if not isinstance(audio, np.ndarray):
        raise TranscriptError(f"{source}: audio must be a numpy array, got {type(audio).__name__}")
    if audio.ndim != 1:
        # Channel layout is ambiguous ((n, c) or (c, n)); the audio loader returns mono.
        raise TranscriptError(f"{source}: audio must be mono (one dimension), got shape {audio.shape}")
    if sample_rate <= 0:
        raise TranscriptError(f"{source}: sample_rate must be positive, got {sample_rate}")
    if np.issubdtype(audio.dtype, np.integer):
        info = np.iinfo(audio.dtype)
        if info.min == 0:  # unsigned PCM (8-bit WAV) is centred on the middle of its range
            wave = (audio.astype(np.float64) - (info.max + 1) / 2) / ((info.max + 1) / 2)
        else:
            wave = audio.astype(np.float64) / -float(info.min)
        wave = wave.astype(np.float32)
    elif np.issubdtype(audio.dtype, np.floating):
        wave = audio.astype(np.float32, copy=False)
    else:
        raise TranscriptError(f"{source}: audio must be float or integer PCM, got dtype {audio.dtype}")
    if wave.size and not np.isfinite(wave).all():
        raise TranscriptError(f"{source}: audio contains NaN or infinite samples")
    if sample_rate != SAMPLE_RATE and wave.size:
        wave = _resample(wave, sample_rate)
    return np.ascontiguousarray(wave)


def _resample(wave: np.ndarray, rate: int) -> np.ndarray:
    """To 16 kHz with FFmpeg's swresample (band-limited; naive decimation would alias)."""
    import av

    frame = av.AudioFrame.from_ndarray(wave[None, :], format="flt", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    # resample(None) flushes the samples the filter still holds.
    frames = [*resampler.resample(frame), *resampler.resample(None)]
    if not frames:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
