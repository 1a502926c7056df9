"""A pytest plugin that runs inside a task's sandbox, and the checker its test script calls.

As a plugin (`-p rockroll_outcomes`, this folder on PYTHONPATH) it writes every test's outcome,
duration and failure message to `$ROCKROLL_OUTCOMES` (JSON); with `$ROCKROLL_TRACE` set to a
folder, also the functions under that folder that each test called (what bug injection needs:
a mutation is worth trying only where some test runs it).

As a script, `python3 rockroll_outcomes.py EXPECTED.json OUTCOMES.json REWARD_FILE` writes 1 to
the reward file when every test that EXPECTED names passed (not skipped, not missing), else 0,
and prints those that did not.

Standard library and pytest only: it runs under whatever Python the task's image has.
"""

from __future__ import annotations

import json
import os
import sys
import threading

_results: dict[str, str] = {}
_durations: dict[str, float] = {}
_messages: dict[str, str] = {}
_calls: dict[str, list[list[str]]] = {}
_collect_errors: dict[str, str] = {}
_RANK = {"passed": 0, "xpassed": 0, "skipped": 1, "xfailed": 1, "failed": 2, "error": 3}

if __name__ != "__main__":
    import pytest

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):  # type: ignore[no-untyped-def]
        root = os.environ.get("ROCKROLL_TRACE")
        if not root:
            yield
            return
        prefix = root.rstrip("/") + "/"
        codes: set = set()  # every code object called; filtered once the test is over
        add = codes.add

        def profile(frame, event, arg):  # type: ignore[no-untyped-def]
            if event == "call":
                add(frame.f_code)

        sys.setprofile(profile)
        threading.setprofile(profile)
        try:
            yield
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
            _calls[item.nodeid] = sorted(
                [c.co_filename[len(prefix) :], getattr(c, "co_qualname", c.co_name)]
                for c in codes
                if c.co_filename.startswith(prefix)
            )


def pytest_collection_modifyitems(config, items) -> None:  # type: ignore[no-untyped-def]
    select = os.environ.get("ROCKROLL_SELECT")  # a JSON file: {"tests": [node ids]}
    if not select:
        return
    with open(select) as fh:
        wanted = set(json.load(fh)["tests"])
    keep = [item for item in items if item.nodeid in wanted]
    dropped = [item for item in items if item.nodeid not in wanted]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


def pytest_runtest_logreport(report) -> None:  # type: ignore[no-untyped-def]
    if report.passed and report.when != "call":
        outcome = "passed"  # set-up or teardown went well: the call's outcome stands
    elif report.when != "call":
        outcome = "skipped" if report.skipped else "error"
    elif hasattr(report, "wasxfail"):
        outcome = "xfailed" if report.skipped else "xpassed"
    else:
        outcome = report.outcome
    old = _results.get(report.nodeid, "passed")
    _results[report.nodeid] = outcome if _RANK[outcome] >= _RANK[old] else old
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    if report.failed and report.nodeid not in _messages:
        crash = getattr(report.longrepr, "reprcrash", None)
        _messages[report.nodeid] = (crash.message if crash else str(report.longrepr))[:2000]


def pytest_collectreport(report) -> None:  # type: ignore[no-untyped-def]
    if report.failed:
        _collect_errors[report.nodeid or "."] = str(report.longrepr)[-3000:]


def pytest_sessionfinish(session, exitstatus) -> None:  # type: ignore[no-untyped-def]
    out = os.environ.get("ROCKROLL_OUTCOMES")
    if not out:
        return
    data = {
        "outcomes": _results,
        "durations": _durations,
        "messages": _messages,
        "calls": _calls,
        "collect_errors": _collect_errors,
        "exitstatus": int(exitstatus),
    }
    with open(out + ".tmp", "w") as fh:
        json.dump(data, fh)
    os.replace(out + ".tmp", out)


def check(expected_file: str, outcomes_file: str, reward_file: str) -> int:
    with open(expected_file) as fh:
        expected = json.load(fh)["tests"]
    try:
        with open(outcomes_file) as fh:
            outcomes = json.load(fh)["outcomes"]
    except (OSError, ValueError, KeyError):
        outcomes = {}
        print(f"no test outcomes in {outcomes_file}: the test run did not finish")
    wrong = {t: outcomes.get(t, "missing") for t in expected if outcomes.get(t) != "passed"}
    for test, outcome in sorted(wrong.items()):
        print(f"{outcome}: {test}")
    print(f"{len(expected) - len(wrong)} of {len(expected)} tests passed")
    with open(reward_file, "w") as fh:
        fh.write("0\n" if wrong or not expected else "1\n")
    return 0


if __name__ == "__main__":
    sys.exit(check(*sys.argv[1:4]))
