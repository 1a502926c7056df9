"""Build and review a drafted workflow: the Builder's self-validation loop.

    environment/Dockerfile      the base (python:3.11-slim with pytest, or the repository's
                                shared image), then `COPY setup.sh` and `RUN` it
    environment/setup.sh        the model's setup script
    environment/repo/           the repository (repository briefs only)
    solution/solve.sh           the model's solution
    tests/test_outputs.py       the model's tests
    tests/test.sh               runs them under pytest with our outcomes plugin; the reward is
                                1 only when every one of them passed (checked by `python -S -I`)

The task goes through the same gates as every other (`rockroll.data.review`), after a leak check
of its own: no line of the solution may be in the instruction. When the build fails or the
oracle does not pass, the log goes back to the model, which drafts the task again, up to
`RETRIES` times; the verdicts of each try are kept.
"""

from __future__ import annotations

import ast
import json
import shutil
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from rockroll.data.project import APP, PYTHON_IMAGE
from rockroll.data.review import Verdict, review
from rockroll.data.taskdir import link_file
from rockroll.data.testrun import PLUGIN
from rockroll.data.workflows import Brief, TerminalWorkflows, WorkflowSpec, test_names
from rockroll.models.messages import Message
from rockroll.tasks.harbor import load_harbor

RETRIES = 2  # drafts after the first, each told what went wrong with the one before
MIN_LEAK = 12  # solution lines shorter than this (`cd /app`, `set -e`) are not leaks
SEED_BASE = (
    f"FROM {PYTHON_IMAGE}\n"
    "ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1\n"
    "RUN python -m pip install -q --root-user-action=ignore 'pytest>=7'\n"
    f"WORKDIR {APP}\n"
)
RETRY_ON = {
    "build-failed": "the image does not build",
    "oracle-fails": "the solution fails the tests",
}
TEST_TIMEOUT = 600


@dataclass(frozen=True)
class Base:
    """What a workflow task starts from: a Dockerfile's opening, and the shared build context
    whose `repo/` the task links (None: the plain Python image)."""

    dockerfile: str
    context: Path | None = None


def leaks(spec: WorkflowSpec) -> Verdict:
    text = " ".join(spec.instruction.split())
    for line in spec.solution.splitlines():
        norm = " ".join(line.split())
        if len(norm) >= MIN_LEAK and not norm.startswith("#") and norm in text:
            return Verdict("leak", False, f"the instruction contains the solution: {norm[:120]!r}")
    return Verdict("leak", True)


def make_workflow(
    strategy: TerminalWorkflows,
    brief: Brief,
    base: Base,
    work: Path,
    record: dict,
    reruns: int,
    budget: float,
    ask: AbstractContextManager,
) -> bool:
    """Draft, build and review the brief's task in `work` until it is accepted or the tries
    are spent; the record gets the verdicts and the reason. `ask` serialises the model's use
    (a lock). True when the task in `work` was accepted."""
    history: list[Message] = []
    tries: list[dict] = []
    for attempt in range(RETRIES + 1):
        with ask:
            spec, why = strategy.draft(brief, history)
        if spec is None:
            record["reason"], record["error"] = "model-reply", why
            tries.append({"reason": "model-reply", "detail": why})
            if attempt < RETRIES:
                history.append(_feedback(f"the reply is not a task ({why})", ""))
                continue
            break
        record["stage"], record["change"] = "drafts", f"terminal workflow: {spec.title}"
        verdict = leaks(spec)
        record["gates"]["leak"] = verdict.record()
        if not verdict.ok:
            record["reason"] = "leak"
            break
        write_workflow(work, spec, base, brief, record["source"])
        record["stage"] = "built"
        verdicts, reason = review(load_harbor(work), reruns, budget)
        record["gates"] |= {v.gate: v.record() for v in verdicts}
        if not any(v.gate == "build" and not v.ok for v in verdicts):
            record["stage"] = "reviewed"
        record["reason"] = reason
        failed = next((v for v in verdicts if not v.ok), None)
        tries.append({"reason": reason, "detail": failed.detail[-500:] if failed else ""})
        if reason is None:
            break
        if reason not in RETRY_ON or attempt == RETRIES or failed is None:
            break
        history.append(_feedback(RETRY_ON[reason], failed.detail[-3000:]))
    record["tries"] = tries
    return record["reason"] is None


