"""Harbor task folders run as Docker + Harbor would run them: each class of semantics real
public tasks rely on, as a small task of our own that the oracle passes and noop fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rockroll.bench.agents import NoopAgent, OracleAgent
from rockroll.bench.runner import TaskResult, run_task
from rockroll.errors import TaskError
from rockroll.tasks.harbor import load_harbor
from tests.taskdirs import controls, harbor

REWARD = "/logs/verifier/reward.txt"


def verdict(check: str) -> str:
    """A test.sh that writes 1 when the shell condition `check` holds, else 0."""
    return f"if {check}; then echo 1 > {REWARD}; else echo 0 > {REWARD}; fi\n"


def both(task: Path) -> tuple[TaskResult, TaskResult]:
    """The oracle's result and noop's, on fresh sandboxes of the task."""
    loaded = load_harbor(task)
    return run_task(loaded, OracleAgent()), run_task(loaded, NoopAgent())


def assert_controls(task: Path) -> tuple[TaskResult, TaskResult]:
    return controls(load_harbor(task))


def test_the_solution_folder_is_at_slash_solution_beside_solve_sh(
    base_image: str, tmp_path: Path
) -> None:
    task = harbor(
        tmp_path,
        "solution-folder",
        solve='#!/bin/bash\nset -e\npython3 "$(dirname "$0")/solve.py" > /app/out.txt\n',
        extra_solution={"solve.py": "print(sum(range(10)))\n"},
        test=verdict('[ "$(cat /app/out.txt 2>/dev/null)" = 45 ]'),
        dockerfile="FROM python:3.11-slim\nWORKDIR /app\n",
    )
    assert_controls(task)


def test_a_reward_json_with_several_keys_keeps_every_key(base_image: str, tmp_path: Path) -> None:
    test = (
        "c=0; s=1\n"
        "[ -f /app/done ] && c=1\n"
        "[ -f /app/done ] && [ $(wc -c < /app/done) -gt 100 ] && s=0\n"
        'echo "{\\"correctness\\": $c, \\"style\\": $s}" > /logs/verifier/reward.json\n'
    )
    task = harbor(tmp_path, "multi-reward", test=test)
    oracle, noop = both(task)
    assert oracle.passed and oracle.rewards == {"correctness": 1.0, "style": 1.0}
    assert oracle.reward == 1.0
    # noop: one dimension of two; the reward is their mean, and it did not pass
    assert not noop.passed and noop.rewards == {"correctness": 0.0, "style": 1.0}
    assert noop.reward == 0.5 and noop.reason == "tests-failed"


def test_a_reward_key_in_reward_json_is_the_reward(base_image: str, tmp_path: Path) -> None:
    task = harbor(
        tmp_path,
        "reward-key",
        test='echo \'{"reward": 0.25, "tokens": 7}\' > /logs/verifier/reward.json\n',
    )
    oracle, _ = both(task)
    assert oracle.reward == 0.25 and oracle.rewards == {"reward": 0.25, "tokens": 7.0}


def test_an_unreadable_reward_is_the_tasks_fault(base_image: str, tmp_path: Path) -> None:
    task = harbor(tmp_path, "bad-reward", test=f"echo lots > {REWARD}\n")
    oracle, _ = both(task)
    assert oracle.reason == "invalid-reward" and "'lots'" in oracle.verifier_tail, oracle


def test_verifier_and_solution_env_tables_apply_with_host_variables(
    base_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RR_TEST_SECRET", "from-host")
    toml = (
        '[verifier.env]\nEXPECT = "${RR_TEST_SECRET}"\n'
        '[solution.env]\nANSWER = "${RR_TEST_SECRET}"\nUNSET = "${RR_NOT_SET_ANYWHERE:-dflt}"\n'
    )
    task = harbor(
        tmp_path,
        "env-tables",
        toml=toml,
        solve='mkdir -p /app && echo "$ANSWER-$UNSET" > /app/done\n',
        test=verdict('[ "$(cat /app/done 2>/dev/null)" = "$EXPECT-dflt" ]'),
    )
    assert_controls(task)
    monkeypatch.delenv("RR_TEST_SECRET")
    with pytest.raises(TaskError, match=r"\[verifier\.env\] EXPECT needs the host variable"):
        load_harbor(task)


def test_environment_limits_and_timeouts_are_read(tmp_path: Path) -> None:
    toml = (
        "[agent]\ntimeout_sec = 33.0\n[verifier]\ntimeout_sec = 44.0\n"
        "[environment]\ncpus = 2\nmemory_mb = 3072\nstorage_mb = 4096\nallow_internet = true\n"
    )
    task = load_harbor(harbor(tmp_path, "limits", toml=toml))
    assert (task.agent_timeout, task.verifier.timeout) == (33.0, 44.0)
    assert (task.resources.cpus, task.resources.memory, task.resources.disk) == (
        2.0,
        "3072m",
        "4096m",
    )
    assert task.network == "full"
    old_style = load_harbor(
        harbor(tmp_path, "old", toml='[environment]\nmemory = "2G"\nstorage = "10G"\n')
    )
    assert (old_style.resources.memory, old_style.resources.disk) == ("2g", "10g")


def test_from_with_platform_registry_prefix_and_digest_builds(
    base_image: str, tmp_path: Path
) -> None:
    task = harbor(
        tmp_path,
        "from-forms",
        solve="python -c 'print(6 * 7)' > /app/out.txt\n",  # `python`, as python images have
        test=verdict('[ "$(cat /app/out.txt 2>/dev/null)" = 42 ]'),
        dockerfile=(
            f"FROM --platform=linux/amd64 docker.io/library/python:3.11-slim@sha256:{'1a' * 32}\n"
            "WORKDIR /app\nRUN pip install --help > /dev/null\n"
        ),
    )
    assert_controls(task)


def test_a_docker_image_without_dockerfile_stands_in(base_image: str, tmp_path: Path) -> None:
    task = harbor(
        tmp_path,
        "docker-image",
        toml='[environment]\ndocker_image = "public.ecr.aws/docker/library/python:3.11"\n',
        solve="mkdir -p /app && python -c 'print(1)' > /app/done\n",
        test=verdict("[ -s /app/done ]"),
    )
    assert_controls(task)


def test_the_images_user_runs_the_solution_and_the_tests(base_image: str, tmp_path: Path) -> None:
    task = harbor(
        tmp_path,
        "dockerfile-user",
        solve="whoami > /home/app/who\n",
        test=verdict('[ "$(cat /home/app/who 2>/dev/null)" = app ] && [ "$(whoami)" = app ]'),
        dockerfile="FROM python:3.11-slim\nRUN useradd -m app\nUSER app\nWORKDIR /home/app\n",
    )
    assert_controls(task)


def test_tests_may_run_the_solution_as_nobody_and_apt_may_add_users(
    base_image: str, tmp_path: Path
) -> None:
    task = harbor(
        tmp_path,
        "users",
        solve="mkdir -p /app && printf 'print(7)\\n' > /app/s.py && chmod 644 /app/s.py\n",
        test=verdict(
            "[ \"$(su nobody -s /bin/sh -c 'python3 /app/s.py')\" = 7 ] && id redis >/dev/null"
        ),
        dockerfile=(
            "FROM python:3.11-slim\n"
            "RUN apt-get update && apt-get install -y --no-install-recommends redis-server\n"
        ),
    )
    assert_controls(task)


def test_rewards_are_in_the_results_file(base_image: str, tmp_path: Path) -> None:
    """Every key reaches results.jsonl, where the report's per-dimension means come from."""
    from rockroll.bench.report import summarize
    from rockroll.bench.runner import read_results, run_suite
    from rockroll.tasks.suites import load_suite

    harbor(tmp_path / "suite", "a", test='echo \'{"x": 1, "y": 0}\' > /logs/verifier/reward.json\n')
    harbor(tmp_path / "suite", "b", test='echo \'{"x": 0, "y": 0}\' > /logs/verifier/reward.json\n')
    run_suite(load_suite(str(tmp_path / "suite")), OracleAgent(), tmp_path / "out")
    rows = [
        json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    ]
    assert sorted((r["task"], r["rewards"]) for r in rows) == [
        ("a", {"x": 1.0, "y": 0.0}),
        ("b", {"x": 0.0, "y": 0.0}),
    ]
    assert summarize(read_results(tmp_path / "out"))["dimensions"] == {"x": 0.5, "y": 0.0}


def test_build_timeout_sec_bounds_the_build(base_image: str, tmp_path: Path) -> None:
    import time

    task = harbor(
        tmp_path,
        "slow-build",
        toml="[environment]\nbuild_timeout_sec = 3\n",
        dockerfile=f"FROM {base_image}\nRUN sleep 120\n",
    )
    started = time.monotonic()
    result = run_task(load_harbor(task), OracleAgent())
    assert result.reason == "build-failed" and "timed out after 3 s" in (result.error or "")
    assert time.monotonic() - started < 60
