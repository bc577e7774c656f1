"""A synthetic benchmark folder whose labels can be recovered from features, frame and subtitle.

Training code needs data on which learning is *possible* before anyone pays for real features:
if a model cannot fit this set, the bug is in the training code, not in the data. Each clip gets
a label; its three feature vectors point along a fixed random direction per (label, modality)
with a random magnitude plus noise, its frame is a colour chosen by the label plus noise, and its
subtitle contains words typical of the label among neutral filler words. The folder has the
project's dataset format (``emotion_llama.data.formats.folder``, SPEC 5)::

    labels.txt          NCEV lines: name frame_count label valence
    subtitles.csv       name,sentence
    merr_coarse.json    {name: {"caption", "pseu_emotion", "text"}}       (stage 1, task reason)
    merr_fine.json      {name: {"smp_reason_caption", "pseu_emotion", "text"}} (stage 2)
    split.json          {"train": [...], "val": [...], "test": [...]}
    + the feature store (native ``clips/`` + ``frames/``, or the authors' folders + ``first_frames/``)

Everything is drawn from ``numpy.random.default_rng`` seeded by ``seed``, so a seed gives the
same bytes for the vectors and texts on every run.
"""

from __future__ import annotations

import colorsys
import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.encoders.store import MODALITIES, ClipFeatures, atomic_write_bytes, open_store
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.prompts import LABELS, MER_LABELS


class SynthError(EmotionLlamaError, ValueError):
    """The synthetic dataset cannot be made with the arguments given."""


#: Fractions of clips in the train and val splits; the rest is test.
SPLIT_FRACTIONS = (0.70, 0.15)
#: Per-dimension noise on the feature vectors (the signal has norm 2..4 per modality).
FEATURE_NOISE = 0.3
#: Pixel noise (standard deviation, 0-255 scale) on the frame colour.
FRAME_NOISE = 20.0

#: Sentences that give the label away, several per label so the text is not one fixed string.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "neutral": (
        "the meeting is at three in the afternoon",
        "i will take the bus to the office",
        "the report has four pages",
        "we moved the table to the other room",
    ),
    "angry": (
        "how dare you lie to me again",
        "i am sick of your excuses",
        "get out of my room right now",
        "this is completely unacceptable",
    ),
    "happy": (
        "what a wonderful day",
        "i am so glad we finally did it",
        "this is the best news ever",
        "i love this so much",
    ),
    "sad": (
        "i miss her every single day",
        "nothing will ever be the same again",
        "i lost everything i cared about",
        "it hurts so much to say goodbye",
    ),
    "worried": (
        "what if something goes wrong tomorrow",
        "i hope he gets home safely",
        "i cannot stop thinking about the test results",
        "are you sure everything will be fine",
    ),
    "surprise": (
        "wow i never expected to see you here",
        "really you did that all by yourself",
        "no way that cannot be true",
        "oh my goodness look at this",
    ),
    "fear": (
        "please do not hurt me",
        "someone is following us in the dark",
        "i heard a noise behind the door",
        "we have to run before it comes back",
    ),
    "contempt": (
        "you call that work how pathetic",
        "people like you never learn anything",
        "as if your opinion ever mattered",
        "that is beneath me",
    ),
    "doubt": (
        "are you sure that is what happened",
        "i do not think that story adds up",
        "maybe but i am not convinced",
        "that sounds hard to believe",
    ),
}
#: Words with no emotional content mixed around the sentence, so the label words are not alone.
FILLERS: tuple[str, ...] = ("well", "so", "you know", "i mean", "okay", "actually", "listen", "today")
#: Clues named by the reasoning texts (a face cue, a voice cue), per label.
CLUES: dict[str, tuple[str, str]] = {
    "neutral": ("a relaxed face with no marked expression", "an even, steady voice"),
    "angry": ("lowered, drawn-together brows and tightened lips", "a loud, sharp voice"),
    "happy": ("raised cheeks and a broad smile", "a bright, lively voice"),
    "sad": ("drooping mouth corners and raised inner brows", "a low, slow voice"),
    "worried": ("raised inner brows and a tense mouth", "a hesitant, uneven voice"),
    "surprise": ("raised brows and widened eyes with a dropped jaw", "a sudden rise in pitch"),
    "fear": ("stretched lips and wide-open eyes", "a trembling, high voice"),
    "contempt": ("one lip corner raised in a sneer", "a cold, dismissive voice"),
    "doubt": ("narrowed eyes and a tilted head", "a questioning, rising intonation"),
}
#: Typical valence per label (MER2023-style NCEV values lie in [-1, 1]).
VALENCE: dict[str, float] = {
    "neutral": 0.0,
    "angry": -0.7,
    "happy": 0.7,
    "sad": -0.6,
    "worried": -0.4,
    "surprise": 0.3,
    "fear": -0.6,
    "contempt": -0.5,
    "doubt": -0.2,
}


def label_colour(label: str) -> tuple[int, int, int]:
    """The frame colour of ``label``: hues spread over the nine labels of LABELS, so the colour
    of a label does not depend on which subset of labels a dataset uses."""
    i = LABELS.index(label) if label in LABELS else len(LABELS)
    r, g, b = colorsys.hsv_to_rgb(i / (len(LABELS) + 1), 0.8, 0.85)
    return round(r * 255), round(g * 255), round(b * 255)


