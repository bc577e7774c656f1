"""Stage 3: GRPO with verifiable rewards, on the engine of the supervised loop.

Each optimiser step reads ``grad_accum`` micro-batches of ``batch_size`` prompts per process from
the same shuffled stream as stage 1 and 2 (:mod:`~emotion_llama.train.sampler`), and for each:

1. runs the frozen ViT once per prompt, repeats every prompt ``group_size`` (G) times and samples
   G answers with the current policy (the model's own batched ``generate``: temperature
   ``grpo.temperature``, nucleus ``grpo.top_p``, no top-k and no repetition penalty, so that the
   answers come from the distribution whose log-probabilities the loss uses);
2. scores every answer (:class:`~emotion_llama.train.rewards.RewardScorer`) and turns the rewards
   into group-normalised advantages (:func:`~emotion_llama.train.grpo.group_advantages`);
3. computes, without gradient, the reference log-probabilities (``beta`` > 0: the trainable
   weights the run started from, swapped into the model for one forward pass, so no second
   model is held) and, with ``grpo.iterations`` > 1, those of the sampling policy;
4. back-propagates the clipped, token-masked loss with the k3 KL penalty
   (:func:`~emotion_llama.train.grpo.grpo_loss`) through the accelerate-wrapped model.

With ``grpo.iterations`` = mu > 1 the same rollouts serve mu optimiser steps (then the ratio and
its clip matter); ``train.iters_per_epoch`` and ``train.save_every`` must be multiples of mu, so
that every checkpoint falls between two batches of rollouts.

Dropout modules are turned off for the run (GRPO's ratio and KL compare two forward passes of
the same answers); the caller's model gets them back at the end. The schedule, AdamW, the
``step_N``/``epoch_K`` checkpoints and ``last``, exact resume (RNG states, which drive the
sampling, and the stream position) and ``losses.jsonl``/TensorBoard come from the supervised
loop's modules. The reference weights are written once to ``out_dir/reference.safetensors`` and
read back on resume. ``best`` is not written: the validation here is a reward, not a loss
(``val/reward``, ``val/accuracy`` per epoch with ``train.eval_metrics``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from emotion_llama.model.checkpoint import read_safetensors, write_safetensors
from emotion_llama.model.inputs import MultimodalInputs
from emotion_llama.model.keys import to_canonical_key, to_module_key
from emotion_llama.model.modeling import EmotionLlama
from emotion_llama.model.processor import EmotionLlamaProcessor
from emotion_llama.model.tokenizer import batch_decode
from emotion_llama.prompts import clean_generation, resolve_label_set
from emotion_llama.train.checkpointing import (
    Checkpointer,
    TrainingProgress,
    record_train_clips,
    restore_rng,
    seed_all,
)
from emotion_llama.train.config import GrpoConfig, TrainConfig, TrainError
from emotion_llama.train.engine import (
    SHARDED,
    autocast,
    check_engine,
    engine_kind,
    make_accelerator,
    prepare,
    set_gradient_checkpointing,
)
from emotion_llama.train.grpo import completion_mask, group_advantages, grpo_loss, token_logps
from emotion_llama.train.grpo_data import PromptBatch, PromptSet
from emotion_llama.train.rewards import COMPONENTS, RewardScorer
from emotion_llama.train.sampler import stream_loader
from emotion_llama.train.steplog import StepLog

if TYPE_CHECKING:
    from accelerate import Accelerator

    from emotion_llama.evaluate.openvocab import EmotionWheels

REFERENCE_FILE = "reference.safetensors"


@dataclass
class GrpoProgress(TrainingProgress):
    """:class:`TrainingProgress` plus the running means of the rollouts, saved with it."""

    #: Mean reward and label accuracy of the rollouts of each completed epoch.
    rewards: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    epoch_reward: float = 0.0
    epoch_accuracy: float = 0.0
    #: The settings of the run (:meth:`GrpoConfig.resume_settings`), checked on resume.
    settings: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["grpo"] = {
            "rewards": self.rewards,
            "accuracies": self.accuracies,
            "epoch_reward": self.epoch_reward,
            "epoch_accuracy": self.epoch_accuracy,
            "settings": self.settings,
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        grpo = state.get("grpo")
        if grpo is None:
            raise TrainError("the checkpoint to resume is not of a GRPO run; use another out_dir")
        self.rewards, self.accuracies = list(grpo["rewards"]), list(grpo["accuracies"])
        self.epoch_reward, self.epoch_accuracy = float(grpo["epoch_reward"]), float(grpo["epoch_accuracy"])
        self.settings = dict(grpo["settings"])

    def record_rollouts(self, reward: float, accuracy: float) -> None:
        self.epoch_reward += reward
        self.epoch_accuracy += accuracy

    def close_epoch_loss(self, iters_per_epoch: int) -> None:
        super().close_epoch_loss(iters_per_epoch)
        self.rewards.append(self.epoch_reward / iters_per_epoch)
        self.accuracies.append(self.epoch_accuracy / iters_per_epoch)

    def finish_epoch(self) -> None:
        super().finish_epoch()
        self.epoch_reward = self.epoch_accuracy = 0.0

    def summary(self, main_process: bool) -> dict[str, Any]:
        return {
            **super().summary(main_process),
            "rewards": list(self.rewards),
            "accuracies": list(self.accuracies),
        }


class Reference:
    """The trainable weights the run started from, swapped into the model for the reference
    log-probabilities (the frozen weights are shared, so no second model)."""

    def __init__(self, model: EmotionLlama, weights: dict[str, torch.Tensor]) -> None:
        self.params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        missing = sorted(set(self.params) - set(weights))
        if missing:
            raise TrainError(f"the reference weights lack {', '.join(missing[:3])}")
        self.weights = {k: weights[k] for k in self.params}

    @classmethod
    def snapshot(cls, model: EmotionLlama) -> Reference:
        return cls(model, {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad})

    def save(self, path: Path) -> None:
        state = {to_canonical_key(k): v.detach().cpu().contiguous() for k, v in self.weights.items()}
        write_safetensors(state, path, {"format": "emotion-llama", "role": "grpo-reference"})

    @classmethod
    def load(cls, model: EmotionLlama, path: Path) -> Reference:
        if not path.is_file():
            raise TrainError(f"{path}: missing; a GRPO run with a KL penalty resumes with its reference")
        return cls(model, {to_module_key(k): v for k, v in read_safetensors(path).items()})

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """The reference weights in the model's trainable parameters, for a forward without grad."""
        current = {k: p.data for k, p in self.params.items()}
        try:
            for k, p in self.params.items():
                w = self.weights[k]
                if w.device != p.device or w.dtype != p.dtype:  # the engine moved the model since
                    w = self.weights[k] = w.to(p.device, p.dtype)
                p.data = w
            yield
        finally:
            for k, p in self.params.items():
                p.data = current[k]


