"""No leaks after a kill -9, and the CLI end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rockroll import Sandbox
from rockroll.cli import main
from rockroll.sandbox.cgroups import existing_sandbox_ids
from rockroll.sandbox.mounts import mounts_under
from rockroll.sandbox.paths import home_subdir, home_tag
from rockroll.sandbox.records import load_record, sandboxes_dir, snapshots_dir
from rockroll.sandbox.runtime import local_runtime

OWNER = """
import sys, time
from rockroll import Sandbox
sb = Sandbox.create("base")
sb.exec("sleep 1000 &")
s2 = sb.session(); s2.run("sleep 2000 &")
print(sb.id, flush=True)
time.sleep(1000)
"""


@pytest.mark.slow
def test_gc_removes_what_a_killed_owner_left(base_image: str) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        sandbox_id = owner.stdout.readline().strip()
        assert sandbox_id, "owner did not create a sandbox"
        sbdir = sandboxes_dir() / sandbox_id
        assert sbdir.exists() and not mounts_under(sbdir), "the overlay is private to the sandbox"
        cgroup = load_record(sandbox_id).cgroup
        assert cgroup in existing_sandbox_ids()
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
    report = local_runtime().gc()
    assert sandbox_id in report.sandboxes
    assert not sbdir.exists()
    left = existing_sandbox_ids()
    assert cgroup not in left
    assert not [name for name in left if f"_p{owner.pid}-" in name], left
    ps = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout
    assert "sleep 1000" not in ps and "sleep 2000" not in ps
    assert local_runtime().gc().total == 0


SNAPSHOTTER = """
import time
from rockroll import Sandbox
with Sandbox.create("base") as sb:
    sb.write_text("/f", "1")
    alone, used = sb.snapshot(), sb.snapshot()
