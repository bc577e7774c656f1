"""The dataset builder's record, its JSON Schema, and the files a finished dataset is exported as.

One RECORD (a plain dict, see :data:`RECORD_SCHEMA`) per clip is the builder's single source of
truth; everything here is a view of a list of records:

- ``merr_coarse.json`` / ``merr_fine.json``: the MERR format (SPEC 5), a dict keyed by clip name whose
  text field is ``caption`` (coarse) or ``smp_reason_caption`` (fine), with the clue fields beside it;
- ``labels.txt``: the NCEV label list ``name frame_count emotion valence``;
- ``subtitles.csv``: ``name,sentence``;
- ``chat.jsonl``: chat-style training lines for trainers other than this project's.

Every writer is atomic (temporary file in the target folder, then ``os.replace``) so an interrupted
export never leaves a half-written file that a later run or trainer would read as complete.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from emotion_llama import files
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.prompts import REASON_INSTRUCTIONS

SCHEMA_ID = "emotion-llama-merr/2"

#: Keys the exporters read that are not part of the record schema: a caller that knows a clip's frame
#: count or valence may add them, and :func:`write_all` validates the record without them.
EXPORT_EXTRAS: tuple[str, ...] = ("n_frames", "valence")

_STR = {"type": "string"}
_STR_OR_NULL = {"type": ["string", "null"]}
_STR_LIST = {"type": "array", "items": _STR}
_AU_CODE = {"type": "string", "pattern": "^AU[0-9]+$"}
# A path inside the dataset folder: not absolute (POSIX or Windows drive) and no ``..`` segment, so
# the report and trainers can join it to the dataset root without escaping it.
_REL_PATH = {
    "type": ["string", "null"],
    "minLength": 1,
    "pattern": r"^(?![/\\])(?![A-Za-z]:)(?!(?:.*[/\\])?\.\.(?:[/\\]|$)).+$",
}

RECORD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://emotion-llama.local/schemas/merr-record-1.json",
    "title": "Emotion-LLaMA MERR-style dataset record",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "schema",
        "name",
        "source",
        "label",
        "label_source",
        "subtitle",
        "subtitle_source",
        "peak_index",
        "peak_time_s",
        "AU_list",
        "peak_AU_list",
        "au_intensities",
        "visual_expression",
        "visual_prior_list",
        "visual_objective",
        "audio_tone",
        "audio_prior_list",
        "prosody",
        "candidate_labels",
        "caption",
        "smp_reason_caption",
        "llm_label",
        "llm",
        "keep",
        "filter_reason",
        "missing",
        "peak_frame",
        "au_timeline_png",
        "eyes",
        "modalities",
        "conflict",
        "conflict_reason",
        "reasoning_source",
        "faithfulness",
        "rejected_reasoning",
        "model_answer",
    ],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        # The name becomes a file name (report cards) and a space-separated NCEV field, so no
        # whitespace and no path separators.
        "name": {"type": "string", "pattern": r"^[^\s/\\]+$"},
        "source": {"type": "string", "minLength": 1},
        "label": _STR_OR_NULL,
        # who decided the label: the user's list, one modality alone, their fusion, the LLM from the
        # clues, or the full model ("au" is the face's name in records of schema 1)
        "label_source": {"enum": ["user", "face", "voice", "words", "fusion", "llm", "model", "au", None]},
        "subtitle": _STR,
        "subtitle_source": _STR_OR_NULL,
        "peak_index": {"type": ["integer", "null"], "minimum": 0},
        "peak_time_s": {"type": ["number", "null"], "minimum": 0},
        "AU_list": {"type": "array", "items": _AU_CODE},
        "peak_AU_list": {"type": "array", "items": _AU_CODE},
        "au_intensities": {
            "type": "object",
            "propertyNames": _AU_CODE,
            "additionalProperties": {"type": "number", "minimum": 0, "maximum": 5},
        },
        "visual_expression": _STR_OR_NULL,
        "visual_prior_list": _STR_LIST,
        "visual_objective": _STR_OR_NULL,
        "audio_tone": _STR_OR_NULL,
        "audio_prior_list": _STR_LIST,
        "prosody": {"type": ["object", "null"]},
        "candidate_labels": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["label", "share"],
                # share = the fraction of the label's AUs that are present (SPEC 6 step 4).
                "properties": {"label": _STR, "share": {"type": "number", "minimum": 0, "maximum": 1}},
            },
        },
        "caption": _STR,
        "smp_reason_caption": _STR_OR_NULL,
        "llm_label": _STR_OR_NULL,
        "llm": _STR_OR_NULL,
        "keep": {"type": "boolean"},
        "filter_reason": _STR_OR_NULL,
        "missing": _STR_LIST,
        "peak_frame": _REL_PATH,
        "au_timeline_png": _REL_PATH,
        # blinks and lasting closures of the main face (perception.action_units.eye_events)
        "eyes": {"type": ["object", "null"]},
        # each modality's own vote: {"face": {...}, "voice": {...}, "words": {...}} (null: absent)
        "modalities": {
            "type": "object",
            "additionalProperties": False,
            "properties": {m: {"type": ["object", "null"]} for m in ("face", "voice", "words")},
        },
        "conflict": {"type": "boolean"},
        "conflict_reason": _STR_OR_NULL,
        # llm: the first answer passed the faithfulness check; llm-retry: the second did;
        # grounded: both failed and the text was written from the clues; null: no reasoning
        "reasoning_source": {"enum": ["llm", "llm-retry", "grounded", "model", None]},
        "faithfulness": {"type": ["object", "null"]},
        "rejected_reasoning": _STR_LIST,
        "model_answer": _STR_OR_NULL,
    },
}

Record = Mapping[str, Any]
MerrKind = Literal["coarse", "fine"]

#: The text field of each MERR set (SPEC 5).
MERR_TEXT_FIELD: dict[str, str] = {"coarse": "caption", "fine": "smp_reason_caption"}


class RecordError(EmotionLlamaError, ValueError):
    """A dataset record does not match :data:`RECORD_SCHEMA`, or records cannot be exported together."""


def _clip_name(rec: object) -> str:
    if isinstance(rec, Mapping) and isinstance(rec.get("name"), str) and rec["name"]:
        return str(rec["name"])
    return "<unnamed clip>"


_VALIDATOR: Any = None


def _validator() -> Any:
    # Imported and built lazily: jsonschema is only needed when records are checked, and building the
    # validator (format checkers, regex compilation) once keeps validating 70k records cheap.
    global _VALIDATOR
    if _VALIDATOR is None:
        import jsonschema

        cls = jsonschema.validators.validator_for(RECORD_SCHEMA)
        cls.check_schema(RECORD_SCHEMA)
        _VALIDATOR = cls(RECORD_SCHEMA)
    return _VALIDATOR


def validate_record(rec: Record) -> None:
    """Raise :class:`RecordError` naming the clip and every failing path (``$.a.b``) with its message."""
    if not isinstance(rec, Mapping):
        raise RecordError(f"record must be a JSON object (dict), got {type(rec).__name__}")
    errors = sorted(_validator().iter_errors(dict(rec)), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    problems = []
    for err in errors:
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        problems.append(f"{path}: {err.message}")
    raise RecordError(f"record {_clip_name(rec)!r} is invalid: " + "; ".join(problems))


# -- atomic writing --------------------------------------------------------------------------------
def atomic_write_text(path: Path, text: str, newline: str | None = "\n") -> Path:
    """``text`` into ``path`` atomically (``newline`` as :func:`open` takes it: ``"\n"`` and ``""``
    write the text as it is, ``"\r\n"`` turns each ``"\n"`` into ``"\r\n"``)."""
    if newline not in (None, "", "\n"):
        text = text.replace("\n", newline)
    return files.atomic_write_text(path, text)


def _unique(records: Iterable[Record]) -> list[Record]:
    """The records as a list, refusing duplicate names: every format is keyed by name, and a
    duplicate would silently overwrite (MERR JSON) or be ambiguous (label lists)."""
    out: list[Record] = []
    seen: set[str] = set()
    for rec in records:
        name = rec.get("name")
        if not isinstance(name, str) or not name:
            raise RecordError(f"a record has no clip name (source {rec.get('source')!r})")
        if name in seen:
            raise RecordError(f"clip name {name!r} appears in more than one record")
        seen.add(name)
        out.append(rec)
    return out


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


# -- MERR JSON -------------------------------------------------------------------------------------
def merr_entries(records: Iterable[Record], kind: MerrKind = "coarse") -> dict[str, dict[str, Any]]:
    """The MERR dict: coarse = every record with a caption; fine = kept records with a reasoning."""
    if kind not in MERR_TEXT_FIELD:
        raise RecordError(f"unknown MERR kind {kind!r}; choose 'coarse' or 'fine'")
    field = MERR_TEXT_FIELD[kind]
    out: dict[str, dict[str, Any]] = {}
    for rec in _unique(records):
        text = _text(rec.get(field))
        if not text or (kind == "fine" and not rec.get("keep")):
            continue
        out[rec["name"]] = {
            "AU_list": list(rec.get("AU_list") or []),
            "visual_prior_list": list(rec.get("visual_prior_list") or []),
            "audio_prior_list": list(rec.get("audio_prior_list") or []),
            "peak_index": rec.get("peak_index"),
            "peak_AU_list": list(rec.get("peak_AU_list") or []),
            "pseu_emotion": rec.get("label"),
            "text": rec.get("subtitle") or "",
            field: text,
        }
    return out


def write_merr_json(records: Iterable[Record], path: str | Path, kind: MerrKind = "coarse") -> Path:
    entries = merr_entries(records, kind)
    return atomic_write_text(Path(path), json.dumps(entries, indent=2, ensure_ascii=False) + "\n")


# -- NCEV label list -------------------------------------------------------------------------------
def _is_number(x: object) -> bool:
    # bool is an int subclass; NaN/inf would write tokens that readers cannot use as numbers.
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _ncev_line(rec: Record) -> str:
    name, label = rec["name"], str(rec["label"]).strip()
    if not label or any(c.isspace() for c in label):
        # The format is space-separated: a label with whitespace would shift the valence column.
        raise RecordError(f"record {name!r}: label {label!r} cannot be written to a space-separated list")
    # Neither the frame count nor a valence is part of the record schema (see EXPORT_EXTRAS): a
    # record without them gets frame_count 0 and valence 0.0, which readers treat as "unknown frame
    # count" and "neutral valence" (MER2023's -10 placeholder would mean "no valence" instead).
    n_frames, valence = rec.get("n_frames"), rec.get("valence")
    frames = int(n_frames) if _is_number(n_frames) and n_frames >= 0 else 0
    v = float(valence) if _is_number(valence) else 0.0
    return f"{name} {frames} {label} {v!r}"


def write_ncev(records: Iterable[Record], path: str | Path) -> Path:
    """``name frame_count emotion valence`` for every labelled record (SPEC 5)."""
    lines = [_ncev_line(rec) for rec in _unique(records) if _text(rec.get("label"))]
    return atomic_write_text(Path(path), "".join(line + "\n" for line in lines))


# -- subtitles -------------------------------------------------------------------------------------
def write_subtitles(records: Iterable[Record], path: str | Path) -> Path:
    """CSV ``name,sentence`` for every record (an empty sentence where no speech was found)."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(["name", "sentence"])
    for rec in _unique(records):
        writer.writerow([rec["name"], rec.get("subtitle") or ""])
    # newline="" so the quoted newlines inside a sentence are written exactly as csv produced them.
    return atomic_write_text(Path(path), buf.getvalue(), newline="")