@dataclass
class Rollouts:
    """One micro-batch of sampled answers: the full sequences and what the loss needs."""

    inputs: MultimodalInputs  # prompt + answer, (N, P + T); N = prompts x G
    prompt_width: int
    answers: torch.Tensor  # (N, T) ids
    mask: torch.Tensor  # (N, T) bool
    advantages: torch.Tensor  # (N,)
    scores: dict[str, list[float]]
    texts: list[str]
    old_logps: torch.Tensor | None = None
    ref_logps: torch.Tensor | None = None


def _with_vision_tokens(model: EmotionLlama, inputs: MultimodalInputs, cfg: TrainConfig) -> MultimodalInputs:
    """The frozen ViT once per prompt: ``vision_tokens`` instead of ``pixel_values``."""
    if inputs.pixel_values is None:
        return inputs
    with torch.no_grad(), autocast(cfg, inputs.input_ids.device):
        tokens = model.global_encoder(inputs.pixel_values)
    return dataclasses.replace(inputs, pixel_values=None, vision_tokens=tokens)


def _repeat(inputs: MultimodalInputs, times: int) -> MultimodalInputs:
    return dataclasses.replace(
        inputs, **{k: v.repeat_interleave(times, dim=0) for k, v in inputs.as_kwargs().items()}
    )


def _join(prompts: MultimodalInputs, answers: torch.Tensor, mask: torch.Tensor) -> MultimodalInputs:
    """Left-padded prompts followed by right-padded answers: the sequences the loss scores."""
    n = answers.shape[0]
    zeros = torch.zeros((n, answers.shape[1]), dtype=prompts.feature_mask.dtype, device=answers.device)
    return dataclasses.replace(
        prompts,
        input_ids=torch.cat([prompts.input_ids, answers], dim=1),
        attention_mask=torch.cat([prompts.attention_mask, mask.to(prompts.attention_mask.dtype)], dim=1),
        feature_mask=torch.cat([prompts.feature_mask, zeros], dim=1),
        labels=None,
    )


