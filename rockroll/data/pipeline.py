"""Synthesis, source to dataset: read the project, build its image and baseline, let the
strategies draft, have each draft screened, built and reviewed (`rockroll.data.candidates`),
and keep it or count why not; terminal workflows are drafted and checked apart
(`rockroll.data.workflow_tasks`).

    DATASET/repos/SLUG/       the project's shared build context (Dockerfile, repo/)
    DATASET/work/ID/          a task being built and reviewed (cleared at the start of a run)
    DATASET/tasks/ID/         an accepted task, a Harbor folder
    DATASET/manifest.jsonl    a line per source and per candidate, written as each is decided
"""

from __future__ import annotations

import functools
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from queue import Queue

from rockroll.data.baseline import SANDBOX, make_baseline
from rockroll.data.candidates import CandidateRunner, RepoState, accept
from rockroll.data.explore import get_strategies
from rockroll.data.manifest import Manifest, funnel
from rockroll.data.options import SynthOptions
from rockroll.data.project import read_project
from rockroll.data.sources import Source, SourceError, checkout, parse_source
from rockroll.data.strategies import Draft, Strategy
from rockroll.data.testrun import install_plugin
from rockroll.data.workflow_tasks import SEED_BASE, Base, make_workflow
from rockroll.data.workflows import Brief, TerminalWorkflows, repo_briefs, seed_briefs
from rockroll.data.writer import check_model, load_writer
from rockroll.errors import ModelError, RockrollError, UsageError
from rockroll.sandbox.sdk import Sandbox

__all__ = ["Synth", "SynthOptions"]


