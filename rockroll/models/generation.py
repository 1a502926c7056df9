"""Batched sampling from a Hugging Face causal LM, recording every token's exact logprob.

A trainer needs the logprob of each token under the very distribution it was drawn from
(log_softmax(logits / temperature), or of the raw logits when greedy), which `model.generate`
does not hand back exactly. This is a plain loop over a KV cache instead: prompts are left
padded with an attention mask and explicit positions, every row samples from its own seeded
`torch.Generator` (so a row's tokens do not depend on what shares its batch), and rows that end
are dropped from the batch. Without padding no mask is passed, so one prompt takes exactly the
path of an unpadded forward. Rows with the same prompt (a group of episodes of one task) share
one prefill, whose cache and logits are then spread to every row of that prompt.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

StopCheck = Callable[[int, list[int]], bool]
"""`check(row, token_ids)`: True to end that row now (its tokens so far given), as a stop
string does; the row counts as stopped."""


@dataclass(frozen=True)
class Generated:
    """One row's completion; `stopped` when a stop id (kept as the last token) or the stop
    check ended it. `top` holds, per token, the `top_logprobs` most likely (id, logprob)."""

    token_ids: list[int]
    logprobs: list[float]
    stopped: bool
    top: list[list[tuple[int, float]]] = field(default_factory=list)


def forward_options(model: Any) -> tuple[str, dict[str, int]]:
    """The name of `model.forward`'s cache argument, and its option to keep only last logits.

    transformers 5 renamed `past_key_values` to `cache` (argument and output alike).
    """
    params = inspect.signature(model.forward).parameters
    cache = "cache" if "cache" in params else "past_key_values"
    return cache, {"logits_to_keep": 1} if "logits_to_keep" in params else {}


@torch.inference_mode()
def generate(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_tokens: int | Sequence[int],
    temperature: float = 0.0,
    seeds: Sequence[int | None] | None = None,
    stop_ids: Collection[int] = (),
    stop_check: StopCheck | None = None,
    top_logprobs: int = 0,
) -> list[Generated]:
    """Complete every prompt (token ids) at once; one `Generated` per prompt, in order.

    `max_tokens` is one limit for all rows or one per row; `seeds` one per row (None draws a
    fresh seed); greedy when `temperature` is 0. Generation ends for a row at a stop id, when
    `stop_check(row, tokens)` says so, or at its limit, and for the batch when every row has
    ended. `top_logprobs` > 0 also records that many most likely tokens at every step.
    """
    limits = [max_tokens] * len(prompts) if isinstance(max_tokens, int) else list(max_tokens)
    seeds = [None] * len(prompts) if seeds is None else list(seeds)
    if len(limits) != len(prompts) or len(seeds) != len(prompts):
        raise ValueError("max_tokens and seeds need one value per prompt")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    rows = [i for i, limit in enumerate(limits) if limit > 0]
    out = [Generated([], [], False) for _ in prompts]
    if rows:
        check = None if stop_check is None else (lambda j, ids: stop_check(rows[j], ids))
        done = _Decoder(model, [prompts[i] for i in rows], [limits[i] for i in rows]).run(
            temperature, [seeds[i] for i in rows], stop_ids, check, top_logprobs
        )
        for i, generated in zip(rows, done, strict=True):
            out[i] = generated
    return out


class _Decoder:
    """The state of one batch: inputs of the next step, the cache, and what was recorded."""

    def __init__(self, model: Any, prompts: list[Sequence[int]], limits: list[int]) -> None:
        self.model = model
        self.limits = limits
        self.device = next(model.parameters()).device
        self.cache_name, self.keep_last = forward_options(model)
        distinct: dict[tuple[int, ...], int] = {}
        source = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
        self.ids, self.mask, self.positions = _left_pad(list(distinct), self.device)
        # Prefill row of each batch row, until the first forward has spread the prefill.
        self.spread = (
            torch.tensor(source, device=self.device) if len(distinct) < len(prompts) else None
        )
        self.cache: Any = None
        self.live = list(range(len(prompts)))  # batch row -> prompt row
        self.rows = torch.arange(len(prompts), device=self.device)  # the same, on the device
        self.tokens = torch.zeros(len(prompts), max(limits), dtype=torch.long, device=self.device)
        self.logprobs = torch.zeros(len(prompts), max(limits), device=self.device)

    def run(
        self,
        temperature: float,
        seeds: list[int | None],
        stop_ids: Collection[int],
        stop_check: StopCheck | None = None,
        top_logprobs: int = 0,
    ) -> list[Generated]:
        generators = _generators(seeds, self.device) if temperature > 0 else []
        stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=self.device)
        lengths = list(self.limits)
        stopped = [False] * len(self.limits)
        so_far: list[list[int]] = [[] for _ in self.limits]  # host copies, for stop_check
        tops: list[list[list[tuple[int, float]]]] = [[] for _ in self.limits]
        for step in range(max(self.limits)):
            token, logprob, logp = _pick(self._forward(), temperature, generators)
            self.tokens[self.rows, step] = token
            self.logprobs[self.rows, step] = logprob
            hits = torch.isin(token, stops).tolist()  # the one host sync of a plain step
            if top_logprobs:
                values, ids = logp.topk(min(top_logprobs, logp.shape[-1]), dim=-1)
                for j, (vs, is_) in enumerate(zip(values.tolist(), ids.tolist(), strict=True)):
                    tops[self.live[j]].append(list(zip(is_, vs, strict=True)))
            if stop_check is not None:
                for j, t in enumerate(token.tolist()):
                    so_far[self.live[j]].append(t)
            keep = []
            for j, row in enumerate(self.live):
                hit = hits[j] or (stop_check is not None and stop_check(row, so_far[row]))
                if hit or self.limits[row] == step + 1:
                    lengths[row], stopped[row] = step + 1, hit
                else:
                    keep.append(j)
            if not keep:
                break
            self._advance(token, keep)
            generators = [generators[j] for j in keep] if generators else []
        return self._results(lengths, stopped, tops)

    def _forward(self) -> torch.Tensor:
        kwargs = {self.cache_name: self.cache, "use_cache": True, **self.keep_last}
        if self.mask is not None:
            kwargs["attention_mask"] = self.mask
        out = self.model(input_ids=self.ids, position_ids=self.positions, **kwargs)
        self.cache = getattr(out, self.cache_name)
        logits = out.logits[:, -1].float()
        if self.spread is not None:
            self.cache.batch_select_indices(self.spread)
            self.positions = self.positions[self.spread]
            if self.mask is not None:
                self.mask = self.mask[self.spread]
            logits, self.spread = logits[self.spread], None
        return logits

    def _advance(self, token: torch.Tensor, keep: list[int]) -> None:
        """Next step's inputs: the sampled tokens of the rows still going."""
        self.ids, self.positions = token[:, None], self.positions[:, -1:] + 1
        if self.mask is not None:
            self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.live), 1)], dim=1)
        if len(keep) < len(self.live):
            index = torch.tensor(keep, device=self.device)
            self.cache.batch_select_indices(index)
            self.ids, self.positions = self.ids[index], self.positions[index]
            if self.mask is not None:
                self.mask = self.mask[index]
            self.live, self.rows = [self.live[j] for j in keep], self.rows[index]

    def _results(
        self, lengths: list[int], stopped: list[bool], tops: list[list[list[tuple[int, float]]]]
    ) -> list[Generated]:
        tokens, logprobs = self.tokens.tolist(), self.logprobs.tolist()
        return [
            Generated(tokens[i][:n], logprobs[i][:n], stopped[i], tops[i][:n])
            for i, n in enumerate(lengths)
        ]


