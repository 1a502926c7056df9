"""Batched sampling from a Hugging Face causal LM, recording every token's exact logprob.

A trainer needs the logprob of each token under the very distribution it was drawn from
(log_softmax(logits / temperature), or of the raw logits when greedy), which `model.generate`
does not hand back exactly. This is a plain loop over a KV cache instead (`Decoding`): prompts
are left padded with an attention mask and explicit positions, every row samples from its own
seeded `torch.Generator` at its own temperature (so a row's tokens do not depend on what shares
its batch), rows that end leave the batch and new ones may join it between steps (continuous
batching). Without padding no mask is passed, so one prompt takes exactly the path of an
unpadded forward. Rows admitted together with the same prompt (a group of episodes of one
task) share one prefill, whose cache and logits are then spread to every row of that prompt.
`generate` is the whole-batch use: every row admitted at once, stepped until all have ended.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from rockroll.models import kv_cache
from rockroll.models.constraints import Constraint

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
    rows = [
        Row(
            prompt,
            limit,
            temperature,
            seed,
            None if stop_check is None else partial(stop_check, i),
            top_logprobs,
        )
        for i, (prompt, limit, seed) in enumerate(zip(prompts, limits, seeds, strict=True))
    ]
    decode_all(model, rows, stop_ids)
    return [row.result() for row in rows]


def decode_all(model: Any, rows: list[Row], stop_ids: Collection[int] = ()) -> None:
    """Decode `rows` as one whole batch: all admitted at once, stepped until every one ended
    (their tokens are then in them)."""
    decoding = Decoding(model, stop_ids)
    decoding.admit(rows)
    while decoding.rows:
        decoding.step()


@dataclass(eq=False)
class Row:
    """One completion in a decoding batch: what it asks, and what it has been given so far.

    `check(tokens)` is called after each token that is not a stop id; True ends the row there
    (it counts as stopped)."""

    prompt: Sequence[int]
    limit: int
    temperature: float = 0.0
    seed: int | None = None
    check: Callable[[list[int]], bool] | None = None
    top_logprobs: int = 0
    constraint: Constraint | None = None  # a grammar its tokens must follow
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)
    stopped: bool = False
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if len(self.prompt) == 0:
            raise ValueError("every prompt needs at least one token")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")

    def result(self) -> Generated:
        return Generated(list(self.tokens), list(self.logprobs), self.stopped, list(self.top))


class Decoding:
    """A batch in flight: rows join it (`admit`: their prefill, and their first token) while
    others decode, every `step` gives each row its next token, and a row leaves when it ends.

    Prompts are left padded with an attention mask and explicit positions; rows admitted
    together with the same prompt share one prefill. A batch that never had padding passes no
    mask, so one prompt takes exactly the path of an unpadded forward. Rows admitted later are
    joined onto the running cache (see `rockroll.models.kv_cache`)."""

    def __init__(self, model: Any, stop_ids: Collection[int] = ()) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.cache_name, self.keep_last = forward_options(model)
        self.stops = frozenset(stop_ids)
        self.rows: list[Row] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # [rows, cache length]; None: nothing padded
        self.next_ids = torch.zeros(0, dtype=torch.long, device=self.device)  # fed next step
        self.next_pos = torch.zeros(0, dtype=torch.long, device=self.device)  # their positions
        self._parts: dict[Row, tuple[Any, int]] = {}  # prefills under way: cache, tokens in

    @torch.inference_mode()
    def admit(self, rows: list[Row]) -> list[Row]:
        """Prefill `rows` and sample their first tokens; returns those that ended already."""
        ended = [row for row in rows if row.limit <= 0]
        rows = [row for row in rows if row.limit > 0]
        if not rows:
            return ended
        distinct: dict[tuple[int, ...], int] = {}
        source = [distinct.setdefault(tuple(row.prompt), len(distinct)) for row in rows]
        ids, mask, positions = _left_pad(list(distinct), self.device)
        cache, logits = self._forward(None, ids, positions, mask)
        if len(distinct) < len(rows):  # spread each prefill to the rows of its prompt
            spread = torch.tensor(source, device=self.device)
            cache.batch_select_indices(spread)
            logits = logits[spread]
            mask = None if mask is None else mask[spread]
        return ended + self._start(rows, cache, logits, mask)

    @torch.inference_mode()
    def admit_part(self, rows: list[Row], chunk: int) -> list[Row] | None:
        """`admit` for rows of one prompt (each with a limit), `chunk` more of its tokens per
        call: None until the last part is in, then what `admit` returns. A long prompt's
        prefill so goes in pieces between the other rows' steps."""
        prompt, key = rows[0].prompt, rows[0]
        cache, done = self._parts.pop(key, (None, 0))
        end = min(done + chunk, len(prompt))
        ids = torch.tensor([list(prompt[done:end])], device=self.device)
        positions = torch.arange(done, end, device=self.device)[None]
        cache, logits = self._forward(cache, ids, positions, None)
        if end < len(prompt):
            self._parts[key] = (cache, end)
            return None
        spread = torch.zeros(len(rows), dtype=torch.long, device=self.device)
        if len(rows) > 1:
            cache.batch_select_indices(spread)
        return self._start(rows, cache, logits[spread], None)

    def _start(
        self, rows: list[Row], cache: Any, logits: torch.Tensor, mask: torch.Tensor | None
    ) -> list[Row]:
        """Sample the first tokens of prefilled rows, and join those going on to the batch."""
        for row in rows:
            if row.temperature > 0:
                row.generator = _generator(row.seed, self.device)
        token, keep, done = self._record(rows, logits)
        next_pos = torch.tensor([len(row.prompt) for row in rows], device=self.device)
        if keep and len(keep) < len(rows):
            index = torch.tensor(keep, device=self.device)
            cache.batch_select_indices(index)
            token, next_pos = token[index], next_pos[index]
            mask = None if mask is None else mask[index]
        if keep:
            self._join([rows[j] for j in keep], cache, mask, token, next_pos)
        return done

    @torch.inference_mode()
    def step(self) -> list[Row]:
        """One token for every row; returns the rows that ended with it."""
        if not self.rows:
            return []
        mask = self.mask
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(len(self.rows), 1)], dim=1)
        self.cache, logits = self._forward(
            self.cache, self.next_ids[:, None], self.next_pos[:, None], mask
        )
        self.mask = mask
        token, keep, done = self._record(self.rows, logits)
        self.next_ids, self.next_pos = token, self.next_pos + 1
        if len(keep) < len(self.rows):
            self._keep(keep)
        return done

    def _forward(
        self, cache: Any, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[Any, torch.Tensor]:
        kwargs = {self.cache_name: cache, "use_cache": True, **self.keep_last}
        if mask is not None:
            kwargs["attention_mask"] = mask
        out = self.model(input_ids=ids, position_ids=positions, **kwargs)
        return getattr(out, self.cache_name), out.logits[:, -1].float()

    def _record(
        self, rows: list[Row], logits: torch.Tensor
    ) -> tuple[torch.Tensor, list[int], list[Row]]:
        """Sample each row's token and record it; the tokens, the rows going on, those ended."""
        for j, row in enumerate(rows):
            if row.constraint is not None:
                allowed = row.constraint.allowed(logits.device)
                if not bool(allowed.any()):  # the grammar gave up: only an end is left
                    allowed[list(self.stops)] = True
                logits[j].masked_fill_(~allowed, float("-inf"))
        token, logprob, logp = _pick(logits, rows)
        ids, values = token.tolist(), logprob.tolist()  # the host syncs of a step
        want = max(row.top_logprobs for row in rows)
        if want:
            best, where = logp.topk(min(want, logp.shape[-1]), dim=-1)
            for row, vs, is_ in zip(rows, best.tolist(), where.tolist(), strict=True):
                if row.top_logprobs:
                    n = row.top_logprobs
                    row.top.append(list(zip(is_[:n], vs[:n], strict=True)))
        keep, done = [], []
        for j, row in enumerate(rows):
            if row.constraint is not None:
                row.constraint.accept(ids[j])
            row.tokens.append(ids[j])
            row.logprobs.append(values[j])
            hit = ids[j] in self.stops or (row.check is not None and row.check(row.tokens))
            if hit or len(row.tokens) >= row.limit:
                row.stopped = bool(hit)
                done.append(row)
            else:
                keep.append(j)
        return token, keep, done

    def _join(
        self,
        rows: list[Row],
        cache: Any,
        mask: torch.Tensor | None,
        next_ids: torch.Tensor,
        next_pos: torch.Tensor,
    ) -> None:
        """Add newly prefilled rows to the batch (to an empty one as they are)."""
        if not self.rows:
            self.rows, self.cache, self.mask = rows, cache, mask
            self.next_ids, self.next_pos = next_ids, next_pos
            return
        width, more = self.cache.get_seq_length(), cache.get_seq_length()
        full = max(width, more)
        kv_cache.pad_left(self.cache, full - width)
        kv_cache.pad_left(cache, full - more)
        kv_cache.stack(self.cache, cache)
        old = self.mask if self.mask is not None else next_ids.new_ones(len(self.rows), width)
        new = mask if mask is not None else next_ids.new_ones(len(rows), more)
        self.mask = torch.cat([F.pad(old, (full - width, 0)), F.pad(new, (full - more, 0))])
        self.rows = self.rows + rows
        self.next_ids = torch.cat([self.next_ids, next_ids])
        self.next_pos = torch.cat([self.next_pos, next_pos])

    def _keep(self, keep: list[int]) -> None:
        """Only the rows at `keep` go on; padding no row needs any more is cut away."""
        if not keep:
            self.rows, self.cache, self.mask = [], None, None
            return
        index = torch.tensor(keep, device=self.device)
        self.cache.batch_select_indices(index)
        self.rows = [self.rows[j] for j in keep]
        self.next_ids, self.next_pos = self.next_ids[index], self.next_pos[index]
        if self.mask is None:
            return
        self.mask = self.mask[index]
        used = self.mask.any(dim=0)
        first = int(used.int().argmax())  # the first column some row still attends to
        if first and kv_cache.plain(self.cache):
            kv_cache.drop_left(self.cache, first)
            self.mask = self.mask[:, first:]
        if bool(self.mask.all()):
            self.mask = None


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


def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def _pick(logits: torch.Tensor, rows: list[Row]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's next token, its logprob under the distribution it was drawn from, and that
    distribution (log probabilities over the vocabulary): log_softmax(logits / temperature)
    for a sampled row, of the raw logits for a greedy one (temperature 0).

    Sampling inverts each row's CDF at one uniform draw from the row's own generator: the same
    distribution as `torch.multinomial`, at one batched cumsum per step instead of one
    vocabulary-sized draw per row (those were about a tenth of a CPU decoding step)."""
    temperatures = [row.temperature for row in rows]
    sampled = [j for j, t in enumerate(temperatures) if t > 0]
    if not sampled:
        logp = torch.log_softmax(logits, dim=-1)
        token = logp.argmax(dim=-1)
        return token, logp.gather(1, token[:, None]).squeeze(1), logp
    scale = torch.tensor([t if t > 0 else 1.0 for t in temperatures], device=logits.device)
    logp = torch.log_softmax(logits / scale[:, None], dim=-1)
    part = logp if len(sampled) == len(rows) else logp[sampled]
    cdf = part.exp().cumsum(dim=-1)
    draws = torch.cat([torch.rand(1, generator=rows[j].generator, device=logits.device)
                       for j in sampled])  # fmt: skip
    # The first entry of the CDF above the draw: never a token of probability zero.
    point = (draws * cdf[:, -1]).to(cdf.dtype)[:, None]
    picked = torch.searchsorted(cdf, point, right=True).squeeze(1).clamp(max=logits.shape[-1] - 1)
    if len(sampled) == len(rows):
        token = picked
    else:
        token = logp.argmax(dim=-1)
        token[sampled] = picked
    return token, logp.gather(1, token[:, None]).squeeze(1), logp
