"""Tokenizer loading, and the toy LLaMA-style tokenizer of the ``tiny`` preset.

The toy tokenizer is a real ``transformers.LlamaTokenizer`` (byte-fallback BPE, ``▁`` word
marker, ``<unk>``/``<s>``/``</s>`` at ids 0/1/2 as in LLaMA-2) whose merges are learned from
the project's own prompt strings. It is built in memory in well under a second, identically
every time, so the tiny preset needs no download and no file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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
    except (ImportError, ValueError) as exc:
        if _needs_sentencepiece(name):
            raise ConfigError(
                f"cannot load the tokenizer {name!r}: the folder has only tokenizer.model (a "
                "sentencepiece model, as older copies of LLaMA-2), and reading it needs the "
                "sentencepiece package: pip install sentencepiece"
            ) from None
        raise ConfigError(f"cannot load the tokenizer {name!r}: {exc}") from None


def _needs_sentencepiece(name: str) -> bool:
    """A local folder with a sentencepiece ``tokenizer.model`` and no ``tokenizer.json``, on a
    machine where sentencepiece cannot be imported (transformers then tries tiktoken and fails
    with a message about tiktoken)."""
    import importlib.util
    from pathlib import Path

    folder = Path(name)
    has_spm = (folder / "tokenizer.model").is_file() and not (folder / "tokenizer.json").is_file()
    try:
        missing = importlib.util.find_spec("sentencepiece") is None
    except ValueError:  # a module set to None in sys.modules
        missing = True
    return has_spm and missing


# -- decoding as sentencepiece does ------------------------------------------------------------------
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_REPLACEMENT = "\ufffd"


def _utf8_char_length(data: bytes, at: int) -> int:
    """Bytes of the one valid UTF-8 character starting at ``data[at]``, or 0 when the byte there
    starts none: sentencepiece's rule (a lead byte, the right number of continuation bytes, no
    overlong form, no surrogate, at most U+10FFFF)."""
    lead = data[at]
    if lead < 0x80:
        return 1
    if lead & 0xE0 == 0xC0:
        n, low, cp = 2, 0x80, lead & 0x1F
    elif lead & 0xF0 == 0xE0:
        n, low, cp = 3, 0x800, lead & 0x0F
    elif lead & 0xF8 == 0xF0:
        n, low, cp = 4, 0x10000, lead & 0x07
    else:
        return 0
    if at + n > len(data):
        return 0
    for b in data[at + 1 : at + n]:
        if b & 0xC0 != 0x80:
            return 0
        cp = (cp << 6) | (b & 0x3F)
    if cp < low or 0xD800 <= cp < 0xE000 or cp > 0x10FFFF:
        return 0
    return n


def sentencepiece_byte_runs(data: bytes) -> list[bytes | None]:
    """A byte run split as sentencepiece decodes it: each valid UTF-8 character's bytes, and
    ``None`` for each byte that starts no valid character (one U+FFFD each)."""
    out: list[bytes | None] = []
    at = 0
    while at < len(data):
        n = _utf8_char_length(data, at)
        if n == 0:
            out.append(None)
            at += 1
        else:
            out.append(data[at : at + n])
            at += n
    return out


def _byte_of(token: str) -> int | None:
    m = _BYTE_TOKEN.match(token)
    return int(m.group(1), 16) if m else None


def sentencepiece_tokens(tokens: Sequence[str]) -> list[str]:
    """The tokens with each run of byte-fallback tokens (``<0xE4>``...) that is not valid UTF-8
    rewritten as sentencepiece decodes it: its valid characters kept as byte tokens, each byte
    that starts no valid character replaced by one U+FFFD. Hugging Face's ``ByteFallback``
    decoder turns every byte of such a run into U+FFFD (a cut multibyte character at the end of
    a generation would erase the characters before it in the same run); valid runs are left
    alone, so the tokenizer's own decoder gives the same text as sentencepiece."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        if _byte_of(tokens[i]) is None:
            out.append(tokens[i])
            i += 1
            continue
        j = i
        while j < len(tokens) and _byte_of(tokens[j]) is not None:
            j += 1
        run = tokens[i:j]
        data = bytes(_byte_of(t) or 0 for t in run)
        try:
            data.decode("utf-8")
            out.extend(run)
        except UnicodeDecodeError:
            for part in sentencepiece_byte_runs(data):
                out.extend(_REPLACEMENT if part is None else [f"<0x{b:02X}>" for b in part])
        i = j
    return out


def decode(tokenizer: Any, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
    """``tokenizer.decode`` with sentencepiece's handling of invalid byte runs (see
    :func:`sentencepiece_tokens`); the same text as ``tokenizer.decode`` for every id sequence
    whose byte runs are valid UTF-8, and for tokenizers without byte-fallback tokens."""
    ids = [int(i) for i in ids]
    tokens = tokenizer.convert_ids_to_tokens(ids, skip_special_tokens=skip_special_tokens)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.decoder is None:
        return tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    fixed = sentencepiece_tokens(tokens)
    if fixed and _byte_of(fixed[0]) is not None and _strips_first_space(backend.decoder):
        # sentencepiece drops the dummy-prefix space of a first *piece*, never a space that a
        # first byte token stands for; the decoder strips whatever space comes first: give it one.
        fixed = ["\u2581", *fixed]
    if fixed == tokens:
        return tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    text = backend.decoder.decode(fixed)
    if getattr(tokenizer, "clean_up_tokenization_spaces", False):
        text = tokenizer.clean_up_tokenization(text)
    return text


def _strips_first_space(decoder: Any) -> bool:
    """Whether the decoder drops the leading space of the text (LLaMA's ``Strip`` step)."""
    return bool(decoder.decode(["\u2581", "<0x41>"]) == decoder.decode(["<0x41>"]))


def batch_decode(tokenizer: Any, rows: Any, *, skip_special_tokens: bool = True) -> list[str]:
    """:func:`decode` for each row of ids (a tensor or a list of lists)."""
    rows = rows.tolist() if hasattr(rows, "tolist") else rows
    return [decode(tokenizer, row, skip_special_tokens=skip_special_tokens) for row in rows]
