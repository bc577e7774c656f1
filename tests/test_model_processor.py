import numpy as np
import pytest
import torch

from emotion_llama.config import paper_config
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.model.processor import IGNORE_INDEX, EmotionLlamaProcessor
from emotion_llama.prompts import EMOTION_INSTRUCTION

SUB = "I can't believe it"


def _runs(mask):
    """(start, length) of each run of True."""
    runs, start = [], None
    for i, m in enumerate([*mask, False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


@pytest.fixture(scope="module")
def paper_proc(toy_tok):
    # The paper's sequence geometry (256 EVA groups + 4) with the toy tokenizer.
    return EmotionLlamaProcessor(toy_tok, paper_config())


def test_inference_layout_ids(paper_proc, toy_tok):
    s = paper_proc.encode(SUB, "emotion", layout="inference")
    ids, mask = s.input_ids, s.feature_mask
    bos = toy_tok.bos_token_id
    # Two BOS: the tokenizer's and the literal <s> of the authors' inference text.
    assert ids[:2] == [bos, bos] and bos not in ids[2:]
    assert _runs(mask) == [(2 + len(toy_tok("[INST] <video>", add_special_tokens=False).input_ids), 260)]
    start, n = _runs(mask)[0]
    assert toy_tok.decode(ids[2:start]) == "[INST] <video>"
    tail = toy_tok.decode(ids[start + n :])
    assert tail == (
        "</video> <feature><FeatureHere></feature> The person in video says: I can't believe it.  "
        f"[emotion] {EMOTION_INSTRUCTION}  [/INST]"
    )
    assert s.labels is None


def test_training_layout_ids_and_labels(paper_proc, toy_tok):
    s = paper_proc.encode(SUB, "emotion", answer="Happy!", layout="training")
    ids, mask, labels = s.input_ids, s.feature_mask, s.labels
    bos, eos = toy_tok.bos_token_id, toy_tok.eos_token_id
    assert ids[0] == bos and ids.count(bos) == 1
    runs = _runs(mask)
    assert [n for _, n in runs] == [256, 4]
    assert toy_tok.decode(ids[1 : runs[0][0]]) == "[INST] <video>"
    assert toy_tok.decode(ids[runs[0][0] + 256 : runs[1][0]]) == "</video> <feature>"
    answer = [*toy_tok("happy", add_special_tokens=False).input_ids, eos]
    assert ids[-len(answer) :] == answer
    # Loss only on the answer and its EOS.
    assert labels[-len(answer) :] == answer
    assert all(x == IGNORE_INDEX for x in labels[: -len(answer)])
    assert toy_tok.decode(ids[runs[1][0] + 4 : -len(answer)]).endswith("contempt, doubt.  [/INST]")


def test_tiny_geometry(processor, tiny_config):
    s = processor.encode(SUB, "emotion")
    assert sum(s.feature_mask) == tiny_config.num_multimodal_tokens == 8


def test_answer_truncation_and_context_limit(toy_tok):
    from dataclasses import replace

    cfg = paper_config()
    cfg = replace(cfg, prompt=replace(cfg.prompt, max_answer_tokens=5))
    proc = EmotionLlamaProcessor(toy_tok, cfg)
    s = proc.encode(SUB, "reason", instruction="x", answer="the person " * 50, normalize=False)
    assert len([x for x in s.labels if x != IGNORE_INDEX]) == 5
    assert s.labels[-1] == toy_tok.eos_token_id
    cfg2 = replace(cfg, prompt=replace(cfg.prompt, max_context_tokens=100))
    with pytest.raises(EmotionLlamaError, match="max_context_tokens=100"):
        EmotionLlamaProcessor(toy_tok, cfg2).encode(SUB, "emotion")


def test_collate_padding(processor):
    a = processor.encode("hi", "emotion", answer="sad")
    b = processor.encode("a much longer subtitle than the first one", "emotion", answer="happy")
    right = processor.collate([a, b], padding_side="right")
    left = processor.collate([a, b], padding_side="left")
    n = len(a.input_ids)
    width = len(b.input_ids)
    assert right["input_ids"].shape == (2, width)
    assert right["attention_mask"][0].tolist() == [1] * n + [0] * (width - n)
    assert left["attention_mask"][0].tolist() == [0] * (width - n) + [1] * n
    assert right["input_ids"][0, :n].tolist() == a.input_ids
    assert left["input_ids"][0, width - n :].tolist() == a.input_ids
    assert (right["labels"][0, n:] == IGNORE_INDEX).all()
    assert not right["feature_mask"][0, n:].any()
    assert (left["input_ids"][0, : width - n] == processor.pad_id).all()
    # The default side follows the layout: left for the inference layout.
    assert torch.equal(processor.collate([a, b])["attention_mask"], left["attention_mask"])


def test_pad_token_is_dollar_dollar(processor, toy_tok):
    assert processor.pad_id == toy_tok.convert_tokens_to_ids("$$")


def test_preprocess_image_hand_computed(processor, tiny_config):
    color = (200, 100, 50)
    img = np.zeros((30, 70, 3), dtype=np.uint8)
    img[...] = color
    px = processor.preprocess_image(img)
    size = tiny_config.vision.image_size
    assert px.shape == (3, size, size)  # aspect ratio not kept, no crop
    for c in range(3):
        want = (color[c] / 255 - tiny_config.vision.mean[c]) / tiny_config.vision.std[c]
        assert torch.allclose(px[c], torch.full((size, size), want), atol=1e-5)
    with pytest.raises(EmotionLlamaError, match="HxWx3"):
        processor.preprocess_image(np.zeros((4, 4)))