def answer_logps(model: Any, rollouts: Rollouts, temperature: float) -> torch.Tensor:
    """(N, T) log-probabilities of the answers' tokens under ``model`` (any forward: the
    accelerate-wrapped one for the gradient)."""
    logits = model(**rollouts.inputs.as_kwargs()).logits
    width, t = rollouts.prompt_width, rollouts.answers.shape[1]
    return token_logps(logits[:, width - 1 : width - 1 + t], rollouts.answers, temperature)


def sample_answers(
    model: EmotionLlama, inputs: MultimodalInputs, gcfg: GrpoConfig, *, greedy: bool = False
) -> torch.Tensor:
    """New token ids (N, T) for left-padded prompts: sampled as the module docstring says, or
    greedy."""
    kwargs: dict[str, Any] = {"max_new_tokens": gcfg.max_new_tokens, "do_sample": not greedy}
    if not greedy:
        kwargs.update(temperature=gcfg.temperature, top_p=gcfg.top_p, top_k=0, repetition_penalty=1.0)
    return model.generate(inputs, **kwargs)


def _decode(processor: EmotionLlamaProcessor, answers: torch.Tensor) -> list[str]:
    return [clean_generation(t) for t in batch_decode(processor.tokenizer, answers.cpu())]


def make_rollouts(
    model: EmotionLlama,
    processor: EmotionLlamaProcessor,
    batch: PromptBatch,
    scorer: RewardScorer,
    cfg: TrainConfig,
    reference: Reference | None,
    device: torch.device,
) -> Rollouts:
    """Steps 1-3 of the module docstring for one micro-batch (no gradient anywhere)."""
    gcfg = scorer.cfg
    g = gcfg.group_size
    was_training = model.training
    model.eval()
    try:
        prompts = _repeat(_with_vision_tokens(model, batch.inputs.to(device), cfg), g)
        with torch.no_grad(), autocast(cfg, device):
            answers = sample_answers(model, prompts, gcfg)
        mask = completion_mask(answers, processor.eos_id)
        texts = _decode(processor, answers)
        scores = scorer.score(texts, [t for t in batch.targets for _ in range(g)])
        rewards = torch.tensor(scores["reward"], dtype=torch.float32)
        advantages = group_advantages(rewards, g, scale=gcfg.scale_rewards).to(device)
        rollouts = Rollouts(_join(prompts, answers, mask), prompts.input_ids.shape[1], answers, mask,
                            advantages, scores, texts)  # fmt: skip
        with torch.no_grad(), autocast(cfg, device):
            if reference is not None:
                with reference.swapped():
                    rollouts.ref_logps = answer_logps(model, rollouts, gcfg.temperature)
            if gcfg.iterations > 1:
                rollouts.old_logps = answer_logps(model, rollouts, gcfg.temperature)
    finally:
        model.train(was_training)
        model.global_encoder.eval()
    return rollouts