# -- chat JSONL ------------------------------------------------------------------------------------
def chat_user_content(subtitle: str, instruction: str, video_token: str = "<video>") -> str:
    said = subtitle.strip()
    speech = f"The person in the video says: {said}" if said else "The person in the video says nothing."
    # LLaVA / LLaMA-Factory-style trainers find where the clip goes by a tag in the user turn.
    head = f"{video_token}\n" if video_token else ""
    return f"{head}{speech}\n{instruction.strip()}"


def chat_rows(
    records: Iterable[Record], instruction: str, video_token: str = "<video>"
) -> list[dict[str, Any]]:
    rows = []
    for rec in _unique(records):
        reasoning = _text(rec.get("smp_reason_caption"))
        if not rec.get("keep") or not reasoning:
            continue
        user = chat_user_content(rec.get("subtitle") or "", instruction, video_token)
        rows.append(
            {
                "id": rec["name"],
                "video": rec.get("source"),
                "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reasoning}],
                "label": rec.get("label"),
            }
        )
    return rows


def write_chat_jsonl(
    records: Iterable[Record], path: str | Path, instruction: str, video_token: str = "<video>"
) -> Path:
    """One chat line per kept record with a reasoning: user = subtitle + instruction, assistant = it."""
    if not instruction.strip():
        raise RecordError("write_chat_jsonl needs a non-empty instruction")
    rows = chat_rows(records, instruction, video_token)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return atomic_write_text(Path(path), text)


# -- everything ------------------------------------------------------------------------------------
EXPORT_FILES: tuple[str, ...] = (
    "merr_coarse.json",
    "merr_fine.json",
    "labels.txt",
    "subtitles.csv",
    "chat.jsonl",
)


def write_all(
    records: Sequence[Record],
    out_dir: str | Path,
    *,
    instruction: str = REASON_INSTRUCTIONS[0],
    validate: bool = True,
) -> list[Path]:
    """Write every export file of :data:`EXPORT_FILES` into ``out_dir``; returns their paths in that order.

    Records are validated first (without :data:`EXPORT_EXTRAS`) so that no file is written from a
    list that contains a malformed record.
    """
    records = _unique(records)
    if validate:
        for rec in records:
            validate_record({k: v for k, v in rec.items() if k not in EXPORT_EXTRAS})
    out = Path(out_dir)
    coarse, fine, labels, subs, chat = (out / name for name in EXPORT_FILES)
    return [
        write_merr_json(records, coarse, "coarse"),
        write_merr_json(records, fine, "fine"),
        write_ncev(records, labels),
        write_subtitles(records, subs),
        write_chat_jsonl(records, chat, instruction),
    ]
