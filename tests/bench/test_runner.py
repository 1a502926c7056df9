"""The benchmark runner end to end, on real task sets and on broken tasks written here."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from rockroll import Sandbox
from rockroll.bench.agents import AgentResult, NoopAgent, OracleAgent
from rockroll.bench.runner import read_results, run_suite
from rockroll.cli import main
from rockroll.tasks.schema import Task
from rockroll.tasks.suites import load_suite

SHARED = Path(__file__).resolve().parents[3] / "shared" / "tasks"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["bench", "run", *args])
    return code, capsys.readouterr().out


def results(out: Path) -> dict[str, dict]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return {r["task"]: r for r in map(json.loads, lines)}


@pytest.mark.slow
@pytest.mark.parametrize("suite, count", [("evoeval", 46), ("aider-polyglot-python", 17)])
def test_real_suites_oracle_passes_all_noop_none(
    suite: str, count: int, base_image: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (SHARED / suite).is_dir(), f"{SHARED / suite} missing: shared/ belongs beside the repo"
    for agent, expected in (("oracle", count), ("noop", 0)):
        out = tmp_path / agent
        code, _ = run(capsys, str(SHARED / suite), "--agent", agent, "-j", "2", "--out", str(out))
        assert code == 0
        found = results(out)
        assert len(found) == count
        failing = {
            k: (r["reason"], r["verifier_tail"][-300:]) for k, r in found.items() if not r["passed"]
        }
        assert sum(r["passed"] for r in found.values()) == expected, failing
        if agent == "noop":
            assert {r["reason"] for r in found.values()} == {"tests-failed"}


@pytest.mark.slow
def test_humaneval_canonical_passes_all_empty_body_none(base_image: str, tmp_path: Path) -> None:
    tasks = load_suite("humaneval")
    assert len(tasks) == 164
    oracle = run_suite(tasks, OracleAgent(), tmp_path / "oracle", jobs=2)
    assert sum(r.passed for r in oracle) == 164, [r.task for r in oracle if not r.passed]
    noop = run_suite(tasks, NoopAgent(), tmp_path / "noop", jobs=2)
    assert sum(r.passed for r in noop) == 0


def test_reasoning_gym_suite_through_the_runner(base_image: str, tmp_path: Path) -> None:
    tasks = load_suite("rg:countdown?seed=1&size=3")
    assert [t.id for t in tasks] == [f"rg/countdown/1/{i}" for i in range(3)]
    assert all(r.passed for r in run_suite(tasks, OracleAgent(), tmp_path / "o", jobs=2))
    assert not any(r.passed for r in run_suite(tasks, NoopAgent(), tmp_path / "n", jobs=2))


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def harbor_task(root: Path, name: str, reward: str, dockerfile: str | None = None) -> Path:
    task = root / name
    write(task / "instruction.md", "Create /app/done containing the word yes.\n")
    write(
        task / "task.toml",
        """
        [metadata]
        category = "files"
        [agent]
        timeout_sec = 60
        [verifier]
        timeout_sec = 30
        """,
    )
    write(task / "solution/solve.sh", "mkdir -p /app && echo yes > /app/done\n")
    write(
        task / "tests/test.sh",
        f"""
        if grep -q yes /app/done 2>/dev/null; then echo '{reward}' > /logs/verifier/$FILE
        else echo 0 > /logs/verifier/reward.txt; fi
        """.replace("$FILE", "reward.json" if reward.startswith("{") else "reward.txt"),
    )
    if dockerfile:
        write(task / "environment/Dockerfile", dockerfile)
    return task


def test_harbor_tasks_with_reward_files(base_image: str, tmp_path: Path) -> None:
    harbor_task(tmp_path / "suite", "plain", "1")
    harbor_task(tmp_path / "suite", "partial", '{"reward": 0.5}')
    harbor_task(
        tmp_path / "suite", "built", "1", "FROM python:3.11-slim\nRUN mkdir -p /app\nWORKDIR /app\n"
    )
    tasks = load_suite(str(tmp_path / "suite"))
    got = {r.task: r for r in run_suite(tasks, OracleAgent(), tmp_path / "out", jobs=2)}
    assert got["plain"].passed and got["plain"].reward == 1.0 and got["plain"].category == "files"
    assert got["built"].passed
    assert got["partial"].reward == 0.5 and not got["partial"].passed
    noop = run_suite(tasks, NoopAgent(), tmp_path / "noop", jobs=2)
    assert [r.reward for r in noop] == [0.0, 0.0, 0.0]


def tb_task(root: Path, name: str, *, dockerfile: str, tests: str, timeout: int = 30) -> Path:
    task = root / name
    write(
        task / "task.yaml",
        f"""
        instruction: Write hello to /app/out.txt
        category: broken
        max_agent_timeout_sec: 30
        max_test_timeout_sec: {timeout}
        """,
    )
    write(task / "Dockerfile", dockerfile)
    write(task / "solution.sh", "echo hello > /app/out.txt\n")
    write(task / "run-tests.sh", tests)
    return task


GOOD_DOCKERFILE = "FROM python:3.11-slim\nWORKDIR /app\n"
GOOD_TESTS = "grep -q hello /app/out.txt\n"


def test_bad_tasks_are_reported_and_the_run_goes_on(
    base_image: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite"
    tb_task(suite, "good", dockerfile=GOOD_DOCKERFILE, tests=GOOD_TESTS)
    (
        tb_task(suite, "no-instruction", dockerfile=GOOD_DOCKERFILE, tests=GOOD_TESTS) / "task.yaml"
    ).write_text("category: x\n")
    tb_task(
        suite,
        "unknown-instruction",
        dockerfile="FROM python:3.11-slim\nFROBNICATE now\n",
        tests=GOOD_TESTS,
    )
    tb_task(suite, "hanging-verifier", dockerfile=GOOD_DOCKERFILE, tests="sleep 100\n", timeout=2)
    tb_task(
        suite,
        "build-fails",
        dockerfile="FROM python:3.11-slim\nRUN echo broken-step && exit 7\n",
        tests=GOOD_TESTS,
    )
    code, text = run(
        capsys, str(suite), "--agent", "oracle", "-j", "2", "--out", str(tmp_path / "out")
    )
    assert code == 0
    found = results(tmp_path / "out")
    assert found["good"]["passed"]
    assert found["no-instruction"]["reason"] == "invalid-task"
    assert "instruction" in found["no-instruction"]["error"]
    assert found["unknown-instruction"]["reason"] == "build-failed"
    assert "FROBNICATE" in found["unknown-instruction"]["error"]
    assert found["hanging-verifier"]["reason"] == "verifier-timeout"
    # Killed at its 2 s timeout, not after the 100 s its `sleep` would take.
    assert 2 <= found["hanging-verifier"]["times"]["verify"] < 60
    assert found["build-fails"]["reason"] == "build-failed"
    assert (
        "Dockerfile:2" in found["build-fails"]["error"]
        and "broken-step" in found["build-fails"]["error"]
    )
    assert "build-failed" in text and "verifier-timeout" in text


def test_an_interrupted_run_resumes_without_redoing_tasks(base_image: str, tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    for name in ("a", "b", "c"):
        tb_task(suite, name, dockerfile=GOOD_DOCKERFILE, tests=GOOD_TESTS)
    out = tmp_path / "out"
    run_suite(load_suite(str(suite)), OracleAgent(), out, jobs=1)
    lines = (out / "results.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    # Interrupted while writing the second result: one whole line and half of the next.
    (out / "results.jsonl").write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    agent = CountingOracle()
    again = run_suite(load_suite(str(suite)), agent, out, jobs=1)
    assert sorted(r.task for r in again) == ["a", "b", "c"] and all(r.passed for r in again)
    done = {"a", "b", "c"} - {first["task"]}
    assert sorted(agent.ran) == sorted(done)  # only the tasks without a whole result ran again
    kept = {r.task: r for r in read_results(out)}
    assert kept[first["task"]].times == first["times"]
    assert sorted(kept) == ["a", "b", "c"]


class CountingOracle(OracleAgent):
    """The oracle, remembering which tasks it was given."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def run(self, task: Task, sandbox: Sandbox) -> AgentResult:
        self.ran.append(task.id)
        return super().run(task, sandbox)