def _policy_step(
    accelerator: Accelerator,
    engine_model: Any,
    optimizer: Any,
    rollouts: list[Rollouts],
    gcfg: GrpoConfig,
    lr: float,
) -> dict[str, float]:
    """One optimiser step at ``lr`` over the micro-batches' rollouts: the local sums the step
    logs (loss, KL and clipped share weighted by tokens, tokens)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    fp16 = accelerator.mixed_precision == "fp16"
    total, kl_sum, clip_sum, tokens = 0.0, 0.0, 0.0, 0
    for r in rollouts:
        with accelerator.accumulate(engine_model):
            with accelerator.autocast():
                logps = answer_logps(engine_model, r, gcfg.temperature)
            old = r.old_logps if r.old_logps is not None else logps.detach()
            loss, stats = grpo_loss(
                logps, old, r.advantages, r.mask, ref_logps=r.ref_logps, beta=gcfg.beta,
                clip_low=gcfg.clip_eps, clip_high=gcfg.clip_high, norm=gcfg.loss_norm,
            )  # fmt: skip
            if not torch.isfinite(loss) and not fp16:  # fp16: the grad scaler skips the step
                raise TrainError(f"the GRPO loss is {float(loss)}; lower the lr")
            accelerator.backward(_objective(accelerator, loss, stats.tokens, gcfg))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        total += float(loss.detach())
        kl_sum += stats.kl * stats.tokens
        clip_sum += stats.clip_fraction * stats.tokens
        tokens += stats.tokens
    return {"loss": total, "kl": kl_sum, "clip_fraction": clip_sum, "tokens": float(tokens)}


def _objective(accelerator: Accelerator, loss: torch.Tensor, tokens: int, gcfg: GrpoConfig) -> torch.Tensor:
    """What to back-propagate: with ``token`` norm over several processes, each rank's token mean
    weighted by its share of the answer tokens (DDP averages the gradients). Every rank holds as
    many answers, so the ``sequence`` norm needs no weight."""
    world = accelerator.num_processes
    if world == 1 or gcfg.loss_norm == "sequence":
        return loss
    total = accelerator.reduce(torch.tensor([float(tokens)], device=accelerator.device), reduction="sum")
    return loss * (tokens * world / max(float(total[0]), 1.0))


def _step_values(
    accelerator: Accelerator, rollouts: list[Rollouts], sums: dict[str, float], n_micro: int
) -> dict[str, float]:
    """The step's logged values, means over every answer of every process: the loss, the total
    reward and each computed component, the label accuracy, the KL and clipped share (token
    means) and the answer length in tokens."""
    keys = [k for k in ("reward", *COMPONENTS) if k in rollouts[0].scores]
    local = [sum(sum(r.scores[k]) for r in rollouts) for k in keys]
    answers = float(sum(len(r.texts) for r in rollouts))
    row = [*local, answers, sums["loss"], sums["kl"], sums["clip_fraction"], sums["tokens"]]
    values = torch.tensor(row, dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        values = accelerator.reduce(values, reduction="sum")
    v = values.tolist()
    n, tokens = max(v[len(keys)], 1.0), max(v[-1], 1.0)
    out = {("reward" if k == "reward" else f"reward_{k}"): v[i] / n for i, k in enumerate(keys)}
    out["accuracy"] = out.pop("reward_accuracy")
    world = accelerator.num_processes
    out.update(
        loss=v[len(keys) + 1] / (n_micro * world),
        kl=v[-3] / tokens,
        clip_fraction=v[-2] / tokens,
        answer_tokens=v[-1] / n,
    )
    return out


@contextmanager
def dropout_off(model: torch.nn.Module) -> Iterator[None]:
    """Every dropout module at p = 0 for the block, then as it was."""
    saved = [(m, m.p) for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    try:
        for m, _ in saved:
            m.p = 0.0
        yield
    finally:
        for m, p in saved:
            m.p = p


@torch.no_grad()
def evaluate_prompts(
    model: EmotionLlama,
    prompts: PromptSet,
    scorer: RewardScorer,
    *,
    max_clips: int | None = None,
    batch_size: int = 8,
    cfg: TrainConfig | None = None,
) -> dict[str, float]:
    """Greedy answers to the first ``max_clips`` prompts (all by default), scored: the mean
    reward, label accuracy, each computed component and the answer length in tokens."""
    from emotion_llama.model.generation import model_device

    cfg = cfg or TrainConfig()
    device = model_device(model)
    was_training = model.training
    model.eval()
    n = len(prompts) if max_clips is None else min(max_clips, len(prompts))
    sums: dict[str, float] = {}
    try:
        for start in range(0, n, batch_size):
            batch = prompts.batch(range(start, min(start + batch_size, n)))
            inputs = batch.inputs.to(device)
            with autocast(cfg, device):
                answers = sample_answers(model, inputs, scorer.cfg, greedy=True)
            scores = scorer.score(_decode(prompts.processor, answers), batch.targets)
            scores["answer_tokens"] = completion_mask(answers, prompts.processor.eos_id).sum(1).tolist()
            for k, values in scores.items():
                sums[k] = sums.get(k, 0.0) + float(sum(values))
    finally:
        model.train(was_training)
    return {k: v / max(n, 1) for k, v in sums.items()}


def _check_settings(cfg: TrainConfig, gcfg: GrpoConfig) -> None:
    mu = gcfg.iterations
    if cfg.iters_per_epoch % mu or (cfg.save_every is not None and cfg.save_every % mu):
        raise TrainError(
            f"train.iters_per_epoch ({cfg.iters_per_epoch}) and train.save_every ({cfg.save_every}) "
            f"must be multiples of grpo.iterations ({mu}): checkpoints fall between batches of rollouts"
        )
    if cfg.cache_vit:
        raise TrainError("train.cache_vit is for stages 1-2; stage grpo runs the ViT once per prompt anyway")
    if cfg.modality_dropout:
        raise TrainError("train.modality_dropout is for stages 1-2; stage grpo samples with every modality")


def _start(
    accelerator: Accelerator, model: EmotionLlama, out: Path, gcfg: GrpoConfig, saved: dict[str, Any] | None,
    progress: GrpoProgress, reference: Reference | None,
) -> Reference | None:  # fmt: skip
    """Check a resumed run's settings and bring back its reference; a fresh one records them."""
    settings = gcfg.resume_settings()
    if saved is not None:
        changed = sorted(k for k in settings if progress.settings.get(k) != settings[k])
        if changed:
            raise TrainError(
                f"{out}: cannot resume, grpo/rewards settings {', '.join(changed)} differ from the "
                "saved run; use another out_dir or resume=False"
            )
        return Reference.load(model, out / REFERENCE_FILE) if reference is not None else None
    progress.settings = settings
    if reference is not None and accelerator.is_main_process:
        reference.save(out / REFERENCE_FILE)
    accelerator.wait_for_everyone()
    return reference


