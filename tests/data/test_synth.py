"""The pipeline end to end in real sandboxes, on a repository the test writes: accepted tasks
pass the oracle and fail the no-op through the bench, a planted flaky test, a planted leaky
instruction and a planted weak test are rejected with their reasons, bad sources are errors in
the funnel while the run goes on, and a second run resumes instead of redoing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from rockroll.bench.agents import NoopAgent, OracleAgent
from rockroll.bench.runner import run_suite
from rockroll.data.explore import STRATEGIES, register_strategy
from rockroll.data.pipeline import Synth, SynthOptions
from rockroll.data.project import Project
from rockroll.data.strategies import BugInjection, Draft
from rockroll.data.trajectories import make_trajectories, model_slug
from rockroll.errors import UsageError
from rockroll.tasks.suites import load_suite
from rockroll.tasks.verify import verify
from rockroll.tasks.workspace import task_image, task_sandbox
from tests.data.pypi_index import Index
from tests.data.repos import CALC, TESTS, make_repo


class LeakyBugs(BugInjection):
    """Bug injection whose instruction gives the fix away: the review must refuse it."""

    name = "leaky-bugs"

    def instruction(self, draft: Draft, project: Project, failing: dict[str, str]) -> str:
        old = set(draft.changed.splitlines())
        fix = [line.strip() for line in draft.original.splitlines() if line not in old]
        return super().instruction(draft, project, failing) + f"\nHint: it should say {fix}\n"


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("synth")
    before = {  # mean was wrong, and untested, until the commit that fixed it
        "calc.py": CALC.replace("return total / len(values)", "return total / (len(values) + 1)"),
        "tests/test_calc.py": TESTS.replace("def test_mean():", "def _no_test_mean():"),
    }
    fix = "Fix the mean of a list\n\nmean() divided by one more than the number of values."
    calc = make_repo(root / "calc", before, (fix, {"calc.py": CALC, "tests/test_calc.py": TESTS}))
    untested = make_repo(root / "untested", {"lib.py": "def f():\n    return 1\n"})
    broken = make_repo(
        root / "broken",
        {
            "broken.py": "def g():\n    return 2\n",
            "test_broken.py": "from broken import g\n\n\ndef test_g():\n    assert g() == 2\n",
            "pyproject.toml": '[project]\nname = "broken"\nversion = "1"\n'
            'dependencies = ["nothere @ file:///nonexistent/nothere.tar.gz"]\n',
        },
    )
    register_strategy(LeakyBugs())
    index = Index()
    records: list[dict] = []
    options = SynthOptions(
        strategies=("bug-injection", "feature-removal", "commit-replay", "leaky-bugs"),
        jobs=2,
        baseline_runs=8,
    )
    sources = [str(untested), "pypi:nosuchpackage", str(broken), str(calc)]
    mp = pytest.MonkeyPatch()
    mp.setenv("ROCKROLL_PYPI_URL", index.url)
    try:
        summary = Synth(root / "ds", options, on_candidate=records.append).run(sources)
        yield {"root": root, "summary": summary, "records": records, "calc": calc}
    finally:
        mp.undo()
        index.server.shutdown()
        STRATEGIES.pop("leaky-bugs", None)


def test_accepted_tasks_pass_the_oracle_and_fail_the_noop_in_the_bench(synthesized: dict) -> None:
    tasks = synthesized["root"] / "ds" / "tasks"
    accepted = [r for r in synthesized["records"] if r["accepted"]]
    assert len(accepted) >= 4, Counter(r["reason"] for r in synthesized["records"])
    assert sorted(p.name for p in tasks.iterdir()) == sorted(
        r["task"].split("/")[1] for r in accepted
    )
    assert {r["strategy"] for r in accepted} == {
        "bug-injection",
        "feature-removal",
        "commit-replay",
    }
    items = load_suite(str(tasks))
    oracle = run_suite(items, OracleAgent(), synthesized["root"] / "oracle", jobs=2)
    noop = run_suite(items, NoopAgent(), synthesized["root"] / "noop", jobs=2)
    assert len(oracle) == len(accepted) and all(r.passed for r in oracle), [
        (r.task, r.reason, r.verifier_tail[-300:]) for r in oracle if not r.passed
    ]
    assert not any(r.passed for r in noop) and {r.reason for r in noop} == {"tests-failed"}
    for r in accepted:  # the gates' verdicts are in the manifest, every one passed
        assert set(r["gates"]) == {"leak", "build", "controls", "hack-probe", "runtime"}
        assert all(g["ok"] for g in r["gates"].values())
        assert r["fail_to_pass"] and r["pass_to_pass"]


def test_an_accepted_task_holds_no_trace_of_the_fix_for_the_agent(synthesized: dict) -> None:
    for task in (synthesized["root"] / "ds" / "tasks").iterdir():
        change = task / "environment" / "change"
        changed = next(change.rglob("*.py"))
        original = (task / "solution" / "original" / changed.relative_to(change)).read_text()
        assert changed.read_text() != original
        dockerfile = (task / "environment" / "Dockerfile").read_text()
        assert dockerfile.endswith("COPY change/ /app/\n") and ".git" not in dockerfile
        assert not (task / "environment" / "repo" / ".git").exists()  # no history to diff against
        expected = json.loads((task / "tests" / "expected.json").read_text())
        assert set(expected["fail_to_pass"]) <= set(expected["tests"])


def test_planted_flaky_tests_leaky_instructions_and_weak_tests_are_rejected(
    synthesized: dict,
) -> None:
    records = synthesized["records"]
    reasons = Counter(r["reason"] for r in records)
    wobbles = [r for r in records if r["function"].startswith("wobble")]
    assert wobbles and all(not r["accepted"] for r in wobbles)
    assert {r["reason"] for r in wobbles} <= {"flaky-tests", "flaky", "no-usable-tests"}
    assert reasons["flaky-tests"] + reasons["flaky"] >= 1
    leaky = [r for r in records if r["strategy"] == "leaky-bugs" and r["stage"] != "candidates"]
    assert leaky and {r["reason"] for r in leaky} == {"leak"}
    assert all("the instruction contains the fix" in r["gates"]["leak"]["detail"] for r in leaky)
    shout = [r for r in records if r["function"] == "shout" and r.get("stage") == "reviewed"]
    assert shout and {r["reason"] for r in shout} == {"hackable"}
    assert "hard-code" in shout[0]["gates"]["hack-probe"]["detail"]
    summary = synthesized["summary"]
    assert summary["rejected"]["leak"] == len(leaky)


def test_bad_sources_are_errors_in_the_funnel_and_the_run_goes_on(synthesized: dict) -> None:
    sources = {s["source"].rsplit("/", 1)[-1]: s for s in synthesized["summary"]["sources"]}
    assert sources["calc"]["status"] == "ok"
    assert sources["untested"]["status"] == "error"
    assert "no tests" in sources["untested"]["error"]
    assert sources["pypi:nosuchpackage"]["status"] == "error"
    assert "not on the index" in sources["pypi:nosuchpackage"]["error"]
    assert sources["broken"]["status"] == "error"
    assert "does not build" in sources["broken"]["error"]


def test_a_second_run_resumes_and_a_dataset_is_not_overwritten(synthesized: dict) -> None:
    root, calc = synthesized["root"], synthesized["calc"]
    with pytest.raises(UsageError, match="--resume"):
        Synth(root / "ds", SynthOptions())
    before = (root / "ds" / "manifest.jsonl").read_text().splitlines()
    again: list[dict] = []
    options = SynthOptions(
        strategies=("bug-injection", "feature-removal"), resume=True, baseline_runs=8
    )
    Synth(root / "ds", options, on_candidate=again.append).run([str(calc)])
    assert again == []  # every candidate was decided: nothing runs twice
    after = (root / "ds" / "manifest.jsonl").read_text().splitlines()
    assert after[: len(before)] == before and len(after) == len(before) + 1  # a source line


def test_expert_commands_make_the_reference_change_as_an_agent_would(synthesized: dict) -> None:
    for task in load_suite(f"data:{synthesized['root'] / 'ds'}"):
        assert not isinstance(task, Exception)
        commands = task.metadata.expert_commands  # type: ignore[attr-defined]
        assert commands[0].startswith("python -m pytest") and "/solution" not in " ".join(commands)
        with task_sandbox(task, task_image(task)) as sb:
            for command in commands:
                sb.exec(["bash", "-c", command], cwd="/app")
            assert verify(task, sb).passed, (task.id, commands[1])


def test_the_loop_closes_training_on_the_dataset_with_sft_and_resampling(
    synthesized: dict, tmp_path: Path
) -> None:
    """SFT on the dataset's verified trajectories, then IPA with resampling anchored on the
    tasks' expert turns, with the tiny model: the trainer's own reading of `data:DATASET`."""
    dataset = synthesized["root"] / "ds"
    tasks = len(list((dataset / "tasks").iterdir()))
    make_trajectories(dataset, "oracle", jobs=2)  # resumes when an earlier test made them
    config = {
        "model": "local:tiny-random",
        "tasks": f"data:{dataset}",
        "steps": 1,
        "lr": 1e-3,
        "sft": {"steps": 1, "batch_size": 2, "data": str(dataset)},
        "resample": {"enabled": True, "sources": ["oracle"], "init": "replay"},
        "rollout": {"group_size": 2, "tasks_per_step": 1, "max_turns": 2,
                    "max_tokens_per_turn": 8, "workers": 1},
        "tensorboard": False,
        "out": str(tmp_path / "run"),
    }  # fmt: skip
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "rockroll", "train", str(tmp_path / "train.yaml")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"SFT: {tasks}/{tasks} expert episodes verified" in done.stdout + done.stderr
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("sft_loss" in r for r in rows)
    step = next(r for r in rows if r.get("step") == 1 and "resampled_episodes" in r)
    assert step["resampled_episodes"] >= 0  # the resampler took part, anchored on the experts


def test_trajectories_keep_the_verified_ones_and_label_each_tasks_difficulty(
    synthesized: dict, tmp_path: Path
) -> None:
    dataset = synthesized["root"] / "ds"
    tasks = sorted(p.name for p in (dataset / "tasks").iterdir())
    oracle = make_trajectories(dataset, "oracle", jobs=2)  # the reference change as tool calls
    assert sorted(oracle) == tasks and all(v["passes"] == 1 for v in oracle.values())
    kept = sorted(p.stem for p in (dataset / "trajectories" / "oracle" / "0").glob("*.json"))
    assert kept == tasks
    steps = json.loads((dataset / "trajectories" / "oracle" / "0" / f"{tasks[0]}.json").read_text())
    assert steps["steps"][-1]["source"] and "schema_version" in steps  # ATIF
    quitter = tmp_path / "quit.json"
    quitter.write_text(json.dumps(["```bash\nsubmit\n```"]))
    labels = make_trajectories(dataset, f"scripted:{quitter}", attempts=2, jobs=2)
    assert {v["difficulty"] for v in labels.values()} == {"hard"}
    assert not list((dataset / "trajectories" / model_slug(f"scripted:{quitter}")).rglob("*.json"))
    assert len(load_suite(f"data:{dataset}?difficulty=hard")) == len(tasks)
    with pytest.raises(UsageError, match="names no tasks"):
        load_suite(f"data:{dataset}?moderate")
    lines = [json.loads(x) for x in (dataset / "manifest.jsonl").read_text().splitlines()]
    labelled = {(r["task"], r["model"]) for r in lines if r["kind"] == "difficulty"}
    assert len(labelled) == 2 * len(tasks)


def test_a_configured_model_writes_bugs_and_instructions_and_one_that_is_down_fails_its_source(
    synthesized: dict, tmp_path: Path
) -> None:
    calc = str(synthesized["calc"])
    text = (
        "# Something is broken\n\n"
        "The tests in tests/test_calc.py fail now; find out why and make them pass again."
    )
    bug = (  # clamp, the first covered function, with a bug and a comment that gives it away
        "Here it is:\n\n```python\ndef clamp(x, lo, hi):\n"
        '    """x, limited to the range from lo to hi."""\n'
        "    if x < lo:\n        return lo\n"
        "    if x > hi:  # BUG: the low end instead of the high one\n        return lo\n"
        "    return x\n```\n"
    )
    flow = {  # a terminal workflow on the repository, drafted from its first brief (build)
        "title": "Record a clamped value",
        "instruction": "Use the project's `calc.clamp` to limit 15 to the range 0 to 10, and "
        "write the result, alone on its line, to /app/clamped.txt.",
        "setup": "",
        "solution": "python -c 'import calc; print(calc.clamp(15, 0, 10))' > clamped.txt",
        "tests": "import calc\nfrom pathlib import Path\n\n\ndef test_clamped():\n"
        "    assert Path('/app/clamped.txt').read_text() == f'{calc.clamp(15, 0, 10)}\\n'\n",
    }
    writer = tmp_path / "writer.json"
    reply = f"```json\n{json.dumps(flow)}\n```"
    writer.write_text(json.dumps(["OK", bug, text, "No bug from me.", reply]))
    options = SynthOptions(
        strategies=("model-bugs", "terminal-workflows"),
        limit=2,
        jobs=1,
        reruns=2,
        model=f"scripted:{writer}",
        baseline_runs=8,
    )
    records: list[dict] = []
    summary = Synth(tmp_path / "written", options, on_candidate=records.append).run([calc])
    assert [r["reason"] for r in records] == [None, "model-reply", None], records
    assert records[2]["path"] == "build" and records[2]["accepted"]
    task = records[0]["task"]
    assert sorted(summary["accepted"]) == sorted([task, records[2]["task"]])
    assert records[0]["change"].startswith("model-written bug in clamp (calc.py:")
    assert records[0]["fail_to_pass"] == ["tests/test_calc.py::test_clamp_ends"]
    assert (tmp_path / "written" / task / "instruction.md").read_text() == text + "\n"
    changed = (tmp_path / "written" / task / "environment" / "change" / "calc.py").read_text()
    assert "    if x > hi:\n        return lo\n" in changed and "BUG" not in changed
    assert changed.replace("return lo\n    return x", "return hi\n    return x") == CALC
    with pytest.raises(UsageError, match="model-bugs drafts with a model: add --model"):
        Synth(tmp_path / "nomodel", SynthOptions(strategies=("model-bugs",)))
    down = SynthOptions(model="openai:teacher@http://127.0.0.1:9/v1", baseline_runs=8)
    summary = Synth(tmp_path / "down", down).run([calc])
    assert [s["status"] for s in summary["sources"]] == ["error"]
    assert "the model does not answer" in summary["sources"][0]["error"]


def test_a_commit_that_fixed_code_and_its_tests_is_replayed_as_a_task(synthesized: dict) -> None:
    (record,) = [r for r in synthesized["records"] if r["strategy"] == "commit-replay"]
    assert record["accepted"], record
    assert record["fail_to_pass"] == ["tests/test_calc.py::test_mean"]
    task = synthesized["root"] / "ds" / record["task"]
    instruction = (task / "instruction.md").read_text()
    assert instruction.startswith("# Fix the mean of a list\n")
    assert "divided by one more" in instruction and "len(values)" not in instruction
    assert "(len(values) + 1)" in (task / "environment" / "change" / "calc.py").read_text()
