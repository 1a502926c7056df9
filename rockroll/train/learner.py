"""The learner: the policy's weights and how they learn.

It owns the policy (loaded as `policy.load_policy` does), the optimizer, the reference model of
the KL term and the update. `step(seqs, groups, imitations)` recomputes pi_old with the weights
before it, applies the configured loss (IPA by default) and eq. 10's imitation term, clips and
steps, and syncs the copy the policy decodes with; `warm_up` is the SFT warm-up. A step holds
the policy's weights lock and sets the policy version (updates applied) under it, so rollouts
that decode beside it (asynchronous mode) never see half-updated weights and each completion
knows the version that sampled it.

A step reports where its time went (`update_seconds`: the pi_old pass, the reference pass, the
gradient pass, the optimizer step and the decode copy's sync; the loss, clipping and transfers
are the rest), the device synchronised around each phase so queued GPU work counts where it
was queued.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from rockroll.models.local import LocalModel
from rockroll.train import checkpoint
from rockroll.train.chunks import ChunkedSequence
from rockroll.train.config import TrainConfig
from rockroll.train.resample import Imitation
from rockroll.train.update import (
    Tokens,
    backward_through_model,
    forward_tokens,
    imitation_grad,
    imitation_loss,
    imitation_weights,
    rl_loss,
    score_tokens,
    sft_grad,
    sft_loss,
)

MICRO_TOKENS = 2048  # tokens run per forward pass (update.cost): bounds activation memory
CUDA_MICRO_TOKENS = 8192  # on an H200 a 0.5B update ran 3.3x faster than at 2048 (24 GiB peak)


def micro_tokens(configured: int | None, device: torch.device) -> int:
    """The configured micro-batch size, else the device's default."""
    return configured or (CUDA_MICRO_TOKENS if device.type == "cuda" else MICRO_TOKENS)


def adamw(params: Any, **options: Any) -> torch.optim.Optimizer:
    """AdamW with the fused kernel where this torch has it (one pass over all tensors: about
    3x faster than the per-tensor loop on CPU)."""
    params = list(params)  # a generator would be spent by a failed first attempt
    try:
        return torch.optim.AdamW(params, fused=True, **options)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, **options)