def _feedback(what: str, log: str) -> Message:
    tail = f"\n\nThe log:\n\n```\n{log}\n```" if log else ""
    return Message(
        role="user",
        content=f"The task you drafted does not pass its self-check: {what}.{tail}\n\n"
        "Reply with the whole corrected task, as one JSON object in a ```json block.",
    )


def write_workflow(folder: Path, spec: WorkflowSpec, base: Base, brief: Brief, source: str) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    env = folder / "environment"
    env.mkdir(parents=True)
    if base.context is not None:
        shutil.copytree(base.context / "repo", env / "repo", symlinks=True, copy_function=link_file)
    (env / "setup.sh").write_text(spec.setup or "true\n")
    (env / "Dockerfile").write_text(
        base.dockerfile
        + f"COPY setup.sh /tmp/rockroll-setup.sh\nRUN cd {APP} && bash /tmp/rockroll-setup.sh "
        "&& rm -f /tmp/rockroll-setup.sh\n"
    )
    (folder / "instruction.md").write_text(spec.instruction.rstrip() + "\n")
    (folder / "task.toml").write_text(_toml(spec, brief, source))
    solution = folder / "solution"
    solution.mkdir()
    (solution / "solve.sh").write_text(f"#!/bin/bash\ncd {APP}\n{spec.solution.rstrip()}\n")
    (solution / "solve.sh").chmod(0o755)
    tests = folder / "tests"
    (tests / "plugin").mkdir(parents=True)
    shutil.copy(PLUGIN, tests / "plugin" / PLUGIN.name)
    (tests / "test_outputs.py").write_text(spec.tests)
    ids = [f"test_outputs.py::{n}" for n in test_names(ast.parse(spec.tests))]
    (tests / "expected.json").write_text(json.dumps({"tests": ids}, indent=1) + "\n")
    (tests / "test.sh").write_text(TEST_SH)
    (tests / "test.sh").chmod(0o755)
    return folder


TEST_SH = f"""#!/bin/bash
# Verifies the task: its tests, run by pytest with no plugin or configuration but ours; the
# reward is 1 only when every test in expected.json passed.
mkdir -p /logs/verifier
echo 0 > /logs/verifier/reward.txt
cd {APP} 2>/dev/null || cd /
export PYTHONPATH=/tests/plugin${{PYTHONPATH:+:$PYTHONPATH}} PYTHONDONTWRITEBYTECODE=1
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
export ROCKROLL_SELECT=/tests/expected.json ROCKROLL_OUTCOMES=/tmp/rockroll-outcomes.json
rm -f "$ROCKROLL_OUTCOMES"
timeout {TEST_TIMEOUT} python -m pytest -p rockroll_outcomes -p no:cacheprovider -q --tb=short \\
  -c /dev/null --rootdir /tests --confcutdir /tests /tests/test_outputs.py
python -S -I /tests/plugin/rockroll_outcomes.py /tests/expected.json "$ROCKROLL_OUTCOMES" \\
  /logs/verifier/reward.txt
"""


def _toml(spec: WorkflowSpec, brief: Brief, source: str) -> str:
    def q(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)

    return (
        'version = "1.0"\n\n[metadata]\n'
        'category = "terminal-workflows"\ndifficulty = "unknown"\n'
        f'tags = ["synthesized", "terminal-workflows", {q(brief.kind)}]\n'
        f"source = {q(source)}\nbrief = {q(brief.name)}\nchange = {q(spec.title)}\n"
        f"expert_commands = [{q(spec.solution.strip())}]\n\n"
        "[agent]\ntimeout_sec = 900\n\n"
        f"[verifier]\ntimeout_sec = {TEST_TIMEOUT + 60}\n\n"
        "[environment]\ncpus = 1\nmemory_mb = 2048\nstorage_mb = 4096\nbuild_timeout_sec = 1800\n"
    )
