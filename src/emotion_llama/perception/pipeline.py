"""From a raw video to everything the model needs, in one pass over the frames.

``perceive(video)`` (CPU work, runs in worker processes during ``extract``):

1. probe the file; decode it in one pass (:class:`~emotion_llama.media.clip.ClipDecoder`): the
   frames at ``analysis_fps`` (streaming, bounded memory) and, along the way, the audio;
2. detect faces and blendshapes on a downscaled copy of each analysed frame
   (:class:`~emotion_llama.perception.frame_loop.FrameLoop`: a frame identical to the one before
   reuses its faces; with ``analysis_refine``, coarse to fine in time); AU intensities;
3. keep, at full resolution, only the frames that will be needed: the ``local_frames`` /
   ``temporal_frames`` sample times (uniform over the clip), the global encoder's frame (first,
   middle, or the running AU peak), nothing else;
4. choose the main person (size, centrality, persistence), align their face in the kept frames;
5. transcribe the audio (16 kHz mono), unless a subtitle is given.

Each clip's :attr:`Perception.stage_s` says where its time went (wall seconds per stage).

``encode(results, encoders)`` then runs the frozen encoders in batches (GPU when there is one).
A clip without a face or without audio still gets its perception record (what was found and
what is missing); it only cannot get features, and says why.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotion_llama.closing import Closeable
from emotion_llama.config import PerceptionConfig
from emotion_llama.errors import EmotionLlamaError


class PerceptionError(EmotionLlamaError):
    """A clip cannot yield features (no face, no audio...); the message says which and why."""


@dataclass
class Perception:
    """What perception found in one clip. Arrays are uint8 RGB unless said otherwise."""

    name: str
    source: str
    info: dict[str, Any]
    timeline: Any  # AUTimeline
    peak: int | None
    peak_time: float | None
    face_choice: dict[str, Any]
    transcript: Any  # Transcript | None
    global_frame: np.ndarray | None
    #: The AU peak frame (None without a face).
    peak_frame: np.ndarray | None
    global_frame_time: float | None
    local_crops: np.ndarray | None  # (F, S, S, 3)
    temporal_crops: np.ndarray | None  # (T, S, S, 3)
    audio: np.ndarray | None  # (N,) float32, 16 kHz
    missing: list[str] = field(default_factory=list)
    #: Wall seconds per stage (:data:`STAGES`); not part of :meth:`record`.
    stage_s: dict[str, float] = field(default_factory=dict)
    #: Frames the face detector ran on (the others reused identical pixels' or a neighbour's faces).
    detector_runs: int = 0

    def record(self) -> dict[str, Any]:
        """The JSON-friendly perception record (clues), without the pixel and audio arrays."""
        from emotion_llama.perception.action_units import (
            AU_NAMES,
            au_baseline,
            expressed_aus,
            eye_events,
        )

        peak_aus: dict[str, float] = {}
        if self.peak is not None:
            row = self.timeline.intensity[self.peak]
            peak_aus = {n: round(float(v), 3) for n, v in zip(self.timeline.names, row, strict=True)}
        baseline = au_baseline(self.timeline)
        active = expressed_aus(peak_aus, baseline) if peak_aus else []
        eyes = eye_events(self.timeline)
        return {
            "name": self.name,
            "source": self.source,
            "video": self.info,
            "faces": self.face_choice,
            "au_timeline": self.timeline.to_dict(),
            "peak": {
                "index": self.peak,
                "time_s": self.peak_time,
                "aus": peak_aus,
                "active_aus": active,
                "phrases": [AU_NAMES[a] for a in active if a in AU_NAMES],
                "au_names": {a: AU_NAMES[a] for a in active},
                "baseline": None if baseline is None else {k: round(v, 3) for k, v in baseline.items()},
            },
            "eyes": None if eyes is None else {**eyes.to_dict(), "phrases": eyes.phrases()},
            "global_frame_time_s": self.global_frame_time,
            "transcript": None if self.transcript is None else self.transcript.to_dict(),
            "missing": self.missing,
        }


class Perceiver(Closeable):
    """Loads the face analyzer and the transcriber once; ``__call__`` perceives one clip."""

    def __init__(
        self, config: PerceptionConfig, *, frame: str = "first", transcribe: bool = True, threads: int = 0
    ) -> None:
        """``threads``: CPU threads for speech recognition (0: its default, all cores); worker
        processes pass their share of the cores so that they do not oversubscribe them."""
        from emotion_llama.perception.faces import MediaPipeFaceAnalyzer

        self.config = config
        self.frame = frame
        self.faces = MediaPipeFaceAnalyzer(square_tiles=config.face_tiles)
        self.transcriber = None
        if transcribe:
            from emotion_llama.perception.transcript import WhisperTranscriber

            self.transcriber = WhisperTranscriber.from_config(config, cpu_threads=threads)

    def close(self) -> None:
        """Release the face model now (MediaPipe's own finaliser fails at interpreter exit)."""
        self.faces.close()

    def __call__(
        self, video: str | Path, *, name: str | None = None, subtitle: str | None = None
    ) -> Perception:
        return perceive(
            video,
            self.config,
            faces=self.faces,
            transcriber=self.transcriber,
            frame=self.frame,
            name=name,
            subtitle=subtitle,
        )


def _targets(duration: float, n: int) -> list[float]:
    """n times at the centres of n equal segments of the clip."""
    if n <= 0:
        return []
    return [duration * (k + 0.5) / n for k in range(n)]


#: The stages of :attr:`Perception.stage_s`: the header and first frame; the one decoding pass
#: (video and audio); the face detector, with the analysis downscale and the running peak's AUs;
#: the main face and the AU timeline; frames read again (a peak or global frame the pass did not keep); the
#: aligned face crops; speech recognition.
STAGES: tuple[str, ...] = ("probe", "decode", "faces", "aus", "reread", "crops", "asr")


class _Stopwatch:
    """Wall seconds per stage, accumulated."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Charge the time since the last lap to ``stage``."""
        now = time.perf_counter()
        self.seconds[stage] += now - self._t
        self._t = now


def perceive(
    video: str | Path,
    config: PerceptionConfig,
    *,
    faces: Any,
    transcriber: Any | None,
    frame: str = "first",
    name: str | None = None,
    subtitle: str | None = None,
) -> Perception:
    """Perceive one clip (see the module docstring). Raises :class:`MediaError` for a file that
    cannot be decoded at all; anything merely missing is listed in ``Perception.missing``."""
    from emotion_llama.media.clip import ClipDecoder
    from emotion_llama.media.video import probe_video, read_frames_at
    from emotion_llama.perception.action_units import peak_index
    from emotion_llama.perception.faces import select_main_face
    from emotion_llama.perception.frame_loop import FrameLoop

    watch = _Stopwatch()
    path = Path(video)
    name = name or path.stem
    info = probe_video(path)
    if frame not in ("first", "middle", "peak"):
        raise PerceptionError(f"frame choice {frame!r}: use first, middle or peak")
    watch.lap("probe")
    n_keep = max(config.local_frames, config.temporal_frames)
    wanted = _targets(info.duration_s, n_keep)
    global_target = {"first": 0.0, "middle": info.duration_s / 2}.get(frame)

    measures = _FaceMeasures()
    loop = FrameLoop(config, faces.detect, wanted, global_target, measures)
    clip = ClipDecoder(path, fps=config.analysis_fps, sample_rate=config.sample_rate)
    for f in clip.frames():
        watch.lap("decode")
        loop.feed(f)
        watch.lap("faces")
    loop.finish()
    watch.lap("faces")  # the end of the pass: the decoders flushed, the audio finished, a held frame
    times, per_frame, kept, scales = loop.times, loop.per_frame, loop.kept, loop.scales
    global_pos, best_pos, best_frame = loop.global_pos, loop.best_pos, loop.best_frame
    if not times:
        raise PerceptionError(f"{path}: no decodable video frame")
    if loop.next_wanted < len(wanted):
        # sample times after the last analysed frame (very short clips, a header longer than the
        # stream): the last frame stands in for them
        kept[len(times) - 1] = loop.last_rgb  # type: ignore[assignment]
        scales[len(times) - 1] = loop.last_scale
    main, choice = select_main_face(per_frame, (info.width, info.height))
    timeline = _timeline(times, main, measures)
    peak = peak_index(timeline, "sum")
    peak_time = times[peak] if peak is not None else None
    missing: list[str] = []
    if peak is None:
        missing.append(f"face: none found in {len(times)} analysed frames")
    watch.lap("aus")

    # the peak frame (thumbnails, descriptions) and the global encoder's frame
    peak_frame = None
    if peak is not None:
        peak_frame = best_frame if best_pos == peak and best_frame is not None else None
        if peak_frame is None:  # the main face's peak differs from the largest face's: one seek
            peak_frame = read_frames_at(path, [times[peak]])[0].rgb
    if frame == "peak":
        if peak_frame is not None:
            global_frame = peak_frame
        else:
            global_frame = kept.get(0) if 0 in kept else read_frames_at(path, [0.0])[0].rgb
        global_time = peak_time if peak is not None else times[0]
    else:
        gp = global_pos if global_pos is not None else len(times) - 1
        global_frame = kept.get(gp)
        if global_frame is None:
            global_frame = read_frames_at(path, [times[gp]])[0].rgb
        global_time = times[gp]
    watch.lap("reread")

    # aligned crops of the main face in the kept sample frames
    samples = [(kept[p], main[p]) for p in sorted(kept) if p in scales and main[p] is not None]
    local_crops, temporal_crops = _face_crops(samples, config)
    if local_crops is None and peak is not None:
        missing.append("face: the main face is absent from every sampled frame")
    watch.lap("crops")

    audio, transcript = _audio_and_transcript(clip, config, subtitle, transcriber, missing)
    watch.lap("asr")
    info_dict = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(info).items()}
    return Perception(
        name=name,
        source=str(path),
        info=info_dict,
        timeline=timeline,
        peak=peak,
        peak_time=peak_time,
        face_choice={
            **choice,
            "frames_analysed": len(times),
            "frames_with_face": int(timeline.face_found.sum()),
        },
        transcript=transcript,
        global_frame=global_frame,
        peak_frame=peak_frame,
        global_frame_time=global_time,
        local_crops=local_crops,
        temporal_crops=temporal_crops,
        audio=audio,
        missing=missing,
        stage_s=watch.seconds,
        detector_runs=loop.detector_runs,
    )