@dataclass
class _Run:
    """The objects of one run that every step uses."""

    accelerator: Accelerator
    engine_model: Any
    optimizer: Any
    checkpointer: Checkpointer
    progress: GrpoProgress
    log: StepLog
    cfg: TrainConfig
    model: EmotionLlama
    processor: EmotionLlamaProcessor
    scorer: RewardScorer
    reference: Reference | None
    val_prompts: PromptSet | None
    stop_after_epoch: int | None
    stop_after_step: int | None

    def rollouts(self, batches: Iterator[PromptBatch]) -> list[Rollouts]:
        unwrapped = self.accelerator.unwrap_model(self.engine_model)
        device = self.accelerator.device
        return [
            make_rollouts(
                unwrapped, self.processor, next(batches), self.scorer, self.cfg, self.reference, device
            )
            for _ in range(self.cfg.grad_accum)
        ]

    def step(self, rollouts: list[Rollouts], first: bool, t0: float) -> bool:
        """One optimiser step on ``rollouts`` (``first``: the step that consumed their prompts),
        logged, counted and followed by its checkpoint; whether to stop now."""
        cfg, gcfg, progress = self.cfg, self.scorer.cfg, self.progress
        per_step = cfg.batch_size * self.accelerator.num_processes * cfg.grad_accum
        lr = cfg.schedule.lr(progress.step)
        sums = _policy_step(self.accelerator, self.engine_model, self.optimizer, rollouts, gcfg, lr)
        values = _step_values(self.accelerator, rollouts, sums, cfg.grad_accum)
        answers = per_step * gcfg.group_size
        tokens = values["answer_tokens"] * answers
        self.log.step(progress.step, progress.epoch, values["loss"], lr, answers, tokens,
                      time.perf_counter() - t0, extra=values)  # fmt: skip
        progress.record_step(values["loss"], per_step if first else 0)
        progress.record_rollouts(values["reward"], values["accuracy"])
        return self.after_step()

    def after_step(self) -> bool:
        """The epoch's validation and checkpoint, or a step checkpoint; whether to stop now."""
        progress, cfg = self.progress, self.cfg
        epoch_end = progress.at_epoch_end(cfg.iters_per_epoch)
        if epoch_end:
            progress.close_epoch_loss(cfg.iters_per_epoch)
            if self.val_prompts is not None and cfg.eval_metrics:
                self.validate()
            progress.finish_epoch()
            self.checkpointer.save(progress, "epoch")
            self.log.restart_rate()
        elif cfg.save_every is not None and progress.step % cfg.save_every == 0:
            self.checkpointer.save(progress, "step")
        if self.stop_after_step is not None and progress.step >= self.stop_after_step:
            return True
        return epoch_end and self.stop_after_epoch is not None and progress.epoch - 1 >= self.stop_after_epoch

    def validate(self) -> None:
        """Greedy answers to the validation prompts, scored (main process; the others wait)."""
        assert self.val_prompts is not None
        progress, cfg = self.progress, self.cfg
        found = None
        if self.accelerator.is_main_process:
            found = evaluate_prompts(
                self.model, self.val_prompts, self.scorer, max_clips=cfg.eval_max_clips, cfg=cfg
            )
            progress.val_metrics.append({"epoch": progress.epoch, **found})
            self.log.values({f"val/{k}": v for k, v in found.items()}, step=progress.step - 1)
            reward, accuracy = found["reward"], found["accuracy"]
            print(
                f"epoch {progress.epoch} validation reward {reward:.4f} accuracy {accuracy:.4f}", flush=True
            )
        self.accelerator.wait_for_everyone()
        self.engine_model.train()
        self.model.global_encoder.eval()


