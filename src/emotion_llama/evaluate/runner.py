"""Benchmark runners: predictions written as they come (a rerun resumes), then scores.

The runner never needs to know the model: it takes a ``predict`` function from a batch of
(clip, inputs) to answer texts. :func:`model_predict_fn` makes one from an Emotion-LLaMA
checkpoint; tests and other systems can bring their own.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotion_llama.data.formats.clips import restrict_to_split
from emotion_llama.data.formats.lists import (
    DFEW_LABELS,
    find_frame_source,
    read_classification_folder,
    read_fold_folders,
)
from emotion_llama.data.formats.references import read_reference_folder
from emotion_llama.data.samples import Clip, DataError
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.progress import progress_bar
from emotion_llama.prompts import (
    EMOTION_INSTRUCTION,
    LABELS,
    MER_LABELS,
    REASON_INSTRUCTIONS,
)
from emotion_llama.shards import Shard, ShardFolder, mark_done

if TYPE_CHECKING:
    from emotion_llama.model.vllm_engine import Backend, VllmSpec

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
SKIPPED = "skipped.jsonl"


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    kind: str  # classification | emer | ov
    labels: tuple[str, ...] = ()
    task: str = "emotion"
    instruction: str = EMOTION_INSTRUCTION
    folds: tuple[str, ...] = ()
    numeric_labels: tuple[str, ...] | None = None
    #: The class an answer outside the label set counts as (the authors' rule).
    default_label: str = "neutral"
    #: A manifest whose labelled rows are the clips (the ``manifest`` benchmark); ``data`` is then
    #: the folder of their extracted features.
    manifest: str | None = None
    #: With a manifest: only the rows of this split.
    split: str | None = None
    #: How a classification benchmark is scored: ``labels`` (accuracy, F1, UAR over ``labels``),
    #: ``hit-rate`` (MER-UniBench's basic-emotion hit rate: any gold label, through the emotion
    #: wheels) or ``sentiment`` (positive/negative weighted F1, neutral golds removed).
    scoring: str = "labels"


#: The sentiment benchmarks' answer words.
SENTIMENT_LABELS: tuple[str, ...] = ("positive", "negative", "neutral")
SENTIMENT_INSTRUCTION = (
    "Please determine the sentiment the person in the video expresses: positive, negative or neutral."
)
#: MELD's seven emotions and IEMOCAP's four classes, in the project's words.
MELD_LABELS: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "surprise", "fear", "disgust")
IEMOCAP_LABELS: tuple[str, ...] = ("neutral", "happy", "sad", "angry")


def _label_instruction(labels: Sequence[str]) -> str:
    return f"Please determine which emotion label in the video represents: {', '.join(labels)}."


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "mer2023": BenchmarkSpec("mer2023", "classification", MER_LABELS),
    "mer2024-noise": BenchmarkSpec("mer2024-noise", "classification", MER_LABELS),
    "dfew": BenchmarkSpec(
        "dfew",
        "classification",
        DFEW_LABELS,
        instruction=_label_instruction(DFEW_LABELS),
        folds=tuple(f"fold{i}" for i in range(1, 6)),
        numeric_labels=DFEW_LABELS,
    ),
    **{
        name: BenchmarkSpec(
            name,
            "classification",
            labels,
            instruction=_label_instruction(labels),
            scoring="hit-rate",
        )
        for name, labels in (("meld", MELD_LABELS), ("iemocap", IEMOCAP_LABELS))
    },
    **{
        name: BenchmarkSpec(
            name,
            "classification",
            SENTIMENT_LABELS,
            instruction=SENTIMENT_INSTRUCTION,
            scoring="sentiment",
        )
        for name in ("mosi", "mosei", "sims", "sims-v2")
    },
    "emer": BenchmarkSpec("emer", "emer", task="reason", instruction=REASON_INSTRUCTIONS[0]),
    "ov": BenchmarkSpec("ov", "ov", task="reason", instruction=REASON_INSTRUCTIONS[0]),
}


def manifest_benchmark(
    manifest: str | Path, labels: Sequence[str] = LABELS, *, split: str | None = None
) -> BenchmarkSpec:
    """A classification benchmark of a manifest's labelled clips, scored over ``labels``. The
    instruction is the prompt's own (SPEC) when ``labels`` are among its nine, else the same
    sentence listing ``labels``."""
    labels = tuple(labels)
    instruction = EMOTION_INSTRUCTION if set(labels) <= set(LABELS) else _label_instruction(labels)
    default = "neutral" if "neutral" in labels else labels[0]
    return BenchmarkSpec(
        "manifest",
        "classification",
        labels,
        instruction=instruction,
        default_label=default,
        manifest=str(manifest),
        split=split,
    )


def get_benchmark(name: str) -> BenchmarkSpec:
    """A benchmark by name; ``manifest`` is scored over the prompt's nine labels (see
    :func:`manifest_benchmark` for another set)."""
    if name == "manifest":
        return BenchmarkSpec("manifest", "classification", LABELS)
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise EmotionLlamaError(
            f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}, manifest"
        ) from None


# -- reading a benchmark folder ------------------------------------------------------------------------
def read_benchmark(spec: BenchmarkSpec, data: str | Path) -> list[Clip]:
    """Every clip of the benchmark with its gold label or reference and subtitle (the folder
    layouts are read by :mod:`emotion_llama.data.formats`; a manifest benchmark's clips are its
    labelled rows)."""
    if spec.manifest is not None:
        return _manifest_clips(spec)
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"{root}: no such benchmark folder")
    if spec.kind == "classification":
        if spec.folds:
            return read_fold_folders(root, spec.folds, spec.numeric_labels)
        return read_classification_folder(root)
    return read_reference_folder(root, "reason" if spec.kind == "emer" else "openset")


def _manifest_clips(spec: BenchmarkSpec) -> list[Clip]:
    from emotion_llama.data.formats.manifest import manifest_clips, read_manifest

    assert spec.manifest is not None
    entries = read_manifest(spec.manifest, split=spec.split)
    clips = [c for c in manifest_clips(entries) if c.label is not None]
    if not clips:
        raise DataError(
            f"{spec.manifest}: no labelled rows to score"
            + (f" in split {spec.split!r}" if spec.split else "")
        )
    unlabelled = len(entries) - len(clips)
    if unlabelled:
        log.warning("%s: %d unlabelled row(s) left out of the benchmark", spec.manifest, unlabelled)
    return clips


def clip_folder(data: Path, clip: Clip) -> Path:
    return data / clip.fold if clip.fold else data


SPLIT_FILE = "split.json"


def restrict_to_split_file(clips: Sequence[Clip], data: str | Path, split: str) -> list[Clip]:
    """The clips listed under ``split`` in ``split.json`` (``{split: [names]}``, as the training
    readers and ``synth`` use it): the one in the clip's folder (a DFEW fold's), else the one in
    ``data``. A split that is missing, or lists none of the clips, is a :class:`DataError`."""
    data = Path(data)
    by_file: dict[Path, list[Clip]] = {}
    for c in clips:
        path = clip_folder(data, c) / SPLIT_FILE
        by_file.setdefault(path if path.is_file() else data / SPLIT_FILE, []).append(c)
    kept: set[tuple[str, str]] = set()
    for path, group in by_file.items():
        if not path.is_file():
            raise DataError(f"{path}: no such file; --split {split} needs the benchmark's split.json")
        wanted = set(restrict_to_split([c.name for c in group], path, split))
        kept |= {_key(c) for c in group if c.name in wanted}
    chosen = [c for c in clips if _key(c) in kept]
    if clips and not chosen:
        raise DataError(
            f"{', '.join(str(p) for p in by_file)}: split {split!r} lists none of the {len(clips)} clips"
        )
    return chosen


# -- predictions file ------------------------------------------------------------------------------
def _parse_prediction(line: bytes) -> dict[str, Any]:
    """One predictions line as a record; ``ValueError`` (with the reason) when it is not one."""
    rec = json.loads(line)
    if not isinstance(rec, dict) or "name" not in rec or "output" not in rec:
        raise ValueError("each line needs 'name' and 'output'")
    if not isinstance(rec["name"], str) or not isinstance(rec["output"], str):
        raise ValueError("'name' and 'output' must be strings")
    return rec


def _torn_tail(raw: bytes) -> tuple[int, bytes]:
    """``(offset, bytes)`` of the text after the last newline: a line cut off while it was being
    written (empty when the file ends with a newline)."""
    start = raw.rfind(b"\n") + 1
    return start, raw[start:]


def _repair_tail(path: Path) -> str | None:
    """Make ``path`` end at a line boundary before anything is appended to it: a last line without
    its newline is finished with one when it is a whole record, else cut away (a kill while it was
    being written). Returns a note saying what was done, or ``None`` when nothing was needed."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size == 0:
        return None
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return None
        fh.seek(0)
        raw = fh.read()
    start, tail = _torn_tail(raw)
    line_no = raw.count(b"\n", 0, start) + 1
    try:
        _parse_prediction(tail)
    except ValueError as exc:
        with open(path, "r+b") as fh:
            fh.truncate(start)
            fh.flush()
            os.fsync(fh.fileno())
        note = (
            f"{path}:{line_no}: dropped a cut-off last line ({len(tail)} bytes, {exc}); "
            "a run was stopped while writing it, so that clip is predicted again"
        )
    else:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            _write_all(fd, b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        note = f"{path}:{line_no}: the last record had no newline (a run was stopped); added it"
    log.warning("%s", note)
    return note


def read_predictions(
    path: str | Path, *, repair: bool = False, notes: list[str] | None = None
) -> list[dict[str, Any]]:
    """Records of a predictions JSONL file, each with its 1-based ``_line``.

    A malformed line is an error naming the file and line, except a cut-off last line (no newline
    after it: a run stopped while writing it). Reading, such a line is used when it is a whole
    record and otherwise left out with a warning; ``repair`` also fixes the file before anything
    is appended to it (a newline added, or the cut-off bytes removed). What was done about it is
    logged and, when ``notes`` is given, appended to it."""
    path = Path(path)
    if not path.is_file():
        return []
    if repair:
        note = _repair_tail(path)
        if note is not None and notes is not None:
            notes.append(note)
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    records = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = _parse_prediction(line)
        except ValueError as exc:
            if i == len(lines):  # no newline after it: cut off while being written
                note = f"{path}:{i}: left out a cut-off last line ({len(line)} bytes, {exc})"
                log.warning("%s", note)
                if notes is not None:
                    notes.append(note)
                break
            raise DataError(f"{path}:{i}: malformed prediction line ({exc})") from None
        rec["_line"] = i
        records.append(rec)
    return records


def _key(rec: dict[str, Any] | Clip) -> tuple[str, str]:
    if isinstance(rec, Clip):
        return (rec.fold or "", rec.name)
    return (rec.get("fold") or "", rec["name"])


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # one call unless the system writes less (disk full, a signal)
        view = view[os.write(fd, view) :]


def _append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records, one ``write`` per whole line (its newline included), then fsync: a kill can
    only cut off the last line, which :func:`_repair_tail` mends before the next append."""
    lines = [(json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8") for r in records]
    _repair_tail(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        for line in lines:
            _write_all(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


# -- running ---------------------------------------------------------------------------------------
PredictFn = Callable[[Sequence[Clip], Path], list[str]]


@dataclass
class RunSummary:
    total: int
    already_done: int
    predicted: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    #: What was mended in the predictions file before resuming (a line cut off by a kill).
    notes: list[str] = field(default_factory=list)
    #: The clips of this run (after ``split`` and ``limit``): the ones its report scores.
    clips: list[Clip] = field(default_factory=list)

    def records_of(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The prediction records of this run's clips (a file may hold others from earlier runs
        over another split or limit)."""
        keys = {_key(c) for c in self.clips}
        return [r for r in records if _key(r) in keys]


def run_predictions(
    spec: BenchmarkSpec,
    data: str | Path,
    out: str | Path,
    predict: PredictFn,
    *,
    batch_size: int = 8,
    limit: int | None = None,
    progress: bool = True,
    split: str | None = None,
    shard: Shard | None = None,
    concurrency: int = 1,
) -> RunSummary:
    """Predict every clip not yet in ``out/predictions.jsonl``, appending as batches finish.

    ``split``: only the clips of that split (:func:`restrict_to_split_file`; a manifest's split
    column). ``predict(clips, data_dir)`` returns one answer text per clip; a clip whose inputs
    cannot be read raises :class:`EmotionLlamaError` from a per-clip retry and is listed in
    ``skipped.jsonl`` with the reason, never filled in.

    ``shard``: only that shard's clips (by :func:`clip_key`), into ``out/shards/i-of-N``, with
    ``shard.json`` there at the end (``emotion-llama merge OUT`` then joins the predictions).
    ``concurrency``: batches in flight at once (``predict`` must then be thread-safe: the Ray
    engine's actor pool); their lines are appended as each finishes."""
    data, out = Path(data), Path(out)
    root = shard.folder(out) if shard is not None else out
    root.mkdir(parents=True, exist_ok=True)
    if split is not None and spec.manifest is not None:
        spec = replace(spec, split=split)
    clips = read_benchmark(spec, data)
    if split is not None and spec.manifest is None:
        clips = restrict_to_split_file(clips, data, split)
    if limit is not None:
        clips = clips[:limit]
    if shard is not None:
        clips = shard.select(clips, clip_key)
    notes: list[str] = []
    done = {_key(r) for r in read_predictions(root / PREDICTIONS, repair=True, notes=notes)}
    todo = [c for c in clips if _key(c) not in done]
    summary = RunSummary(total=len(clips), already_done=len(clips) - len(todo), notes=notes, clips=clips)
    (root / SKIPPED).unlink(missing_ok=True)
    batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    bar = progress_bar(progress)
    with bar, ThreadPoolExecutor(max(1, concurrency)) as pool:
        task = bar.add_task(f"{spec.name}", total=len(todo))
        running = [pool.submit(_predict_batch, predict, b, data, summary) for b in batches[:concurrency]]
        queued = batches[concurrency:]
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                running.remove(fut)
                answers, ok, size = fut.result()
                _append_jsonl(root / PREDICTIONS, [_record(c, a) for c, a in zip(ok, answers, strict=True)])
                summary.predicted += len(ok)
                bar.advance(task, size)
                if queued:
                    running.append(pool.submit(_predict_batch, predict, queued.pop(0), data, summary))
    if summary.skipped:
        _append_jsonl(root / SKIPPED, summary.skipped)
    if shard is not None:
        mark_done(
            root,
            shard,
            "predictions",
            benchmark=spec.name,
            total=summary.total,
            predicted=summary.predicted,
            skipped=len(summary.skipped),
        )
    return summary


def clip_key(clip: Clip) -> str:
    """A clip's name for sharding: ``fold/name`` in a benchmark of folds, else its name."""
    return f"{clip.fold}/{clip.name}" if clip.fold else clip.name


def merge_predictions(shards: Sequence[ShardFolder], out: str | Path) -> RunSummary:
    """The shards' predictions (``evaluate --shard i/N``) appended to ``out/predictions.jsonl``,
    each clip once (one ``out`` already has is kept), their skipped clips into ``skipped.jsonl``:
    then ``emotion-llama score out/predictions.jsonl`` scores the whole benchmark. The lines come
    in shard order, not the benchmark's (scores do not depend on the order)."""
    out = Path(out)
    done = {_key(r) for r in read_predictions(out / PREDICTIONS, repair=True)}
    summary = RunSummary(total=0, already_done=len(done))
    skipped: list[dict[str, Any]] = []
    for sh in shards:
        summary.total += int((sh.done or {}).get("total", 0))
        new = [r for r in read_predictions(sh.path / PREDICTIONS) if _key(r) not in done]
        for r in new:
            r.pop("_line", None)
            done.add(_key(r))
        _append_jsonl(out / PREDICTIONS, new)
        summary.predicted += len(new)
        if (sh.path / SKIPPED).is_file():
            skipped.extend(json.loads(line) for line in (sh.path / SKIPPED).read_text().splitlines() if line)
    (out / SKIPPED).unlink(missing_ok=True)
    summary.skipped = [s for s in skipped if (s.get("fold") or "", s["name"]) not in done]
    if summary.skipped:
        _append_jsonl(out / SKIPPED, summary.skipped)
    return summary


def _predict_batch(
    predict: PredictFn, batch: list[Clip], data: Path, summary: RunSummary
) -> tuple[list[str], list[Clip], int]:
    """``(answers, the clips answered, the batch's size)``; a clip that cannot be answered goes
    into ``summary.skipped`` with its reason."""
    try:
        return predict(batch, data), batch, len(batch)
    except EmotionLlamaError:
        pass  # find the clip(s) at fault one by one; the others still get predicted
    answers, ok = [], []
    for clip in batch:
        try:
            answers.extend(predict([clip], data))
            ok.append(clip)
        except EmotionLlamaError as exc:
            summary.skipped.append({"name": clip.name, "fold": clip.fold or "", "reason": str(exc)})
    return answers, ok, len(batch)


def _record(clip: Clip, answer: str) -> dict[str, Any]:
    rec: dict[str, Any] = {"name": clip.name, "output": answer}
    if clip.fold:
        rec["fold"] = clip.fold
    if clip.label is not None:
        rec["gold"] = clip.label
    if clip.valence is not None:
        rec["valence"] = clip.valence
    if clip.reference is not None:
        rec["reference"] = clip.reference
    return rec


# -- the model as a predict function -------------------------------------------------------------
def model_predict_fn(
    model_dir: str | Path,
    spec: BenchmarkSpec,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    max_new_tokens: int | None = None,
    label_mode: str = "generate",
    modalities: Sequence[str] | None = None,
    quantization: str | None = None,
    vllm: VllmSpec | None = None,
    compile: bool = False,
) -> PredictFn:
    """Load an Emotion-LLaMA checkpoint once; answer clips from their frame, the authors'-layout
    features of their folder, and their subtitle (greedy decoding, as the published scores).
    ``modalities`` (video, audio, text; ``None``: all) leaves the others out of every prompt: their
    feature parts get no positions, the subtitle is emptied (:mod:`emotion_llama.modalities`).

    ``label_mode="score"`` (classification benchmarks only): the answer is the benchmark label the
    model gives the highest probability, from one forward pass over the prompt
    (:class:`~emotion_llama.model.scoring.LabelScorer`) instead of a decoding loop; faster, and
    always a label of the set (greedy answers outside it count as the default class).
    ``quantization`` (``8bit``/``4bit``): the LLM's linear layers in bitsandbytes weights; ``fp8``:
    in FP8 matmuls, LoRA merged (:mod:`emotion_llama.model.fp8`).
    ``vllm``: vLLM decodes the prompts the model computes (:mod:`emotion_llama.model.vllm_engine`);
    the model's own decoder layers are freed. ``compile``: label scoring's forwards through
    ``torch.compile``; generation with a static KV cache (which transformers compiles on a GPU)."""
    if label_mode not in ("generate", "score"):
        raise EmotionLlamaError(f"label mode must be 'generate' or 'score', not {label_mode!r}")
    if label_mode == "score" and spec.kind != "classification":
        raise EmotionLlamaError(
            f"{spec.name}: label scoring needs a classification benchmark (it has no labels)"
        )

    from emotion_llama.encoders.store import open_store
    from emotion_llama.errors import MediaError
    from emotion_llama.media.frames import read_frame
    from emotion_llama.modalities import MODALITIES, absent_parts, parse_modalities
    from emotion_llama.model.checkpoint import load_pretrained
    from emotion_llama.model.generation import ClipInput, Generator
    from emotion_llama.model.processor import EmotionLlamaProcessor
    from emotion_llama.model.quantize import check_quantization
    from emotion_llama.model.tokenizer import load_tokenizer
    from emotion_llama.precision import torch_dtype

    chosen = parse_modalities(modalities)
    absent = absent_parts(chosen)
    if compile and vllm is not None:
        raise EmotionLlamaError("--compile is for the local engine; vLLM compiles its own decoding")
    backend = _vllm_before_load(vllm, label_mode, quantization)

    model = load_pretrained(
        model_dir, device=device, dtype=torch_dtype(dtype, device), quantization=quantization
    )
    cfg = model.config
    processor = EmotionLlamaProcessor(load_tokenizer(cfg), cfg)
    gen: Any
    if vllm is not None:
        from emotion_llama.model.vllm_engine import VllmGenerator

        backend = vllm.after_load(model, backend)
        gen = VllmGenerator(
            model,
            processor,
            backend,
            task=spec.task,
            instruction=spec.instruction,
            max_new_tokens=max_new_tokens,
        )
    elif label_mode == "score":
        from emotion_llama.model.scoring import LabelScorer

        scorer = LabelScorer(model, processor, labels=spec.labels, instruction=spec.instruction)
        if compile:
            scorer.compile()

        def gen(inputs: Sequence[ClipInput]) -> list[str]:
            return [s.label for s in scorer(inputs)]

    else:
        static = {"cache_implementation": "static"} if compile else None
        gen = Generator(
            model,
            processor,
            task=spec.task,
            instruction=spec.instruction,
            max_new_tokens=max_new_tokens,
            generate_kwargs=static,
        )
    dims = {
        "local": cfg.features.local_dim,
        "temporal": cfg.features.temporal_dim,
        "audio": cfg.features.audio_dim,
    }

    def predict(clips: Sequence[Clip], data: Path) -> list[str]:
        inputs = []
        for c in clips:
            folder = clip_folder(data, c)
            src = find_frame_source(folder, c.name)
            if src is None:
                raise MediaError(f"{folder}: no first_frames/{c.name}.jpg|png nor video/{c.name}.mp4|avi")
            frame = read_frame(src, cfg.vision.frame if cfg.vision.frame in ("first", "middle") else "first")
            feats = open_store(folder, dims).read(c.name)
            inputs.append(ClipInput(c.subtitle if "text" in chosen else "", frame, feats, absent=absent))
        return gen(inputs)

    suffix = " (label scoring)" if label_mode == "score" else ""
    if tuple(chosen) != MODALITIES:
        suffix += f" (modalities {', '.join(chosen)})"
    if quantization is not None:  # the scores are of the quantized model: the report says so
        q = check_quantization(quantization)
        suffix += " (FP8 matmuls)" if q == "fp8" else f" ({q} LLM weights)"
    if vllm is not None:
        suffix += f" (vLLM engine: {backend.name})"
    if compile:
        suffix += " (compiled)"
    predict.model_name = f"emotion-llama:{Path(model_dir).name}{suffix}"  # type: ignore[attr-defined]
    return predict


def _vllm_before_load(vllm: VllmSpec | None, label_mode: str, quantization: str | None) -> Backend | None:
    """What ``vllm`` cannot be combined with, refused before any loading, then
    :meth:`VllmSpec.before_load` (``None``: no vLLM, or vLLM in this process, started later)."""
    from emotion_llama.model.quantize import flag_of

    if vllm is None:
        return None
    if label_mode == "score":
        raise EmotionLlamaError(
            "--labels score reads the model's label probabilities in this process: it needs --engine "
            "local (vLLM answers by greedy decoding)"
        )
    if quantization is not None:
        raise EmotionLlamaError(
            f"{flag_of(quantization)} quantizes the Hugging Face model; vLLM loads its own weights "
            "(its own quantization: `vllm serve ... --quantization`, fp8 among them)"
        )
    return vllm.before_load()