class _FaceMeasures:
    """AU intensities and eye openness per face, computed once: the running peak and the timeline
    read the same faces (and a repeated frame the same objects)."""

    def __init__(self) -> None:
        self._done: dict[int, tuple[Any, dict[str, float], float]] = {}

    def _get(self, face: Any) -> tuple[Any, dict[str, float], float]:
        hit = self._done.get(id(face))
        if hit is None or hit[0] is not face:
            from emotion_llama.perception.action_units import face_measures

            aus, openness = face_measures(face.blendshapes, face.landmarks)
            hit = (face, aus, openness)  # the face is kept with them, so its id stays its own
            self._done[id(face)] = hit
        return hit

    def aus(self, face: Any) -> dict[str, float]:
        return self._get(face)[1]

    def openness(self, face: Any) -> float:
        return self._get(face)[2]


def _face_crops(samples: list[tuple[np.ndarray, Any]], config: PerceptionConfig) -> tuple[Any, Any]:
    """The local and temporal encoders' face crops from (frame, main face) samples: ``(None, None)``
    when there are none."""
    from emotion_llama.perception.faces import align_face

    if not samples:
        return None, None
    stack = np.stack([align_face(rgb, face, config.face_size) for rgb, face in samples])
    return _uniform(stack, config.local_frames), _uniform(stack, config.temporal_frames, exact=True)