def test_report_renders_summary_and_html(
    base_image: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite"
    tb_task(suite, "one", dockerfile=GOOD_DOCKERFILE, tests=GOOD_TESTS)
    shutil.copytree(suite / "one", suite / "two")
    (suite / "two" / "run-tests.sh").write_text("exit 1\n")
    out = tmp_path / "out"
    run_suite(load_suite(str(suite)), OracleAgent(), out, jobs=2)
    page = tmp_path / "report.html"
    assert main(["bench", "report", str(out), "--html", str(page)]) == 0
    text = capsys.readouterr().out
    assert "50.0%" in text and "tests-failed" in text
    html = page.read_text()
    assert "<html>" in html
    # One row per task (failures first), the category's rate, and the failure reasons.
    failed = "<tr class=fail><td>two</td><td>broken</td><td>fail</td><td>0</td><td>tests-failed"
    assert failed in html
    assert "<tr class=pass><td>one</td><td>broken</td><td>pass</td><td>1</td><td></td>" in html
    assert html.index("<td>two</td>") < html.index("<td>one</td>")
    assert "<tr><td>broken</td><td>2</td><td>1</td><td>50.0%</td></tr>" in html
    assert "<tr><td>tests-failed</td><td>1</td></tr>" in html
    assert main(["bench", "report", str(tmp_path / "nothing")]) == 1


def test_harbor_task_through_envs_make(base_image: str, tmp_path: Path) -> None:
    from rockroll.envs import make

    task = harbor_task(tmp_path, "env-task", "1")
    with make(f"terminal:{task}") as env:
        obs, info = env.reset()
        assert "Create /app/done" in obs and info["task_id"] == "env-task"
        assert env.step({"tool": "submit"})[1] == 0.0
        env.reset()
        env.step({"tool": "bash", "command": "mkdir -p /app && echo yes > /app/done"})
        _, reward, terminated, _, info = env.step({"tool": "submit"})
        assert (reward, terminated) == (1.0, True)
