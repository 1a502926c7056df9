"""A project's shared image and its tests' baseline: which pass, which are flaky, and which of
the project's functions each one runs.

The image is built from `project.write_context`'s Dockerfile. Its install line is refined on the
tests' own errors, as a person would: a module the tests cannot import that is not the
project's own is installed (its package name from the table the verifier uses) and the image
built again, a few rounds at most. Then the suite runs once traced and `runs - 1` times more: a
test whose outcome differs between runs is flaky and never verifies a task.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rockroll.data.project import Project, write_context
from rockroll.data.sources import SourceError
from rockroll.data.testrun import SuiteRun, files_of, install_plugin, run_tests
from rockroll.sandbox.dockerfile import BuildError, build
from rockroll.sandbox.images import Image
from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.offline_rules import MODULES

REFINE_ROUNDS = 3
_MISSING = re.compile(r"No module named '([A-Za-z0-9_]+)")
_DISTRIBUTION = {module: dist for dist, module in MODULES.items()}
SANDBOX = {"network": "none", "memory": "2g", "cpus": 1.0}


@dataclass
class Baseline:
    """The project's image and what its tests do on it."""

    image: Image
    installs: list[str]
    run: SuiteRun  # the traced run
    flaky: set[str] = field(default_factory=set)
    durations: dict[str, float] = field(default_factory=dict)  # untraced, the slowest run's
    seconds: float = 0.0  # building and running, all rounds

    def stable_passing(self) -> set[str]:
        return self.run.passed() - self.flaky

    def covering(self) -> dict[tuple[str, str], set[str]]:
        """(file, function) → the tests that call it (flaky and failing ones too: the caller
        picks); `A.<locals>.b` is `A.b`, as mutations name it."""
        found: dict[tuple[str, str], set[str]] = {}
        for test, calls in self.run.calls.items():
            for path, name in calls:
                found.setdefault((path, name.replace(".<locals>", "")), set()).add(test)
        return found


def make_baseline(
    project: Project,
    folder: Path,
    label: str,
    *,
    runs: int = 3,
    log: Callable[[str], None] = lambda s: None,
) -> Baseline:
    """Build the image in `folder` and run the tests; a SourceError naming `label` when the
    image does not build or no test passes in it."""
    started = time.monotonic()
    installs: list[str] = []
    files = files_of(project.tests)
    for _ in range(REFINE_ROUNDS + 1):
        image = _image(project, folder, installs, label, log)
        with Sandbox.create(image.name, **SANDBOX) as sb:
            install_plugin(sb)
            traced = run_tests(sb, project, files, trace=True, timeout=1800)
            more = _missing(traced, project, installs)
            if not more:
                others = [run_tests(sb, project, files, timeout=1800) for _ in range(runs - 1)]
                break
        log(f"{label}: the tests cannot import {', '.join(more)}; installing and building again")
        installs += more
    else:
        raise SourceError(
            f"{label}: the tests still cannot import modules after {REFINE_ROUNDS} installs"
        )
    baseline = Baseline(image, installs, traced, _flaky(traced, others))
    for other in others or [traced]:
        for test, seconds in other.durations.items():
            baseline.durations[test] = max(seconds, baseline.durations.get(test, 0.0))
    baseline.seconds = time.monotonic() - started
    if not baseline.stable_passing():
        raise SourceError(f"{label}: none of its tests passes in its image{_why(traced)}")
    log(
        f"{label}: {len(traced.outcomes)} tests, {len(baseline.stable_passing())} pass, "
        f"{len(baseline.flaky)} flaky, in {traced.seconds:.1f} s traced"
    )
    return baseline


def _image(
    project: Project, folder: Path, installs: list[str], label: str, log: Callable[[str], None]
) -> Image:
    write_context(project, folder, installs)
    try:
        return build(folder / "Dockerfile", folder, log=log)
    except BuildError as exc:
        first = str(exc).splitlines()[0]
        raise SourceError(f"{label}: its image does not build: {first}") from None


def _missing(run: SuiteRun, project: Project, installs: list[str]) -> list[str]:
    own = {p.split("/")[0].removesuffix(".py") for p in project.code}
    own |= {p.split("/")[1].removesuffix(".py") for p in project.code if p.startswith("src/")}
    text = "\n".join([*run.collect_errors.values(), *run.messages.values(), run.output])
    found = []
    for module in dict.fromkeys(_MISSING.findall(text)):
        dist = _DISTRIBUTION.get(module, module.replace("_", "-"))
        if module not in own and dist not in installs and dist not in found:
            found.append(dist)
    return found


def _flaky(traced: SuiteRun, others: list[SuiteRun]) -> set[str]:
    flaky = set()
    for other in others:
        for test in traced.outcomes.keys() | other.outcomes.keys():
            if traced.outcomes.get(test) != other.outcomes.get(test):
                flaky.add(test)
    return flaky


def _why(run: SuiteRun) -> str:
    if run.timed_out:
        return " (the run timed out)"
    if run.collect_errors:
        where, text = next(iter(run.collect_errors.items()))
        lines = [line for line in text.splitlines() if line.strip()]
        return f"; collecting {where}: {lines[-1][:200] if lines else 'failed'}"
    if not run.outcomes:
        tail = [line for line in run.output.splitlines() if line.strip()]
        return f"; pytest said: {tail[-1][:200] if tail else 'nothing'}"
    return ""