#: The shortest audio the audio encoder takes: HuBERT's (and wav2vec 2.0's) convolutions see 400
#: samples at 16 kHz for their first frame. Shorter audio counts as no audio.
MIN_AUDIO_S = 0.025


def _audio_and_transcript(
    clip: Any, config: PerceptionConfig, subtitle: str | None, transcriber: Any | None, missing: list[str]
) -> tuple[np.ndarray | None, Any]:
    """The clip's audio, decoded with its frames by ``clip`` (a finished
    :class:`~emotion_llama.media.clip.ClipDecoder`; ``None`` without a usable stream, said in
    ``missing``) and its transcript: the given subtitle, else speech recognition on the audio."""
    from emotion_llama.media.audio import NoAudioError

    audio = None
    transcript = None
    try:
        audio = clip.audio()
        least = round(MIN_AUDIO_S * config.sample_rate)
        if audio.size == 0:
            audio = None
            missing.append("audio: the audio stream is empty")
        elif audio.size < least:  # the audio encoder's first frame needs this much
            ms = 1e3 * audio.size / config.sample_rate
            audio = None
            missing.append(
                f"audio: {ms:.0f} ms, shorter than the {MIN_AUDIO_S * 1e3:.0f} ms the audio encoder needs"
            )
    except NoAudioError:
        missing.append("audio: the file has no audio stream")
    if subtitle is not None:
        from emotion_llama.perception.transcript import Transcript

        transcript = Transcript(text=subtitle, language=config.language, words=[], source="subtitle")
    elif transcriber is not None and audio is not None:
        transcript = transcriber.transcribe(audio, config.sample_rate)
    return audio, transcript


