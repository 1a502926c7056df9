"""Candidates decided on a Ray cluster (`rockroll data synth --distributed ray`).

One `SynthWorker` actor per node slot (spread over the nodes) holds that node's sandboxes of
the project's image and decides the drafts it is given (screen, build, review) with the same
`CandidateRunner` as a local run; the driver keeps the manifest, the limit and the progress.
The dataset folder must be one every node sees at the same path (a shared file system), as a
training run's `out` is: the workers build the shared image from its context there (a no-op
where the image is cached) and write accepted tasks into its `tasks/`.

A worker keeps its own failing-test signatures; a task accepted on two workers with the same
signature is caught by the driver, which drops the second as `duplicate`. A worker that dies
(its process or node lost) leaves its drafts undecided: they are not in the manifest, so
`--resume` tries them again, and the run goes on with the workers left.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Queue
from typing import Any

import ray
from ray.exceptions import RayActorError, WorkerCrashedError

from rockroll.data.baseline import SANDBOX, Baseline
from rockroll.data.candidates import CandidateRunner, RepoState
from rockroll.data.explore import STRATEGIES
from rockroll.data.options import SynthOptions
from rockroll.data.project import Project
from rockroll.data.strategies import Draft, Strategy
from rockroll.data.testrun import install_plugin
from rockroll.data.writer import load_writer
from rockroll.errors import SetupError
from rockroll.sandbox.dockerfile import build
from rockroll.sandbox.sdk import Sandbox

NAMESPACE = "rockroll-data"


class SynthWorker:
    """A node's share of the work: its sandboxes of the image, its own model when one is set."""

    def __init__(
        self,
        dataset: str,
        options: SynthOptions,
        strategies: list[Strategy],
        label: str,
        project: Project,
        baseline: Baseline,
        context: str,
        callers: dict,
        signatures: set[tuple],
    ) -> None:
        build(Path(context) / "Dockerfile", Path(context))  # cached: a no-op where it is built
        writer = load_writer(options.model) if options.model else None
        self.strategies = {
            s.name: s.with_model(writer) if writer and getattr(s, "needs_model", False) else s  # type: ignore[attr-defined]
            for s in strategies
        }
        sandboxes: Queue = Queue()
        for _ in range(options.jobs):
            sb = Sandbox.create(baseline.image.name, **SANDBOX)
            install_plugin(sb)
            sandboxes.put(sb)
        self.repo = RepoState(
            label, project, baseline, Path(context), sandboxes, callers, signatures
        )
        self.runner = CandidateRunner(Path(dataset), options, writer, threading.Lock())

    def where(self) -> str:
        return f"{ray.get_runtime_context().get_node_id()[:8]}/{os.getpid()}"

    def decide(self, strategy: str, draft: Draft) -> dict:
        record = self.runner.run(self.repo, self.strategies[strategy], draft)
        record["worker"] = self.where()
        return record

    def close(self) -> None:
        while not self.repo.sandboxes.empty():
            self.repo.sandboxes.get().close()


def connect(address: str | None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a local one; once."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), namespace=NAMESPACE)
    except ConnectionError as exc:
        raise SetupError(
            f"--ray-address {address}: no Ray cluster there ({exc}); start one with "
            "`ray start --head`, or leave the address out for a local one"
        ) from None


def drive_on_ray(
    repo: RepoState,
    dataset: Path,
    options: SynthOptions,
    candidates: Iterator[tuple[Strategy, Draft]],
    decided: Callable[[dict], bool],
    log: Callable[[str], None],
) -> None:
    """Every candidate decided on the cluster's workers, `options.jobs` at a time on each;
    `decided(record)` takes each record as it comes and says whether to go on."""
    connect(options.ray_address)
    actor = ray.remote(num_cpus=options.jobs, max_concurrency=options.jobs)(SynthWorker)
    strategies = _portable(options)
    args = (str(dataset), options, strategies, repo.label, repo.project, repo.baseline,
            str(repo.context), repo.callers, set(repo.signatures))  # fmt: skip
    workers = [
        actor.options(scheduling_strategy="SPREAD").remote(*args)
        for _ in range(options.ray_workers)
    ]
    slots: dict[Any, int] = {w: options.jobs for w in workers}
    pending: dict[Any, tuple[Any, Draft]] = {}
    going = True
    try:
        while True:
            while going and any(slots.values()):
                item = next(candidates, None)
                if item is None:
                    break
                worker = max(slots, key=lambda w: slots[w])
                slots[worker] -= 1
                pending[worker.decide.remote(item[0].name, item[1])] = (worker, item[1])
            if not pending:
                return
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            worker, draft = pending.pop(ref)
            try:
                record = ray.get(ref)
            except (RayActorError, WorkerCrashedError) as exc:
                log(f"a synthesis worker was lost ({type(exc).__name__}); {draft.id} stays "
                    "undecided for --resume")  # fmt: skip
                slots.pop(worker, None)
                if not slots:
                    raise SetupError("every synthesis worker was lost; --resume goes on") from None
                continue
            if worker in slots:
                slots[worker] += 1
            going = decided(record)
    finally:
        for w in workers:
            with contextlib.suppress(Exception):  # a lost worker has nothing left to close
                ray.get(w.close.remote(), timeout=60)
            ray.kill(w)


def _portable(options: SynthOptions) -> list[Strategy]:
    """The strategies that change a file, as registered (without any model: each worker binds
    its own); terminal workflows are drafted by the driver."""
    found = [STRATEGIES[name] for name in options.strategies if name in STRATEGIES]
    return [s for s in found if not getattr(s, "workflows", False)]