def make_synthetic_dataset(
    out: str | Path,
    *,
    n: int,
    config: EmotionLlamaConfig,
    seed: int = 0,
    labels: tuple[str, ...] = MER_LABELS,
    layout: str = "native",
) -> list[dict[str, Any]]:
    """Write ``n`` synthetic clips to ``out`` (see the module docstring) and return one dict per
    clip, in name order: name, label, split, subtitle, caption, reason, valence, frame_count."""
    if n < 1:
        raise SynthError(f"n must be at least 1, got {n}")
    if not labels:
        raise SynthError("labels is empty")
    unknown = [lab for lab in labels if lab not in TEMPLATES]
    if unknown:
        raise SynthError(
            f"no synthetic templates for label(s) {', '.join(unknown)}; known: {', '.join(LABELS)}"
        )
    if len(set(labels)) != len(labels):
        raise SynthError(f"labels has duplicates: {labels}")

    out = Path(out)
    f = config.features
    dims = {"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim}
    store = open_store(out, dims, layout)
    # Recorded so that a second run with other settings into the same folder is refused by the
    # store instead of mixing two datasets.
    store.set_info(source="synthetic", seed=seed, labels=list(labels), dims=dims)

    # Separate streams: the class directions must not change when n changes.
    dir_rng = np.random.default_rng([seed, 0])
    clip_rng = np.random.default_rng([seed, 1])
    directions = {(lab, m): _unit(dir_rng.standard_normal(dims[m])) for lab in labels for m in MODALITIES}

    # Position k in a random order gets label k % L and split by k: every split then holds the
    # labels in near-equal numbers, while names (by clip index) do not reveal the label.
    order = clip_rng.permutation(n)
    n_train = round(SPLIT_FRACTIONS[0] * n)
    n_val = round(SPLIT_FRACTIONS[1] * n)
    size = config.vision.image_size

    clips: list[dict[str, Any]] = []
    for k, idx in enumerate(order):
        name = f"synth_{int(idx):05d}"
        label = labels[k % len(labels)]
        split = "train" if k < n_train else "val" if k < n_train + n_val else "test"
        feats = {
            m: (
                directions[label, m] * clip_rng.uniform(2.0, 4.0)
                + clip_rng.normal(0.0, FEATURE_NOISE, dims[m])
            )
            for m in MODALITIES
        }
        frame = _frame(label, size, clip_rng)
        subtitle = _subtitle(label, clip_rng)
        face, voice = CLUES[label]
        caption = (
            f"In the video, the person shows {face} and speaks with {voice}. "
            f'They say: "{subtitle}". These clues suggest the emotion is {label}.'
        )
        reason = (
            f"The facial expression shows {face}, which is a typical visual cue of {label}. "
            f"The audio carries {voice}. "
            f'The words "{subtitle}" express the same feeling. '
            f"Integrating the visual, acoustic and textual clues, the person's emotional state is {label}."
        )
        valence = float(np.clip(VALENCE[label] + clip_rng.normal(0.0, 0.1), -1.0, 1.0))
        frame_count = int(clip_rng.integers(16, 65))
        store.write(
            name,
            ClipFeatures(**{m: feats[m].astype(np.float32) for m in MODALITIES}),
            frame=frame,
            source="synthetic",
        )
        clips.append(
            {
                "name": name,
                "label": label,
                "split": split,
                "subtitle": subtitle,
                "caption": caption,
                "reason": reason,
                "valence": round(valence, 6),
                "frame_count": frame_count,
            }
        )

    clips.sort(key=lambda c: c["name"])
    _write_text(
        out / "labels.txt",
        "".join(f"{c['name']} {c['frame_count']} {c['label']} {c['valence']:.6f}\n" for c in clips),
    )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["name", "sentence"])
    writer.writerows([c["name"], c["subtitle"]] for c in clips)
    _write_text(out / "subtitles.csv", buf.getvalue())
    _write_json(
        out / "merr_coarse.json",
        {
            c["name"]: {"caption": c["caption"], "pseu_emotion": c["label"], "text": c["subtitle"]}
            for c in clips
        },
    )
    _write_json(
        out / "merr_fine.json",
        {
            c["name"]: {"smp_reason_caption": c["reason"], "pseu_emotion": c["label"], "text": c["subtitle"]}
            for c in clips
        },
    )
    _write_json(
        out / "split.json",
        {s: [c["name"] for c in clips if c["split"] == s] for s in ("train", "val", "test")},
    )
    return clips


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _frame(label: str, size: int, rng: np.random.Generator) -> np.ndarray:
    base = np.array(label_colour(label), dtype=np.float64)
    img = base + rng.normal(0.0, FRAME_NOISE, (size, size, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _subtitle(label: str, rng: np.random.Generator) -> str:
    sentence = TEMPLATES[label][int(rng.integers(len(TEMPLATES[label])))]
    # Filler before, after, both or neither: the label words move around within the text.
    before = FILLERS[int(rng.integers(len(FILLERS)))] if rng.random() < 0.5 else ""
    after = FILLERS[int(rng.integers(len(FILLERS)))] if rng.random() < 0.5 else ""
    return " ".join(w for w in (before, sentence, after) if w)


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