def _timeline(times: list[float], main: list[Any], measures: _FaceMeasures) -> Any:
    from emotion_llama.perception.action_units import AU_NAMES, AUTimeline, correct_cry_face

    names = list(AU_NAMES)
    inten = np.full((len(times), len(names)), np.nan, dtype=np.float32)
    found = np.zeros(len(times), dtype=bool)
    openness = np.full(len(times), np.nan, dtype=np.float32)
    for i, face in enumerate(main):
        if face is None:
            continue
        au = measures.aus(face)
        inten[i] = [au.get(n, 0.0) for n in names]
        openness[i] = measures.openness(face)
        found[i] = True
    return correct_cry_face(
        AUTimeline(
            times=np.asarray(times, dtype=np.float64),
            names=names,
            intensity=inten,
            presence=None,
            face_found=found,
            source="mediapipe-blendshapes",
            eye_openness=openness,
        )
    )


def _uniform(stack: np.ndarray, n: int, exact: bool = False) -> np.ndarray:
    """n items spread evenly over the stack; with ``exact`` repeat to reach n when it is shorter."""
    if len(stack) >= n or exact:
        idx = np.linspace(0, len(stack) - 1, n).round().astype(int)
        return stack[idx]
    return stack


# -- encoders --------------------------------------------------------------------------------------
def encode(
    results: list[Perception], encoders: Any, *, device: str = "cpu", batched: bool = False
) -> list[Any]:
    """Features for the clips that have a face and audio: one :class:`ClipFeatures` per result,
    ``None`` where something is missing (the result's ``missing`` says what).

    Each clip goes through each encoder alone (batch dimension 1; its audio at its own length, no
    padding), so its features are bit-identical whichever clips are passed with it: an
    ``extract`` resumed after a crash writes the same files as an uninterrupted run. Batched
    forwards do not guarantee that (kernels round differently for different batch sizes and
    padded lengths, see :mod:`emotion_llama.encoders.models`). ``batched``: the clips in one
    forward per encoder all the same (the audio right-padded, with its mask), for a GPU's
    throughput; each vector then equals the clip alone up to float rounding."""
    complete = [
        r
        for r in results
        if r.local_crops is not None and r.temporal_crops is not None and r.audio is not None
    ]
    feats = {
        r.name: f
        for r, (f, _) in zip(
            complete, encode_available(complete, encoders, device=device, batched=batched), strict=True
        )
    }
    return [feats.get(r.name) for r in results]


