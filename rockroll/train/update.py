"""One policy update over chunked sequences, exact and within memory.

Logits are computed only where the model generated tokens (a 49k-word vocabulary over every
position of a long agent prompt would not fit). The loss is computed once over the whole step,
on the per-token logprobs as leaves, so every aggregation mode normalises over the whole step;
its gradient with respect to each token's logprob is then pushed through the model one
micro-batch at a time (`sum(g_t * logp_t)` has the same parameter gradient). `pi_old` comes from
its own no-grad pass over the pre-update weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from rockroll.train.advantages import group_advantages
from rockroll.train.batch import collate
from rockroll.train.chunks import ChunkedSequence
from rockroll.train.config import TrainConfig
from rockroll.train.ipa import IPAConfig, ipa_loss
from rockroll.train.losses import ppo_clip_loss, regularization, topr_loss
from rockroll.train.reduce import aggregate


@dataclass
class Tokens:
    """Per generated token of a step, in sequence order; `rewards`/`num_chunks`/`groups` per
    sequence."""

    chunk_ids: torch.Tensor
    seq_index: torch.Tensor
    mu: torch.Tensor
    rewards: torch.Tensor
    num_chunks: torch.Tensor
    groups: torch.Tensor
    failed: torch.Tensor  # 1 where the token's turn is masked out of SFT (its tool call failed)

    @classmethod
    def of(
        cls,
        seqs: list[ChunkedSequence],
        groups: list[int],
        failed_chunks: list[set[int]] | None = None,
    ) -> Tokens:
        chunk, seq, mu, failed = [], [], [], []
        for i, s in enumerate(seqs):
            bad = failed_chunks[i] if failed_chunks else set()
            for c, m, lp in zip(s.chunk_ids, s.response_mask, s.mu_logprobs, strict=True):
                if m:
                    chunk.append(c)
                    seq.append(i)
                    mu.append(lp)
                    failed.append(c in bad)
        return cls(
            chunk_ids=torch.tensor(chunk, dtype=torch.long),
            seq_index=torch.tensor(seq, dtype=torch.long),
            mu=torch.tensor(mu, dtype=torch.float32),
            rewards=torch.tensor([s.reward for s in seqs], dtype=torch.float32),
            num_chunks=torch.tensor([s.num_chunks for s in seqs], dtype=torch.long),
            groups=torch.tensor(groups, dtype=torch.long),
            failed=torch.tensor(failed, dtype=torch.bool),
        )


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast where the device supports it; float32 otherwise."""
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def forward_tokens(
    model: Any, seqs: list[ChunkedSequence], pad_id: int, *, entropy: bool, amp: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logprob (and entropy) of every generated token of `seqs`, in sequence order."""
    device = next(model.parameters()).device
    batch = collate(seqs, pad_id, "pad").to(device)
    with autocast(device, amp):
        body = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
        hidden = body(**batch.model_inputs()).last_hidden_state
        targets = batch.response_mask[:, 1:].bool()
        logits = model.get_output_embeddings()(hidden[:, :-1][targets])
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(1, batch.input_ids[:, 1:][targets].unsqueeze(1)).squeeze(1)
    ent = -(logp_all.exp() * logp_all).sum(-1) if entropy else None
    return logp, ent


def micro_batches(seqs: list[ChunkedSequence], tokens: int) -> Iterator[list[ChunkedSequence]]:
    """Consecutive sequences, about `tokens` padded tokens per batch (at least one sequence)."""
    batch: list[ChunkedSequence] = []
    for s in seqs:
        width = max([len(x) for x in batch] + [len(s)])
        if batch and width * (len(batch) + 1) > tokens:
            yield batch
            batch = []
        batch.append(s)
    if batch:
        yield batch


@torch.no_grad()
def score_tokens(
    model: Any, seqs: list[ChunkedSequence], pad_id: int, *, amp: bool, micro_tokens: int
) -> torch.Tensor:
    """Logprobs of the generated tokens under the current weights, without a graph."""
    parts = [
        forward_tokens(model, mb, pad_id, entropy=False, amp=amp)[0]
        for mb in micro_batches(seqs, micro_tokens)
    ]
    return torch.cat(parts) if parts else torch.zeros(0)


def rl_loss(
    cfg: TrainConfig,
    logp: torch.Tensor,
    old: torch.Tensor,
    t: Tokens,
    *,
    entropy: torch.Tensor | None = None,
    ref: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The configured algorithm's loss over one step's tokens, and its diagnostics."""
    mask = torch.ones_like(logp, dtype=torch.bool)
    stats: dict[str, float] = {}
    if cfg.algorithm == "ipa":
        out = ipa_loss(
            logp,
            old,
            mask,
            t.chunk_ids,
            t.seq_index,
            t.rewards,
            t.num_chunks,
            mu_logp=t.mu,
            config=IPAConfig(
                gamma=cfg.ipa.gamma,
                mismatch_threshold=cfg.ipa.mismatch_threshold,
                fail_reward=cfg.ipa.fail_reward,
                aggregation=cfg.aggregation,
            ),
        )
        loss = out.loss
        stats["chunk_ratio_mean"] = float(out.chunk_ratio.mean()) if out.chunk_ratio.numel() else 1
        stats["masked_chunk_fraction"] = (
            float(1 - out.chunk_kept.float().mean()) if out.chunk_kept.numel() else 0.0
        )
    elif cfg.algorithm == "topr":
        loss = topr_loss(
            logp,
            old,
            mask,
            t.seq_index,
            t.rewards,
            mu_logp=t.mu,
            threshold=cfg.ipa.mismatch_threshold,
            fail_reward=cfg.ipa.fail_reward,
            aggregation=cfg.aggregation,
        )
    else:
        adv = group_advantages(t.rewards, t.groups, scale_by_std=cfg.grpo.scale_by_std)
        loss = ppo_clip_loss(
            logp,
            old,
            adv[t.seq_index],
            mask,
            t.seq_index,
            eps_low=cfg.grpo.eps_low,
            eps_high=cfg.grpo.eps_high,
            aggregation=cfg.aggregation,
        )
        stats["token_ratio_mean"] = float(torch.exp(logp.detach() - old).mean())
    loss = loss + regularization(
        mask,
        t.seq_index,
        logp=logp,
        ref_logp=ref,
        kl_coef=cfg.kl_coef,
        entropy=entropy,
        entropy_coef=cfg.entropy_coef,
        aggregation=cfg.aggregation,
    )
    return loss, stats


def sft_loss(logp: torch.Tensor, t: Tokens) -> torch.Tensor:
    """Eq. 1-2: masked negative log-likelihood, normalised by the unmasked tokens; turns whose
    tool call failed carry no loss (error masking)."""
    return aggregate(-logp, ~t.failed, t.seq_index, "token-mean")


def sft_grad(t: Tokens) -> torch.Tensor:
    """d(sft_loss)/d(logp_t): the loss is linear in the logprobs, so no scoring pass is needed."""
    keep = (~t.failed).float()
    return -keep / keep.sum().clamp(min=1)


def backward_through_model(
    model: Any,
    seqs: list[ChunkedSequence],
    pad_id: int,
    grad_logp: torch.Tensor,
    grad_entropy: torch.Tensor | None,
    *,
    amp: bool,
    micro_tokens: int,
) -> torch.Tensor:
    """Accumulate d(loss)/d(params) = sum_t g_t d(logp_t)/d(params), one micro-batch at once;
    returns the logprobs this pass computed (detached)."""
    start = 0
    seen = []
    for mb in micro_batches(seqs, micro_tokens):
        logp, ent = forward_tokens(model, mb, pad_id, entropy=grad_entropy is not None, amp=amp)
        end = start + logp.numel()
        surrogate = (logp * grad_logp[start:end].to(logp.device)).sum()
        if ent is not None and grad_entropy is not None:
            surrogate = surrogate + (ent * grad_entropy[start:end].to(ent.device)).sum()
        surrogate.backward()
        seen.append(logp.detach())
        start = end
    if start != grad_logp.numel():
        raise RuntimeError(f"token count changed between passes: {start} != {grad_logp.numel()}")
    return torch.cat(seen) if seen else torch.zeros(0)
