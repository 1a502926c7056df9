"""One policy update over chunked sequences, exact and within memory.

Logits are computed only where the model generated tokens (a 49k-word vocabulary over every
position of a long agent prompt would not fit). The loss is computed once over the whole step,
on the per-token logprobs as leaves, so every aggregation mode normalises over the whole step;
its gradient with respect to each token's logprob is then pushed through the model one
micro-batch at a time (`sum(g_t * logp_t)` has the same parameter gradient). `pi_old` comes from
its own no-grad pass over the pre-update weights.

Every logprob of the RL update is of the *sampling* distribution, `log softmax(logits / T)` at the
rollouts' temperature T, as mu was (docs/ipa.md): pi_old, pi_theta, the reference and the entropy
alike, so that at zero staleness pi_old / mu is 1. SFT and imitation are likelihood training of
the model itself, at T = 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from rockroll.models.generation import forward_options
from rockroll.train.advantages import chunk_returns, group_advantages
from rockroll.train.batch import Batch, collate
from rockroll.train.chunks import ChunkedSequence
from rockroll.train.config import TrainConfig
from rockroll.train.ipa import ipa_loss
from rockroll.train.losses import ppo_clip_loss, regularization, topr_loss

MIN_SHARED_PREFIX = 16  # a shorter common prefix is not worth a forward call of its own


@dataclass
class Tokens:
    """Per generated token of a step, in sequence order; `rewards`/`success`/`num_chunks`/
    `groups` per sequence (`success`: the verifier passed it, the one definition of success)."""

    chunk_ids: torch.Tensor
    seq_index: torch.Tensor
    mu: torch.Tensor
    rewards: torch.Tensor
    success: torch.Tensor
    num_chunks: torch.Tensor
    groups: torch.Tensor
    failed: torch.Tensor  # 1 where the token's turn is masked out of SFT (its tool call failed)
    old_is_mu: torch.Tensor  # 1 where mu stands in for pi_old (see `pi_old`)

    @classmethod
    def of(
        cls,
        seqs: list[ChunkedSequence],
        groups: list[int],
        failed_chunks: list[set[int]] | None = None,
    ) -> Tokens:
        chunk, seq, mu, failed, old_is_mu = [], [], [], [], []
        for i, s in enumerate(seqs):
            bad = failed_chunks[i] if failed_chunks else set()
            for c, m, lp in zip(s.chunk_ids, s.response_mask, s.mu_logprobs, strict=True):
                if m:
                    chunk.append(c)
                    seq.append(i)
                    mu.append(lp)
                    failed.append(c in bad)
                    old_is_mu.append(s.old_is_mu)
        return cls(
            chunk_ids=torch.tensor(chunk, dtype=torch.long),
            seq_index=torch.tensor(seq, dtype=torch.long),
            mu=torch.tensor(mu, dtype=torch.float32),
            rewards=torch.tensor([s.reward for s in seqs], dtype=torch.float32),
            success=torch.tensor([s.passed for s in seqs], dtype=torch.bool),
            num_chunks=torch.tensor([s.num_chunks for s in seqs], dtype=torch.long),
            groups=torch.tensor(groups, dtype=torch.long),
            failed=torch.tensor(failed, dtype=torch.bool),
            old_is_mu=torch.tensor(old_is_mu, dtype=torch.bool),
        )

    def to(self, device: torch.device | str) -> Tokens:
        """The same tensors on `device` (where the model's logprobs are)."""
        return Tokens(**{k: v.to(device) for k, v in vars(self).items()})


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
    model: Any,
    seqs: list[ChunkedSequence],
    pad_id: int,
    *,
    entropy: bool,
    amp: bool,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logprob (and entropy) of every generated token of `seqs`, in sequence order, under
    `log softmax(logits / temperature)`: the distribution the tokens were sampled from.

    The tokens all sequences begin with (the system prompt; a group's whole task prompt) go
    through the model once and every row attends to their keys and values, so a group of 8
    episodes of one task pays for its prompt once, not 8 times. Gradients flow back through
    them.
    """
    device = next(model.parameters()).device
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    shared = shared_prefix(seqs)
    with autocast(device, amp):
        if shared:
            hidden, batch = _forward_after_prefix(body, seqs, shared, pad_id, device)
        else:
            batch = collate(seqs, pad_id, "pad").to(device)
            hidden = body(**batch.model_inputs()).last_hidden_state
        targets = batch.response_mask[:, 1:].bool()
        logits = model.get_output_embeddings()(hidden[:, :-1][targets])
    logp_all = torch.log_softmax(_tempered(logits.float(), temperature), dim=-1)
    logp = logp_all.gather(1, batch.input_ids[:, 1:][targets].unsqueeze(1)).squeeze(1)
    ent = -(logp_all.exp() * logp_all).sum(-1) if entropy else None
    return logp, ent


def _tempered(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if not temperature > 0:
        raise ValueError(f"the temperature must be > 0 to score sampled tokens, not {temperature}")
    return logits if temperature == 1.0 else logits / temperature


def shared_prefix(seqs: list[ChunkedSequence]) -> int:
    """How many leading tokens run once for all of `seqs`: their common prefix, stopping
    before the position whose logits predict the first generated token; 0 when not worth it."""
    if len(seqs) < 2:
        return 0
    first, n = seqs[0].input_ids, min(len(s) for s in seqs)
    for s in seqs[1:]:
        n = next((i for i in range(n) if s.input_ids[i] != first[i]), n)
    for s in seqs:
        if 1 in s.response_mask:
            n = min(n, s.response_mask.index(1) - 1)
    return n if n >= MIN_SHARED_PREFIX else 0


def _forward_after_prefix(
    body: Any, seqs: list[ChunkedSequence], shared: int, pad_id: int, device: torch.device
) -> tuple[torch.Tensor, Batch]:
    """Hidden states of every sequence after its first `shared` tokens, which run once as one
    row whose cache every row attends to; and the batch of those suffixes."""
    cache_name, _ = forward_options(body)
    prefix = torch.tensor([seqs[0].input_ids[:shared]], device=device)
    cache = getattr(body(input_ids=prefix, use_cache=True), cache_name)
    cache.batch_repeat_interleave(len(seqs))
    batch = collate([_suffix(s, shared) for s in seqs], pad_id, "pad").to(device)
    assert batch.attention_mask is not None  # "pad" always has one
    mask = torch.cat([batch.attention_mask.new_ones(len(seqs), shared), batch.attention_mask], 1)
    out = body(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids + shared,
        attention_mask=mask,
        use_cache=True,
        **{cache_name: cache},
    )
    return out.last_hidden_state, batch


def _suffix(s: ChunkedSequence, start: int) -> ChunkedSequence:
    return dataclasses.replace(
        s,
        input_ids=s.input_ids[start:],
        response_mask=s.response_mask[start:],
        chunk_ids=s.chunk_ids[start:],
        mu_logprobs=s.mu_logprobs[start:],
    )


def micro_batches(seqs: list[ChunkedSequence], tokens: int) -> Iterator[list[ChunkedSequence]]:
    """Consecutive sequences, about `tokens` tokens run per batch (see `cost`; at least one
    sequence per batch). A sequence that would shorten the batch's shared prefix (the next
    task's group) starts a new batch, so each group's prompt still runs once."""
    batch: list[ChunkedSequence] = []
    for s in seqs:
        grown = [*batch, s]
        narrows = len(batch) > 1 and shared_prefix(grown) < shared_prefix(batch)
        if batch and (narrows or cost(grown) > tokens):
            yield batch
            batch = []
        batch.append(s)
    if batch:
        yield batch


def cost(seqs: list[ChunkedSequence]) -> int:
    """Tokens one forward over `seqs` runs: the shared prefix once, then the padded rest."""
    shared = shared_prefix(seqs)
    return shared + len(seqs) * (max(len(s) for s in seqs) - shared)


@torch.no_grad()
def score_tokens(
    model: Any,
    seqs: list[ChunkedSequence],
    pad_id: int,
    *,
    amp: bool,
    micro_tokens: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Logprobs of the generated tokens under the current weights (at `temperature`), without a
    graph."""
    parts = [
        forward_tokens(model, mb, pad_id, entropy=False, amp=amp, temperature=temperature)[0]
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
    """The configured algorithm's loss over one step's tokens, and its diagnostics. With
    resampling on, the policy loss is scaled by lambda_RL on every step (eq. 10), whether or not
    the step also imitates."""
    old = pi_old(old, t)
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
            success=t.success,
            mu_logp=t.mu,
            config=cfg.ipa,
            aggregation=cfg.aggregation,
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
            success=t.success,
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
    if cfg.resample.enabled:
        loss = cfg.resample.rl_coef * loss
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


def pi_old(recomputed: torch.Tensor, t: Tokens) -> torch.Tensor:
    """docs/ipa.md point 6: pi_old is recomputed where the weights that sampled a token still exist,
    and is mu where they are gone (`old_is_mu`); there the mismatch masks compare mu with itself
    and keep every chunk, i.e. they are skipped."""
    if not bool(t.old_is_mu.any()):
        return recomputed
    return torch.where(t.old_is_mu.to(recomputed.device), t.mu.to(recomputed.device), recomputed)


def sft_loss(logp: torch.Tensor, t: Tokens) -> torch.Tensor:
    """Eq. 1-2: masked negative log-likelihood, normalised by the unmasked tokens; turns whose
    tool call failed carry no loss (error masking). The imitation loss with every weight 1."""
    return imitation_loss(logp, t, torch.ones_like(logp))


def sft_grad(t: Tokens) -> torch.Tensor:
    """d(sft_loss)/d(logp_t): the loss is linear in the logprobs, so no scoring pass is needed."""
    return imitation_grad(t, torch.ones_like(t.mu))


ImitationWeighting = Literal["return", "uniform"]


def imitation_weights(t: Tokens, gamma: float, weighting: ImitationWeighting) -> torch.Tensor:
    """Per token of expert sequences, eq. 10's weight: the chunk return of its expert turn,
    `G*_k = gamma^(K*-k) R*` (eq. 7 on the expert trajectory: K* its turns, R* its reward), or 1
    with "uniform"; 0 where the token is masked out (a turn after the crucial one, or an errored
    tool call)."""
    if weighting == "uniform":
        weight = torch.ones_like(t.mu)
    elif weighting == "return":
        weight = chunk_returns(
            t.chunk_ids, t.num_chunks[t.seq_index], t.rewards[t.seq_index], gamma
        )
    else:
        raise ValueError(f"imitation weighting must be 'return' or 'uniform', not {weighting!r}")
    return torch.where(t.failed, torch.zeros_like(weight), weight)


def imitation_loss(logp: torch.Tensor, t: Tokens, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 10's imitation term before lambda_IL: the weighted NLL of the expert turns kept,
    `sum_t w_t (-log pi_theta(a_t))` over the number of kept tokens."""
    keep = ~t.failed
    return (weights * -logp)[keep].sum() / keep.sum().clamp(min=1)


def imitation_grad(t: Tokens, weights: torch.Tensor) -> torch.Tensor:
    """d(imitation_loss)/d(logp_t): the loss is linear in the logprobs, so no scoring pass is
    needed."""
    keep = (~t.failed).float()
    return -weights * keep / keep.sum().clamp(min=1)


def backward_through_model(
    model: Any,
    seqs: list[ChunkedSequence],
    pad_id: int,
    grad_logp: torch.Tensor,
    grad_entropy: torch.Tensor | None,
    *,
    amp: bool,
    micro_tokens: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Accumulate d(loss)/d(params) = sum_t g_t d(logp_t)/d(params), one micro-batch at once,
    with the logprobs (and entropies) at `temperature`; returns the logprobs this pass computed
    (detached)."""
    start = 0
    seen = []
    for mb in micro_batches(seqs, micro_tokens):
        logp, ent = forward_tokens(
            model,
            mb,
            pad_id,
            entropy=grad_entropy is not None,
            amp=amp,
            temperature=temperature,
        )
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
