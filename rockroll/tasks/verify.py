"""Run a task's verifier after the agent has finished and turn its verdict into a reward."""

from __future__ import annotations

import importlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from rockroll.errors import SandboxError
from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.offline import NetworkStep, make_offline_tree
from rockroll.tasks.prepare import SCRIPT_COMMAND, sandbox_probe
from rockroll.tasks.schema import Task
from rockroll.tasks.workspace import put_files, run_scripts

TESTS = "/tests"
_FAILED = re.compile(r"^(FAILED|ERROR)\b|\s(FAILED|ERROR)(\s|$)", re.MULTILINE)


class VerifyResult(BaseModel):
    """The verdict. `offline` lists the bootstrap steps that were rewritten to run offline."""

    reward: float
    passed: bool
    rewards: dict[str, float] = Field(
        default_factory=dict, description="every key of a reward.json, as written"
    )
    reason: str | None = Field(None, description="why it did not pass, when it did not")
    exit_code: int | None = None
    timed_out: bool = False
    duration: float = 0.0
    output_tail: str = ""
    offline: list[str] = Field(default_factory=list)
    network: list[str] = Field(
        default_factory=list, description="fetches the tests make that no rule could serve"
    )


def verify(task: Task, sb: Sandbox) -> VerifyResult:
    """Copy the tests in (only now, as the formats require), run them, read the reward.

    Nothing the agent left behind can touch the verdict: first every process of the sandbox is
    killed (a daemon that would rewrite the tests or the reward file once they appear, say; the
    command channel lives outside the sandbox, where no process of it can reach), then any
    reward file the agent wrote in advance is removed, and so is `/tests` where the tests go
    there (it is absent while the agent works, so whatever is in it the agent put there: a
    `conftest.py` that passes every test, say); only then are the tests copied in.
    """
    started = time.monotonic()
    v = task.verifier
    left = sb.kill_all()
    if left:
        raise SandboxError(
            f"{left} process(es) of the agent could not be killed before the tests ran "
            "(stuck in the kernel); the verdict would not be trustworthy"
        )
    for path in [*v.reward_files, *_test_roots(v.files)]:
        sb.remove(path)  # by the host: the agent may have replaced `rm`
    run_scripts(sb, v.before, task.id, "before", task.environment.workdir or sb.spec.workdir)
    put_files(sb, v.files)
    if folders := sorted({str(Path(p).parent) for p in v.reward_files}):
        # where the tests write their verdict, writable whoever the image's USER is (Harbor
        # mounts /logs/verifier for them)
        make = 'mkdir -p -- "$@" && chmod 777 -- "$@"'
        sb.exec(["sh", "-c", make, "sh", *folders], user="root")
    if v.kind == "python":
        module, _, name = (v.function or "").partition(":")
        reward, detail = getattr(importlib.import_module(module), name)(sb, v.args)
        return VerifyResult(
            reward=float(reward),
            passed=reward >= 1.0,
            reason=None if reward >= 1.0 else "wrong-answer",
            duration=time.monotonic() - started,
            output_tail=detail[-2000:],
        )
    command, offline, network = _offline_command(task, sb)
    res = sb.exec(
        ["bash", "-c", command],
        timeout=v.timeout,
        env=v.env,
        cwd=v.workdir,
    )
    tail = res.output[-4000:]
    result = VerifyResult(
        reward=0.0,
        passed=False,
        exit_code=res.exit_code,
        timed_out=res.timed_out,
        duration=time.monotonic() - started,
        output_tail=tail,
        offline=[str(r) for r in offline],
        network=[_fetch(n) for n in network],
    )
    if res.timed_out:
        result.reason = "verifier-timeout"
        return result
    try:
        found = _reward_file(sb, v.reward_files)
    except ValueError as exc:
        result.reason, result.output_tail = "invalid-reward", f"{exc}\n{tail}"[-4000:]
        return result
    if found is None:
        reward = 1.0 if _passed(v.parser, res.exit_code, res.stdout) else 0.0
    else:
        reward, result.rewards = found
    result.reward, result.passed = reward, reward >= 1.0
    if not result.passed:
        result.reason = "no-tests" if "no tests ran" in res.stdout else "tests-failed"
        if result.network:  # it fetched what an offline sandbox cannot: not the agent's fault
            result.reason = "needs-network"
            result.output_tail = f"needs the network: {'; '.join(result.network)}\n{tail}"
    return result


def _test_roots(files: dict[str, Path | str]) -> set[str]:
    """`/tests`, where the verifier's files go into it: the formats keep it for the tests."""
    return {TESTS for target in files if target == TESTS or target.startswith(TESTS + "/")}


def _offline_command(task: Task, sb: Sandbox) -> tuple[str, list, list[NetworkStep]]:
    """The verifier command, with its script (and the scripts it runs or sources) rewritten
    when the sandbox has no network; the rewrites, and the fetches no rule could remove.

    The command runs one script (`bash /tests/run-tests.sh`), possibly after set-up steps
    joined with `&&` (Harbor's `mkdir -p /logs/verifier && bash /tests/test.sh`)."""
    command = task.verifier.command or "true"
    found = SCRIPT_COMMAND.match(command)
    if task.network != "none" or found is None:
        return command, [], []
    script_path = found["path"]
    if not sb.exists(script_path):
        return command, [], []
    env = sb.spec.base_env() | sb.spec.env | task.verifier.env
    plan = make_offline_tree(script_path, _reader(sb), sandbox_probe(sb), env)
    for path, text in plan.scripts.items():
        sb.write_text(path + ".offline", text)
    return f"{found['head']}{found['shell']} {plan.entry}", plan.rewrites, plan.network


def _reader(sb: Sandbox) -> Callable[[str], str | None]:
    """Read a script of the sandbox, or None where there is no readable text file."""

    def read(path: str) -> str | None:
        try:
            return sb.read_text(path)
        except (OSError, SandboxError, UnicodeDecodeError):  # missing, a directory, binary
            return None

    return read


def _fetch(step: NetworkStep) -> str:
    return f"{step.url or step.command} ({step.path} line {step.line})"


def _reward_file(sb: Sandbox, paths: list[str]) -> tuple[float, dict[str, float]] | None:
    """The reward from the first reward file written, and every key of it, as Harbor reads
    them: reward.txt holds a number; reward.json a number or an object of named numbers. An
    object's `reward` key is the reward; one key alone is; several without `reward` are
    dimensions (Harbor's per-dimension metrics), and the reward is their mean, so that it is
    1 only when every dimension is. A file that says nothing readable is a ValueError."""
    for path in paths:
        if not sb.exists(path):
            continue
        text = sb.read_text(path).strip()
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError(f"{path} holds {text[:80]!r}, not a number or JSON") from None
        if _number(value):
            return float(value), {}
        if not isinstance(value, dict) or not value:
            raise ValueError(f"{path} holds {text[:80]!r}: expected a number or an object")
        bad = [k for k, v in value.items() if not _number(v)]
        if bad:
            raise ValueError(f"{path}: the value of {bad[0]!r} is not a number")
        rewards = {str(k): float(v) for k, v in value.items()}
        if "reward" in rewards:
            return rewards["reward"], rewards
        return sum(rewards.values()) / len(rewards), rewards
    return None


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _passed(parser: str, exit_code: int, stdout: str) -> bool:
    if exit_code != 0:
        return False
    if parser == "pytest":
        return not _FAILED.search(stdout) and "no tests ran" not in stdout
    return True
