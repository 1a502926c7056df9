"""Running a project's tests in a sandbox of its image, and reading what each test did.

The pytest plugin in `inside/rockroll_outcomes.py` is copied into the sandbox and loaded with
`-p`; it writes each test's outcome, duration and failure message (and, traced, the functions of
the repository each test called) to a JSON file that is read back here. So nothing depends on
parsing pytest's output, and a test id means exactly what pytest means by it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rockroll.data.project import APP, Project
from rockroll.errors import SandboxError
from rockroll.sandbox.sdk import Sandbox

PLUGIN = Path(__file__).parent / "inside" / "rockroll_outcomes.py"
PLUGIN_DIR = "/opt/rockroll-data"
OUTCOMES = "/tmp/rockroll-outcomes.json"
SELECT = "/tmp/rockroll-select.json"


@dataclass
class SuiteRun:
    """What one pytest run did: per test id its outcome ("passed", "failed", "error",
    "skipped", ...), seconds and failure message; `calls` (traced runs only): the (file,
    qualified name) of the repository's functions each test called."""

    outcomes: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    calls: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    collect_errors: dict[str, str] = field(default_factory=dict)
    exit_code: int = 0
    seconds: float = 0.0
    timed_out: bool = False
    output: str = ""

    def passed(self) -> set[str]:
        return {t for t, o in self.outcomes.items() if o == "passed"}


def install_plugin(sb: Sandbox) -> None:
    sb.write_text(f"{PLUGIN_DIR}/rockroll_outcomes.py", PLUGIN.read_text())


def files_of(tests: list[str] | tuple[str, ...]) -> list[str]:
    """The files pytest collects among `tests` (test ids or paths): what it is given to run."""
    files = {t.split("::")[0] for t in tests}
    return sorted(
        f for f in files if f.rsplit("/", 1)[-1].startswith("test_") or f.endswith("_test.py")
    )


def run_tests(
    sb: Sandbox,
    project: Project,
    files: list[str],
    *,
    select: list[str] | None = None,
    trace: bool = False,
    timeout: float = 300.0,
) -> SuiteRun:
    """pytest over `files` (only the ids in `select`, when given) in `sb`, whose plugin is
    installed (`install_plugin`)."""
    env = {
        "PYTHONPATH": f"{PLUGIN_DIR}:{project.pythonpath}",
        "ROCKROLL_OUTCOMES": OUTCOMES,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if trace:
        env["ROCKROLL_TRACE"] = APP
    if select is not None:
        sb.write_text(SELECT, json.dumps({"tests": select}))
        env["ROCKROLL_SELECT"] = SELECT
    sb.exec(["rm", "-f", OUTCOMES])
    argv = ["python", "-m", "pytest", "-p", "rockroll_outcomes", "-p", "no:cacheprovider"]
    argv += ["-q", "--tb=short", "--rootdir", APP, *files]
    done = sb.exec(argv, cwd=APP, env=env, timeout=timeout)
    run = SuiteRun(
        exit_code=done.exit_code,
        seconds=done.duration,
        timed_out=done.timed_out,
        output=done.output[-4000:],
    )
    try:
        data = json.loads(sb.read_text(OUTCOMES))
    except (SandboxError, OSError, ValueError):  # pytest did not get to the end
        return run
    run.outcomes, run.durations = data["outcomes"], data["durations"]
    run.messages, run.collect_errors = data["messages"], data["collect_errors"]
    run.calls = {t: [(f, q) for f, q in c] for t, c in data["calls"].items()}
    return run