def encode_each(
    results: list[Perception], encoders: Any, *, device: str = "cpu", batched: bool = False
) -> list[Any]:
    """:func:`encode`, and where the batch's forward raises (one clip's bad input, or a batch too
    big for the memory), each clip alone: per result its ``ClipFeatures``, ``None`` (a part
    missing) or the exception its own encoding raised, so that only that clip fails. The driver's
    batches (``extract``) and the Ray engine's encoder actors both encode this way."""
    try:
        return encode(results, encoders, device=device, batched=batched)
    except Exception as exc:
        if len(results) == 1:  # alone already: the same forward would fail again
            return [exc]
    out: list[Any] = []
    for r in results:
        try:
            out.append(encode([r], encoders, device=device)[0])
        except Exception as exc:
            out.append(exc)
    return out


def restrict_to(p: Perception, modalities: Sequence[str]) -> Perception:
    """``p`` with only the chosen modalities (:mod:`emotion_llama.modalities`): without ``video``
    no face, AUs, peak or frames; without ``audio`` no waveform; without ``text`` no transcript.
    Each one left out is named in ``missing`` ("video: not used (--modalities audio, text)"), so
    the clues, the label and the record say what the answer stands on."""
    from dataclasses import replace

    from emotion_llama.modalities import MODALITIES

    chosen = [m for m in MODALITIES if m in set(modalities)]
    dropped = [m for m in MODALITIES if m not in chosen]
    if not dropped:
        return p
    why = f"not used (--modalities {', '.join(chosen)})"
    changes: dict[str, Any] = {"missing": [*p.missing, *(f"{m}: {why}" for m in dropped)]}
    if "video" in dropped:
        tl = p.timeline
        empty = replace(
            tl,
            times=np.zeros(0),
            intensity=np.zeros((0, len(tl.names)), np.float32),
            presence=None,
            face_found=np.zeros(0, bool),
            eye_openness=None if tl.eye_openness is None else np.zeros(0, np.float32),
        )
        changes.update(
            timeline=empty, peak=None, peak_time=None, peak_frame=None, global_frame=None,
            global_frame_time=None, local_crops=None, temporal_crops=None,
        )  # fmt: skip
    if "audio" in dropped:
        changes["audio"] = None
    if "text" in dropped:
        changes["transcript"] = None
    return replace(p, **changes)


def encode_available(
    results: list[Perception], encoders: Any, *, device: str = "cpu", batched: bool = False
) -> list[tuple[Any, frozenset[str]]]:
    """Like :func:`encode`, for the feature parts each clip has: ``(ClipFeatures, absent parts)``
    per result, each clip alone through each encoder, or with ``batched`` the clips together (see
    :func:`encode`). A part the clip lacks (no face: ``face`` and ``motion``; no audio: ``audio``;
    no frame: ``frame``; a modality left out by :func:`restrict_to` is lacking too) is absent: its
    vector is left at zero and must not be fed (the processor gives absent parts no positions,
    :mod:`emotion_llama.modalities`)."""
    import torch

    from emotion_llama.encoders.store import ClipFeatures

    vecs = [
        {
            "local": np.zeros(encoders.local.dim, np.float32),
            "temporal": np.zeros(encoders.temporal.dim, np.float32),
            "audio": np.zeros(encoders.audio.dim, np.float32),
        }
        for _ in results
    ]
    with torch.inference_mode():
        for part, inputs in (
            ("local", [r.local_crops for r in results]),
            ("temporal", [r.temporal_crops for r in results]),
            ("audio", [r.audio for r in results]),
        ):
            have = [i for i, x in enumerate(inputs) if x is not None]
            for idx, rows in _encode_part(part, [inputs[i] for i in have], encoders, device, batched):
                for i, row in zip(idx, rows, strict=True):
                    vecs[have[i]][part] = row
    out: list[tuple[Any, frozenset[str]]] = []
    for r, v in zip(results, vecs, strict=True):
        absent = {
            name
            for name, x in (
                ("face", r.local_crops),
                ("motion", r.temporal_crops),
                ("audio", r.audio),
                ("frame", r.global_frame),
            )
            if x is None
        }
        out.append((ClipFeatures(**v), frozenset(absent)))
    return out


