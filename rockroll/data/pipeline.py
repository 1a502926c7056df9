"""Synthesis, source to dataset: read the project, build its image and baseline, let the
strategies draft, screen each draft against the tests that run its function, write the task
folder, review it, and keep it or count why not.

    DATASET/repos/SLUG/       the project's shared build context (Dockerfile, repo/)
    DATASET/work/ID/          a task being built and reviewed (cleared at the start of a run)
    DATASET/tasks/ID/         an accepted task, a Harbor folder
    DATASET/manifest.jsonl    a line per source and per candidate, written as each is decided

Screening is mutation testing: the changed file is written into a sandbox of the project's
image (one per worker, reused) and the tests of the files whose tests call the changed function
are run, with a sample of the rest of the suite; those that now fail are the task's
fail-to-pass tests, those that still pass its pass-to-pass tests. A draft needs at least one of
each, tests that are stable (never flaky in the baseline) and quick (under `test_seconds` each),
an instruction that does not leak the fix, and a failing-test signature not seen before for that
function.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue

from rockroll.data.baseline import SANDBOX, Baseline, make_baseline
from rockroll.data.explore import DEFAULT, get_strategies
from rockroll.data.manifest import Manifest, funnel
from rockroll.data.project import Project, read_project
from rockroll.data.review import leak, review
from rockroll.data.sources import SourceError, checkout, parse_source
from rockroll.data.strategies import Draft, Strategy
from rockroll.data.taskdir import write_task
from rockroll.data.testrun import files_of, install_plugin, run_tests
from rockroll.data.writer import check_model, load_writer, write_instruction
from rockroll.errors import ModelError, RockrollError, UsageError
from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.harbor import load_harbor

SHORT = {"bug-injection": "bug", "feature-removal": "impl", "commit-replay": "commit"}
FAR_TESTS = 20  # pass-to-pass tests from test files that do not call the changed function


@dataclass
class SynthOptions:
    """What `rockroll data synth` takes; each field is also a flag."""

    strategies: tuple[str, ...] = DEFAULT
    limit: int | None = None  # stop drafting a source once this many of its tasks are accepted
    jobs: int = 2  # candidates screened, built and reviewed at once
    reruns: int = 3  # k: runs of each control; any disagreement rejects the task as flaky
    baseline_runs: int = 3  # runs of the whole suite to find flaky tests
    max_tests: int = 200  # tests a task is verified by, at most
    test_seconds: float = 2.0  # tests slower than this in the baseline are not used
    select_seconds: float = 10.0  # baseline seconds of the tests one task is verified by
    budget: float = 60.0  # seconds the oracle's verification may take
    resume: bool = False
    model: str | None = None  # writes the instructions (any harness backend); else templates


@dataclass
class _Repo:
    """A source made ready: its project, baseline and the state its candidates share."""

    label: str
    project: Project
    baseline: Baseline
    context: Path
    sandboxes: Queue
    callers: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    signatures: set[tuple] = field(default_factory=set)
    accepted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


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
        self.strategies = get_strategies(list(options.strategies))
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
        self.writer = load_writer(options.model) if options.model else None
        self.writer_lock = threading.Lock()

    def run(
        self, specs: list[str], on_source: Callable[[str, int], None] = lambda s, n: None
    ) -> dict:
        """Every source in turn; a source that fails is a line in the funnel, not the end."""
        for spec in specs:
            started = time.monotonic()
            try:
                repo = self._prepare(spec)
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
                self.manifest.add(self._source_line(spec, repo, count, started))
                on_source(spec, count)
                self._drive(repo, self._candidates(repo))
            finally:
                while not repo.sandboxes.empty():
                    repo.sandboxes.get().close()
        return funnel(self.manifest.lines())

    def _prepare(self, spec: str) -> _Repo:
        source = parse_source(spec)
        if source.kind == "seeds":
            raise SourceError(
                f"{spec}: seed descriptions become tasks through a model's terminal workflows, "
                "which this release does not draft yet; give a repository or pypi:NAME"
            )
        if self.writer is not None and self.options.model:
            check_model(self.writer, self.options.model)
        got = checkout(source)
        project = read_project(got)
        label = spec
        context = self.dataset / "repos" / project.slug
        baseline = make_baseline(
            project, context, label, runs=self.options.baseline_runs, log=self.log
        )
        repo = _Repo(label, project, baseline, context, Queue(), baseline.covering())
        for r in self.done.values():
            if (
                r["source"] == label
                and r.get("signature")
                and r.get("stage") in ("built", "reviewed", "accepted")
            ):
                repo.signatures.add(tuple(r["signature"]))
            repo.accepted += bool(r["source"] == label and r.get("accepted"))
        for _ in range(self.options.jobs):
            sb = Sandbox.create(baseline.image.name, **SANDBOX)
            install_plugin(sb)
            repo.sandboxes.put(sb)
        return repo

    def _source_line(self, spec: str, repo: _Repo, candidates: int, started: float) -> dict:
        b = repo.baseline
        return {
            "kind": "source", "source": spec, "status": "ok", "revision": repo.project.version,
            "image": b.image.name, "installs": b.installs, "candidates": candidates,
            "tests": f"{len(b.run.outcomes)} tests, {len(b.stable_passing())} stable passing, "
            f"{len(b.flaky)} flaky",
            "seconds": time.monotonic() - started,
        }  # fmt: skip

    def _candidates(self, repo: _Repo) -> Iterator[tuple[Strategy, Draft]]:
        covered = set(repo.callers)
        streams = [_tagged(s, s.drafts(repo.project, covered)) for s in self.strategies]
        while streams:  # the strategies in turn, so a limited run has some of each
            for stream in list(streams):
                item = next(stream, None)
                if item is None:
                    streams.remove(stream)
                elif (repo.label, item[1].id) not in self.done:
                    yield item

    def _drive(self, repo: _Repo, candidates: Iterator[tuple[Strategy, Draft]]) -> None:
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

    def _one(self, repo: _Repo, strategy: Strategy, draft: Draft) -> None:
        started = time.monotonic()
        record = {
            "kind": "candidate", "id": draft.id, "source": repo.label,
            "revision": repo.project.version, "strategy": draft.strategy, "path": draft.path,
            "function": draft.function, "line": draft.line, "change": draft.detail,
            "stage": "candidates", "accepted": False, "reason": None, "gates": {}, "times": {},
        }  # fmt: skip
        try:
            self._decide(repo, strategy, draft, record)
        except ModelError as exc:
            record["reason"], record["error"] = "model-error", str(exc).splitlines()[0]
        except RockrollError as exc:
            record["reason"], record["error"] = "error", str(exc).splitlines()[0]
        except Exception as exc:  # one bad candidate must not end the run; the reason says why
            record["reason"], record["error"] = "error", f"{type(exc).__name__}: {exc}"[:500]
        record["times"]["total"] = time.monotonic() - started
        self.manifest.add(record)
        self.on_candidate(record)

    def _decide(self, repo: _Repo, strategy: Strategy, draft: Draft, record: dict) -> None:
        clock = time.monotonic()
        screened = self._screen(repo, draft, record)
        record["times"]["screen"] = time.monotonic() - clock
        if screened is None:
            return
        failing, passing, messages = screened
        record["stage"] = "drafts"
        record["fail_to_pass"], record["pass_to_pass"] = failing, passing
        instruction = strategy.instruction(
            draft, repo.project, {t: messages.get(t, "") for t in failing}
        )
        if self.writer is not None:
            with self.writer_lock:
                instruction = write_instruction(self.writer, draft, repo.project, instruction)
        verdict = leak(instruction, draft)
        record["gates"]["leak"] = verdict.record()
        if not verdict.ok:
            record["reason"] = "leak"
            return
        signature = (draft.path, draft.function, *failing)
        record["signature"] = list(signature)
        with repo.lock:
            duplicate = signature in repo.signatures
            repo.signatures.add(signature)
        if duplicate:
            record["reason"] = "duplicate"
            return
        self._build_and_review(repo, draft, instruction, failing, passing, record)

    def _screen(
        self, repo: _Repo, draft: Draft, record: dict
    ) -> tuple[list[str], list[str], dict] | None:
        b, o = repo.baseline, self.options
        callers = self._callers(repo, draft)
        stable = b.stable_passing()
        quick = {t for t in stable if b.durations.get(t, 0.0) <= o.test_seconds}
        usable = callers & quick
        if not usable:
            record["reason"] = "flaky-tests" if callers & b.flaky else "no-usable-tests"
            return None
        files = {t.split("::")[0] for t in usable}
        near = sorted(t for t in quick - usable if t.split("::")[0] in files)
        far = sorted(quick - usable - set(near))
        far = far[:: max(1, len(far) // FAR_TESTS)][:FAR_TESTS]  # the rest of the suite, sampled
        select, seconds = [], 0.0
        for test in sorted(usable, key=lambda t: b.durations.get(t, 0.0)) + near + far:
            took = b.durations.get(test, 0.0)
            if len(select) < o.max_tests and (not select or seconds + took <= o.select_seconds):
                select.append(test)
                seconds += took
        record["files_of"] = files_of(select)
        sb = repo.sandboxes.get()
        try:
            target = f"/app/{draft.path}"
            sb.write_text(target, draft.changed)
            try:
                run = run_tests(
                    sb,
                    repo.project,
                    record["files_of"],
                    select=select,
                    timeout=max(30.0, 10 * seconds + 10),
                )
            finally:
                sb.write_text(target, draft.original)
        finally:
            repo.sandboxes.put(sb)
        if run.timed_out:
            record["reason"] = "timeout"
            return None
        failing = [t for t in select if run.outcomes.get(t) != "passed"]
        passing = [t for t in select if run.outcomes.get(t) == "passed"]
        if not failing:
            record["reason"] = "no-fail-to-pass"
        elif not passing:
            record["reason"] = "no-pass-to-pass"
        return (failing, passing, run.messages) if failing and passing else None

    @staticmethod
    def _callers(repo: _Repo, draft: Draft) -> set[str]:
        """The tests that call the changed function (any function of the file for "*"), from
        the draft's focus files when it names some."""
        if draft.function == "*":
            found = set().union(*(t for (p, _), t in repo.callers.items() if p == draft.path))
        else:
            found = set(repo.callers.get((draft.path, draft.function), set()))
        if draft.focus:
            found = {t for t in found if t.split("::")[0] in draft.focus}
        return found

    def _build_and_review(
        self,
        repo: _Repo,
        draft: Draft,
        instruction: str,
        failing: list[str],
        passing: list[str],
        record: dict,
    ) -> None:
        task_id = f"{repo.project.slug}.{SHORT.get(draft.strategy, draft.strategy)}.{draft.id}"
        work = self.dataset / "work" / task_id
        clock = time.monotonic()
        write_task(
            work, draft, repo.project, repo.context, instruction, failing, passing, repo.label
        )
        task = load_harbor(work)
        record["stage"] = "built"
        verdicts, reason = review(task, self.options.reruns, self.options.budget)
        record["times"]["review"] = time.monotonic() - clock
        record["gates"] |= {v.gate: v.record() for v in verdicts}
        if not any(v.gate == "build" and not v.ok for v in verdicts):
            record["stage"] = "reviewed"
        record["reason"] = reason
        if reason is not None:
            shutil.rmtree(work, ignore_errors=True)
            return
        final = self.dataset / "tasks" / task_id
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(work, final)
        record["stage"], record["accepted"], record["task"] = "accepted", True, f"tasks/{task_id}"
        with repo.lock:
            repo.accepted += 1


def _tagged(strategy: Strategy, drafts: Iterator[Draft]) -> Iterator[tuple[Strategy, Draft]]:
    for draft in drafts:
        yield strategy, draft
