"""The arithmetic of GRPO (Shao et al. 2024, DeepSeekMath), pure tensor functions.

For one prompt the policy samples a group of G answers ``o_1..o_G`` with rewards ``r_i``; each
answer's advantage is its reward centred on the group's mean and, with ``scale``, divided by the
group's standard deviation (unbiased, as ``torch.std``) plus ``eps``:
``A_i = (r_i - mean(r)) / (std(r) + eps)``. A group whose rewards are all equal has advantage 0
everywhere: it teaches nothing.

Per answer token ``t`` (``mask`` marks the answer's tokens, the end-of-sequence token included):

* ratio ``rho = exp(logp - old_logp)``, the policy against the one that sampled (1 with one
  optimiser step per batch of rollouts, where only its gradient counts);
* clipped surrogate ``min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A)``;
* the k3 estimator of KL(policy || reference) (Schulman 2020):
  ``exp(ref - logp) - (ref - logp) - 1``, never negative, unbiased for the KL when tokens are
  sampled from the policy;
* the per-token loss ``-(surrogate) + beta * kl``.

:func:`grpo_loss` averages the per-token loss over each answer's tokens, then over the answers
(``sequence``: GRPO's ``1/G sum_i 1/|o_i| sum_t``), or over all answer tokens of the batch at once
(``token``: DAPO's, where a long answer weighs more).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from emotion_llama.train.config import TrainError


def group_advantages(
    rewards: torch.Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """(N,) rewards of N = groups x ``group_size`` answers, group by group in order -> (N,)
    advantages (see the module docstring)."""
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise TrainError(f"{tuple(rewards.shape)} rewards do not split into groups of {group_size}")
    grouped = rewards.double().view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return centred.view(-1).to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def token_logps(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probabilities (N, T) of ``tokens`` (N, T) under ``logits`` (N, T, V) divided by
    ``temperature`` (the distribution the tokens were sampled from), in float32."""
    scaled = logits.float() / temperature
    picked = scaled.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(scaled, dim=-1)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """The per-token k3 estimate of KL(policy || reference): ``exp(d) - d - 1``, ``d = ref - logp``."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1.0


def completion_mask(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(N, T) bool: the tokens of each completion up to and including its first ``eos_id`` (all
    of them when it has none: the answer was cut at ``max_new_tokens``)."""
    is_eos = ids == eos_id
    seen_before = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0
    return ~seen_before


@dataclass(frozen=True)
class LossStats:
    """What one loss evaluation reports (plain floats, token means over the answers)."""

    kl: float
    clip_fraction: float
    tokens: int


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    norm: str = "sequence",
) -> tuple[torch.Tensor, LossStats]:
    """The clipped GRPO loss of answers (N, T) with advantages (N,) and the statistics logged.

    ``logps`` carries the gradient; ``old_logps`` and ``ref_logps`` are constants (``old_logps =
    logps.detach()`` with one optimiser step per batch of rollouts). ``ref_logps`` is needed when
    ``beta`` > 0."""
    if norm not in ("sequence", "token"):
        raise TrainError(f"unknown loss norm {norm!r}; choose sequence or token")
    if beta > 0 and ref_logps is None:
        raise TrainError("a KL penalty (beta > 0) needs the reference log-probabilities")
    weight = mask.to(logps.dtype)
    adv = advantages.to(logps.dtype).unsqueeze(1)
    ratio = torch.exp(logps - old_logps.detach())
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = -torch.minimum(ratio * adv, clipped * adv)
    kl = k3_kl(logps, ref_logps.detach()) if ref_logps is not None else torch.zeros_like(logps)
    if beta > 0:
        per_token = per_token + beta * kl
    lengths = weight.sum(dim=1)
    total = weight.sum()
    if norm == "sequence":
        loss = ((per_token * weight).sum(dim=1) / lengths.clamp(min=1.0)).mean()
    else:
        loss = (per_token * weight).sum() / total.clamp(min=1.0)
    with torch.no_grad():
        n = max(float(total), 1.0)
        was_clipped = ((ratio < 1.0 - clip_low) & (adv < 0)) | ((ratio > 1.0 + clip_high) & (adv > 0))
        stats = LossStats(
            kl=float((kl * weight).sum()) / n,
            clip_fraction=float((was_clipped.to(weight.dtype) * weight).sum()) / n,
            tokens=int(total),
        )
    return loss, stats
