"""Shared fixtures: real sandboxes on the real base image (built once by `make test`).

Every run ends with the skipped tests, counted and grouped by reason. Under CI (the `CI`
environment variable set) a skip for any reason but the lack of a GPU (a reason starting with
`tests.paths.NO_GPU`) makes the run fail: `pytest_sessionfinish` sets the exit status to 1
(pytest's "tests failed") and the summary names the skips at fault.
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest

from rockroll.errors import ImageNotFound
from rockroll.sandbox.images import build_image, get_image
from tests.paths import NO_GPU, in_ci

# Third-party clients tested here stay off the network and out of the home folder: litellm
# fetches a price list from the internet when imported unless told to use its own copy, and
# mini-swe-agent keeps a config folder and greets on import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MSWEA_GLOBAL_CONFIG_DIR", tempfile.mkdtemp(prefix="rockroll-mswea-"))
os.environ.setdefault("MSWEA_SILENT_STARTUP", "1")

# reason -> test (or module) ids; filled as reports arrive, read at the end of the session
_SKIPS: defaultdict[str, list[str]] = defaultdict(list)
_SKIPS_KEY = pytest.StashKey[list[str]]()  # the reasons that fail a CI run


# The fast tier (`make test-fast`, `pytest -m fast`): modules that need no root, no sandbox and no
# VM: a module's path, or a pattern of test ids (fnmatch). A test here that asks for a sandbox
# fixture fails at collection, so the list stays true.
FAST = {
    "tests/test_structure.py",
    "tests/test_progress.py",
    "tests/data/test_mutations.py",
    "tests/data/test_sources.py",
    "tests/data/test_gates.py",
    "tests/data/test_workflows.py::test_seeds_without_a_model*",
    "tests/agent/test_context.py",
    "tests/cli/test_entry.py",
    "tests/cli/test_errors.py",
    "tests/cli/test_mistakes.py",
    "tests/agent/test_loop_double.py",
    "tests/models/test_attention.py",
    "tests/models/test_batching.py",
    "tests/models/test_generation.py",
    "tests/models/test_models.py",
    "tests/models/test_textformat.py",
    "tests/sandbox/test_doubles.py::*[[]dir[]]",
    "tests/tasks/test_terminal_bench.py",
    "tests/tasks/test_offline_scripts.py",
    "tests/train/test_algorithms.py",
    "tests/train/test_batch.py",
    "tests/train/test_ipa_spec.py",
    "tests/train/test_update.py",
    "tests/safety/test_rules.py",
    "tests/safety/test_policy.py",
    "tests/safety/test_redteam_compose.py",
}
_NEEDS_ROOT = {"base_image", "sandbox", "sb", "host_server", "sandbox_server", "host_unchanged"}
_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.relative_to(_ROOT).as_posix()
        if module not in FAST and not any(fnmatch.fnmatchcase(item.nodeid, p) for p in FAST):
            continue
        wanted = _NEEDS_ROOT & set(getattr(item, "fixturenames", ()))
        if wanted:
            raise pytest.UsageError(
                f"{item.nodeid} is in the fast tier (tests/conftest.py FAST) but uses "
                f"{sorted(wanted)}; move it out of FAST or off the fixture"
            )
        item.add_marker(pytest.mark.fast)


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _note_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPS[_skip_reason(report)].append(report.nodeid)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _note_skip(report)  # a whole module skipped (importorskip, allow_module_level)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _note_skip(report)


def _forbidden() -> list[str]:
    """The reasons that make a CI run fail: all but "no GPU"."""
    return sorted(r for r in _SKIPS if not r.startswith(NO_GPU)) if in_ci() else []


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    forbidden = _forbidden()
    session.config.stash[_SKIPS_KEY] = forbidden
    if forbidden and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    total = sum(len(ids) for ids in _SKIPS.values())
    write = terminalreporter.write_line
    terminalreporter.section(f"{total} skipped", sep="-")
    for reason, ids in sorted(_SKIPS.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        shown = ", ".join(ids[:3]) + (f", ... ({len(ids) - 3} more)" if len(ids) > 3 else "")
        write(f"{len(ids):4d} {reason}")
        write(f"       {shown}")
    forbidden = terminalreporter.config.stash.get(_SKIPS_KEY, _forbidden())
    if forbidden:
        count = sum(len(_SKIPS[r]) for r in forbidden)
        write(
            f"CI: {count} test(s) skipped for a reason other than {NO_GPU!r}; failing the run",
            red=True,
            bold=True,
        )


@pytest.fixture(scope="session")
def base_image() -> str:
    try:
        get_image("base")
    except ImageNotFound:
        build_image("base")
    return "base"


@pytest.fixture
def sandbox(base_image: str):
    from rockroll import Sandbox

    with Sandbox.create(base_image, memory="512m", pids=256) as sb:
        yield sb


@pytest.fixture(scope="session")
def sandbox_server(base_image: str, tmp_path_factory: pytest.TempPathFactory):
    """A real `rockroll serve` shared by the tests that use sandboxes over HTTP."""
    from tests.serverproc import ServerProc

    server = ServerProc(tmp_path_factory.mktemp("service") / "service.db").start()
    yield server
    server.stop()
