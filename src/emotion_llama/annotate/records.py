"""A clip's record: built from what perception found, then updated by each stage that answers it.

The record is a plain dict (the schema is :data:`emotion_llama.annotate.export.RECORD_SCHEMA`);
the functions that build and update one live here, whichever product runs them: ``annotate`` (the
folder run, :mod:`emotion_llama.annotate.pipeline`, which adds only its files' paths) and the
predictor (:mod:`emotion_llama.serve`).

- :func:`clue_record` builds it (no LLM); :func:`add_visual_objective` / :func:`describe_peak`
  add a vision-language description;
- :func:`reason_records` fills the label where missing (:func:`infer_missing_labels`) and the fine
  reasoning, checked for faithfulness (:func:`grounded_answers`, :func:`answer_problems`) and for
  consistency (:func:`apply_reasoning`);
- :func:`answer_question` answers a user's question about each clip, checked against the clip's
  evidence (:func:`check_answer`);
- :func:`apply_model_answer` writes what the full Emotion-LLaMA model answered;
- :func:`filter_records` marks near-duplicates (and, if asked, clue-grounded reasoning) as dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from emotion_llama.prompts import LABELS

SCHEMA = "emotion-llama-merr/2"


# -- building the record ----------------------------------------------------------------------------
def clue_record(
    perception: Any,
    *,
    labels: dict[str, str] | None = None,
    au_threshold: float = 0.8,
    au_min_share: float = 0.5,
    label_set: tuple[str, ...] = LABELS,
    clue_language: str = "en",
) -> dict[str, Any]:
    """The record of one clip from what perception found (no LLM involved): the clues, each
    modality's vote (face, voice, words), their fusion into a label and a conflict flag.
    ``clue_language``: the language of the coarse caption (``en``, ``zh``: see
    :mod:`emotion_llama.annotate.clue_text_zh`); the clue fields stay English."""
    from emotion_llama.annotate.clue_text_zh import check_clue_language, record_caption
    from emotion_llama.annotate.clues import (
        candidate_labels,
        coarse_caption,
        face_vote,
        frequent_aus,
        in_episodes,
    )
    from emotion_llama.annotate.fusion import fuse, voice_vote, words_vote
    from emotion_llama.perception.action_units import (
        au_baseline,
        cry_episodes,
        expressed_aus,
        expression_phrases,
        eye_events,
    )
    from emotion_llama.perception.prosody import describe_tone, measure_prosody

    check_clue_language(clue_language)
    p = perception
    missing = list(p.missing)
    tl = p.timeline
    intensities: dict[str, float] = {}
    if p.peak is not None:
        row = tl.intensity[p.peak]
        intensities = {n: round(float(v), 3) for n, v in zip(tl.names, row, strict=True)}
    baseline = au_baseline(tl) if p.peak is not None else None
    phrases = expression_phrases(intensities, baseline=baseline) if intensities else []
    eyes = eye_events(tl) if p.peak is not None else None
    eye_phrases = eyes.phrases() if eyes is not None else []
    words = p.transcript.words if p.transcript is not None and p.transcript.words else None
    prosody = measure_prosody(p.audio, words=words) if p.audio is not None else None
    tone, tone_words = describe_tone(prosody)
    text = p.transcript.text.strip() if p.transcript is not None else ""
    if p.audio is not None and prosody is None and not text:
        missing.append("speech: no voiced speech in the audio")
    peak_cry = p.peak is not None and in_episodes(float(tl.times[p.peak]), cry_episodes(tl, au_threshold))
    candidates = (
        candidate_labels(intensities, au_threshold, au_min_share, cry=peak_cry) if intensities else []
    )
    face = face_vote(tl, label_set, au_threshold, au_min_share) if p.peak is not None else None
    voice = voice_vote(prosody, label_set)
    said = words_vote(text, label_set)
    fusion = fuse(face, voice, said, label_set)
    user_label = (labels or {}).get(p.name)
    if user_label:
        label, source = user_label, "user"
    else:
        label, source = fusion.label, fusion.label_source
    visual = [*phrases, *eye_phrases]
    expression = ", ".join(visual) if visual else None
    face_dict = None
    if face is not None:
        face_dict = face.to_dict()
        if not face_dict["evidence"]:
            face_dict["evidence"] = phrases
    record = {
        "schema": SCHEMA,
        "name": p.name,
        "source": p.source,
        "label": label,
        "label_source": source,
        "subtitle": text,
        "subtitle_source": p.transcript.source if p.transcript is not None else None,
        "peak_index": p.peak,
        "peak_time_s": p.peak_time,
        "AU_list": frequent_aus(tl) if p.peak is not None else [],
        "peak_AU_list": expressed_aus(intensities, baseline) if intensities else [],
        "au_intensities": intensities,
        "visual_expression": expression,
        "visual_prior_list": visual,
        "visual_objective": None,  # no vision-language describer configured: absent, never invented
        "audio_tone": tone,
        "audio_prior_list": tone_words,
        "prosody": prosody.to_dict() if prosody is not None else None,
        "candidate_labels": [{"label": lab, "share": round(float(s), 3)} for lab, s in candidates],
        "caption": coarse_caption(None, expression, tone, text or None),
        "smp_reason_caption": None,
        "llm_label": None,
        "llm": None,
        "keep": True,
        "filter_reason": None,
        "missing": missing,
        "peak_frame": None,
        "au_timeline_png": None,
        "eyes": eyes.to_dict() if eyes is not None else None,
        "modalities": {
            "face": face_dict,
            "voice": voice.to_dict() if voice is not None else None,
            "words": said.to_dict() if said is not None else None,
        },
        "conflict": fusion.conflict,
        "conflict_reason": fusion.conflict_reason,
        "reasoning_source": None,
        "faithfulness": None,
        "rejected_reasoning": [],
        "model_answer": None,
    }
    if clue_language != "en":
        record["caption"] = record_caption(record, clue_language)
    return record


def add_visual_objective(
    record: dict[str, Any], description: str | None, source: str, *, clue_language: str = "en"
) -> None:
    """Put a vision-language description into the record and its coarse caption (written in
    ``clue_language``; the description itself is inserted as it is)."""
    from emotion_llama.annotate.clue_text_zh import record_caption
    from emotion_llama.annotate.clues import coarse_caption

    if not description:
        record["missing"].append(f"visual objective: {source} gave no description")
        return
    record["visual_objective"] = description
    if clue_language != "en":
        record["caption"] = record_caption(record, clue_language)
        return
    record["caption"] = coarse_caption(
        description, record["visual_expression"], record["audio_tone"], record["subtitle"] or None
    )


def describe_peak(
    record: dict[str, Any], perception: Any, describer: Any | None, *, clue_language: str = "en"
) -> bool:
    """The describer's view of the clip's peak frame into the record (:func:`add_visual_objective`);
    ``False`` (nothing asked) without a describer or without a face."""
    if describer is None or perception.peak_frame is None:
        return False
    add_visual_objective(
        record, describer.describe([perception.peak_frame])[0], describer.name, clue_language=clue_language
    )
    return True


# -- the clue pipeline's LLM stage -------------------------------------------------------------------
def infer_missing_labels(
    records: list[dict[str, Any]], llm: Any, label_set: tuple[str, ...] = LABELS
) -> None:
    """Ask the LLM (one batch) for the label of every record that has none yet (no user label, no
    modality voted); ``label_source`` says ``llm`` where it named one."""
    from emotion_llama.annotate.clues import clue_text
    from emotion_llama.annotate.reasoning import infer_labels

    need = [i for i, r in enumerate(records) if not r["label"]]
    if not need:
        return
    guessed = infer_labels(llm, [clue_text(records[i]) for i in need], list(label_set))
    for i, lab in zip(need, guessed, strict=True):
        records[i]["label"] = lab
        records[i]["label_source"] = "llm" if lab else None


def apply_reasoning(
    record: dict[str, Any],
    answer: str,
    llm_name: str,
    label_set: tuple[str, ...] = LABELS,
    *,
    source: str | None = "llm",
) -> None:
    """Put one fine-reasoning answer into its record: the text, the label it names, the LLM, who
    wrote it (``source``), and the consistency check against the record's label and AU candidates."""
    from emotion_llama.annotate.filters import check_consistency
    from emotion_llama.prompts import parse_label_robust

    record["smp_reason_caption"] = answer.strip() or None
    record["llm_label"] = parse_label_robust(answer, label_set)
    record["llm"] = llm_name
    record["reasoning_source"] = source if answer.strip() else None
    candidates = [(c["label"], c["share"]) for c in record["candidate_labels"]]
    reason = check_consistency(record["label"], candidates, answer, label_set)
    if reason:
        record["keep"], record["filter_reason"] = False, reason