class Learner:
    """The policy being trained, its optimizer and reference model, and one update step.

    `micro_tokens` (tokens per forward pass) may be changed between steps.
    """

    def __init__(self, cfg: TrainConfig, policy: LocalModel) -> None:
        self.cfg, self.policy = cfg, policy
        self.model = policy.model
        self.device = next(self.model.parameters()).device
        self.micro_tokens = micro_tokens(cfg.micro_tokens, self.device)
        self.pad_id = policy.tokenizer.pad_token_id or 0
        self.optimizer = adamw(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.ref = copy.deepcopy(self.model).eval() if cfg.kl_coef > 0 else None

    @property
    def version(self) -> int:
        """The policy version: updates applied (a resumed run counts its checkpoint's steps)."""
        return self.policy.weights_version

    # -- the RL update --------------------------------------------------------------------------
    def step(
        self,
        seqs: list[ChunkedSequence],
        groups: list[int],
        imitations: Sequence[Imitation] = (),
    ) -> dict[str, Any]:
        """One update on a step's sequences (`groups`: the group of each) and, with
        resampling, the expert turns to imitate; its stats. Nothing may sample from the policy
        meanwhile (it holds the weights lock)."""
        clock = _Clock(self.device)
        with self.policy.weights_lock:
            try:
                stats = self._update(seqs, groups, imitations, clock)
            finally:
                with clock.phase("decode_sync"):
                    self.policy.sync_decode_copy()
                self.policy.weights_version += 1
        return stats | {"update_seconds": clock.seconds}

    def _update(
        self,
        seqs: list[ChunkedSequence],
        groups: list[int],
        imitations: Sequence[Imitation],
        clock: _Clock,
    ) -> dict[str, Any]:
        cfg = self.cfg
        temperature = cfg.rollout.temperature  # mu's distribution: pi_old and pi_theta use it too
        tokens = Tokens.of(seqs, groups).to(self.device)
        self.model.eval()
        with clock.phase("pi_old"):
            old = self._score(self.model, seqs, temperature)
        ref = None
        if self.ref is not None:
            with clock.phase("reference"):
                ref = self._score(self.ref, seqs, temperature)
        current = old.clone().requires_grad_(True)  # the weights have not moved since `old`
        entropy = self._entropy(seqs, temperature) if cfg.entropy_coef > 0 else None
        loss, stats = rl_loss(cfg, current, old, tokens, entropy=entropy, ref=ref)
        loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        with clock.phase("gradient"):
            backward_through_model(
                self.model,
                seqs,
                self.pad_id,
                current.grad,  # type: ignore[arg-type]
                entropy.grad if entropy is not None else None,
                amp=cfg.autocast,
                micro_tokens=self.micro_tokens,
                temperature=temperature,
            )
            if imitations:
                stats |= self._imitate(imitations)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        with clock.phase("optimizer"):
            self.optimizer.step()
        return {
            "loss": float(loss.detach()),
            "grad_norm": float(norm),
            "sequences": len(seqs),
            "generated_tokens": int(old.numel()),
            "mismatch_mean": float(torch.exp(old - tokens.mu).mean()),
            **stats,
        }

    def _score(self, model: Any, seqs: list[ChunkedSequence], temperature: float) -> torch.Tensor:
        return score_tokens(
            model,
            seqs,
            self.pad_id,
            amp=self.cfg.autocast,
            micro_tokens=self.micro_tokens,
            temperature=temperature,
        )

    def _entropy(self, seqs: list[ChunkedSequence], temperature: float) -> torch.Tensor:
        """Per generated token, the entropy of the sampling distribution (a leaf)."""
        with torch.no_grad():
            parts = [
                forward_tokens(
                    self.model,
                    [s],
                    self.pad_id,
                    entropy=True,
                    amp=self.cfg.autocast,
                    temperature=temperature,
                )[1]
                for s in seqs
            ]
        return torch.cat(parts).requires_grad_(True)  # type: ignore[arg-type]

    def _imitate(self, imitations: Sequence[Imitation]) -> dict[str, Any]:
        """Eq. 10's IL term: lambda_IL times the expert turns' NLL, each turn weighted by its
        chunk return (`resample.il_weighting`), added to the RL gradient."""
        batch = [i.seq for i in imitations]
        tokens = Tokens.of(batch, [0] * len(batch), [i.masked for i in imitations])
        weights = imitation_weights(tokens, self.cfg.ipa.gamma, self.cfg.resample.il_weighting)
        logp = backward_through_model(
            self.model,
            batch,
            self.pad_id,
            self.cfg.resample.il_coef * imitation_grad(tokens, weights).to(self.device),
            None,
            amp=self.cfg.autocast,
            micro_tokens=self.micro_tokens,
        )
        il = float(imitation_loss(logp, tokens.to(logp.device), weights.to(logp.device)))
        return {"il_loss": il, "il_sequences": len(batch)}

    # -- SFT warm-up ----------------------------------------------------------------------------
    def warm_up(
        self,
        seqs: list[ChunkedSequence],
        failed: list[set[int]],
        on_step: Callable[[int, float], None] = lambda step, loss: None,
    ) -> None:
        """`sft.steps` steps of error-masked NLL on verified expert sequences (`failed`: each
        sequence's turns whose tool call failed), with an optimizer of their own; `on_step`
        gets each step's number and loss."""
        cfg = self.cfg
        optimizer = adamw(self.model.parameters(), lr=cfg.sft.lr)
        rng = random.Random(cfg.seed)
        for step in range(cfg.sft.steps):
            picked = rng.sample(range(len(seqs)), min(cfg.sft.batch_size, len(seqs)))
            batch = [seqs[i] for i in picked]
            tokens = Tokens.of(batch, [0] * len(batch), [failed[i] for i in picked]).to(self.device)
            optimizer.zero_grad(set_to_none=True)
            logp = backward_through_model(
                self.model,
                batch,
                self.pad_id,
                sft_grad(tokens),
                None,
                amp=cfg.autocast,
                micro_tokens=self.micro_tokens,
            )
            loss = sft_loss(logp, tokens)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            self.policy.sync_decode_copy()
            on_step(step + 1, float(loss.detach()))

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, folder: Path, step: int, state: dict) -> Path:
        """Checkpoint `step`: the weights, the optimizer, RNG states and the run's `state`."""
        return checkpoint.save(folder, step, self.model, self.optimizer, state)

    def restore(self, path: Path) -> dict:
        """Load the checkpoint at `path`; the run state saved with it. The policy version is
        its step."""
        state = checkpoint.load(path, self.model, self.optimizer)
        with self.policy.weights_lock:
            self.policy.sync_decode_copy()
            self.policy.weights_version = state["step"]
        return state


class _Clock:
    """Seconds per phase of one step, the device synchronised around each phase."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._sync()
        started = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