def _left_pad(
    prompts: Sequence[Sequence[int]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Ids padded on the left (with id 0, hidden by the mask), the mask, and positions.

    Positions count real tokens only, so a padded row sees the positions it would alone. With
    no padding the mask is None.
    """
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + list(p) for p in prompts], device=device)
    if all(len(p) == width for p in prompts):
        positions = torch.arange(width, device=device).expand(len(prompts), width)
        return ids, None, positions
    mask = torch.tensor(
        [[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long, device=device
    )
    return ids, mask, (mask.cumsum(dim=1) - 1).clamp_min(0)


def _generators(seeds: list[int | None], device: torch.device) -> list[torch.Generator]:
    generators = []
    for seed in seeds:
        generator = torch.Generator(device=device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        generators.append(generator)
    return generators


def _pick(
    logits: torch.Tensor, temperature: float, generators: list[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's next token, its logprob under the distribution it was drawn from, and that
    distribution (log probabilities over the vocabulary).

    Sampling inverts each row's CDF at one uniform draw from the row's own generator: the same
    distribution as `torch.multinomial`, at one batched cumsum per step instead of one
    vocabulary-sized draw per row (those were about a tenth of a CPU decoding step)."""
    if temperature > 0:
        logp = torch.log_softmax(logits / temperature, dim=-1)
        cdf = logp.exp().cumsum(dim=-1)
        draws = torch.cat([torch.rand(1, generator=g, device=g.device) for g in generators])
        # The first entry of the CDF above the draw: never a token of probability zero.
        point = (draws * cdf[:, -1]).to(cdf.dtype)[:, None]
        token = torch.searchsorted(cdf, point, right=True).squeeze(1)
        token = token.clamp(max=logits.shape[-1] - 1)
    else:
        logp = torch.log_softmax(logits, dim=-1)
        token = logp.argmax(dim=-1)
    return token, logp.gather(1, token[:, None]).squeeze(1), logp
