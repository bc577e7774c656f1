"""``emotion-llama doctor``: which released file is this, what is it for, and will it work.

Many threads in the authors' tracker come from the wrong file or a load that broke without a
word: the MER2023 classifier used for reasoning (it answers one label), the MiniGPT-v2 start
point used as a model, adapters dropped by a modern PEFT, the base LLaMA-2 instead of the chat
model (the answer repeats the prompt). This package looks at a checkpoint and says:

- **what it is**, and on what evidence (:mod:`.known`, :mod:`.identity`): its sha256 against the
  pinned ones (the authors publish none, so none is pinned yet: the report prints the file's own
  so a user can pin it), its keys (the MiniGPT-v2 start point has no feature projections; the
  three Emotion-LLaMA files have identical keys and shapes), the training config that the
  authors' runner saved next to the weights (``{"model", "optimizer", "config", "scaler",
  "epoch"}``; the config's data sets and annotation files tell the reasoning model from the
  classifiers), and its file name;
- **the keys** (:mod:`.keycheck`) against the preset's expected trainable keys and shapes:
  missing, extra and wrong-shape keys, adapters present and trained (LoRA B all zero is PEFT's
  fresh initialisation: the adapters were lost), projections present;
- **the base LLM** (:mod:`.llm_check`): that it is a chat model (its name, a local folder's
  ``config.json`` and chat template);
- **a sanity prompt** (:mod:`.sanity`): a short greedy answer on fixed seeded media, checked for
  prompt repetition.

Everything but :func:`~.report.diagnose` (files and models, in :mod:`.report`) is a pure function.
"""

from __future__ import annotations

from emotion_llama.model.doctor.findings import PAPER_LLM, SANITY_SUBTITLE, Finding, Level
from emotion_llama.model.doctor.identity import Identity, identify, identify_project, identity_findings
from emotion_llama.model.doctor.keycheck import KeyCheck, check_keys, key_findings
from emotion_llama.model.doctor.known import (
    KNOWN_BY_KIND,
    KNOWN_FILES,
    MINIGPTV2_DATASETS,
    REASONING_FILE,
    KnownFile,
    TrainingMetadata,
    kind_from_metadata,
    known_by_hash,
    known_by_name,
    pinned_sha256,
    training_metadata,
)
from emotion_llama.model.doctor.llm_check import (
    LLMCheck,
    LocalLLMInfo,
    chat_verdict,
    check_llm,
    llm_findings,
    read_local_llm_info,
)
from emotion_llama.model.doctor.report import (
    DoctorReport,
    assemble_findings,
    diagnose,
    is_torch_file,
    llm_unavailable,
)
from emotion_llama.model.doctor.sanity import (
    SanityResult,
    find_prompt_repetition,
    run_sanity_prompt,
    sanity_findings,
    seeded_media,
)

__all__ = [
    "KNOWN_BY_KIND",
    "KNOWN_FILES",
    "MINIGPTV2_DATASETS",
    "PAPER_LLM",
    "REASONING_FILE",
    "SANITY_SUBTITLE",
    "DoctorReport",
    "Finding",
    "Identity",
    "KeyCheck",
    "KnownFile",
    "LLMCheck",
    "Level",
    "LocalLLMInfo",
    "SanityResult",
    "TrainingMetadata",
    "assemble_findings",
    "chat_verdict",
    "check_keys",
    "check_llm",
    "diagnose",
    "find_prompt_repetition",
    "identify",
    "identify_project",
    "identity_findings",
    "is_torch_file",
    "key_findings",
    "kind_from_metadata",
    "known_by_hash",
    "known_by_name",
    "llm_findings",
    "llm_unavailable",
    "pinned_sha256",
    "read_local_llm_info",
    "run_sanity_prompt",
    "sanity_findings",
    "seeded_media",
    "training_metadata",
]
