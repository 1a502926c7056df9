"""Terminal workflows from a seeds folder, drafted by a model, built and reviewed in real
sandboxes: a task whose image does not build goes back to the model with the log and comes back
fixed; a task whose instruction gives the solution away is rejected; what is accepted passes the
oracle and fails the no-op through the bench; seeds without a model are an error in the funnel."""

from __future__ import annotations

import json
from pathlib import Path

from rockroll.bench.agents import NoopAgent, OracleAgent
from rockroll.bench.runner import run_suite
from rockroll.data.pipeline import Synth, SynthOptions
from rockroll.models.scripted import ScriptedModel
from rockroll.tasks.suites import load_suite

TESTS = """from pathlib import Path


def test_the_count_is_written():
    assert Path("/app/count.txt").read_text().strip() == "3"


def test_the_log_is_left_as_it_was():
    assert Path("/app/data/app.log").read_text() == "start\\nwork\\nstop\\n"
"""


def _task(setup: str, instruction: str, solution: str) -> str:
    spec = {
        "title": "Count the log's lines",
        "instruction": instruction,
        "setup": setup,
        "solution": solution,
        "tests": TESTS,
    }
    return f"Here is the task.\n\n```json\n{json.dumps(spec, indent=1)}\n```\n"


COUNT = (
    "The service wrote its log to /app/data/app.log. Write the number of lines in it, and "
    "nothing else, to /app/count.txt. Leave the log as it is."
)
SETUP = "mkdir -p data && printf 'start\\nwork\\nstop\\n' > data/app.log\n"


def test_seeds_become_checked_workflows_and_a_failed_build_is_fixed_from_its_log(
    tmp_path: Path, base_image: str
) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "a-count.md").write_text("Count the lines of a log file into a file.\n")
    (seeds / "b-leaky.md").write_text("Deduplicate a list of names.\n")
    (seeds / "c-nothing.md").write_text("Anything.\n")
    leaky = _task(
        SETUP,
        "Count the lines: run `wc -l < data/app.log > count.txt` in /app.",
        "wc -l < data/app.log > count.txt",
    )
    replies = [
        "OK",
        _task(SETUP + "exit 3\n", COUNT, "wc -l < data/app.log > count.txt"),  # does not build
        _task(SETUP, COUNT, "wc -l < data/app.log > count.txt"),
        leaky,
        "I would rather not.",  # three times: no task from c-nothing.md
        "No.",
        "No.",
    ]
    script = tmp_path / "model.json"
    script.write_text(json.dumps(replies))
    options = SynthOptions(
        strategies=("terminal-workflows",), jobs=1, reruns=2, model=f"scripted:{script}"
    )
    records: list[dict] = []
    synth = Synth(tmp_path / "ds", options, on_candidate=records.append)
    summary = synth.run([str(seeds)])
    by_seed = {r["path"]: r for r in records}
    count = by_seed["a-count.md"]
    assert count["accepted"], count
    assert [t["reason"] for t in count["tries"]] == ["build-failed", None]
    assert isinstance(synth.writer, ScriptedModel)
    told = synth.writer.seen[2][-1].content or ""  # the second draft was asked with the log
    assert "the image does not build" in told and "exit" in told
    assert by_seed["b-leaky.md"]["reason"] == "leak"
    assert (
        "the instruction contains the solution" in by_seed["b-leaky.md"]["gates"]["leak"]["detail"]
    )
    assert by_seed["c-nothing.md"]["reason"] == "model-reply"
    assert len(by_seed["c-nothing.md"]["tries"]) == 3
    assert summary["rejected"] == {"leak": 1, "model-reply": 1}
    (task,) = summary["accepted"]
    assert (tmp_path / "ds" / task / "instruction.md").read_text() == COUNT + "\n"
    items = load_suite(str(tmp_path / "ds" / "tasks"))
    oracle = run_suite(items, OracleAgent(), tmp_path / "oracle", jobs=1)
    noop = run_suite(items, NoopAgent(), tmp_path / "noop", jobs=1)
    assert [r.passed for r in oracle] == [True] and [r.passed for r in noop] == [False]
    gates = count["gates"]
    assert gates["hack-probe"]["ok"] and gates["controls"]["ok"], gates


def test_seeds_without_a_model_are_an_error_in_the_funnel(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "one.md").write_text("Do something in a terminal.\n")
    summary = Synth(tmp_path / "ds", SynthOptions()).run([str(seeds)])
    (source,) = summary["sources"]
    assert source["status"] == "error"
    assert "add --strategy terminal-workflows and --model SPEC" in source["error"]