_PERCENT = re.compile(r"\d+(?:\.\d+)?\s*%")


def answer_problems(text: str, record: dict[str, Any], label_set: tuple[str, ...] = LABELS) -> list[str]:
    """What an answer gets wrong beyond the evidence rules: it concludes another label than the
    record's (the last label it names, negations skipped), or it cites a percentage no clue gives
    (weak models invent "38% of its AUs")."""
    from emotion_llama.annotate.clues import clue_text
    from emotion_llama.prompts import parse_label_robust

    out = []
    label = record.get("label")
    concluded = parse_label_robust(text, label_set)
    if label and concluded and concluded != label:
        out.append(f"concludes '{concluded}' but the label is '{label}'")
    given = {m.replace(" ", "") for m in _PERCENT.findall(clue_text(record))}
    invented = sorted({m.replace(" ", "") for m in _PERCENT.findall(text)} - given)
    if invented:
        out.append(f"cites {', '.join(invented)}, which no clue gives")
    return out


def grounded_answers(
    records: list[dict[str, Any]],
    answers: list[str | None],
    retry: Callable[[list[int], list[str], list[list[str]]], list[str]] | None,
    *,
    retries: int = 1,
    label_set: tuple[str, ...] = LABELS,
) -> list[tuple[str, str]]:
    """The faithfulness check (:mod:`emotion_llama.annotate.faithfulness`, plus
    :func:`answer_problems`) on each answer. One that
    names evidence the clip does not support is asked again, up to ``retries`` times, through
    ``retry(indices, previous_answers, problems) -> new answers``; if it still fails it is replaced by
    an explanation written from the clues alone (:func:`grounded_reasoning`). Returns
    ``(text, source)`` per record, ``source`` being ``llm``, ``llm-retry`` or ``grounded``; ``("", "")``
    where the answer is ``None`` (nothing was asked). Each answered record gets ``faithfulness``
    (``ok``, ``source``, ``attempts``, the first answer's problems) and ``rejected_reasoning``."""
    from emotion_llama.annotate.faithfulness import check_reasoning, evidence_from_record, grounded_reasoning

    evidence = [evidence_from_record(r) for r in records]

    def problems_of(i: int, text: str) -> list[str]:
        return [*check_reasoning(text, evidence[i]).problems, *answer_problems(text, records[i], label_set)]

    result: list[tuple[str, str]] = [("", "")] * len(records)
    current = {i: a for i, a in enumerate(answers) if a is not None}
    attempts = dict.fromkeys(current, 0)
    first_problems: dict[int, list[str]] = {}
    rejected: dict[int, list[str]] = {i: [] for i in current}
    todo = list(current)
    round_ = 0
    while todo:
        failing: list[tuple[int, list[str]]] = []
        for i in todo:
            found = problems_of(i, current[i])
            attempts[i] += 1
            first_problems.setdefault(i, found)
            if not found:
                result[i] = (current[i].strip(), "llm" if round_ == 0 else "llm-retry")
            else:
                rejected[i].append(current[i].strip())
                failing.append((i, found))
        if not failing:
            break
        if round_ >= retries or retry is None:
            for i, _ in failing:
                result[i] = (grounded_reasoning(evidence[i], records[i].get("label")), "grounded")
            break
        round_ += 1
        idx = [i for i, _ in failing]
        for i, a in zip(idx, retry(idx, [current[i] for i in idx], [pr for _, pr in failing]), strict=True):
            current[i] = a
        todo = idx
    for i in current:
        text, source = result[i]
        records[i]["faithfulness"] = {
            "ok": not problems_of(i, text),
            "source": source,
            "attempts": attempts[i],
            "first_answer_ok": not first_problems[i],
            "first_answer_problems": first_problems[i],
        }
        records[i]["rejected_reasoning"] = [t for t in rejected[i] if t]
    return result


