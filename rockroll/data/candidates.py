"""Screen, build and review one draft: what each worker does, in this process or on a Ray node.

Screening is mutation testing: the changed file is written into a sandbox of the project's
image (one per worker, reused) and the tests of the files whose tests call the changed function
are run, with a sample of the rest of the suite; those that now fail are the task's
fail-to-pass tests, those that still pass its pass-to-pass tests. A draft needs at least one of
each, tests that are stable (never flaky in the baseline) and quick (under `test_seconds` each),
an instruction that does not leak the fix, and a failing-test signature not seen before for that
function. Then the task folder is written (`taskdir`) and reviewed (`review`).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue

from rockroll.data.baseline import Baseline
from rockroll.data.options import SynthOptions
from rockroll.data.project import Project
from rockroll.data.review import leak, review
from rockroll.data.strategies import Draft, Strategy
from rockroll.data.taskdir import write_task
from rockroll.data.testrun import files_of, run_tests
from rockroll.data.writer import write_instruction
from rockroll.errors import ModelError, RockrollError
from rockroll.models.base import Model
from rockroll.tasks.harbor import load_harbor

SHORT = {
    "bug-injection": "bug",
    "feature-removal": "impl",
    "commit-replay": "commit",
    "model-bugs": "mbug",
}
FAR_TESTS = 20  # pass-to-pass tests from test files that do not call the changed function


@dataclass
class RepoState:
    """A source made ready: its project, baseline, sandboxes (one per worker) and the state its
    candidates share."""

    label: str
    project: Project
    baseline: Baseline
    context: Path
    sandboxes: Queue
    callers: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    signatures: set[tuple] = field(default_factory=set)
    accepted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class CandidateRunner:
    """Decides drafts of a dataset: `run` them from as many threads as the repository has
    sandboxes. `writer` (with `writer_lock`, one request at a time) writes instructions and
    makes a model's drafts."""

    def __init__(
        self,
        dataset: Path,
        options: SynthOptions,
        writer: Model | None = None,
        writer_lock: threading.Lock | None = None,
    ) -> None:
        self.dataset, self.options, self.writer = dataset, options, writer
        self.writer_lock = writer_lock or threading.Lock()

    def run(self, repo: RepoState, strategy: Strategy, draft: Draft) -> dict:
        """The draft decided: its manifest record, accepted into `tasks/` or with the reason."""
        started = time.monotonic()
        record = {
            "kind": "candidate", "id": draft.id, "source": repo.label,
            "revision": repo.project.version, "strategy": draft.strategy, "path": draft.path,
            "function": draft.function, "line": draft.line, "change": draft.detail,
            "stage": "candidates", "accepted": False, "reason": None, "gates": {}, "times": {},
        }  # fmt: skip
        try:
            if (realized := self._realize(strategy, draft, record)) is not None:
                self._decide(repo, strategy, realized, record)
        except ModelError as exc:
            record["reason"], record["error"] = "model-error", str(exc).splitlines()[0]
        except RockrollError as exc:
            record["reason"], record["error"] = "error", str(exc).splitlines()[0]
        except Exception as exc:  # one bad candidate must not end the run; the reason says why
            record["reason"], record["error"] = "error", f"{type(exc).__name__}: {exc}"[:500]
        record["times"]["total"] = time.monotonic() - started
        return record

    def _realize(self, strategy: Strategy, draft: Draft, record: dict) -> Draft | None:
        """The draft's change, made now when its strategy plans first and drafts later (a
        model's bug); None, with the reason recorded, when it cannot be made."""
        realize = getattr(strategy, "realize", None)
        if realize is None:
            return draft
        clock = time.monotonic()
        with self.writer_lock:
            got = realize(draft)
        record["times"]["draft"] = time.monotonic() - clock
        if isinstance(got, str):
            record["reason"] = got
            return None
        record["change"] = got.detail
        return got

    def _decide(self, repo: RepoState, strategy: Strategy, draft: Draft, record: dict) -> None:
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
        self, repo: RepoState, draft: Draft, record: dict
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
    def _callers(repo: RepoState, draft: Draft) -> set[str]:
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
        repo: RepoState,
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
        accept(self.dataset, work, task_id, record)
        with repo.lock:
            repo.accepted += 1


def accept(dataset: Path, work: Path, task_id: str, record: dict) -> None:
    """The reviewed task in `work` moved into the dataset's `tasks/`, and so recorded."""
    final = dataset / "tasks" / task_id
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(work, final)
    record["stage"], record["accepted"], record["task"] = "accepted", True, f"tasks/{task_id}"
