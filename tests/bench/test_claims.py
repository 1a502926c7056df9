"""The README's claims about tasks and the runner, each checked end to end in real sandboxes.

- "each rewrite is listed in the result (`offline` in `results.jsonl`)";
- "Tests are copied in only after the agent finished";
- the runner's summary, its failure reasons, and the exit codes of `rockroll bench run`.

Every task here is written into the test's own tmp dir, in the formats the runner reads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rockroll.bench.agents import AgentResult, NoopAgent
from rockroll.bench.runner import run_suite
from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.schema import Task
from rockroll.tasks.suites import load_suite
from tests.taskdirs import CHECK, SOLVE, harbor, terminal_bench


def rows(out: Path) -> dict[str, dict]:
    lines = (out / "results.jsonl").read_text().splitlines()
    found = [json.loads(line) for line in lines]
    by_task = {r["task"]: r for r in found}
    assert len(by_task) == len(found), "a task has more than one line in results.jsonl"
    return by_task


def rockroll(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`rockroll ARGS...` as its own process, as a user runs it."""
    env = os.environ | {"COLUMNS": "200"}  # rich tables: no wrapped or cut cells
    return subprocess.run(
        [sys.executable, "-m", "rockroll", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# -- 1. offline rewrites are listed in results.jsonl --------------------------------------------
# Bootstrap steps as published test scripts have them; with the network off (the default) each
# would fail or install nothing, and `uv` is not in the image.
TB_RUN_TESTS = """
#!/bin/bash
apt-get update
apt-get install -y curl
curl -LsSf https://astral.sh/uv/0.7.13/install.sh | sh
source $HOME/.local/bin/env
uv init
uv add pytest==8.4.1
uv run pytest $TEST_DIR/test_outputs.py -rA
"""
TB_REWRITES = [
    "line 2: 'apt-get update' -> ': # offline: package lists not refreshed' (needs the network)",
    "line 3: 'apt-get install -y curl' -> ': # offline: already installed: curl' "
    "(packages already installed)",
    "line 4: 'curl -LsSf https://astral.sh/uv/0.7.13/install.sh | sh' -> "
    "': # offline: installer download skipped' (downloads an installer)",
    "line 5: 'source $HOME/.local/bin/env' -> ': # offline: installer environment not needed' "
    "(belongs to a skipped installer)",
    "line 6: 'uv init' -> ': # offline: project environment not needed' "
    "(uv project set-up needs the network)",
    "line 7: 'uv add pytest==8.4.1' -> ': # offline: already installed: pytest' "
    "(packages already installed)",
    "line 8: 'uv run pytest $TEST_DIR/test_outputs.py -rA' -> "
    "'python3 -m pytest $TEST_DIR/test_outputs.py -rA' "
    "(runs with the image's Python instead of uv's)",
]
HARBOR_TEST_SH = """
#!/bin/bash
curl -LsSf https://astral.sh/uv/0.9.5/install.sh | sh
source $HOME/.local/bin/env
pip install pytest
uv run pytest /tests/test_state.py -rA
if [ $? -eq 0 ]; then echo 1; else echo 0; fi > /logs/verifier/reward.txt
"""
HARBOR_REWRITES = [
    "line 2: 'curl -LsSf https://astral.sh/uv/0.9.5/install.sh | sh' -> "
    "': # offline: installer download skipped' (downloads an installer)",
    "line 3: 'source $HOME/.local/bin/env' -> ': # offline: installer environment not needed' "
    "(belongs to a skipped installer)",
    "line 4: 'pip install pytest' -> ': # offline: already installed: pytest' "
    "(packages already installed)",
    "line 5: 'uv run pytest /tests/test_state.py -rA' -> "
    "'python3 -m pytest /tests/test_state.py -rA' (runs with the image's Python instead of uv's)",
]
OUT_TXT_TEST = "def test_out():\n    assert open('/app/out.txt').read().strip() == 'hello'\n"
DONE_TEST = "def test_done():\n    assert open('/app/done').read().strip() == 'yes'\n"


def test_offline_rewrites_are_listed_in_results_jsonl(base_image: str, tmp_path: Path) -> None:
    suite, out = tmp_path / "suite", tmp_path / "out"
    terminal_bench(
        suite,
        "tb-bootstrap",
        run_tests=TB_RUN_TESTS,
        tests={"test_outputs.py": OUT_TXT_TEST},
        solution="echo hello > /app/out.txt\n",
    )
    harbor(suite, "harbor-bootstrap", test=HARBOR_TEST_SH, extra_tests={"test_state.py": DONE_TEST})
    harbor(suite, "harbor-plain")  # nothing to rewrite: its row lists nothing

    done = rockroll("bench", "run", str(suite), "--agent", "oracle", "-j", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    found = rows(out)
    for name, expected in (("tb-bootstrap", TB_REWRITES), ("harbor-bootstrap", HARBOR_REWRITES)):
        row = found[name]
        assert row["passed"], (name, row["reason"], row["error"], row["verifier_tail"])
        assert row["offline"] == expected, name
        assert "1 passed" in row["verifier_tail"]  # the rewritten pytest line really ran
    assert found["harbor-plain"]["passed"] and found["harbor-plain"]["offline"] == []
    assert json.loads((out / "summary.json").read_text())["offline_rewritten"] == 2
    assert "2 task(s) verified with bootstrap steps rewritten to run offline" in done.stdout

    # The rewritten verifiers still judge: an agent that does nothing fails them.
    noop = {r.task: r for r in run_suite(load_suite(str(suite)), NoopAgent(), tmp_path / "noop")}
    assert noop["tb-bootstrap"].reason == noop["harbor-bootstrap"].reason == "tests-failed"
    assert noop["tb-bootstrap"].offline == TB_REWRITES
    assert noop["harbor-bootstrap"].offline == HARBOR_REWRITES


# -- 2. /tests is absent while the agent works ---------------------------------------------------
MARKER = "VERIFIER-7f3a9c"  # appears only in the tests: the agent must never see it
PEEK = (
    "if test -e /tests; then echo TESTS-PRESENT; else echo TESTS-ABSENT; fi; "
    "ls -la /tests; cat /tests/test.sh /tests/run-tests.sh /tests/test_outputs.py; echo PEEK-DONE"
)


def _bash(command: str) -> dict:
    return {"content": "", "tool_calls": [{"name": "bash", "arguments": {"command": command}}]}


SUBMIT = {"content": "", "tool_calls": [{"name": "submit", "arguments": {}}]}


def test_tests_are_absent_while_the_agent_works_and_run_after(
    base_image: str, tmp_path: Path
) -> None:
    suite, scripts, out = tmp_path / "suite", tmp_path / "scripts", tmp_path / "out"
    scripts.mkdir()
    harbor(
        suite,
        "harbor",
        test=f"echo {MARKER} ran\n" + CHECK,
        extra_tests={"test_outputs.py": f"# {MARKER}\n"},
    )
    harbor(suite, "harbor-unsolved", test=f"echo {MARKER} ran\n" + CHECK)
    terminal_bench(
        suite,
        "tb",
        run_tests=f"echo {MARKER} ran\npython3 -m pytest $TEST_DIR/test_outputs.py -rA\n",
        tests={"test_outputs.py": f"# {MARKER}\n" + OUT_TXT_TEST},
        solution="echo hello > /app/out.txt\n",
    )
    solutions = {"harbor": SOLVE, "tb": "echo hello > /app/out.txt"}
    for name in ("harbor", "harbor-unsolved", "tb"):
        replies = [_bash(PEEK), *([_bash(solutions[name])] if name in solutions else []), SUBMIT]
        (scripts / f"{name}.json").write_text(json.dumps(replies))

    done = rockroll(
        "bench", "run", str(suite), "--agent", "harness", "--model", f"scripted:{scripts}",
        "--max-turns", "5", "-j", "2", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = rows(out)
    for name, row in found.items():
        assert row["trajectory"], json.dumps(row)
        trajectory = json.loads(Path(row["trajectory"]).read_text())
        peeked = trajectory["steps"][2]["observation"]["results"][0]["content"]
        assert "PEEK-DONE" in peeked, peeked  # the command ran to its end
        assert "TESTS-ABSENT" in peeked and "TESTS-PRESENT" not in peeked, peeked
        assert "cannot access '/tests'" in peeked, peeked
        assert "/tests/test.sh: No such file or directory" in peeked, peeked
        assert MARKER not in peeked, f"{name}: the agent saw the tests: {peeked}"
        # ... and after the agent, the verifier ran the very tests the agent could not see.
        assert f"{MARKER} ran" in row["verifier_tail"], row
    assert found["harbor"]["passed"] and found["tb"]["passed"], found
    assert "1 passed" in found["tb"]["verifier_tail"]
    assert not found["harbor-unsolved"]["passed"]
    assert found["harbor-unsolved"]["reason"] == "tests-failed"


PASS_EVERYTHING = """
import pytest

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.outcome = "passed"
"""


class PlantingAgent:
    """An agent that does not solve the task but leaves a conftest.py that passes every test
    where the tests will be copied, and one more level up."""

    name = "planting"

    def run(self, task: Task, sandbox: Sandbox) -> AgentResult:
        sandbox.exec(["mkdir", "-p", "/tests/sub"])
        sandbox.write_text("/tests/conftest.py", PASS_EVERYTHING)
        sandbox.write_text("/tests/sub/conftest.py", PASS_EVERYTHING)
        return AgentResult(duration=0.0)


def test_a_conftest_planted_in_tests_cannot_pass_the_tests(base_image: str, tmp_path: Path) -> None:
    """/tests is absent while the agent works, so what is there before the tests are copied in
    is the agent's: it is removed, and an unsolved task still fails."""
    suite = tmp_path / "suite"
    terminal_bench(
        suite,
        "tb",
        run_tests="python3 -m pytest $TEST_DIR/test_outputs.py -rA\n",
        tests={"test_outputs.py": OUT_TXT_TEST},
        solution="echo hello > /app/out.txt\n",
    )
    (row,) = run_suite(load_suite(str(suite)), PlantingAgent(), tmp_path / "out")
    assert not row.passed and row.reason == "tests-failed", row
    assert "1 failed" in (row.verifier_tail or ""), row.verifier_tail
    # The hook does work where it is not removed: the attack is real.
    with Sandbox.create(base_image) as sb:
        sb.write_text("/t/conftest.py", PASS_EVERYTHING)
        sb.write_text("/t/test_x.py", "def test_x():\n    assert False\n")
        assert sb.exec(["python3", "-m", "pytest", "-q", "/t"]).exit_code == 0


# -- 3. the summary, every failure reason, the exit codes ---------------------------------------
class ClosingAgent:
    """An agent whose sandbox goes away under it (the infrastructure failing)."""

    name = "closing"

    def run(self, task: Task, sandbox: Sandbox) -> AgentResult:
        sandbox.close()
        return AgentResult(duration=0.0)


class CrashingAgent:
    """An agent with a bug."""

    name = "crashing"

    def run(self, task: Task, sandbox: Sandbox) -> AgentResult:
        raise RuntimeError("agent bug 42")


def _reason_suite(suite: Path) -> None:
    """One task per failure reason an oracle run over a folder can meet, and two that pass."""
    alpha = '[metadata]\ncategory = "alpha"\n'
    beta = '[metadata]\ncategory = "beta"\n'
    harbor(suite, "passes-a", toml=alpha)
    harbor(suite, "passes-b", toml=beta)
    harbor(
        suite,
        "tests-failed",
        toml=alpha,
        test="echo graded-zero\necho 0 > /logs/verifier/reward.txt\n",
    )
    harbor(
        suite, "no-tests", toml=beta,
        test="mkdir -p /tmp/empty && cd /tmp/empty && python3 -m pytest\n",
    )  # fmt: skip
    harbor(
        suite, "verifier-timeout", toml=beta + "[verifier]\ntimeout_sec = 2\n", test="sleep 300\n"
    )
    harbor(
        suite,
        "agent-timeout",
        toml=beta + "[agent]\ntimeout_sec = 2\n",
        solve="sleep 300\n" + SOLVE,
    )
    harbor(suite, "build-failed", dockerfile="FROM base\nRUN echo step-breaks && exit 7\n")
    harbor(suite, "invalid-task", instruction="")
    harbor(suite, "invalid-settings", toml='[environment]\nmemory = "lots"\n')
    harbor(suite, "image-missing", toml='[environment]\nimage = "no-such-image-x"\n')
    harbor(suite, "verifier-error", test="mkdir -p /logs/verifier/reward.txt\n")


EXPECTED_REASONS = {
    "passes-a": None,
    "passes-b": None,
    "tests-failed": "tests-failed",
    "no-tests": "no-tests",
    "verifier-timeout": "verifier-timeout",
    "agent-timeout": "agent-timeout",
    "build-failed": "build-failed",
    "invalid-task": "invalid-task",
    "invalid-settings": "invalid-task",
    "image-missing": "image-missing",
    "verifier-error": "error",
}


def test_every_failure_reason_is_recorded_and_summarised(base_image: str, tmp_path: Path) -> None:
    suite, out = tmp_path / "suite", tmp_path / "out"
    _reason_suite(suite)
    done = rockroll("bench", "run", str(suite), "--agent", "oracle", "-j", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr  # failed tasks are results, not a failed run
    found = rows(out)
    assert {k: r["reason"] for k, r in found.items()} == EXPECTED_REASONS, {
        k: (r["reason"], r["error"], r["verifier_tail"][-200:]) for k, r in found.items()
    }
    assert [k for k, r in found.items() if r["passed"]] == ["passes-a", "passes-b"]
    # What each line carries: reward, per-phase times, verifier output tail, the error.
    assert found["passes-a"]["reward"] == 1.0 and found["passes-a"]["category"] == "alpha"
    assert set(found["passes-a"]["times"]) == {"build", "sandbox", "agent", "verify", "total"}
    assert "graded-zero" in found["tests-failed"]["verifier_tail"]
    assert "no tests ran" in found["no-tests"]["verifier_tail"]
    assert found["verifier-timeout"]["times"]["verify"] < 60  # killed at 2 s, not after 300
    assert found["agent-timeout"]["times"]["agent"] < 60
    assert "step-breaks" in found["build-failed"]["error"]
    assert "instruction.md" in found["invalid-task"]["error"]
    assert "lots" in found["invalid-settings"]["error"]
    assert "no-such-image-x" in found["image-missing"]["error"]
    assert "reward.txt" in found["verifier-error"]["error"]

    summary = json.loads((out / "summary.json").read_text())
    failed = [r for r in EXPECTED_REASONS.values() if r]
    assert summary["failures"] == {r: failed.count(r) for r in set(failed)}
    assert (summary["tasks"], summary["passed"], summary["pass_rate"]) == (11, 2, 0.1818)
    assert summary["categories"]["alpha"] == {"tasks": 2, "passed": 1, "pass_rate": 0.5}
    assert summary["categories"]["beta"] == {"tasks": 4, "passed": 1, "pass_rate": 0.25}
    # Times over the tasks that got as far as timing (not the one that failed to load).
    totals = sorted(r["times"]["total"] for r in found.values() if "total" in r["times"])
    assert len(totals) == 10 and found["invalid-task"]["times"] == {}
    assert summary["times"]["total"]["p95"] == round(totals[-1], 3)  # 10 tasks: p95 is the max
    assert summary["times"]["total"]["mean"] == round(sum(totals) / len(totals), 3)
    assert summary["times"]["agent"]["mean"] is not None

    # The summary printed: pass rate overall and per category, times, failures by reason.
    text = done.stdout
    assert "│ alpha    │     2 │      1 │     50.0% │" in text, text
    assert "│ beta     │     4 │      1 │     25.0% │" in text, text
    assert "│ all      │    11 │      2 │     18.2% │" in text, text
    assert "times per task" in text and "p95 s" in text
    assert f"│ total   │ {summary['times']['total']['mean']:.2f}" in text, text
    # Failures by whose they are: with the oracle, a verdict that stands is the task's fault.
    assert {k: g["tasks"] for k, g in summary["faults"].items()} == {"task": 7, "rockroll": 2}
    assert summary["faults"]["rockroll"]["reasons"] == {"image-missing": 1, "error": 1}
    assert "│ task at fault     │ 7 " in text and "│ rockroll at fault │ 2 " in text, text
    assert f"results: {out / 'results.jsonl'}" in text
    assert "oracle on" in done.stderr and "2 passed" in done.stderr and "11/11" in done.stderr

    # `bench report` prints the same summary from the folder alone.
    report = rockroll("bench", "report", str(out))
    assert report.returncode == 0
    assert "│ all      │    11 │      2 │     18.2% │" in report.stdout


def test_reasons_from_agents_and_answers(base_image: str, tmp_path: Path) -> None:
    """wrong-answer (a python verifier), error (an agent that fails), sandbox-error."""
    # wrong-answer: reasoning-gym answers are checked by a function, not a script.
    out = tmp_path / "rg"
    done = rockroll("bench", "run", "rg:basic_arithmetic?seed=0&size=2", "--agent", "noop",
                    "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {r["reason"] for r in rows(out).values()} == {"wrong-answer"}
    assert "wrong-answer" in done.stdout

    # error: the harness agent's model cannot be made (no replies for this task).
    suite = tmp_path / "suite"
    harbor(suite, "no-replies")
    (tmp_path / "scripts").mkdir()
    out = tmp_path / "harness"
    done = rockroll("bench", "run", str(suite), "--agent", "harness",
                    "--model", f"scripted:{tmp_path / 'scripts'}", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = rows(out)["no-replies"]
    assert row["reason"] == "error" and "no-replies.json" in row["error"], row

    # sandbox-error: the sandbox is gone before the verifier runs; error: an agent's own bug.
    tasks = load_suite(str(suite))
    (closed,) = run_suite(tasks, ClosingAgent(), tmp_path / "closing")
    assert closed.reason == "sandbox-error" and not closed.passed, closed
    assert "closed" in (closed.error or "").lower(), closed.error
    (crashed,) = run_suite(tasks, CrashingAgent(), tmp_path / "crashing")
    assert crashed.reason == "error" and "agent bug 42" in (crashed.error or ""), crashed


def test_cli_exit_codes(base_image: str, tmp_path: Path) -> None:
    """0 for a run that finished (whatever it scored), 1 for bad input, 2 for bad usage."""
    missing = rockroll("bench", "run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert missing.returncode == 1
    assert "error:" in missing.stderr and "nowhere" in missing.stderr
    assert not (tmp_path / "o" / "results.jsonl").exists()
    harbor(tmp_path / "suite", "one")
    for args, words in (
        (["--agent", "nosuch"], "unknown agent 'nosuch'"),
        (["--agent", "harness"], "needs --model"),
    ):
        bad = rockroll("bench", "run", str(tmp_path / "suite"), *args, "--out", str(tmp_path / "o"))
        assert bad.returncode == 1 and words in bad.stderr, bad.stderr
    absent = rockroll("bench", "report", str(tmp_path / "no-run"))
    assert absent.returncode == 1 and "no folder" in absent.stderr
    assert not (tmp_path / "no-run").exists()
    (tmp_path / "no-results").mkdir()
    empty = rockroll("bench", "report", str(tmp_path / "no-results"))
    assert empty.returncode == 1 and "no results" in empty.stderr
    usage = rockroll("bench", "run", str(tmp_path / "suite"), "--jobs", "many")
    assert usage.returncode == 2 and "--jobs: expected a whole number, got 'many'" in usage.stderr
    assert rockroll("bench").returncode == 2  # no verb: the help, as a usage error
    assert not (tmp_path / "o" / "results.jsonl").exists()  # none of these ran a task


def _sleeping(pattern: str) -> bool:
    """Whether some process on this host runs `sleep PATTERN` (sandbox processes are visible
    from the host's pid namespace)."""
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and (proc / "cmdline").read_bytes() == f"sleep\0{pattern}\0".encode()
            ):
                return True
        except OSError:
            continue
    return False


def test_an_interrupted_run_exits_130_and_resumes_from_the_same_out(
    base_image: str, tmp_path: Path
) -> None:
    suite, out = tmp_path / "suite", tmp_path / "out"
    pause = "6.517"  # a number no other test sleeps for; long enough to be seen under load
    harbor(suite, "a-slow", solve=f"sleep {pause}\n" + SOLVE)
    harbor(suite, "b")
    harbor(suite, "c")
    env = os.environ | {"COLUMNS": "200"}
    command = [
        sys.executable,
        "-m",
        "rockroll",
        "bench",
        "run",
        str(suite),
        "-j",
        "1",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # As a user's terminal has it: a suite started in the background of a script inherits
        # SIGINT ignored, and Python then keeps ignoring it (no KeyboardInterrupt at all).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not _sleeping(pause):  # the first task's agent is at work
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (stdout, stderr)
    assert "interrupted" in stderr
    before = rows(out) if (out / "results.jsonl").exists() else {}
    assert set(before) <= {"a-slow"}, before  # the tasks not yet started did not run

    again = rockroll(*command[3:])
    assert again.returncode == 0, again.stderr
    after = rows(out)
    assert sorted(after) == ["a-slow", "b", "c"] and all(r["passed"] for r in after.values())
    for name, row in before.items():
        assert after[name]["times"] == row["times"], "a finished task was run again"
    assert "3/3" in again.stderr

    fresh = rockroll(*command[3:], "--fresh")
    assert fresh.returncode == 0
    redone = rows(out)
    assert sorted(redone) == ["a-slow", "b", "c"]
    assert all(redone[k]["times"] != after[k]["times"] for k in redone)  # all ran anew