def reason_records(
    records: list[dict[str, Any]],
    llm: Any,
    label_set: tuple[str, ...] = LABELS,
    *,
    max_new_tokens: int | None = None,
    retries: int = 1,
) -> None:
    """Fill label (LLM where still missing), fine reasoning (checked for faithfulness, retried, else
    written from the clues), LLM label and the consistency check."""
    from emotion_llama.annotate.clues import clue_text
    from emotion_llama.annotate.reasoning import fine_reasoning, reasoning_params, retry_conversation

    params = reasoning_params(max_new_tokens)
    infer_missing_labels(records, llm, label_set)
    todo = [i for i, r in enumerate(records) if r["label"]]
    texts = [clue_text(records[i]) for i in todo]
    labels = [str(records[i]["label"]) for i in todo]
    answers = fine_reasoning(llm, texts, labels, params) if todo else []

    def retry(idx: list[int], previous: list[str], problems: list[list[str]]) -> list[str]:
        conversations = [
            retry_conversation(texts[k], labels[k], prev, probs)
            for k, prev, probs in zip(idx, previous, problems, strict=True)
        ]
        return [a.strip() for a in llm.chat_many(conversations, params)]

    asked = [a if t.strip() else None for a, t in zip(answers, texts, strict=True)]
    checked = grounded_answers([records[i] for i in todo], asked, retry, retries=retries, label_set=label_set)
    for (text, source), i in zip(checked, todo, strict=True):
        if source:
            apply_reasoning(records[i], text, llm.name, label_set, source=source)
    for r in records:
        if not r["label"]:
            r["keep"], r["filter_reason"] = (
                False,
                "no label: none given, no modality voted, the LLM named none",
            )
        elif r["smp_reason_caption"] is None and r["keep"]:
            r["keep"], r["filter_reason"] = False, "the LLM gave no reasoning"