print(alone.id, used.id, flush=True)
time.sleep(1000)
"""


@pytest.mark.slow
def test_gc_removes_snapshots_of_dead_processes_unless_something_stands_on_them(
    base_image: str,
) -> None:
    owner = subprocess.Popen([sys.executable, "-c", SNAPSHOTTER], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        alone, used = owner.stdout.readline().split()
        fork = Sandbox.create(used)  # a live sandbox stacked on one of them
    finally:
        owner.kill()
        owner.wait()
    with fork:
        report = local_runtime().gc()
        assert alone in report.snapshots and used not in report.snapshots
        assert not (snapshots_dir() / alone).exists() and (snapshots_dir() / used).exists()
        assert fork.read_text("/f") == "1"
    assert used in local_runtime().gc().snapshots
    assert not (snapshots_dir() / used).exists()


def test_gc_removes_what_a_dead_launcher_left_in_run(base_image: str) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    pid = gone.pid  # a launcher's process that is gone
    stale = [
        home_subdir("run") / f"{home_tag()}_p{pid}-0123456789ab.{ext}" for ext in ("sock", "log")
    ]
    for path in stale:
        path.write_text("")
    report = local_runtime().gc()
    assert f"bwrap:{home_tag()}_p{pid}-0123456789ab" in report.resources
    assert not any(p.exists() for p in stale)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_lifecycle(base_image: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "sandbox", "create", "--memory", "256m", "--ttl", "600")
    assert code == 0
    sandbox_id = out.strip()
    try:
        code, out, _ = run_cli(capsys, "sandbox", "ls", "--json")
        assert sandbox_id in [r["id"] for r in json.loads(out)]
        code, out, _ = run_cli(capsys, "sandbox", "exec", sandbox_id, "--", "echo hi; exit 5")
        assert (code, out) == (5, "hi\n")
        code, _, _ = run_cli(
            capsys, "sandbox", "exec", sandbox_id, "--timeout", "0.5", "--", "sleep 9"
        )
        assert code == 124
        code, out, _ = run_cli(capsys, "sandbox", "gc")
        assert code == 0 and sandbox_id not in out
    finally:
        code, out, _ = run_cli(capsys, "sandbox", "rm", sandbox_id)
    assert code == 0 and "removed" in out
    code, _, err = run_cli(capsys, "sandbox", "exec", sandbox_id, "--", "true")
    assert code == 1 and "no sandbox" in err


def test_cli_errors_say_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "sandbox", "create", "--image", "nope")
    assert code == 1 and "rockroll image build nope" in err
    code, _, err = run_cli(capsys, "sandbox", "create", "--memory", "-5")
    assert code == 1 and "memory" in err


def test_cli_detached_sandbox_survives_the_cli_and_expires(base_image: str) -> None:
    """Idle for less than its TTL, a detached sandbox outlives the CLI that made it and is left
    alone by gc; idle past it, the next gc (this one's, or any other process's) removes it."""
    ttl = 8  # room for a CLI's start on a loaded host, between create and exec
    cli = [sys.executable, "-m", "rockroll.cli"]
    out = subprocess.run(
        [*cli, "sandbox", "create", "--ttl", str(ttl)], capture_output=True, text=True
    )
    sandbox_id = out.stdout.strip()
    assert out.returncode == 0, out.stderr
    res = subprocess.run(
        [*cli, "sandbox", "exec", sandbox_id, "--", "echo", "alive"], capture_output=True, text=True
    )
    active = time.monotonic()
    assert res.stdout == "alive\n", res.stderr
    report = local_runtime().gc()
    if time.monotonic() - active < ttl:  # the check is only sound while still inside the TTL
        assert sandbox_id not in report.sandboxes and (sandboxes_dir() / sandbox_id).exists()
    deadline = active + ttl + 60
    while (sandboxes_dir() / sandbox_id).exists():
        assert time.monotonic() < deadline, "the expired sandbox was never collected"
        local_runtime().gc()
        time.sleep(0.5)
    assert time.monotonic() - active >= ttl - 1  # it went once idle, not before
    assert load_record(sandbox_id) is None


def test_gc_under_another_home_leaves_our_sandboxes_alone(sandbox: Sandbox, tmp_path: Path) -> None:
    env = {**os.environ, "ROCKROLL_HOME": str(tmp_path / "other-home")}
    code = "from rockroll.sandbox.runtime import local_runtime; print(local_runtime().gc().total)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
    assert sandbox.exec("echo alive").stdout == "alive\n"


def test_gc_leaves_a_record_it_cannot_read_alone(sandbox: Sandbox) -> None:
    """A sandbox made by a newer rockroll (a spec field this one lacks) is neither read as
    garbage nor a crash: gc and listing skip it."""
    meta = json.loads((sandboxes_dir() / sandbox.id / "meta.json").read_text())
    meta["spec"]["from_the_future"] = True
    alien = sandboxes_dir() / "0000feedface"
    alien.mkdir()
    try:
        (alien / "meta.json").write_text(json.dumps(meta))
        assert load_record(alien.name) is None
        report = local_runtime().gc()
        assert alien.name not in report.sandboxes and alien.exists()
        assert alien.name not in {rec.id for rec in local_runtime().list()}
        assert sandbox.exec("true").exit_code == 0
    finally:
        (alien / "meta.json").unlink()
        alien.rmdir()


def test_a_gc_while_a_sandbox_is_being_made_leaves_it_alone(
    base_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gc (another thread's first create, or another process) that looks at the sandboxes'
    folder while one is being made: the new folder must not look like a dead sandbox's. Here
    the gc runs at the worst moment, just before the owner lock is taken."""
    import rockroll.sandbox.runtime as runtime
    from rockroll.sandbox.garbage import collect_garbage

    real = runtime.take_owner_lock

    def gc_first(folder: Path) -> int:
        collect_garbage(set())
        return real(folder)

    monkeypatch.setattr(runtime, "take_owner_lock", gc_first)
    with Sandbox.create(base_image) as sb:
        assert sb.exec("echo ok").stdout == "ok\n"
    monkeypatch.undo()
    fresh, stale = sandboxes_dir() / ".0123456789ab.new", sandboxes_dir() / ".ba9876543210.new"
    for folder in (fresh, stale):  # being made now; a creation that died before its rename
        folder.mkdir()
    os.utime(stale, (time.time() - 120, time.time() - 120))
    collect_garbage(set())
    assert fresh.exists() and not stale.exists()
    fresh.rmdir()