class Synth:
    def __init__(
        self,
        dataset: Path,
        options: SynthOptions,
        log: Callable[[str], None] = lambda s: None,
        on_candidate: Callable[[dict], None] = lambda r: None,
    ) -> None:
        self.dataset, self.options, self.log, self.on_candidate = (
            dataset,
            options,
            log,
            on_candidate,
        )
        self.writer = load_writer(options.model) if options.model else None
        self.writer_lock = threading.Lock()  # one request at a time: a local model is not shared
        chosen = get_strategies(list(options.strategies), self.writer)
        self.strategies = [s for s in chosen if not getattr(s, "workflows", False)]
        flows = [s for s in chosen if isinstance(s, TerminalWorkflows)]
        self.flows = flows[0] if flows else None
        self.manifest = Manifest(dataset)
        if self.manifest.lines() and not options.resume:
            raise UsageError(
                f"{dataset} already holds a dataset: add --resume to continue it, or choose "
                "another --out"
            )
        self.done = {
            (r["source"], r["id"]): r for r in self.manifest.lines() if r.get("kind") == "candidate"
        }
        shutil.rmtree(dataset / "work", ignore_errors=True)
        self.runner = CandidateRunner(dataset, options, self.writer, self.writer_lock)

    def run(
        self, specs: list[str], on_source: Callable[[str, int], None] = lambda s, n: None
    ) -> dict:
        """Every source in turn; a source that fails is a line in the funnel, not the end."""
        for spec in specs:
            started = time.monotonic()
            try:
                source = parse_source(spec)
                if source.kind == "seeds":
                    self._seeds(spec, source, started, on_source)
                    continue
                repo = self._prepare(spec, source)
            except RockrollError as exc:
                self.log(f"{spec}: {exc}")
                error = str(exc).splitlines()[0]
                seconds = time.monotonic() - started
                self.manifest.add(
                    {"kind": "source", "source": spec, "status": "error", "error": error,
                     "seconds": seconds}
                )  # fmt: skip
                continue
            try:
                # counted in one pass and drafted again in the next: a draft holds a file's
                # text, and a large repository has tens of thousands of them
                count = sum(1 for _ in self._candidates(repo))
                briefs = list(repo_briefs(repo.project)) if self.flows else []
                self.manifest.add(self._source_line(spec, repo, count + len(briefs), started))
                on_source(spec, count + len(briefs))
                self._drive(repo, self._candidates(repo))
                if briefs:
                    base = Base((repo.context / "Dockerfile").read_text(), repo.context)
                    self._flows(spec, repo.project.slug, base, briefs, repo.accepted)
            finally:
                while not repo.sandboxes.empty():
                    repo.sandboxes.get().close()
        return funnel(self.manifest.lines())

    def _seeds(
        self, spec: str, source: Source, started: float, on_source: Callable[[str, int], None]
    ) -> None:
        """A folder of seed descriptions: each one a terminal workflow the model drafts."""
        if self.flows is None or self.writer is None or not self.options.model:
            raise SourceError(
                f"{spec}: seed descriptions become tasks through a model's terminal workflows: "
                "add --strategy terminal-workflows and --model SPEC"
            )
        check_model(self.writer, self.options.model)
        briefs = list(seed_briefs(Path(source.location)))
        line = {"kind": "source", "source": spec, "status": "ok", "revision": "seeds",
                "candidates": len(briefs), "seconds": time.monotonic() - started}  # fmt: skip
        self.manifest.add(line)
        on_source(spec, len(briefs))
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", source.name)
        accepted = sum(bool(r["source"] == spec and r.get("accepted")) for r in self.done.values())
        self._flows(spec, slug, Base(SEED_BASE), briefs, accepted)

    def _flows(self, label: str, slug: str, base: Base, briefs: list[Brief], accepted: int) -> None:
        """The briefs' workflows drafted, built and reviewed, `jobs` at once, until `limit`
        of the source's tasks are accepted."""
        todo = iter([b for b in briefs if (label, b.id) not in self.done])
        count = [accepted]
        lock = threading.Lock()

        def next_brief() -> Brief | None:
            with lock:
                limit = self.options.limit
                return None if limit is not None and count[0] >= limit else next(todo, None)

        def worker() -> None:
            while (brief := next_brief()) is not None:
                if self._flow(label, slug, base, brief):
                    with lock:
                        count[0] += 1

        with ThreadPoolExecutor(max_workers=self.options.jobs) as pool:
            for future in [pool.submit(worker) for _ in range(self.options.jobs)]:
                future.result()

    def _flow(self, label: str, slug: str, base: Base, brief: Brief) -> bool:
        started = time.monotonic()
        record = {
            "kind": "candidate", "id": brief.id, "source": label, "strategy": "terminal-workflows",
            "path": brief.name, "function": "", "line": 0,
            "change": f"terminal workflow ({brief.name})", "stage": "candidates",
            "accepted": False, "reason": None, "gates": {}, "times": {},
        }  # fmt: skip
        task_id = f"{slug}.flow.{brief.id}"
        work = self.dataset / "work" / task_id
        assert self.flows is not None
        try:
            args = (self.options.reruns, self.options.budget, self.writer_lock)
            if make_workflow(self.flows, brief, base, work, record, *args):
                accept(self.dataset, work, task_id, record)
        except ModelError as exc:
            record["reason"], record["error"] = "model-error", str(exc).splitlines()[0]
        except Exception as exc:  # one bad brief must not end the run; the reason says why
            record["reason"], record["error"] = "error", f"{type(exc).__name__}: {exc}"[:500]
        shutil.rmtree(work, ignore_errors=True)
        record["times"]["total"] = time.monotonic() - started
        self.manifest.add(record)
        self.on_candidate(record)
        return bool(record["accepted"])

    def _prepare(self, spec: str, source: Source) -> RepoState:
        if self.writer is not None and self.options.model:
            check_model(self.writer, self.options.model)
        got = checkout(source)
        project = read_project(got)
        label = spec
        context = self.dataset / "repos" / project.slug
        baseline = make_baseline(
            project, context, label, runs=self.options.baseline_runs, log=self.log
        )
        repo = RepoState(label, project, baseline, context, Queue(), baseline.covering())
        for r in self.done.values():
            if (
                r["source"] == label
                and r.get("signature")
                and r.get("stage") in ("built", "reviewed", "accepted")
            ):
                repo.signatures.add(tuple(r["signature"]))
            repo.accepted += bool(r["source"] == label and r.get("accepted"))
        for _ in range(self.options.jobs if self.options.distributed != "ray" else 0):
            sb = Sandbox.create(baseline.image.name, **SANDBOX)
            install_plugin(sb)
            repo.sandboxes.put(sb)
        return repo

    def _source_line(self, spec: str, repo: RepoState, candidates: int, started: float) -> dict:
        b = repo.baseline
        return {
            "kind": "source", "source": spec, "status": "ok", "revision": repo.project.version,
            "image": b.image.name, "installs": b.installs, "candidates": candidates,
            "tests": f"{len(b.run.outcomes)} tests, {len(b.stable_passing())} stable passing, "
            f"{len(b.flaky)} flaky",
            "seconds": time.monotonic() - started,
        }  # fmt: skip

    def _candidates(self, repo: RepoState) -> Iterator[tuple[Strategy, Draft]]:
        covered = set(repo.callers)
        streams = [_tagged(s, s.drafts(repo.project, covered)) for s in self.strategies]
        while streams:  # the strategies in turn, so a limited run has some of each
            for stream in list(streams):
                item = next(stream, None)
                if item is None:
                    streams.remove(stream)
                elif (repo.label, item[1].id) not in self.done:
                    yield item

    def _drive(self, repo: RepoState, candidates: Iterator[tuple[Strategy, Draft]]) -> None:
        if self.options.distributed == "ray":
            from rockroll.data.ray_synth import drive_on_ray  # Ray only when asked for

            decided = functools.partial(self._decided_remotely, repo)
            drive_on_ray(repo, self.dataset, self.options, candidates, decided, self.log)
            return
        limit = self.options.limit
        pending: set[Future] = set()
        items = candidates
        with ThreadPoolExecutor(max_workers=self.options.jobs) as pool:
            while True:
                while len(pending) < self.options.jobs and (limit is None or repo.accepted < limit):
                    item = next(items, None)
                    if item is None:
                        break
                    pending.add(pool.submit(self._one, repo, *item))
                if not pending:
                    return
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()  # a bug surfaces here, not as a silently missing line

    def _one(self, repo: RepoState, strategy: Strategy, draft: Draft) -> None:
        record = self.runner.run(repo, strategy, draft)
        self.manifest.add(record)
        self.on_candidate(record)

    def _decided_remotely(self, repo: RepoState, record: dict) -> bool:
        """A worker's record kept; a task another worker already accepted with the same
        failing tests dropped as a duplicate. Whether to go on (the limit not reached)."""
        signature = tuple(record.get("signature") or ())
        if record["accepted"] and signature in repo.signatures:
            shutil.rmtree(self.dataset / record.pop("task"), ignore_errors=True)
            record["accepted"], record["stage"], record["reason"] = False, "reviewed", "duplicate"
        elif signature:
            repo.signatures.add(signature)
        repo.accepted += bool(record["accepted"])
        self.manifest.add(record)
        self.on_candidate(record)
        return self.options.limit is None or repo.accepted < self.options.limit


def _tagged(strategy: Strategy, drafts: Iterator[Draft]) -> Iterator[tuple[Strategy, Draft]]:
    for draft in drafts:
        yield strategy, draft