#: The most samples one padded audio forward holds (clips x the longest clip's samples): 2**22,
#: about 262 s of 16 kHz audio, e.g. 8 clips of 32 s. One long video would otherwise pad every
#: clip of its batch to its own length (a half-hour video: 8 x 29 M samples).
AUDIO_BATCH_SAMPLES = 1 << 22
#: The most a padded audio forward may hold over its clips' own samples: 2x (at most half of it
#: padding). Clips of a few seconds each, however mixed, stay in one forward; a clip of 30 s among
#: clips of 3 s goes alone instead of making the others 10x their cost.
AUDIO_MAX_PADDING = 2.0


def audio_groups(
    lengths: Sequence[int], budget: int = AUDIO_BATCH_SAMPLES, max_padding: float = AUDIO_MAX_PADDING
) -> list[list[int]]:
    """The padded forwards for waveforms of these lengths, as lists of their indices. A forward
    of ``n`` waveforms holds ``n`` times the longest: it must fit ``budget`` and at most
    ``max_padding`` times their own samples. All in one forward, in their order, when that holds;
    otherwise shortest first, each forward as many as hold (a waveform alone always does)."""

    def holds(n: int, longest: int, total: int) -> bool:
        return n * longest <= min(budget, max_padding * total)

    if not lengths:
        return []
    if holds(len(lengths), max(lengths), sum(lengths)):
        return [list(range(len(lengths)))]
    groups: list[list[int]] = [[]]
    total = 0
    for i in sorted(range(len(lengths)), key=lambda k: lengths[k]):
        n = lengths[i]  # the longest of its group: they come shortest first
        if groups[-1] and not holds(len(groups[-1]) + 1, n, total + n):
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += n
    return groups


def _encode_part(
    part: str, inputs: list[Any], encoders: Any, device: str, batched: bool
) -> Iterator[tuple[list[int], np.ndarray]]:
    """``(indices into inputs, their float32 vectors)`` of one encoder (``local``, ``temporal`` or
    ``audio``): each input alone, or with ``batched`` the inputs of one shape together (crops of the
    same size and count; the waveforms right-padded, in forwards of :func:`audio_groups`)."""
    import torch

    from emotion_llama.encoders.models import pad_waveforms, preprocess_frames

    encoder = getattr(encoders, part)
    dtype = next(encoders.local.parameters()).dtype
    if part == "audio":
        groups = (
            audio_groups([int(np.size(w)) for w in inputs]) if batched else [[i] for i in range(len(inputs))]
        )
        for idx in groups:
            if len(idx) == 1:  # alone: at its own length, no padding
                yield idx, encoder.encode_clip(inputs[idx[0]])[None].float().cpu().numpy()
                continue
            waves, mask = pad_waveforms([inputs[i] for i in idx])
            padded = bool((mask == 0).any())
            x = encoder(waves.to(device), mask.to(device) if padded else None)
            yield idx, x.float().cpu().numpy()
        return
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, crops in enumerate(inputs):
        groups.setdefault(tuple(crops.shape) if batched else (i,), []).append(i)
    for idx in groups.values():
        x = torch.stack([preprocess_frames(inputs[i]) for i in idx]).to(device, dtype)
        if part == "local":
            y = encoder.encode_clips(x) if batched else encoder.encode_clip(x[0])[None]
        else:
            y = encoder(x)  # (B, T, 3, S, S) -> (B, D); alone: B = 1
        yield idx, y.float().cpu().numpy()
