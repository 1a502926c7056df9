"""IPA (docs/ipa.md, eq. 7-9): chunk-level returns, ratios and train/inference mismatch masks.

A chunk is one model turn. Chunks are addressed by a flat key `seq * max_chunks + chunk_id`,
so per-chunk quantities are tensors of size `num_seqs * max_chunks` and tokens reach theirs by
indexing. Chunk ids count from 0; the spec's k counts from 1 (see `chunk_returns`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rockroll.train.advantages import chunk_returns, outcome_rewards
from rockroll.train.config import IPASettings
from rockroll.train.losses import split_reinforce
from rockroll.train.reduce import Aggregation, aggregate, segment_mean, segment_sum_count


@dataclass
class IPAOutput:
    """The loss and, for the chunks that have tokens, what it was built from (detached)."""

    loss: torch.Tensor
    chunk_ratio: torch.Tensor
    chunk_kept: torch.Tensor
    chunk_return: torch.Tensor


def chunk_keys(chunk_ids: torch.Tensor, seq_index: torch.Tensor, max_chunks: int) -> torch.Tensor:
    """Each token's chunk as a flat key `seq * max_chunks + chunk_id`; -1 where not generated."""
    keys = seq_index * max_chunks + chunk_ids
    return torch.where((chunk_ids >= 0) & (seq_index >= 0), keys, -1)


def chunk_ratio(
    logp: torch.Tensor, old_logp: torch.Tensor, keys: torch.Tensor, num_keys: int
) -> torch.Tensor:
    """Eq. 8: `rho_k = exp(mean_{t in c_k} (log pi_theta - log pi_old))`, the geometric mean of
    the token ratios of each chunk (1 for a chunk with no tokens)."""
    return torch.exp(segment_mean(logp - old_logp, keys, num_keys))


def chunk_mismatch_mask(
    old_logp: torch.Tensor,
    mu_logp: torch.Tensor,
    keys: torch.Tensor,
    num_keys: int,
    threshold: float,
) -> torch.Tensor:
    """Step 4: `m_k = 1[1/H <= exp(mean_{t in c_k} (log pi_old - log mu)) <= H]`; the lower
    bound is ours (a chunk the trainer finds far less likely than the engine is as suspect)."""
    if threshold < 1:
        raise ValueError(f"the mismatch threshold H must be >= 1, not {threshold}")
    ratio = torch.exp(segment_mean(old_logp - mu_logp, keys, num_keys))
    return (ratio <= threshold) & (ratio >= 1 / threshold)


def ipa_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    mask: torch.Tensor,
    chunk_ids: torch.Tensor,
    seq_index: torch.Tensor,
    rewards: torch.Tensor,
    num_chunks: torch.Tensor,
    *,
    success: torch.Tensor,
    mu_logp: torch.Tensor | None = None,
    config: IPASettings | None = None,
    aggregation: Aggregation = "token-mean",
) -> IPAOutput:
    """Eq. 9 per token t of chunk k, then aggregated over the tokens of kept chunks:
    success (the verifier passed it): `-m_k G_k log pi_theta`; failure (everything else, partial
    credit included): `-m_k sg(clip(rho_k, 0, 1)) G_k log pi_theta`, with `G_k` from eq. 7 on
    `fail_reward` and `rho_k` from eq. 8.

    `rewards`, `success` and `num_chunks` have one entry per sequence. Pass `mu_logp` to apply
    the mismatch mask; leave it out when `old_logp` already is mu (asynchronous training, spec
    step 6). `config` holds gamma (per chunk, not per token), H (which bounds pi_old / mu per
    chunk) and the failure reward; `aggregation` reduces the per-token loss.
    """
    cfg = config or IPASettings()
    num_seqs, max_chunks = rewards.numel(), max(int(num_chunks.max()), 1)
    generated = mask.bool() & (chunk_ids >= 0)
    if bool((generated & (chunk_ids >= num_chunks[seq_index.clamp(min=0)])).any()):
        raise ValueError("a token's chunk id is not below its sequence's number of chunks")
    num_keys = num_seqs * max_chunks
    keys = chunk_keys(torch.where(generated, chunk_ids, -1), seq_index, max_chunks)
    ratio = chunk_ratio(logp.detach(), old_logp, keys, num_keys)
    kept = torch.ones(num_keys, dtype=torch.bool, device=logp.device)
    if mu_logp is not None:
        kept = chunk_mismatch_mask(old_logp, mu_logp, keys, num_keys, cfg.mismatch_threshold)
    returns, seq = _flat_returns(rewards, success, num_chunks, max_chunks, cfg)
    at = keys.clamp(min=0)
    token_loss = split_reinforce(logp, returns[at], ratio[at], success.bool()[seq[at]])
    loss = aggregate(token_loss, (keys >= 0) & kept[at], seq_index, aggregation)
    _, sizes = segment_sum_count(torch.ones_like(old_logp), keys, num_keys)
    present = sizes > 0
    return IPAOutput(loss, ratio[present], kept[present], returns[present])


def _flat_returns(
    rewards: torch.Tensor,
    success: torch.Tensor,
    num_chunks: torch.Tensor,
    max_chunks: int,
    cfg: IPASettings,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 7 for every chunk key, and the sequence of each key."""
    key = torch.arange(rewards.numel() * max_chunks, device=rewards.device)
    seq, turn = key // max_chunks, key % max_chunks
    turn = torch.where(turn < num_chunks[seq], turn, -1)  # keys past an episode's K are unused
    reward = outcome_rewards(rewards, success, cfg.fail_reward)[seq]
    return chunk_returns(turn, num_chunks[seq], reward, cfg.gamma), seq
