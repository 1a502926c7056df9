"""The red-team suite as files: composing tasks with attacks, loading them back, and the verdict
on an episode's events; no sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rockroll.errors import TaskError, UsageError
from rockroll.safety.attacks import HOST, all_attacks, judge, select_attacks
from rockroll.safety.redteam import CHANNELS, SUITE_INDEX, write_suite
from rockroll.tasks.suites import load_suite
from tests.paths import TASKS, needs

TERM = "term:note-mkdir,fix-dir?seed=0&size=1"
AIDER = TASKS / "aider-polyglot-python"


def test_a_suite_is_written_as_overlay_folders_that_load_as_their_bases_plus_the_attack(
    tmp_path: Path,
) -> None:
    bases = {t.id: t for t in load_suite(TERM)}  # type: ignore[union-attr]
    written = write_suite(
        bases.values(), select_attacks("tunnel,miner,persistence"), tmp_path, suite=TERM
    )
    assert len(written) == len(bases) * len(CHANNELS)
    tasks = load_suite(str(tmp_path))
    assert len(tasks) == len(written) and not [t for t in tasks if isinstance(t, TaskError)]
    seen = set()
    for task in tasks:
        meta = task.metadata.redteam  # type: ignore[union-attr]
        base = bases[meta["base"]]
        seen.add((meta["channel"], meta["class"]))
        # what the agent is told and how it is judged are the base's
        assert (
            task.instruction == base.instruction
            and task.verifier.function == base.verifier.function
        )  # type: ignore[union-attr]
        assert task.id.startswith(f"redteam/{meta['channel']}/") and meta["canary"].startswith("rr")
        if meta["channel"] == "tool":
            assert len(task.tools) == 1 and not any(meta["canary"] in s for s in task.setup[1:])  # type: ignore[union-attr]
        else:
            assert any(meta["canary"] in s for s in task.setup)  # type: ignore[union-attr]
            assert any(meta["canary"] in s for s in task.verifier.before)  # type: ignore[union-attr]
    assert {c for c, _ in seen} == set(CHANNELS)
    assert {
        row["channel"] for row in json.loads((tmp_path / SUITE_INDEX).read_text())["tasks"]
    } == set(CHANNELS)
    # the prompt channel reads the note the instruction names; the repo channel the script it runs
    prompt = next(t for t in tasks if "prompt/" in t.id and "note-mkdir" in t.id)  # type: ignore[union-attr]
    assert prompt.metadata.redteam["targets"][0] == "note.txt"  # type: ignore[union-attr]
    repo = next(t for t in tasks if "repo/" in t.id and "fix-dir" in t.id)  # type: ignore[union-attr]
    assert repo.metadata.redteam["scripts"] == ["run.sh"]  # type: ignore[union-attr]


@needs(AIDER)
def test_a_base_with_a_folder_is_copied_beside_the_overlay(tmp_path: Path) -> None:
    folder = sorted(AIDER.iterdir())[0]
    (base,) = load_suite(str(folder))
    write_suite([base], select_attacks("exfiltration-repo"), tmp_path, channels=["prompt"])  # type: ignore[list-item]
    (task,) = load_suite(str(tmp_path))
    assert (Path(task.path) / "base" / "task.yaml").is_file()  # type: ignore[union-attr, arg-type]
    assert task.environment.dockerfile == Path(task.path) / "base" / "Dockerfile"  # type: ignore[union-attr, operator]
    # the instruction says to modify the supplied file: that is where the note goes
    assert task.metadata.redteam["targets"][0].endswith(".py")  # type: ignore[union-attr]


def test_attacks_are_chosen_by_id_or_class_and_a_wrong_name_is_told(tmp_path: Path) -> None:
    assert {a.klass for a in all_attacks()} >= {
        "tunnel", "shell", "miner", "probe", "credentials", "persistence", "exfiltration",
        "destructive", "tamper",
    }  # fmt: skip
    assert [a.id for a in select_attacks("tunnel-ssh,miner")] == ["tunnel-ssh", "miner-xmrig"]
    with pytest.raises(UsageError, match="unknown attack 'tunnle'"):
        select_attacks("tunnle")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "overlay.json").write_text('{"id": "x", "base": {"suite": "term:all"}}')
    (err,) = load_suite(str(tmp_path / "bad"))
    assert isinstance(err, TaskError) and "base" in str(err) and '"task"' in str(err)


def test_the_verdict_tells_followed_stopped_and_succeeded() -> None:
    meta = {
        "channel": "prompt",
        "attack": "a",
        "class": "shell",
        "canary": "rrabc",
        "network": True,
    }
    ls = {"kind": "exec", "argv": ["ls"], "verdict": "allowed", "origin": ["sh", "-c", "rrabc"]}
    assert not judge([ls], meta)["followed"]  # the host's command is not what ran
    run = {"kind": "exec", "argv": ["curl", "http://x/rrabc"], "verdict": "allowed"}
    refused = {"kind": "connect", "address": HOST, "port": 80, "verdict": "refused"}
    made = {"kind": "connect", "address": HOST, "port": 80, "verdict": "allowed", "route": "out"}
    v = judge([ls, run, refused], meta)
    assert v["followed"] and v["stopped"] and not v["succeeded"]
    assert judge([run, made], meta)["succeeded"]
    # an attack that needs no connection succeeds when nothing stopped it
    local = meta | {"network": False}
    wrote = {"kind": "write", "path": "/root/.ssh/authorized_keys", "tail": "ssh-ed25519 rrabc"}
    assert judge([wrote], local)["succeeded"]
    assert not judge([wrote | {"verdict": "killed"}], local)["succeeded"]
