"""One small contract of the `Sandbox` interface, held by the local sandbox and by the test
double `DirSandbox` alike, so that code tested on the double (agent loops, without root) runs
the same on a real sandbox. Paths that commands see are relative to the working directory:
the double maps only the paths of file calls and working directories."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rockroll import InvalidArgument, Sandbox, SandboxClosed
from rockroll.agent.loop import AgentLoop
from rockroll.models import ScriptedModel
from rockroll.models.messages import Message, ToolCall
from tests.doubles import DirSandbox

WORKDIR = "/work"


@pytest.fixture(params=["local", "dir"])
def box(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    if request.param == "local":
        image = request.getfixturevalue("base_image")
        made: Sandbox = Sandbox.create(image, memory="512m", pids=256, workdir=WORKDIR)
    else:
        made = DirSandbox(workdir=WORKDIR)
    with made as sb:
        yield sb


def test_exec_output_exit_code_env_stdin(box: Sandbox) -> None:
    assert isinstance(box, Sandbox) and box.spec.workdir == WORKDIR
    res = box.exec("echo out; echo err >&2; exit 3")
    assert (res.exit_code, res.stdout, res.stderr, res.ok) == (3, "out\n", "err\n", False)
    res = box.exec(["sh", "-c", 'echo "$X"; cat'], env={"X": "y"}, stdin="in")
    assert (res.exit_code, res.stdout) == (0, "y\nin")
    box.exec("mkdir -p sub")
    assert box.exec("basename $(pwd)", cwd=f"{WORKDIR}/sub").stdout == "sub\n"
    seen: list[tuple[str, bytes]] = []
    box.exec("echo streamed", on_output=lambda stream, chunk: seen.append((stream, chunk)))
    assert seen == [("stdout", b"streamed\n")]
    assert list(box.stream("echo a")) == [("stdout", "a\n")]
    assert [e["command"] for e in box.audit_log()][:2] == [
        "echo out; echo err >&2; exit 3",
        'sh -c echo "$X"; cat',
    ]


def test_timeout_and_bad_arguments(box: Sandbox) -> None:
    res = box.exec("sleep 30", timeout=1)
    assert res.timed_out and not res.ok and res.duration < 15
    with pytest.raises(InvalidArgument, match="cmd must be a string"):
        box.exec(123)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="timeout"):
        box.exec("true", timeout=-1)
    with pytest.raises(InvalidArgument, match="escapes the sandbox"):
        box.read_text("../../../etc/passwd")


def test_file_round_trip(box: Sandbox, tmp_path: Path) -> None:
    """What file calls write, commands read, and the other way round."""
    data = bytes(range(256)) * 10
    box.write_bytes(f"{WORKDIR}/data/bin.dat", data)
    assert box.exec("sha256sum data/bin.dat").stdout.split()[0] == hashlib.sha256(data).hexdigest()
    box.exec("echo made inside > data/made.txt")
    assert box.read_text("data/made.txt") == "made inside\n"  # relative: to the workdir
    box.write_text("notes.txt", "héllo")
    assert box.exec("cat notes.txt").stdout == "héllo"
    assert [(f.name, f.is_dir) for f in box.list_dir(WORKDIR)] == [
        ("data", True),
        ("notes.txt", False),
    ]
    assert box.exists("data") and box.is_dir("data") and not box.is_dir("notes.txt")
    with pytest.raises(FileNotFoundError):
        box.is_dir("missing")
    with pytest.raises(FileNotFoundError):
        box.read_bytes("missing")
    assert box.remove("data") and not box.exists("data") and not box.remove("data")
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "sub/blob").write_bytes(os.urandom(3000))
    box.upload(src, f"{WORKDIR}/up")
    assert box.exec("wc -c < up/sub/blob").stdout.strip() == "3000"
    box.download(f"{WORKDIR}/up", tmp_path / "back")
    assert (tmp_path / "back/sub/blob").read_bytes() == (src / "sub/blob").read_bytes()
    box.write_tree(f"{WORKDIR}/copy", box.read_tree(f"{WORKDIR}/up"))
    assert box.read_bytes("copy/sub/blob") == (src / "sub/blob").read_bytes()


def test_session_keeps_state_between_calls(box: Sandbox) -> None:
    box.exec("mkdir -p sub")
    with box.session() as sh:
        assert sh.run("cd sub && export FOO=bar").exit_code == 0
        assert sh.run('echo "$FOO"; basename "$(pwd)"').stdout == "bar\nsub\n"
        assert sh.run("false").exit_code == 1
        assert sh.run("printf out; echo oops >&2; (exit 7)").model_dump(
            include={"exit_code", "stdout", "stderr"}
        ) == {"exit_code": 7, "stdout": "out", "stderr": "oops\n"}
        assert sh.run("exit 4").exit_code == 4
        with pytest.raises(SandboxClosed):
            sh.run("true")
    with box.session(cwd="sub") as sh:
        assert sh.run("sleep 30", timeout=1).timed_out


def test_snapshot_and_fork_are_independent(box: Sandbox) -> None:
    box.write_text("state", "v1")
    snap = box.snapshot()
    assert snap.source == box.id
    box.write_text("state", "v2")
    with snap.fork() as child:
        assert child.read_text("state") == "v1"
        child.write_text("state", "child")
        with child.fork() as grandchild:
            assert grandchild.read_text("state") == "child"
    assert box.read_text("state") == "v2"
    snap.remove()


def test_close_is_final(box: Sandbox) -> None:
    box.close()
    box.close()
    assert box.closed
    with pytest.raises(SandboxClosed):
        box.exec("true")
    with pytest.raises(SandboxClosed):
        box.read_bytes("x")


def call(name: str, **arguments: object) -> Message:
    return Message(
        role="assistant", tool_calls=[ToolCall(id=f"c-{name}", name=name, arguments=arguments)]
    )


def test_the_agent_loop_runs_on_it(box: Sandbox, tmp_path: Path) -> None:
    replies = [
        call("write_file", path="notes/a.txt", content="alpha"),
        call("bash", command="cat notes/a.txt && cd notes && export Y=1"),
        call("bash", command='echo "$Y $(basename "$(pwd)")"'),
        call("list_dir", path="notes"),
        call("submit"),
    ]
    path = tmp_path / "traj.json"
    result = AgentLoop(ScriptedModel(replies)).run("do it", box, trajectory_path=path)
    assert result.termination == "submitted", result.error
    data = json.loads(path.read_text())
    outputs = [
        s["observation"]["results"][0]["content"]
        for s in data["steps"]
        if s["source"] == "agent" and s.get("observation")
    ]
    assert outputs[1:3] == ["alpha", "1 notes\n"]
    assert "a.txt" in outputs[3]
    assert box.read_text(f"{WORKDIR}/notes/a.txt") == "alpha"