def train_grpo(
    model: EmotionLlama,
    processor: EmotionLlamaProcessor,
    prompts: PromptSet,
    cfg: TrainConfig,
    gcfg: GrpoConfig,
    *,
    val_prompts: PromptSet | None = None,
    wheels: EmotionWheels | None = None,
    resume: bool = True,
    stop_after_epoch: int | None = None,
    stop_after_step: int | None = None,
    also_trained_on: Collection[str] = (),
) -> dict[str, Any]:
    """Train ``model`` in place with GRPO (the module docstring); ``stop_after_*`` as for
    :func:`emotion_llama.train.loop.train`. Returns the supervised loop's summary keys (``losses``
    are the GRPO losses) plus ``rewards`` and ``accuracies`` (rollout means per epoch)."""
    cfg.validate()
    gcfg.validate()
    _check_settings(cfg, gcfg)
    if prompts.processor is not processor:
        raise TrainError("the prompts were built with another processor")
    scorer = RewardScorer(gcfg, resolve_label_set(gcfg.labels), wheels)
    out = Path(cfg.out_dir)
    accelerator = make_accelerator(cfg, out)
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        record_train_clips(out, [*also_trained_on, *prompts.names()])
    accelerator.wait_for_everyone()
    check_engine(cfg, accelerator)
    if engine_kind(accelerator, cfg) in SHARDED:
        raise TrainError("stage grpo samples with the full weights on every process: use DDP or ZeRO-2")
    if cfg.compile:
        raise TrainError("train.compile is for the supervised stages; stage grpo samples and trains eagerly")
    if cfg.deepspeed:
        raise TrainError(
            "stage grpo does not run on train.deepspeed (its steps go through accelerate): use DDP, or "
            "accelerate's ZeRO-2 (configs/accelerate/deepspeed_zero2.yaml) on GPUs"
        )

    # The reference is the weights as given, before a resume loads a checkpoint's.
    reference = Reference.snapshot(model) if gcfg.beta > 0 else None
    progress = GrpoProgress()
    checkpointer = Checkpointer(accelerator, out, cfg, model)
    saved = checkpointer.load_last(progress) if resume else None
    reference = _start(accelerator, model, out, gcfg, saved, progress, reference)
    if cfg.gradient_checkpointing:
        set_gradient_checkpointing(model, True)
    engine_model, optimizer = prepare(accelerator, model, cfg)
    checkpointer.attach(engine_model, optimizer)
    if saved is not None and main:
        print(f"resumed from {checkpointer.resumed_from} at epoch {progress.epoch}, step {progress.step}")
    per_step = cfg.batch_size * world * cfg.grad_accum
    log = StepLog(
        accelerator, out, cfg, progress.step if saved is not None else None, items_per_step=per_step
    )
    # As in the supervised loop: the iterator draws from torch's RNG before the RNG is set.
    batches: Iterator[PromptBatch] = iter(
        stream_loader(prompts, cfg, progress.position, rank=rank, world_size=world)
    )
    if saved is not None:
        restore_rng(saved, rank)
    else:
        seed_all(cfg.seed)
    run = _Run(accelerator, engine_model, optimizer, checkpointer, progress, log, cfg, model, processor,
               scorer, reference, val_prompts, stop_after_epoch, stop_after_step)  # fmt: skip
    engine_model.train()
    model.global_encoder.eval()
    try:
        with dropout_off(model):
            stop = False
            while progress.epoch < cfg.epochs and not stop:
                t0 = time.perf_counter()
                rollouts = run.rollouts(batches)
                for it in range(gcfg.iterations):
                    stop = run.step(rollouts, it == 0, t0)
                    t0 = time.perf_counter()
                    if stop:
                        break
    finally:
        log.close()
        accelerator.unwrap_model(engine_model, keep_fp32_wrapper=False)
        if cfg.gradient_checkpointing:
            set_gradient_checkpointing(model, False)
    return {**progress.summary(main), "warnings": []}
