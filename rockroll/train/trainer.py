"""The training loop: it only orchestrates rollouts, the learner's step, metrics and checkpoints.

One step: the rollouts (`rollout.mode`: in this process, in the background, or on Ray workers;
see `rollouts`) hand over `tasks_per_step` groups of `group_size` episodes each, run through
the harness in real sandboxes; the trajectories become training sequences (exact token ids, no
re-tokenization); the learner recomputes `pi_old` with the pre-update weights, applies the
configured loss (IPA by default), clips and steps; the rollouts get the new weights. Metrics go
to `metrics.jsonl` (and TensorBoard) as each step ends; a checkpoint follows every
`checkpoint_every` steps, so a crash loses at most that many steps and `--resume` continues
exactly where the checkpoint left off.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import torch

from rockroll.errors import ConfigError
from rockroll.models.local import load_local
from rockroll.train import checkpoint
from rockroll.train.chunks import chunk_trajectory
from rockroll.train.config import TrainConfig
from rockroll.train.episodes import Episode, Job, expert_episode, sequences_of
from rockroll.train.evaluation import EvalResult, evaluate
from rockroll.train.expert import dataset_experts
from rockroll.train.learner import Learner
from rockroll.train.metrics import MetricsLog, rollout_metrics
from rockroll.train.policy import load_policy
from rockroll.train.resample import Resampler, teacher_experts
from rockroll.train.rollouts import Rollouts, Taken, open_rollouts
from rockroll.train.sampler import TaskSampler, load_tasks

__all__ = ["EvalResult", "Trainer"]


class Trainer:
    """A training run from a config; `run()` does it all and returns the evaluations.

    `train_step()` is one step without the bookkeeping around it (what `run` adds: the step
    counter, evaluations, metrics rows and checkpoints); `last` is what the rollouts handed
    that step (its episodes); `close()` stops what runs the episodes.
    """

    def __init__(self, cfg: TrainConfig, log: Callable[[str], None] = print) -> None:
        self.cfg, self.log = cfg, log
        self.tasks = load_tasks(cfg.tasks, "tasks")
        self.eval_tasks = load_tasks(cfg.eval_tasks, "eval_tasks") if cfg.eval_tasks else []
        if cfg.eval_size:
            self.eval_tasks = self.eval_tasks[: cfg.eval_size]
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.learner = Learner(cfg, load_policy(cfg))
        self.policy = self.learner.policy
        self.sampler = TaskSampler(self.tasks, cfg.seed)
        self.resampler: Resampler | None = None
        if cfg.resample.enabled:
            self.resampler = Resampler(cfg.resample, cfg.rollout, self.tasks, cfg.out, log)
        self.step = 0
        self.sft_done = cfg.sft.steps == 0
        self.evals: list[EvalResult] = []
        self.rollouts: Rollouts | None = open_rollouts(cfg, self.policy, self._plan, log)
        self.last: Taken | None = None
        cfg.out.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsLog(cfg.out, cfg.tensorboard, log)

    # -- the run --------------------------------------------------------------------------------
    def run(self, resume: bool = False, on_step: Callable[[dict], None] = lambda m: None) -> list:
        try:
            if resume:
                self._resume()
            else:
                (self.cfg.out / "config.json").write_text(self.cfg.model_dump_json(indent=1))
            return self._run(on_step)
        finally:
            self.close()

    def _run(self, on_step: Callable[[dict], None]) -> list:
        self._push()
        if self.eval_tasks and self.step == 0 and not self.evals:
            self.evals.append(self.evaluate("start"))
        if self.resampler is not None and self.step == 0 and "teacher" in self.cfg.resample.sources:
            self._teach()
        if not self.sft_done:
            self.sft()
            if self.eval_tasks:
                self.evals.append(self.evaluate("after SFT"))
        while self.step < self.cfg.steps:
            metrics = self.train_step()
            self.step += 1
            metrics["step"] = self.step
            if self._eval_due():
                result = self.evaluate()
                self.evals.append(result)
                metrics["eval_success"] = result.success
            self.metrics.write(metrics)
            on_step(metrics)
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                self.save()
        return self.evals

    def _eval_due(self) -> bool:
        if not self.eval_tasks:
            return False
        every = self.cfg.eval_every
        return self.step == self.cfg.steps or (every > 0 and self.step % every == 0)

    def close(self) -> None:
        """Stop the rollouts (a later step cannot run), remove snapshots, close the logs."""
        if self.rollouts is not None:
            self.rollouts.close()
            self.rollouts = None
        if self.resampler is not None:
            self.resampler.close()
        self.metrics.close()

    # -- one RL step ----------------------------------------------------------------------------
    def train_step(self) -> dict:
        """Take a step's episodes, update on them, push the new weights; the step's metrics."""
        cfg = self.cfg.rollout
        taken = self.last = self._rollouts().take(cfg.tasks_per_step)
        seqs, groups = sequences_of(taken.episodes, cfg.group_size, self.learner.version)
        metrics = rollout_metrics(taken.episodes, taken.seconds) | taken.metrics
        if self.resampler is not None:
            metrics |= self.resampler.observe(taken.episodes, self.step)
        started = time.monotonic()
        if seqs:
            imitations = self.resampler.imitations(self.policy) if self.resampler else []
            metrics |= self.learner.step(seqs, groups, imitations)
        self._push()
        metrics["train_seconds"] = time.monotonic() - started
        n_tokens = sum(len(s) for s in seqs)
        metrics["train_tokens_per_s"] = n_tokens / max(metrics["train_seconds"], 1e-9)
        return metrics

    def _rollouts(self) -> Rollouts:
        if self.rollouts is None:
            raise RuntimeError("the trainer is closed: its rollouts were stopped")
        return self.rollouts

    def _push(self) -> None:
        """The learner's weights to wherever the episodes decode."""
        self._rollouts().push(self.learner.model, self.learner.version)

    def _plan(self, slot: int) -> list[Job]:
        """The next task's group, the `slot`-th of the step: its `group_size` episodes, from
        expert anchors when resampling finds the task hard."""
        task = self.sampler.take(1)[0]
        seeds = [self._seed(slot, g) for g in range(self.cfg.rollout.group_size)]
        if self.resampler is not None:
            return self.resampler.jobs(task, seeds, self.policy)
        return [Job(task, seed) for seed in seeds]

    def _seed(self, task_slot: int, sample: int) -> int:
        """A distinct, reproducible seed per (run seed, step, task slot, sample)."""
        return (self.cfg.seed * 1_000_003 + self.step * 10_007 + task_slot * 101 + sample) % (2**31)

    def _teach(self) -> None:
        """Experts from the teacher model's verified successes, before the first step."""
        assert self.cfg.resample.teacher is not None and self.resampler is not None
        teacher = load_local(
            self.cfg.resample.teacher.removeprefix("local:"), device=self.cfg.device
        )
        experts = teacher_experts(teacher, self.tasks, self.cfg.rollout)
        for expert in experts:
            self.resampler.add(expert)
        self.log(f"resample: the teacher solved {len(experts)}/{len(self.tasks)} tasks")
        del teacher

    # -- SFT warm-up ----------------------------------------------------------------------------
    def sft(self) -> None:
        """Warm up on verified expert episodes (error-masked NLL), then go on with RL."""
        cfg = self.cfg
        if cfg.sft.data is not None:
            pairs = dataset_experts(cfg.sft.data)
        else:
            tasks = load_tasks(cfg.sft.tasks, "sft.tasks") if cfg.sft.tasks else self.tasks
            pairs = [(t, None) for t in tasks]
        episodes = [expert_episode(self.policy, t, cfg.rollout, e) for t, e in pairs]
        good = [e for e in episodes if e.passed and e.trajectory is not None]
        self.log(f"SFT: {len(good)}/{len(episodes)} expert episodes verified")
        if not good:
            raise ConfigError("sft: no expert episode passed its verifier; nothing to learn from")
        seqs, failed = [], []
        for e in good:
            assert e.trajectory is not None
            for s in chunk_trajectory(e.trajectory, e.reward, passed=True, on_break="split"):
                seqs.append(s)
                failed.append(_failed_turns(e))
        self.learner.warm_up(seqs, failed, lambda k, loss: self._write_sft(k, loss))
        self.sft_done = True
        self._push()

    def _write_sft(self, step: int, loss: float) -> None:
        self.metrics.write({"sft_step": step, "sft_loss": loss})

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, label: str = "") -> EvalResult:
        """Held-out success: one greedy episode per task, the same seeds every time (and
        red-team tasks sampled a group's worth of times: how often the attack is followed)."""
        roll = self.cfg.rollout
        result = evaluate(
            self._rollouts(),
            self.eval_tasks,
            self.cfg.seed,
            self.step,
            label,
            samples=roll.group_size,
            temperature=roll.temperature,
        )
        self.metrics.write(result.row())
        return result

    # -- state ----------------------------------------------------------------------------------
    def save(self) -> None:
        state = {
            "resample": self.resampler.state() if self.resampler else None,
            "sampler": self.sampler.state(),
            "sft_done": self.sft_done,
            "evals": [e.__dict__ for e in self.evals],
        }
        self.learner.save(self.cfg.out, self.step, state)

    def _resume(self) -> None:
        path = checkpoint.latest(self.cfg.out)
        if path is None:
            self.log(f"no checkpoint in {self.cfg.out}; starting from the beginning")
            self.metrics.supersede(after=-1)
            return
        state = self.learner.restore(path)
        self.step = state["step"]
        self.sampler.restore(state["sampler"])
        if self.resampler is not None and state.get("resample"):
            self.resampler.restore(state["resample"])
        self.sft_done = state["sft_done"]
        self.evals = [EvalResult.of(e) for e in state["evals"]]
        self.metrics.supersede(after=self.step)
        self.log(f"resumed from {path} at step {self.step}")


def _failed_turns(episode: Episode) -> set[int]:
    """Model turns whose tool call failed (error masking in SFT)."""
    assert episode.trajectory is not None
    turns = [s for s in episode.trajectory.steps if s.source == "agent"]
    failed = set()
    for k, step in enumerate(turns):
        results = step.observation.results if step.observation else []
        if any(r.content.startswith("error") or "[exit code" in r.content for r in results):
            failed.add(k)
    return failed
