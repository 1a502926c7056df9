"""Token-level policy losses (PPO-clip, TOPR) and the regularisers (KL to a reference, entropy).

All take per-token tensors of one shape ([B, T] padded or [1, N] packed), a boolean `mask` of
the tokens that carry loss and `seq_index` (the sequence of each token, -1 on padding), and
return a scalar to minimise. Equation numbers are those of ../shared/docs/ipa.md.
"""

from __future__ import annotations

import torch

from rockroll.train.advantages import outcome_rewards
from rockroll.train.reduce import Aggregation, aggregate, segment_mean


def ppo_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    seq_index: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    aggregation: Aggregation = "token-mean",
) -> torch.Tensor:
    """PPO-clip with an asymmetric range (a larger `eps_high` lets rare tokens grow faster):
    `L_t = -min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t)`, `r_t = exp(logp_t - old_t)`.
    """
    ratio = torch.exp(logp - old_logp)
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
    token_loss = -torch.minimum(ratio * advantages, clipped * advantages)
    return aggregate(token_loss, mask, seq_index, aggregation)


def split_reinforce(
    logp: torch.Tensor, returns: torch.Tensor, ratio: torch.Tensor, success: torch.Tensor
) -> torch.Tensor:
    """The TOPR split of eq. 9, per token: `-G log pi` on successes and
    `-sg(clip(rho, 0, 1)) G log pi` on failures; the ratio only ever shrinks a push-down."""
    weight = torch.where(success, torch.ones_like(ratio), ratio.detach().clamp(0, 1))
    return -weight * returns * logp


def topr_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    mask: torch.Tensor,
    seq_index: torch.Tensor,
    rewards: torch.Tensor,
    *,
    success: torch.Tensor,
    mu_logp: torch.Tensor | None = None,
    threshold: float = 5.0,
    fail_reward: float = -1.0,
    aggregation: Aggregation = "token-mean",
) -> torch.Tensor:
    """TOPR, the baseline of eq. 3-6: one ratio per trajectory,
    `rho = exp(mean_t (logp_t - old_t))` over its generated tokens, used by `split_reinforce`
    with the trajectory's reward (`fail_reward` where it did not pass), and the token mask
    `1[pi_old / mu <= H]` when `mu_logp` is given. `rewards` and `success` have one entry per
    sequence.
    """
    loss_index = torch.where(mask.bool(), seq_index, -1)
    ratio = torch.exp(segment_mean(logp.detach() - old_logp, loss_index, rewards.numel()))
    at = seq_index.clamp(min=0)
    returns = outcome_rewards(rewards, success, fail_reward)[at]
    token_loss = split_reinforce(logp, returns, ratio[at], success.bool()[at])
    keep = mask.bool()
    if mu_logp is not None:
        keep = keep & (torch.exp(old_logp - mu_logp) <= threshold)
    return aggregate(token_loss, keep, seq_index, aggregation)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref) from tokens sampled from pi:
    `exp(ref - logp) - (ref - logp) - 1`, never negative and unbiased."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's next-token distribution: `-sum_v p_v log p_v`."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def regularization(
    mask: torch.Tensor,
    seq_index: torch.Tensor,
    *,
    logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    aggregation: Aggregation = "token-mean",
) -> torch.Tensor:
    """`kl_coef * agg(k3) - entropy_coef * agg(entropy)`, to add to any policy loss; each term
    is left out when its coefficient is 0 or its inputs are missing."""
    total = torch.zeros((), device=mask.device)
    if kl_coef and logp is not None and ref_logp is not None:
        total = total + kl_coef * aggregate(kl_k3(logp, ref_logp), mask, seq_index, aggregation)
    if entropy_coef and entropy is not None:
        total = total - entropy_coef * aggregate(entropy, mask, seq_index, aggregation)
    return total
