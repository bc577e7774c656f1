"""Tokenizer loading, and the toy LLaMA-style tokenizer of the ``tiny`` preset.

The toy tokenizer is a real ``transformers.LlamaTokenizer`` (byte-fallback BPE, ``▁`` word
marker, ``<unk>``/``<s>``/``</s>`` at ids 0/1/2 as in LLaMA-2) whose merges are learned from
the project's own prompt strings. It is built in memory in well under a second, identically
every time, so the tiny preset needs no download and no file.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.errors import ConfigError
from emotion_llama.prompts import (
    EMOTION_INSTRUCTION,
    LABELS,
    REASON_INSTRUCTIONS,
    USER_TEXT,
)

_TOY_CORPUS_EXTRA = (
    "[INST] [/INST] <video> </video> <feature> </feature> <VideoHere> <FeatureHere>",
    "in the video the person smiles widely and her voice is bright so she is happy",
    "his brows are lowered and his tone is sharp which suggests that he is angry",
    "she speaks slowly with a low voice and her lips press together so she looks sad",
    "the eyes widen and the jaw drops showing surprise at the unexpected news",
    "a calm face and a steady tone indicate a neutral emotional state",
    "he frowns and hesitates which reflects worry about what may happen",
    "therefore it is inferred that the emotional state of the person is",
    "i can not believe you did that what are you talking about oh my god",
)


@lru_cache(maxsize=4)
def toy_tokenizer(vocab_size: int = 512) -> Any:
    """A deterministic LLaMA-style tokenizer with exactly ``vocab_size`` ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    pad = "$$"
    bpe_size = vocab_size - len(byte_tokens) - 1  # the pad token takes one id at the end
    if bpe_size <= len(specials) + 64:
        raise ConfigError(f"toy tokenizer: vocab_size {vocab_size} is too small (need > 324)")

    corpus = [USER_TEXT, EMOTION_INSTRUCTION, *REASON_INSTRUCTIONS, *LABELS, *_TOY_CORPUS_EXTRA]
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_size,
        special_tokens=specials,
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyz.,?!'\"[]<>/:;()-_ ▁"),
        show_progress=False,
    )
    trainer_tok.train_from_iterator(corpus * 3, trainer=trainer)
    learned = trainer_tok.get_vocab()
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(specials)}
    for tok in byte_tokens:
        vocab[tok] = len(vocab)
    for tok, _ in sorted(learned.items(), key=lambda kv: kv[1]):
        if tok not in vocab:
            vocab[tok] = len(vocab)
    vocab[pad] = len(vocab)
    model_json = trainer_tok.to_str()
    import json

    merges = [
        tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
        for m in json.loads(model_json)["model"]["merges"]
    ]
    if len(vocab) != vocab_size:
        raise ConfigError(f"toy tokenizer: built {len(vocab)} ids, expected {vocab_size}")
    return LlamaTokenizer(vocab=vocab, merges=merges)


def load_tokenizer(config: EmotionLlamaConfig) -> Any:
    """The tokenizer the config names: ``toy``, a hub id or a local folder."""
    name = config.llm.tokenizer or config.llm.name_or_path
    if name == "toy":
        return toy_tokenizer(config.llm.vocab_size or 512)
    if name is None:
        raise ConfigError(f"config {config.name!r}: llm.tokenizer is not set and the LLM has no name_or_path")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, revision=config.llm.revision)
    except OSError as exc:
        raise ConfigError(
            f"cannot load the tokenizer {name!r}: {exc}. On a machine without the hub, point "
            "llm.tokenizer (or llm.name_or_path) at a local folder."
        ) from None
