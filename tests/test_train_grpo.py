"""Stage 3 (GRPO): the advantages and the loss against hand-computed examples, each reward on good
and malformed answers, the prompts and recipes, and the loop: it learns on CPU (reward and label
accuracy rise on clips stage 2 never saw, the KL stays bounded) and resumes exactly."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from emotion_llama.annotate.faithfulness import Evidence
from emotion_llama.cli import app
from emotion_llama.config import EmotionLlamaConfig, tiny_config
from emotion_llama.data.formats.folder import read_training_folder
from emotion_llama.data.samples import TrainDataError
from emotion_llama.data.synth import make_synthetic_dataset
from emotion_llama.model.builder import build_model
from emotion_llama.model.checkpoint import load_trainable, read_safetensors, trainable_state
from emotion_llama.model.processor import EmotionLlamaProcessor
from emotion_llama.model.tokenizer import load_tokenizer
from emotion_llama.prompts import EMOTION_INSTRUCTION, MER_LABELS, REASON_INSTRUCTIONS
from emotion_llama.train.checkpointing import read_pointer
from emotion_llama.train.config import GrpoConfig, RewardWeights, TrainConfig, TrainError
from emotion_llama.train.data import TrainDataset
from emotion_llama.train.grpo import completion_mask, group_advantages, grpo_loss, k3_kl, token_logps
from emotion_llama.train.grpo_data import THINK_INSTRUCTION, PromptSet, load_clues
from emotion_llama.train.grpo_loop import REFERENCE_FILE, evaluate_prompts, make_rollouts, train_grpo
from emotion_llama.train.loop import train
from emotion_llama.train.recipe import RecipeError, load_recipe
from emotion_llama.train.rewards import (
    RewardScorer,
    Target,
    accuracy_reward,
    faithfulness_reward,
    format_reward,
    ov_reward,
)
from emotion_llama.train.schedule import Schedule
from emotion_llama.train.steplog import read_losses
from helpers import SHARED

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "train"
WHEELS = SHARED / "data" / "emotion_wheel"
L6 = MER_LABELS


# -- advantages and loss --------------------------------------------------------------------------
def test_group_advantages_of_two_groups_by_hand() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.0, 3.0])
    # Group 1: mean 0.5, unbiased std sqrt((0.25 + 0.25 + 0) / 2) = 0.5.
    # Group 2: mean 1, deviations (-1, -1, 2), unbiased std sqrt(6 / 2) = sqrt(3).
    s1, s2 = 0.5 + 1e-4, math.sqrt(3.0) + 1e-4
    expected = [0.5 / s1, -0.5 / s1, 0.0, -1 / s2, -1 / s2, 2 / s2]
    got = group_advantages(rewards, 3)
    assert got.tolist() == pytest.approx(expected, abs=1e-6)
    assert got.tolist() == pytest.approx([0.9998, -0.9998, 0.0, -0.57732, -0.57732, 1.15463], abs=1e-5)
    # Without scaling (Dr. GRPO): the centred rewards only.
    assert group_advantages(rewards, 3, scale=False).tolist() == pytest.approx([0.5, -0.5, 0, -1, -1, 2])
    # A group whose answers all score the same teaches nothing.
    assert group_advantages(torch.tensor([0.7, 0.7, 0.2, 0.9]), 2).tolist()[:2] == [0.0, 0.0]
    with pytest.raises(TrainError, match="groups of 4"):
        group_advantages(rewards, 4)


# Two groups of two answers, three token slots; masked slots hold values that must not count.
_ADV = [1.0, -1.0, 0.5, -0.5]
_MASK = [[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]]
_NEW_MINUS_OLD = [[0.0, 0.3, -0.3], [0.3, -0.3, 5.0], [0.1, 7.0, -7.0], [0.0, 0.0, 0.0]]
_REF_MINUS_NEW = [[0.1, -0.2, 0.0], [0.5, 0.0, 3.0], [-0.1, 2.0, 2.0], [0.0, 0.0, 0.2]]


def _loss_inputs() -> tuple[torch.Tensor, ...]:
    f64 = torch.float64
    logps = torch.tensor(
        [[-1.0, -2.0, -0.5], [-0.7, -1.1, -3.0], [-0.2, -0.4, -0.9], [-1.5, -0.3, -0.8]], dtype=f64
    )
    old = logps - torch.tensor(_NEW_MINUS_OLD, dtype=f64)
    ref = logps + torch.tensor(_REF_MINUS_NEW, dtype=f64)
    return logps, old, ref, torch.tensor(_ADV, dtype=f64), torch.tensor(_MASK).bool()


def test_grpo_loss_by_hand() -> None:
    """Each token by hand: ratio, clip to [0.8, 1.2], min with the advantage, k3 KL, beta 0.1."""
    beta, per_answer, per_token, kls, clipped = 0.1, [], [], [], 0
    for i, a in enumerate(_ADV):
        losses = []
        for t in range(3):
            if not _MASK[i][t]:
                continue
            ratio = math.exp(_NEW_MINUS_OLD[i][t])
            surrogate = min(ratio * a, min(max(ratio, 0.8), 1.2) * a)
            d = _REF_MINUS_NEW[i][t]
            kl = math.exp(d) - d - 1
            losses.append(-surrogate + beta * kl)
            kls.append(kl)
            clipped += (ratio > 1.2 and a > 0) or (ratio < 0.8 and a < 0)
        per_answer.append(sum(losses) / len(losses))
        per_token.extend(losses)
    logps, old, ref, adv, mask = _loss_inputs()
    loss, stats = grpo_loss(logps, old, adv, mask, ref_logps=ref, beta=beta, clip_low=0.2, clip_high=0.2)
    assert float(loss) == pytest.approx(sum(per_answer) / 4, abs=1e-9)
    assert float(loss) == pytest.approx(0.0128753, abs=1e-6)
    assert stats.kl == pytest.approx(sum(kls) / 9, abs=1e-9) and stats.tokens == 9
    assert stats.clip_fraction == pytest.approx(2 / 9)  # answer 0 token 1 (up), answer 1 token 1 (down)
    token, _ = grpo_loss(logps, old, adv, mask, ref_logps=ref, beta=beta, norm="token")
    assert float(token) == pytest.approx(sum(per_token) / 9, abs=1e-9)
    assert float(token) == pytest.approx(0.0195935, abs=1e-6)
    # Clip-higher: with 1 + 0.4 the up-clip of answer 0 token 1 (ratio 1.35) no longer applies.
    wide, _ = grpo_loss(logps, old, adv, mask, ref_logps=ref, beta=beta, clip_high=0.4)
    assert float(wide) - float(loss) == pytest.approx(-(math.exp(0.3) - 1.2) / 3 / 4, abs=1e-9)
    with pytest.raises(TrainError, match="reference"):
        grpo_loss(logps, old, adv, mask, beta=0.1)


def test_on_policy_gradient_is_the_policy_gradient_plus_kl() -> None:
    """With old = logp (one step per batch of rollouts) the gradient per answer token is
    (-A_i + beta * (1 - exp(ref - logp))) / |o_i| / N, and 0 outside the answers."""
    logps, _, ref, adv, mask = _loss_inputs()
    logps.requires_grad_(True)
    loss, _ = grpo_loss(logps, logps.detach(), adv, mask, ref_logps=ref, beta=0.1)
    loss.backward()
    assert logps.grad is not None
    lengths = mask.sum(1, keepdim=True).double()
    expected = (-adv.unsqueeze(1) + 0.1 * (1 - torch.exp(ref - logps.detach()))) / lengths / 4 * mask
    torch.testing.assert_close(logps.grad, expected, atol=1e-12, rtol=0)


def test_token_logps_kl_and_completion_mask() -> None:
    logits = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0))
    tokens = torch.tensor([[1, 4, 6], [0, 2, 2]])
    want = torch.log_softmax(logits / 0.5, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(token_logps(logits, tokens, 0.5), want)
    a = torch.tensor([-1.0, -0.5, -3.0])
    assert k3_kl(a, a).tolist() == [0.0, 0.0, 0.0]
    assert bool((k3_kl(a, a.roll(1)) > 0).all())  # never negative, 0 only where the two agree
    ids = torch.tensor([[5, 2, 2, 2], [5, 6, 7, 8], [2, 2, 2, 2], [5, 6, 2, 9]])
    assert completion_mask(ids, 2).int().tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0]]


# -- rewards ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "gold", "robust", "last_word"),
    [
        ("happy", "happy", 1, 1),
        ("the person is happy", "happy", 1, 1),
        ("Happy.", "happy", 1, 0),  # the authors' rule compares the last word exactly
        ("she is not sad but angry", "angry", 1, 1),
        ("she is not sad", "sad", 0, 1),  # a negated mention is no answer for the robust parser
        ("happy", "sad", 0, 0),
        ("", "neutral", 0, 0),  # no neutral default: an unreadable answer earns nothing
        ("\x13Pmi", "neutral", 0, 0),
        ("<think>maybe sad</think><answer>happy</answer>", "happy", 1, 1),
        ("<think>maybe sad</think><answer>happy</answer>", "sad", 0, 0),  # read from the answer block
        ("<answer>happy", "happy", 1, 1),  # unclosed: the tags are dropped, the label is still read
        ("happy", " Happy ", 1, 1),  # the gold is normalised
    ],
)
def test_accuracy_reward(text: str, gold: str, robust: int, last_word: int) -> None:
    assert accuracy_reward(text, gold, L6, "robust") == robust
    assert accuracy_reward(text, gold, L6, "last_word") == last_word


@pytest.mark.parametrize(
    ("text", "plain", "think"),
    [
        ("happy", 1, 0),
        ("the person is happy", 1, 0),
        ("Happy", 0, 0),
        ("happy.", 0, 0),
        ("", 0, 0),
        ("joyful", 0, 0),  # not a label of the set
        ("<think>She smiles.</think><answer>happy</answer>", 0, 1),
        ("  <think>She smiles.</think>\n<answer> the person is happy </answer>\n", 0, 1),
        ("<answer>happy</answer>", 0, 0),  # no reasoning
        ("<think> </think><answer>happy</answer>", 0, 0),  # empty reasoning
        ("<think>She smiles.</think><answer></answer>", 0, 0),
        ("<think>She smiles.</think><answer>Happy!</answer>", 0, 0),
        ("<think>She smiles.</think><answer>happy</answer> extra", 0, 0),
        ("<think>a</think><answer>sad</answer><answer>happy</answer>", 0, 0),
        ("<think>a <think>b</think></think><answer>happy</answer>", 0, 0),
        ("<think>She smiles.<answer>happy</answer>", 0, 0),  # unclosed think
        ("<answer>happy</answer><think>She smiles.</think>", 0, 0),  # wrong order
    ],
)
def test_format_reward(text: str, plain: int, think: int) -> None:
    assert format_reward(text, "plain", L6) == plain
    assert format_reward(text, "think", L6) == think


def test_format_reward_bounds_the_reasoning_length() -> None:
    text = "<think>" + "clue " * 12 + "</think><answer>happy</answer>"
    assert format_reward(text, "think", L6, max_think_words=12) == 1.0
    assert format_reward(text, "think", L6, max_think_words=11) == 0.0
    with pytest.raises(TrainError, match="answer format"):
        format_reward("happy", "json", L6)


@pytest.mark.skipif(not (WHEELS / "wheel1.csv").is_file(), reason=f"emotion-wheel tables not in {WHEELS}")
def test_ov_reward_through_the_emotion_wheels() -> None:
    from emotion_llama.evaluate.openvocab import EmotionWheels

    wheels = EmotionWheels.load(WHEELS)
    assert ov_reward("happy", ["happy"], wheels) == pytest.approx(1.0)
    assert ov_reward("joyful", ["happy"], wheels) == pytest.approx(1.0)  # same wheel sectors
    both = ov_reward("happy, sad", ["happy"], wheels)
    assert 0.0 < both < 1.0 and both == pytest.approx(2 / 3)
    assert ov_reward("<think>she smiles</think><answer>happy, sad</answer>", ["happy"], wheels) == both
    for malformed in ("sad", "table", "", "the person is happy", "[]"):
        assert ov_reward(malformed, ["happy"], wheels) == 0.0
    assert ov_reward("happy", [], wheels) == 0.0
    gcfg = GrpoConfig(wheels=str(WHEELS), rewards=RewardWeights(accuracy=0.0, format=0.0, ov=1.0))
    scores = RewardScorer(gcfg.validate(), L6, wheels).score(
        ["happy", "sad"], [Target("happy, relieved")] * 2
    )
    assert scores["ov"] == [pytest.approx(1.0), 0.0] and scores["reward"] == scores["ov"]


def test_faithfulness_reward_against_the_clues() -> None:
    ev = Evidence(au_phrases=("lip corner puller",), tone_words=("loud",), subtitle="this is great")
    assert faithfulness_reward("<think>She smiles and speaks loudly.</think><answer>happy</answer>", ev) == 1
    assert faithfulness_reward("She smiles, so the person is happy", ev) == 1  # plain: the whole answer
    assert faithfulness_reward("<think>She frowns.</think><answer>angry</answer>", ev) == 0  # invented
    assert (
        faithfulness_reward("<think>Her voice is soft.</think><answer>sad</answer>", ev) == 0
    )  # contradicts
    assert faithfulness_reward('<think>She says "I hate this".</think><answer>angry</answer>', ev) == 0
    assert faithfulness_reward("<think></think><answer>happy</answer>", ev) == 0  # empty reasoning
    assert faithfulness_reward("", ev) == 0


def test_scorer_weighs_the_components() -> None:
    gcfg = GrpoConfig(rewards=RewardWeights(accuracy=1.0, format=0.5, faithful=0.25)).validate()
    scorer = RewardScorer(gcfg, L6)
    ev = Evidence(au_phrases=("lip corner puller",))
    texts = ["happy", "she smiles so she is happy", "she frowns, happy", "Sad"]
    scores = scorer.score(texts, [Target("happy", evidence=ev)] * 4)
    assert scores["accuracy"] == [1, 1, 1, 0] and scores["format"] == [1, 1, 1, 0]
    assert scores["faithful"] == [1, 1, 0, 1]
    assert scores["reward"] == pytest.approx([1.75, 1.75, 1.5, 0.25])
    assert "ov" not in scores  # weight 0: not computed
    with pytest.raises(TrainError, match="targets"):
        scorer.score(["happy"], [])
    with pytest.raises(TrainError, match="clues"):
        scorer.score(["happy"], [Target("happy")])
    with pytest.raises(TrainError, match="emotion-wheel"):
        RewardScorer(GrpoConfig(wheels="w", rewards=RewardWeights(ov=1.0)), L6)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"group_size": 1}, "group_size"),
        ({"answer_format": "json"}, "answer_format"),
        ({"rewards": RewardWeights(ov=1.0)}, "grpo.wheels"),
        ({"rewards": RewardWeights(accuracy=0.0, format=0.0)}, "one of them > 0"),
        ({"temperature": 0.0}, "temperature"),
        ({"layout": "chat"}, "layout"),
        ({"task": "caption"}, "task"),
    ],
)
def test_grpo_config_refuses(change: dict[str, Any], match: str) -> None:
    with pytest.raises(TrainError, match=match):
        dataclasses.replace(GrpoConfig(), **change).validate()


# -- recipes ----------------------------------------------------------------------------------------
def test_grpo_recipes_load_and_are_checked(tmp_path: Path) -> None:
    paper = load_recipe(CONFIGS / "stage3_grpo.yaml")
    assert paper.stage == "grpo" and paper.init_from == "runs/stage2_fine" and paper.model == "paper"
    g = paper.grpo
    assert (g.group_size, g.beta, g.clip_eps, g.answer_format, g.labels) == (8, 0.04, 0.2, "plain", "merr9")
    assert g.rewards == RewardWeights(accuracy=1.0, format=0.5, ov=0.0, faithful=0.0)
    assert paper.train.schedule.kind == "constant" and paper.train.schedule.init_lr == pytest.approx(1e-6)
    tiny = load_recipe(
        CONFIGS / "tiny_grpo.yaml", ["grpo.beta=0", "rewards.faithful=0.5", "grpo.clip_eps_high=0.28"]
    )
    assert tiny.grpo.beta == 0.0 and tiny.grpo.rewards.faithful == 0.5 and tiny.grpo.clip_high == 0.28
    assert tiny.grpo.temperature == pytest.approx(0.1) and tiny.train.device == "cpu"
    assert load_recipe(CONFIGS / "tiny_synth.yaml").stage == "sft"
    with pytest.raises(RecipeError, match=r"grpo\.beta: settings of stage grpo"):
        load_recipe(CONFIGS / "tiny_synth.yaml", ["grpo.beta=0.1"])
    with pytest.raises(RecipeError, match="stage must be one of sft, grpo"):
        load_recipe(CONFIGS / "tiny_synth.yaml", ["stage=ppo"])
    with pytest.raises(RecipeError, match=r"tiny_grpo\.yaml: grpo\.group_size"):
        load_recipe(CONFIGS / "tiny_grpo.yaml", ["grpo.group_size=1"])
    with pytest.raises(RecipeError, match=r"unknown key\(s\) 'rewards\.length'"):
        load_recipe(CONFIGS / "tiny_grpo.yaml", ["rewards.length=1"])


# -- prompts ----------------------------------------------------------------------------------------
def _config() -> EmotionLlamaConfig:
    cfg = tiny_config()  # trained from scratch: it knows only the training layout
    return dataclasses.replace(cfg, prompt=dataclasses.replace(cfg.prompt, layout="training"))


@dataclasses.dataclass(frozen=True)
class Start:
    """The synthetic set and the tiny model after a short stage 2 (partly trained)."""

    cfg: EmotionLlamaConfig
    processor: EmotionLlamaProcessor
    data: Path
    run: Path
    state: dict[str, torch.Tensor]

    def model(self) -> Any:
        model = build_model(self.cfg)
        load_trainable(model, self.state, "stage 2")
        return model

    def split(self, name: str, seed: int = 1) -> TrainDataset:
        samples = read_training_folder(self.data, self.cfg, split=name, tasks=("emotion",))
        return TrainDataset(samples, self.processor, seed=seed)


SFT_STEPS = 100


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Start:
    """100 stage-2 steps on the train split (emotion task): about 2/3 of the unseen test clips
    right by greedy decoding, a third of the sampled answers; stage 2 never sees val or test."""
    root = tmp_path_factory.mktemp("grpo")
    cfg = _config()
    make_synthetic_dataset(root / "data", n=120, config=cfg, seed=0, layout="native")
    proc = EmotionLlamaProcessor(load_tokenizer(cfg), cfg)
    train_set = TrainDataset(
        read_training_folder(root / "data", cfg, split="train", tasks=("emotion",)), proc
    )
    model = build_model(cfg)
    schedule = Schedule("warmup_cosine", 3e-2, 3e-3, 3e-3, SFT_STEPS // 10, SFT_STEPS, None)
    tc = TrainConfig(schedule=schedule, epochs=1, iters_per_epoch=SFT_STEPS, batch_size=4, seed=0,
                     out_dir=root / "stage2", log_every=1000, log_with="none")  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(model, proc, train_set, tc)
    finally:
        torch.set_num_threads(threads)
    state = {k: v.clone() for k, v in trainable_state(model).items()}
    return Start(cfg, proc, root / "data", root / "stage2", state)


def test_prompts_are_the_labelled_clips_left_padded(start: Start, tmp_path: Path) -> None:
    dataset = start.split("val")
    plain = PromptSet(dataset, GrpoConfig())
    assert len(plain) == 18 and plain.names() == dataset.names()
    batch = plain.batch(range(4))
    assert bool((batch.inputs.attention_mask[:, -1] == 1).all()) and batch.inputs.labels is None
    assert [t.gold for t in batch.targets] == [s.target for s in plain.samples[:4]]
    assert EMOTION_INSTRUCTION in plain.item(0)["encoded"].text
    think = PromptSet(dataset, GrpoConfig(answer_format="think"))
    assert f"{EMOTION_INSTRUCTION} {THINK_INSTRUCTION}" in think.item(0)["encoded"].text
    # The reasoning tasks draw their instruction per clip and stream position, reproducibly.
    reason = PromptSet(dataset, GrpoConfig(task="reason"))
    drawn = [reason.instruction(0, draw) for draw in range(12)]
    assert set(drawn) <= set(REASON_INSTRUCTIONS) and len(set(drawn)) > 1
    assert drawn == [PromptSet(dataset, GrpoConfig(task="reason")).instruction(0, d) for d in range(12)]
    assert "[reason]" in reason.item(0, 3)["encoded"].text and drawn[3] in reason.item(0, 3)["encoded"].text
    # A clip with no emotion target is left out.
    samples = [s for s in dataset.clips for s in s]
    reasons = read_training_folder(start.data, start.cfg, split="val", tasks=("reason",))
    mixed = TrainDataset([*samples[1:], reasons[0]], start.processor)
    assert samples[0].name == reasons[0].name
    partial = PromptSet(mixed, GrpoConfig())
    assert len(partial) == 17 and partial.skipped == 1 and samples[0].name not in partial.names()


def test_clue_records_for_the_faithfulness_reward(tmp_path: Path) -> None:
    merr = tmp_path / "merr_fine.json"
    entry = {
        "visual_prior_list": ["lip corner puller"],
        "audio_prior_list": ["loud"],
        "text": "great",
        "pseu_emotion": "happy",
        "smp_reason_caption": "x",
    }
    merr.write_text(json.dumps({"a": entry}))
    ev = load_clues(merr)["a"]
    assert ev.au_phrases == ("lip corner puller",) and ev.tone_words == ("loud",)
    assert ev.subtitle == "great" and ev.label == "happy" and ev.has_face and ev.has_voice
    lines = tmp_path / "clues.jsonl"
    lines.write_text(
        json.dumps({"name": "b", "visual_prior_list": [], "missing": ["face: none found"]}) + "\n"
    )
    assert load_clues(lines)["b"].has_face is False
    lines.write_text(json.dumps({"visual_prior_list": []}) + "\n")
    with pytest.raises(TrainDataError, match=r"clues\.jsonl:1: a clue record needs a 'name'"):
        load_clues(lines)


# -- the loop ---------------------------------------------------------------------------------------
def _grpo_cfg(**kw: Any) -> GrpoConfig:
    base = GrpoConfig(group_size=8, beta=0.04, max_new_tokens=4, temperature=0.1,
                      rewards=RewardWeights(accuracy=1.0, format=0.25))  # fmt: skip
    return dataclasses.replace(base, **kw)


def _train_cfg(out: Path, steps: int, lr: float, **kw: Any) -> TrainConfig:
    schedule = Schedule("constant", lr, lr, lr, 0, steps, None)
    return TrainConfig(
        schedule=schedule, epochs=1, iters_per_epoch=steps, batch_size=4, seed=0, out_dir=out,
        log_every=1000, log_with="none", weight_decay=0.0, **kw,
    )  # fmt: skip


def _sampled_accuracy(model: Any, start: Start, prompts: PromptSet, gcfg: GrpoConfig) -> float:
    """The share of right answers among G = 8 sampled per test clip (seeded)."""
    torch.manual_seed(1)
    scorer = RewardScorer(gcfg, L6)
    rollouts = make_rollouts(model, start.processor, prompts.batch(range(len(prompts))), scorer,
                             TrainConfig(), None, torch.device("cpu"))  # fmt: skip
    return sum(rollouts.scores["accuracy"]) / len(rollouts.texts)


@pytest.mark.slow
def test_learning_proof(start: Start, tmp_path: Path, one_thread: None) -> None:
    """GRPO on the val clips (stage 2 never saw them) raises the rollouts' reward and accuracy,
    and on the test clips (seen by neither stage) the greedy and the sampled accuracy; the KL to
    the stage-2 weights stays bounded."""
    gcfg = _grpo_cfg()
    prompts, test = PromptSet(start.split("val"), gcfg), PromptSet(start.split("test"), gcfg)
    train_names = set(start.split("train").names())
    assert not (set(prompts.names()) | set(test.names())) & train_names
    assert not set(prompts.names()) & set(test.names())
    model, scorer = start.model(), RewardScorer(gcfg, L6)
    greedy_before = evaluate_prompts(model, test, scorer)["accuracy"]
    sampled_before = _sampled_accuracy(model, start, test, gcfg)

    steps = 60
    t0 = time.perf_counter()
    summary = train_grpo(model, start.processor, prompts, _train_cfg(tmp_path / "run", steps, 5e-3), gcfg)
    elapsed = time.perf_counter() - t0
    greedy_after = evaluate_prompts(model, test, scorer)["accuracy"]
    sampled_after = _sampled_accuracy(model, start, test, gcfg)
    log = read_losses(tmp_path / "run")
    assert len(log) == steps and summary["step"] == steps
    quarter = steps // 4

    def mean(key: str, rows: list[dict[str, Any]]) -> float:
        return sum(r[key] for r in rows) / len(rows)

    reward = (mean("reward", log[:quarter]), mean("reward", log[-quarter:]))
    accuracy = (mean("accuracy", log[:quarter]), mean("accuracy", log[-quarter:]))
    kl = [r["kl"] for r in log]
    print(
        f"test greedy accuracy {greedy_before:.3f} -> {greedy_after:.3f}, sampled "
        f"{sampled_before:.3f} -> {sampled_after:.3f}; rollouts reward {reward[0]:.3f} -> "
        f"{reward[1]:.3f}, accuracy {accuracy[0]:.3f} -> {accuracy[1]:.3f}; KL max {max(kl):.3f} "
        f"last {kl[-1]:.3f}; {elapsed:.1f}s"
    )
    # Measured (2 CPU cores, seed 0): greedy 0.667 -> 0.833, sampled 0.333 -> 0.625, rollout reward
    # 0.50 -> 0.87, accuracy 0.38 -> 0.65, KL max 1.12, last 0.33.
    assert greedy_before <= 0.75 and greedy_after >= greedy_before + 0.1
    assert sampled_before <= 0.45 and sampled_after >= sampled_before + 0.2
    assert reward[1] >= reward[0] + 0.2 and accuracy[1] >= accuracy[0] + 0.15
    assert all(math.isfinite(v) and v >= 0 for v in kl) and max(kl) < 2.0 and kl[-1] < 1.0
    assert kl[0] == 0.0 and kl[-1] > 0.0  # the policy starts at the reference and moves away
    assert summary["rewards"] == [pytest.approx(mean("reward", log))]
    assert {"reward_format", "answer_tokens", "clip_fraction", "loss", "lr"} <= set(log[-1])


def _resume_run(start: Start, out: Path, **kwargs: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    gcfg = _grpo_cfg(group_size=4, iterations=2)
    prompts = PromptSet(start.split("val"), gcfg)
    tc = dataclasses.replace(_train_cfg(out, 4, 5e-3), epochs=2, batch_size=2, grad_accum=2, save_every=2,
                             seed=5)  # fmt: skip
    model = start.model()
    summary = train_grpo(model, start.processor, prompts, tc, gcfg, **kwargs)
    return {k: v.clone() for k, v in trainable_state(model).items()}, summary


def test_resume_mid_run_matches_an_uninterrupted_run(start: Start, tmp_path: Path, one_thread: None) -> None:
    """Two optimiser steps per batch of rollouts, two micro-batches per step, epochs of 4 steps:
    stopped after step 7 (the rollouts of steps 6-7 used by step 6 and 7, last checkpoint step_6
    in the second epoch) and resumed, the run ends with the weights and log of an uninterrupted
    one."""
    full, full_summary = _resume_run(start, tmp_path / "a")
    first, _ = _resume_run(start, tmp_path / "b", stop_after_step=7)
    assert read_pointer(tmp_path / "b") == {"dir": "step_6", "epoch": 1, "step": 6}
    assert len(read_losses(tmp_path / "b")) == 7
    random.seed(999)
    torch.manual_seed(999)  # a new process: its RNG holds something else until the resume
    resumed, summary = _resume_run(start, tmp_path / "b")
    assert summary["step"] == full_summary["step"] == 8
    assert summary["rewards"] == pytest.approx(full_summary["rewards"], abs=1e-6)
    assert set(resumed) == set(full)
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], atol=1e-6, rtol=0)
    assert any(not torch.equal(first[k], full[k]) for k in full)
    assert any(not torch.equal(start.state[k], full[k]) for k in full)  # it trained at all
    a, b = read_losses(tmp_path / "a"), read_losses(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(8))
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys() and all(x[k] == pytest.approx(y[k], abs=1e-6) for k in x)
    reference = read_safetensors(tmp_path / "b" / REFERENCE_FILE)
    assert set(reference) == set(start.state)
    for key in reference:
        torch.testing.assert_close(reference[key], start.state[key], atol=0, rtol=0)


def test_resume_refuses_other_settings(start: Start, tmp_path: Path, one_thread: None) -> None:
    gcfg = _grpo_cfg(group_size=2)
    prompts = PromptSet(start.split("val"), gcfg)
    tc = dataclasses.replace(_train_cfg(tmp_path / "run", 2, 1e-3), batch_size=1)
    train_grpo(start.model(), start.processor, prompts, tc, gcfg)
    with pytest.raises(TrainError, match="grpo/rewards settings beta"):
        train_grpo(start.model(), start.processor, prompts, tc, dataclasses.replace(gcfg, beta=0.1))
    with pytest.raises(TrainError, match=r"multiples of grpo\.iterations"):
        train_grpo(start.model(), start.processor, prompts, tc, dataclasses.replace(gcfg, iterations=3))
    with pytest.raises(TrainError, match="another processor"):
        other = EmotionLlamaProcessor(start.processor.tokenizer, start.cfg)
        train_grpo(start.model(), other, prompts, tc, gcfg)


def test_train_command_runs_the_grpo_recipe(start: Start, tmp_path: Path, one_thread: None) -> None:
    """``emotion-llama train configs/train/tiny_grpo.yaml`` from a stage-2 run folder, then the same
    command resumes from OUT/last."""
    out = tmp_path / "grpo"
    args = [
        "train", str(CONFIGS / "tiny_grpo.yaml"), f"init_from={start.run}", f"data={start.data}",
        f"out_dir={out}", "train.iters_per_epoch=2", "train.batch_size=2", "train.eval_max_clips=4",
    ]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "train.epochs=1"])
    assert result.exit_code == 0, result.output
    assert "stage grpo: 84 prompts" in result.output and "validation reward" in result.output
    assert "reward" in result.output.split("training summary")[1]  # the summary table's column
    assert (out / "epoch_0" / "model.safetensors").is_file() and (out / REFERENCE_FILE).is_file()
    log = read_losses(out)
    assert len(log) == 2 and {"reward", "accuracy", "reward_format", "kl", "answer_tokens"} <= set(log[0])
    result = CliRunner().invoke(app, [*args, "train.epochs=2"])
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output and (out / "epoch_1").is_dir()
    assert len(read_losses(out)) == 4
