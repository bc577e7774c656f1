"""The paper's tokenizer as older LLaMA-2 copies ship it (only ``tokenizer.model``), and decoding
that gives sentencepiece's text, checked against the sentencepiece library itself."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emotion_llama.config import load_config
from emotion_llama.model.tokenizer import decode, load_tokenizer, sentencepiece_byte_runs

spm = pytest.importorskip("sentencepiece")

CORPUS = [
    "你好世界 这是一个测试 情绪识别",
    "hello world this is a test of the tokenizer",
    "in the video the person smiles and her voice is bright",
    "ok ok fine",
]


@pytest.fixture(scope="module")
def spm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LLaMA-style sentencepiece model (BPE, byte fallback, <unk>/<s>/</s> at 0/1/2) in a folder
    with only ``tokenizer.model`` and ``tokenizer_config.json``, as old LLaMA-2 copies have it."""
    root = tmp_path_factory.mktemp("spm")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 40), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(root / "m"),
        vocab_size=300,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=0.98,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    folder = root / "llama-old"
    folder.mkdir()
    (root / "m.model").rename(folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>"})
    )
    return folder


@pytest.fixture(scope="module")
def both(spm_folder: Path):  # type: ignore[no-untyped-def]
    config = load_config("tiny")
    tok = load_tokenizer(replace(config, llm=replace(config.llm, tokenizer=str(spm_folder))))
    return tok, spm.SentencePieceProcessor(model_file=str(spm_folder / "tokenizer.model"))


def test_a_folder_with_only_tokenizer_model_loads_and_encodes_as_sentencepiece(both) -> None:  # type: ignore[no-untyped-def]
    tok, sp = both
    for text in ("情绪识别 😀 ok", "hello world", "she is happy, 你好"):
        assert tok.encode(text, add_special_tokens=False) == sp.encode(text)


def test_a_cut_multibyte_character_costs_only_its_own_bytes(both) -> None:  # type: ignore[no-untyped-def]
    tok, sp = both
    ids = sp.encode("悲伤愤怒 😀 ok 你好")
    differs_from_plain = 0
    for cut in range(1, len(ids) + 1):
        expected = sp.decode(ids[:cut])
        assert decode(tok, ids[:cut]) == expected, cut
        differs_from_plain += tok.decode(ids[:cut], skip_special_tokens=True) != expected
    # the tokenizer's own decode turns the whole byte run into U+FFFD (the reason for decode())
    assert differs_from_plain >= 4
    assert decode(tok, ids[:5]) == "悲\ufffd"


def test_a_byte_space_first_is_kept_as_sentencepiece_keeps_it(both) -> None:  # type: ignore[no-untyped-def]
    tok, sp = both
    ids = [sp.piece_to_id("<0x20>"), sp.piece_to_id("▁the")]
    assert sp.id_to_piece(ids[1]) == "▁the"
    assert decode(tok, ids) == sp.decode(ids) == "  the"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(0, 255).map(lambda b: ("byte", b)),
            st.sampled_from(["情", "😀", "é", "\ufffd", "\u2581", " "]).map(lambda c: ("text", c)),
            st.integers(3, 299).map(lambda i: ("id", i)),
        ),
        min_size=1,
        max_size=14,
    )
)
def test_decode_equals_sentencepiece_on_any_mix_of_bytes_and_pieces(both, parts) -> None:  # type: ignore[no-untyped-def]
    tok, sp = both
    ids: list[int] = []
    for kind, value in parts:
        if kind == "byte":
            ids.append(sp.piece_to_id(f"<0x{value:02X}>"))
        elif kind == "text":
            ids.extend(sp.piece_to_id(f"<0x{b:02X}>") for b in value.encode("utf-8"))
        else:
            ids.append(value)
    assert decode(tok, ids) == sp.decode(ids)


def test_byte_runs_split_by_hand() -> None:
    # a valid 3-byte character, a lead byte cut short, a lone continuation byte, ASCII
    runs = sentencepiece_byte_runs("情".encode() + b"\xe4\xb8" + b"!" + b"\x80")
    assert runs == ["情".encode(), None, None, b"!", None]
    assert sentencepiece_byte_runs(b"\xed\xa0\x80") == [None, None, None]  # a UTF-8 surrogate
    assert sentencepiece_byte_runs(b"\xc0\xaf") == [None, None]  # overlong "/"
    assert sentencepiece_byte_runs("\ufffd".encode()) == ["\ufffd".encode()]


def test_without_sentencepiece_the_error_says_what_to_install(spm_folder: Path) -> None:
    code = (
        "import sys; sys.modules['sentencepiece'] = None\n"
        "from dataclasses import replace\n"
        "from emotion_llama.config import load_config\n"
        "from emotion_llama.errors import ConfigError\n"
        "from emotion_llama.model.tokenizer import load_tokenizer\n"
        "c = load_config('tiny')\n"
        f"c = replace(c, llm=replace(c.llm, tokenizer={str(spm_folder)!r}))\n"
        "try:\n    load_tokenizer(c)\nexcept ConfigError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "ERR" in out.stdout, out.stderr[-2000:]
    assert "pip install sentencepiece" in out.stdout
    assert "tokenizer.model" in out.stdout
    assert "tiktoken" not in out.stdout