# -- a user's question about the clip -------------------------------------------------------------------
def check_answer(record: dict[str, Any], answer: str) -> str | None:
    """One answer to a user's question, checked like the reasoning: the verdict goes into the
    record's ``answer_faithfulness``; an answer naming evidence the clip does not support is replaced
    by an explanation written from the clues alone. ``None`` for an empty answer."""
    from emotion_llama.annotate.faithfulness import check_reasoning, evidence_from_record, grounded_reasoning

    evidence = evidence_from_record(record)
    verdict = check_reasoning(answer, evidence)
    record["answer_faithfulness"] = verdict.to_dict()
    if verdict.ok:
        return answer.strip() or None
    return "From the clues alone: " + grounded_reasoning(evidence, record.get("label"))


def answer_question(
    records: list[dict[str, Any]], llm: Any, question: str, *, max_new_tokens: int | None = None
) -> list[str | None]:
    """The LLM's answers (one batch) to ``question`` about each clip, each checked by
    :func:`check_answer`; ``None`` for a clip without clues (nothing to ask about)."""
    from emotion_llama.annotate.clues import clue_text
    from emotion_llama.annotate.reasoning import question_conversation, reasoning_params

    answers: list[str | None] = [None] * len(records)
    todo = [i for i, r in enumerate(records) if clue_text(r).strip()]
    if not todo:
        return answers
    got = llm.chat_many(
        [question_conversation(clue_text(records[i]), question) for i in todo],
        reasoning_params(max_new_tokens),
    )
    for i, a in zip(todo, got, strict=True):
        answers[i] = check_answer(records[i], a)
    return answers


# -- the full model's answer --------------------------------------------------------------------------
def apply_model_answer(
    record: dict[str, Any],
    label: str | None,
    reasoning: str | None,
    *,
    llm_name: str,
    model_answer: str,
    question: str | None = None,
) -> None:
    """Put what the full Emotion-LLaMA model answered into its record: the label (its source is
    ``model``), the raw answer to the emotion prompt, and the reasoning unless it answers a user's
    ``question``. The reasoning is checked for faithfulness and the verdict reported, not acted on:
    the text is the model's answer."""
    from emotion_llama.annotate.faithfulness import check_reasoning, evidence_from_record

    record["llm"] = llm_name
    record["llm_label"] = label
    record["label"], record["label_source"] = label, "model"
    if not question:
        record["smp_reason_caption"] = reasoning or None
        record["reasoning_source"] = "model" if reasoning else None
    if reasoning:
        verdict = check_reasoning(reasoning, evidence_from_record(record))
        record["faithfulness"] = {**verdict.to_dict(), "source": "model"}
    record["model_answer"] = model_answer


# -- the dataset's filters ----------------------------------------------------------------------------
def filter_records(
    records: list[dict[str, Any]], duplicate_threshold: float = 0.9, *, drop_grounded: bool = False
) -> None:
    """Mark as dropped (``keep``/``filter_reason``) each record whose text nearly repeats an earlier
    one's, and with ``drop_grounded`` each whose reasoning had to be written from the clues."""
    from emotion_llama.annotate.filters import near_duplicates

    dups = near_duplicates([r["smp_reason_caption"] or r["caption"] for r in records], duplicate_threshold)
    for r, d in zip(records, dups, strict=True):
        if d is not None and r["keep"]:
            r["keep"], r["filter_reason"] = False, f"near-duplicate of {records[d]['name']}"
    for r in records:
        if drop_grounded and r["keep"] and r.get("reasoning_source") == "grounded":
            r["keep"] = False
            r["filter_reason"] = (
                "unfaithful reasoning: every LLM answer named evidence the clip does not support"
            )
