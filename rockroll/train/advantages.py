"""Learning signals without a critic: GRPO's group-normalised advantages, and IPA's failure
reward and discounted chunk returns (docs/ipa.md eq. 7)."""

from __future__ import annotations

import torch

from rockroll.train.reduce import segment_sum_count


def group_advantages(
    rewards: torch.Tensor, groups: torch.Tensor, *, scale_by_std: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """GRPO: `A_i = (r_i - mean_g) / (std_g + eps)` over the samples i of group g.

    `groups` holds any integer id per sample (samples of one task share one). `std_g` is the
    unbiased sample standard deviation, as TRL and verl use; a group of one sample has advantage
    0, and so does every sample of a group whose rewards are all equal. `scale_by_std=False`
    gives `r_i - mean_g`, which does not up-weight groups whose rewards barely differ.
    """
    if rewards.shape != groups.shape or rewards.dim() != 1:
        raise ValueError(
            f"rewards {rewards.shape} and groups {groups.shape}: want equal 1-D shapes"
        )
    _, index = torch.unique(groups, return_inverse=True)
    size = int(index.max()) + 1 if index.numel() else 0
    sums, counts = segment_sum_count(rewards, index, size)
    centered = rewards - (sums / counts)[index]
    if not scale_by_std:
        return centered
    squares, _ = segment_sum_count(centered**2, index, size)
    std = (squares / (counts - 1).clamp(min=1)).sqrt()
    return centered / (std[index] + eps)


def outcome_rewards(
    rewards: torch.Tensor, success: torch.Tensor, fail_reward: float
) -> torch.Tensor:
    """`R` where the verifier said passed, else `R_fail` (docs/ipa.md, [ours]): a failed episode's
    partial credit (a fractional reward without a pass) is not a success, and with the
    verifier's R = 0 for a failure the failure branch of eq. 9 would be identically zero."""
    if rewards.shape != success.shape:
        raise ValueError(f"rewards {rewards.shape} and success {success.shape}: want one shape")
    return torch.where(success.bool(), rewards, torch.full_like(rewards, fail_reward))


def chunk_returns(
    chunk_ids: torch.Tensor, num_chunks: torch.Tensor, rewards: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Eq. 7: `G_k = gamma^(K-k) * R`, elementwise over broadcastable tensors.

    The spec counts chunks from k = 1 to K (the outcome chunk); `chunk_ids` count from 0, so
    chunk id j is k = j + 1 and `G = gamma^(K-1-j) * R`: the last chunk gets R undiscounted and
    each earlier one a factor gamma less. Entries with chunk id < 0 (not generated) get 0.
    """
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], not {gamma}")
    if bool(((chunk_ids >= num_chunks) & (chunk_ids >= 0)).any()):
        raise ValueError("a chunk id is not below its episode's number of chunks")
    exponent = (num_chunks - 1 - chunk_ids).to(rewards.dtype)
    discounted = torch.pow(torch.full_like(exponent, gamma), exponent) * rewards
    return torch.where(chunk_ids >= 0, discounted, torch.zeros_like(discounted))
