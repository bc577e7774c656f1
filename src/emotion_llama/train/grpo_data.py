"""The prompts of stage 3: one per clip with a gold label, without answer, left-padded for sampling.

:class:`PromptSet` takes the clips of a :class:`~emotion_llama.train.data.TrainDataset` (any
reader, any format) that have an emotion target; that target is the gold label of the rewards
(:class:`~emotion_llama.train.rewards.Target`). The prompt is the task's (``grpo.task``) with
``grpo.instruction`` or the task's instruction (drawn from the pool, seeded by clip and stream
position, for the reasoning tasks), followed by :data:`THINK_INSTRUCTION` in the ``think`` form.
It is rendered in ``grpo.layout``, by default the model's own (``prompt.layout``, the one
generation and evaluation use), so the answers are sampled and scored as they will be at
inference.

:func:`load_clues` reads the clue records the faithfulness reward checks the reasoning against.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from emotion_llama.data.samples import TrainDataError, TrainSample
from emotion_llama.files import jsonl_objects, read_json, read_text
from emotion_llama.model.inputs import MultimodalInputs
from emotion_llama.prompts import instruction_pool
from emotion_llama.train.config import GrpoConfig
from emotion_llama.train.data import TrainDataset
from emotion_llama.train.rewards import Target

if TYPE_CHECKING:
    from emotion_llama.annotate.faithfulness import Evidence

#: Appended to the instruction in the ``think`` answer form.
THINK_INSTRUCTION = (
    "First reason about the clues inside <think> </think>, then give the emotion label inside "
    "<answer> </answer>."
)


@dataclass(frozen=True)
class PromptBatch:
    """A left-padded batch of prompts and what their answers are scored against."""

    inputs: MultimodalInputs
    targets: list[Target]
    names: list[str]

    def __len__(self) -> int:
        return len(self.targets)


def _emotion_sample(options: Sequence[TrainSample]) -> TrainSample | None:
    return next((s for s in options if s.task == "emotion"), None)


class PromptSet(Dataset[dict[str, Any]]):
    """The clips of ``dataset`` that have an emotion target, as stage-3 prompts (see the module
    docstring). ``clues`` (clip name -> :class:`Evidence`) is needed for the faithfulness reward;
    a clip without a record gets the evidence of its subtitle alone."""

    def __init__(
        self,
        dataset: TrainDataset,
        cfg: GrpoConfig,
        *,
        clues: Mapping[str, Evidence] | None = None,
    ) -> None:
        self.dataset, self.cfg, self.processor = dataset, cfg, dataset.processor
        self.samples: list[TrainSample] = []
        self.skipped = 0
        for options in dataset.clips:
            found = _emotion_sample(options)
            if found is None:
                self.skipped += 1
            else:
                self.samples.append(found)
        if not self.samples:
            raise TrainDataError("no clip has an emotion label: stage grpo scores answers against one")
        self.clues = dict(clues or {})
        self.seed = dataset.seed

    def __len__(self) -> int:
        return len(self.samples)

    def names(self) -> list[str]:
        return [s.name for s in self.samples]

    def instruction(self, index: int, draw: int) -> str:
        cfg = self.cfg
        if cfg.instruction is not None:
            text = cfg.instruction
        else:
            pool = instruction_pool(cfg.task)
            text = pool[0] if len(pool) == 1 else random.Random(f"{self.seed}:{index}:{draw}").choice(pool)
        return f"{text} {THINK_INSTRUCTION}" if cfg.answer_format == "think" else text

    def target(self, sample: TrainSample) -> Target:
        evidence = None
        if self.cfg.rewards.faithful > 0:
            from emotion_llama.annotate.faithfulness import Evidence

            evidence = self.clues.get(sample.name) or Evidence(subtitle=sample.subtitle)
        return Target(gold=sample.target.strip().lower(), evidence=evidence)

    def item(self, index: int, draw: int = 0) -> dict[str, Any]:
        sample = self.samples[index]
        encoded = self.processor.encode(
            sample.subtitle, self.cfg.task, self.instruction(index, draw), layout=self.cfg.layout
        )
        feats = sample.features
        return {
            "encoded": encoded,
            **self.dataset.vision(sample),
            "local_feats": torch.from_numpy(np.asarray(feats.local, dtype=np.float32)),
            "temporal_feats": torch.from_numpy(np.asarray(feats.temporal, dtype=np.float32)),
            "audio_feats": torch.from_numpy(np.asarray(feats.audio, dtype=np.float32)),
            "target": self.target(sample),
            "name": sample.name,
        }

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, draw = key if isinstance(key, tuple) else (key, 0)
        return self.item(int(index), int(draw))

    def collate(self, items: list[dict[str, Any]]) -> PromptBatch:
        inputs = self.processor.batch([it["encoded"] for it in items], items, padding_side="left")
        return PromptBatch(inputs, [it["target"] for it in items], [it["name"] for it in items])

    def batch(self, indices: Sequence[int]) -> PromptBatch:
        """The prompts of ``indices`` (draw 0), e.g. for a held-out evaluation."""
        return self.collate([self.item(i) for i in indices])


def _record_evidence(record: Mapping[str, Any]) -> Evidence:
    from emotion_llama.annotate.faithfulness import evidence_from_record

    merged = dict(record)
    # A MERR entry names the subtitle ``text`` and the label ``pseu_emotion``.
    merged.setdefault("subtitle", record.get("text"))
    merged.setdefault("label", record.get("pseu_emotion"))
    return evidence_from_record(merged)


def load_clues(path: str | Path) -> dict[str, Evidence]:
    """Clip name -> :class:`Evidence` from a MERR JSON (``{name: {"visual_prior_list",
    "audio_prior_list", "text", ...}}``, as ``annotate`` exports) or a JSONL of clue records
    (each with ``name``)."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        rows = jsonl_objects(path, read_text(path, what="JSONL", error=TrainDataError), error=TrainDataError)
        out = {}
        for line, rec in rows:
            if not isinstance(rec.get("name"), str):
                raise TrainDataError(f"{path}:{line}: a clue record needs a 'name'")
            out[rec["name"]] = _record_evidence(rec)
        return out
    data = read_json(path, error=TrainDataError)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise TrainDataError(f"{path}: expected a JSON object of clue records keyed by clip name")
    return {str(name): _record_evidence(rec) for name, rec in data.items()}


def default_clues(data: str | Path) -> Path | None:
    """The data folder's clue file: ``merr_fine.json``, else ``merr_coarse.json``, else ``None``."""
    folder = Path(data)
    if not folder.is_dir():
        return None
    for name in ("merr_fine.json", "merr_coarse.json"):
        if (folder / name).is_file():
            return folder / name
    return None


def describe(prompts: PromptSet) -> str:
    """One line for the console: prompts, clips left out, labels found."""
    labels: dict[str, int] = {}
    for s in prompts.samples:
        labels[s.target] = labels.get(s.target, 0) + 1
    skipped = f", {prompts.skipped} clips without an emotion label left out" if prompts.skipped else ""
    return f"{len(prompts)} prompts{skipped}; gold labels {json.dumps(dict(sorted(labels.items())))}"
