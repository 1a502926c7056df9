"""The Ray fleet on a real local cluster of two nodes: one host per node, placement, node loss,
and the whole `Sandbox` interface (sessions, snapshots, forks) with the agent harness on it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.prereqs import require_module

ray = require_module("ray", install="pip install -e '.[ray]', as `make test` does")

from ray.cluster_utils import Cluster  # noqa: E402

from rockroll import Sandbox, SandboxClosed, SandboxNotFound  # noqa: E402
from rockroll.agent.loop import AgentLoop  # noqa: E402
from rockroll.models import ScriptedModel  # noqa: E402
from rockroll.models.messages import Message, ToolCall  # noqa: E402
from rockroll.service.fleet import Fleet, FleetSandbox  # noqa: E402
from rockroll.tasks.terminal import expert_commands, load_terminal  # noqa: E402
from rockroll.tasks.verify import verify  # noqa: E402
from rockroll.tasks.workspace import put_files  # noqa: E402

NODE = {"num_cpus": 1, "object_store_memory": 80 << 20}


@pytest.mark.slow
def test_two_nodes_place_run_and_report_a_lost_node(base_image: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args=NODE)
    worker = cluster.add_node(**NODE)
    ray.init(address=cluster.address, namespace="rockroll-test", log_to_driver=False)
    fleet = None
    try:
        cluster.wait_for_nodes()
        fleet = Fleet(monitor_every=0.5)
        nodes = fleet.nodes()
        assert len(nodes) == 2
        boxes = [fleet.create(base_image, memory="256m") for _ in range(4)]
        placed = fleet.placement()
        per_node = {
            n: sum(1 for v in placed.values() if v == n) for n in {c.node_id for c in nodes}
        }
        assert sorted(per_node.values()) == [2, 2], per_node  # most free memory first
        # One host actor per node, whatever the number of sandboxes.
        hosts = [
            a for a in ray.util.list_named_actors(all_namespaces=True) if "rockroll-host" in str(a)
        ]
        assert len(hosts) == 2, hosts
        for i, sb in enumerate(boxes):
            assert sb.exec(f"echo {i} > /n; cat /n").stdout == f"{i}\n"
            sb.write_bytes("/blob", bytes(range(256)))
            assert sb.read_bytes("/blob") == bytes(range(256))
        on_worker = [sb for sb in boxes if sb.node_id == worker.node_id]
        on_head = [sb for sb in boxes if sb.node_id != worker.node_id]
        assert len(on_worker) == 2 and len(on_head) == 2

        cluster.remove_node(worker)
        deadline = time.monotonic() + 60
        while not all(fleet.status(sb.id)[0] == "lost" for sb in on_worker):
            assert time.monotonic() < deadline, fleet.lost()
            time.sleep(0.2)
        for sb in on_worker:
            state, why = fleet.status(sb.id)
            assert state == "lost" and why and worker.node_id[:12] in why
            with pytest.raises(SandboxClosed, match="was lost"):
                sb.exec("true")
        for sb in on_head:
            assert sb.exec("cat /n").exit_code == 0
        replacement = fleet.create(base_image, memory="256m")
        assert replacement.node_id != worker.node_id
        assert replacement.exec("true").exit_code == 0
        assert [c.node_id for c in fleet.nodes()] == [replacement.node_id]
    finally:
        if fleet is not None:
            fleet.shutdown()
        ray.shutdown()
        cluster.shutdown()
    from rockroll.sandbox.runtime import local_runtime

    local_runtime().gc()  # the lost node's sandboxes: their owner died with the node


@pytest.fixture
def fleet(base_image: str) -> Iterator[Fleet]:
    """A fleet over a fresh local cluster of two nodes."""
    cluster = Cluster(initialize_head=True, head_node_args=NODE)
    cluster.add_node(**NODE)
    ray.init(address=cluster.address, namespace="rockroll-test", log_to_driver=False)
    made = None
    try:
        cluster.wait_for_nodes()
        made = Fleet(monitor_every=0.5)
        yield made
    finally:
        if made is not None:
            made.shutdown()
        ray.shutdown()
        cluster.shutdown()


def call(name: str, **arguments: object) -> Message:
    return Message(
        role="assistant", tool_calls=[ToolCall(id=f"c-{name}", name=name, arguments=arguments)]
    )


@pytest.mark.slow
def test_the_agent_harness_solves_a_task_on_a_fleet_sandbox(
    fleet: Fleet, base_image: str, tmp_path: Path
) -> None:
    """A real task (read a note, do what it says) by the harness on a fleet sandbox: its bash
    tool runs in a session kept by the node's host; the task's own verifier then passes."""
    task = load_terminal("note-rename", seed=0, size=1)[0]
    workdir = task.environment.workdir or "/"
    look, act = expert_commands(task)
    replies = [
        call("write_file", path="plan.txt", content="read the note, then do it"),
        call("bash", command=look),
        call("bash", command=f"cd {workdir} && {act} && export DONE=1"),
        call("bash", command='echo "done=$DONE in $(pwd)"'),
        call("submit"),
    ]
    with fleet.create(base_image, memory="512m", workdir=workdir) as sb:
        assert isinstance(sb, Sandbox) and isinstance(sb, FleetSandbox)
        put_files(sb, task.files)
        loop = AgentLoop(ScriptedModel(replies))
        path = tmp_path / "traj.json"
        result = loop.run(task.instruction, sb, workdir=workdir, trajectory_path=path)
        assert result.termination == "submitted" and result.turns == 5, result.error
        data = json.loads(path.read_text())
        assert data["extra"]["termination"] == "submitted"
        outputs = [
            s["observation"]["results"][0]["content"]
            for s in data["steps"]
            if s["source"] == "agent" and s.get("observation")
        ]
        assert outputs[1] == task.files[f"{workdir}/note.txt"]  # the note, read in the session
        assert outputs[3] == f"done=1 in {workdir}\n"  # the shell kept its state between calls
        assert sb.read_text(f"{workdir}/plan.txt") == "read the note, then do it"
        assert sb.exists(f"{workdir}/plan.txt") and not sb.exists(f"{workdir}/data.txt")
        verdict = verify(task, sb)
        assert verdict.passed, verdict


@pytest.mark.slow
def test_fleet_sessions_snapshots_and_forks(fleet: Fleet, base_image: str) -> None:
    with fleet.create(base_image, memory="256m") as sb:
        with sb.session() as sh:
            assert sh.run("cd /tmp && export X=y").exit_code == 0
            assert sh.run('echo "$X $(pwd)"').stdout == "y /tmp\n"
            assert sh.run("sleep 30", timeout=1).timed_out
            assert sh.run("exit 3").exit_code == 3
            with pytest.raises(SandboxClosed):
                sh.run("true")
        audit = [(r["command"], r["exit_code"]) for r in sb.audit_log()]
        assert audit[:2] == [("cd /tmp && export X=y", 0), ('echo "$X $(pwd)"', 0)]
        sb.write_text("/state", "v1")
        snap = sb.snapshot()
        assert snap.source == sb.id
        sb.write_text("/state", "v2")
        with snap.fork() as child:
            assert child.node_id == sb.node_id  # a snapshot's files are on its node
            assert child.read_text("/state") == "v1"
            child.write_text("/state", "child")
            with child.fork() as grandchild:
                assert grandchild.read_text("/state") == "child"
                assert fleet.placement()[grandchild.id] == sb.node_id
        assert sb.read_text("/state") == "v2"
        snap.remove()
        with pytest.raises(SandboxNotFound, match="no snapshot"):
            snap.remove()
        sb.exec("sleep 300 &")
        assert sb.kill_all() == 0
        assert "sleep 300" not in sb.exec("ps -e -o args=").stdout
        tree = sb.read_tree("/etc")
        sb.write_tree("/copy", tree)
        assert sb.is_dir("/copy")
        assert sb.read_text("/copy/hostname") == sb.read_text("/etc/hostname")
        assert sb.remove("/copy") and not sb.exists("/copy")
    with pytest.raises(SandboxClosed):
        sb.exec("true")
