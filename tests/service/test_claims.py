"""The README's claims about `rockroll serve`, each against a real server process on loopback,
its real SQLite file and the host's view of the sandboxes (records, cgroups, processes):

- SIGTERM finishes the requests in flight, then deletes every sandbox; with `--keep` they stay
  running and the next server adopts them (lists them, runs commands in them).
- Tokens are stored as SHA-256 digests: the secret is nowhere in the database's files.
- `ROCKROLL_SERVER` and `ROCKROLL_TOKEN` alone send the SDK and the CLI to the server; a wrong
  token is one clear line.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rockroll import AccessDenied, Sandbox
from rockroll.errors import SandboxNotFound
from rockroll.sandbox.cgroups import CgroupSet, existing_sandbox_ids
from rockroll.sandbox.records import load_record, sandboxes_dir
from rockroll.sandbox.remote import RemoteSandbox
from rockroll.sandbox.types import ExecResult
from rockroll.service.pool import DB_LABEL, KEY_LABEL
from rockroll.service.store import Store
from tests.serverproc import ServerProc

SMALL = {"memory": "256m", "cpus": 0.5, "pids": 256, "disk": "1g"}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`rockroll ARGS` in a subprocess, with no server settings but those in `env`."""
    base = {k: v for k, v in os.environ.items() if k not in ("ROCKROLL_SERVER", "ROCKROLL_TOKEN")}
    return subprocess.run(
        [sys.executable, "-m", "rockroll", *args],
        env=base | {"COLUMNS": "300"} | (env or {}),  # tables unabridged
        capture_output=True,
        text=True,
        timeout=180,
    )


def _api(server: ServerProc, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), so that a reused
    pid is not mistaken for the process that had it; None once it has ended (a zombie has
    ended: only its exit status waits for its parent, or for init once that parent is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, *rest = stat.rsplit(")", 1)[1].split()
    return None if state in ("Z", "X") else rest[18]


class HostView:
    """What of a sandbox is on this host while it runs: its cgroups (named by the launcher that
    started it, which may be a parked one) and its processes with their start times."""

    def __init__(self, sandbox_id: str) -> None:
        rec = load_record(sandbox_id)
        assert rec is not None and rec.status == "running", rec
        assert rec.cgroup is not None and rec.cgroup in existing_sandbox_ids()
        self.id, self.cgroup = sandbox_id, rec.cgroup
        pids = CgroupSet.attach(rec.cgroup).pids()
        self.processes = {pid: start for pid in pids if (start := _start_time(pid)) is not None}
        assert self.processes, f"sandbox {sandbox_id} has no processes"

    def assert_gone(self) -> None:
        """Nothing of the sandbox is left: no record, no directory, no cgroups, no processes."""
        assert load_record(self.id) is None
        assert not (sandboxes_dir() / self.id).exists()
        assert self.cgroup not in existing_sandbox_ids()
        with pytest.raises(SandboxNotFound):
            CgroupSet.attach(self.cgroup)
        alive = [pid for pid, start in self.processes.items() if _start_time(pid) == start]
        assert alive == [], f"processes of {self.id} outlived it: {alive}"


def _listed_on_host() -> set[str]:
    """The ids `rockroll sandbox ls --json` shows."""
    res = _cli("sandbox", "ls", "--json")
    assert res.returncode == 0, res.stderr
    return {rec["id"] for rec in json.loads(res.stdout)}


def _in_thread(func, *args, **kwargs) -> tuple[threading.Thread, dict]:  # type: ignore[no-untyped-def]
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = func(*args, **kwargs)
        except BaseException as exc:  # handed to the test to raise
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def _wait_for(what: str, done, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def made() -> Iterator[list[str]]:
    """Ids of the sandboxes a test made; those still on the host at its end (a failed test's,
    whose server was killed or kept them) are removed, as an operator would."""
    ids: list[str] = []
    yield ids
    left = [i for i in ids if load_record(i) is not None]
    if left:
        _cli("sandbox", "rm", *left)


@pytest.mark.slow
def test_sigterm_finishes_requests_in_flight_then_deletes_every_sandbox(
    base_image: str, tmp_path: Path, made: list[str]
) -> None:
    db = tmp_path / "drain.db"
    server = ServerProc(db).start()
    try:
        token = server.token("drain")
        plain = Sandbox.create(**SMALL, server=server.url, token=token)
        streamed = Sandbox.create(**SMALL, server=server.url, token=token)
        ids = [plain.id, streamed.id]
        made.extend(ids)
        views = [HostView(i) for i in ids]
        assert set(ids) <= _listed_on_host()
        # Two commands still running when the signal comes: one answered in one reply, one
        # streamed. Each says it started, then outlasts the moment of the signal by seconds.
        slow = "touch /tmp/started; sleep 10; echo finished; exit 7"
        chunks: list[tuple[str, bytes]] = []
        t1, r1 = _in_thread(plain.exec, slow, timeout=120)
        t2, r2 = _in_thread(
            streamed.exec,
            "touch /tmp/started; echo begun; sleep 10; echo finished",
            timeout=120,
            on_output=lambda s, c: chunks.append((s, c)),
        )
        for sb in (plain, streamed):
            _wait_for("the commands to start", lambda sb=sb: sb.exists("/tmp/started"))
        assert t1.is_alive() and t2.is_alive(), "the commands ended before the signal"
    except BaseException:
        server.kill()
        raise
    assert server.stop() == 0, server.logs()
    t1.join(60)
    t2.join(60)
    assert "error" not in r1 and "error" not in r2, (r1, r2, server.logs())
    first: ExecResult = r1["result"]
    assert (first.exit_code, first.stdout, first.timed_out) == (7, "finished\n", False)
    assert first.duration >= 9.5
    second: ExecResult = r2["result"]
    assert (second.exit_code, second.stdout, second.timed_out) == (0, "begun\nfinished\n", False)
    assert b"".join(c for s, c in chunks if s == "stdout") == b"begun\nfinished\n"
    # Then every sandbox it made is deleted, on the host as in its state.
    for view in views:
        view.assert_gone()
    assert not set(ids) & _listed_on_host()
    store = Store(db)
    for sandbox_id in ids:
        row = store.sandbox(sandbox_id)
        assert row is not None and row.status == "deleted", row
        assert row.reason == "the server shut down"
    assert "sandboxes deleted" in " ".join(server.logs().split())


@pytest.mark.slow
def test_sigterm_with_keep_leaves_sandboxes_running_for_the_next_server(
    base_image: str, tmp_path: Path, made: list[str]
) -> None:
    db = tmp_path / "keep.db"
    server = ServerProc(db).start("--keep")
    try:
        token = server.token("keeper")
        sb = Sandbox.create(**SMALL, server=server.url, token=token, labels={"run": "keep"})
        made.append(sb.id)
        sb.write_text("/root/kept.txt", "still here")
        # A daemon left by a command: it must outlive the server too.
        assert sb.exec("setsid sleep 1000 </dev/null >/dev/null 2>&1 &").exit_code == 0
        _wait_for("the daemon", lambda: sb.exec("pgrep -x sleep").exit_code == 0)
        before = HostView(sb.id)
    except BaseException:
        server.kill()
        raise
    assert server.stop() == 0, server.logs()
    assert "sandboxes kept" in " ".join(server.logs().split())
    # Still running on the host, the very same processes, listed by the CLI.
    after = HostView(sb.id)
    assert (after.cgroup, after.processes) == (before.cgroup, before.processes)
    assert sb.id in _listed_on_host()
    rec = load_record(sb.id)
    assert rec is not None and rec.spec.labels.get(DB_LABEL) and rec.spec.labels.get(KEY_LABEL)

    # The next server on the same state adopts it: lists it as its owner's, runs commands in it.
    server.start()
    try:
        assert "1 sandbox(es) adopted, 0 lost" in " ".join(server.logs().split())
        api = _api(server, token)
        listed = api.get("/v1/sandboxes", params={"label": "run=keep"}).json()["sandboxes"]
        assert [(s["id"], s["status"]) for s in listed] == [(sb.id, "running")]
        again = Sandbox.connect(sb.id, server=server.url, token=token)
        assert again.read_text("/root/kept.txt") == "still here"
        res = again.exec('cat /root/kept.txt; pgrep -x sleep >/dev/null && echo " sleeping"')
        assert (res.exit_code, res.stdout) == (0, "still here sleeping\n")
        assert HostView(sb.id).processes.items() >= before.processes.items()
    except BaseException:
        server.kill()
        raise
    # Stopped without --keep, this server deletes what it adopted.
    assert server.stop() == 0, server.logs()
    after.assert_gone()
    row = Store(db).sandbox(sb.id)
    assert row is not None and (row.status, row.reason) == ("deleted", "the server shut down")


def test_tokens_are_stored_as_sha256_digests_never_in_plaintext(
    base_image: str, tmp_path: Path
) -> None:
    db = tmp_path / "tokens.db"
    issued = _cli("token", "create", "alice", "--db", str(db))
    assert issued.returncode == 0, issued.stderr
    secret = issued.stdout.strip()
    assert secret.startswith("rr_") and len(secret) > 40
    server = ServerProc(db).start()
    try:
        api = _api(server, secret)
        assert api.get("/v1/sandboxes").status_code == 200  # the secret works...
        files = sorted(tmp_path.glob("tokens.db*"))
        assert db in files
        digest = hashlib.sha256(secret.encode()).hexdigest()
        for stage in ("while serving", "after the server stopped"):
            blob = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("tokens.db*")))
            # ...yet neither it nor its random part is in the database or its WAL,
            assert secret.encode() not in blob, stage
            assert secret.removeprefix("rr_").encode() not in blob, stage
            # while its SHA-256 digest is (the same search finds what is there).
            assert digest.encode() in blob, stage
            if stage == "while serving":
                assert server.stop() == 0, server.logs()
    finally:
        server.kill()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT name, hash FROM tokens").fetchall()
    assert rows == [("alice", digest)]
    listed = _cli("token", "ls", "--db", str(db))
    assert listed.returncode == 0 and "alice" in listed.stdout
    assert secret not in listed.stdout + listed.stderr


def test_server_and_token_from_the_environment_route_the_cli_and_sdk(
    base_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made: list[str]
) -> None:
    server = ServerProc(tmp_path / "env.db").start()
    try:
        token = server.token("env")
        owner = Store(server.db).token_for(token)
        assert owner is not None
        env = {"ROCKROLL_SERVER": server.url, "ROCKROLL_TOKEN": token}
        api = _api(server, token)

        # The CLI: `sandbox create` makes the sandbox on the server, as this token's.
        created = _cli("sandbox", "create", "--memory", "256m", "--disk", "1g", env=env)
        assert created.returncode == 0, created.stderr
        sandbox_id = created.stdout.strip()
        made.append(sandbox_id)
        info = api.get(f"/v1/sandboxes/{sandbox_id}").json()
        assert (info["status"], info["owner"]) == ("running", owner.id), info
        rec = load_record(sandbox_id)
        assert rec is not None and KEY_LABEL in rec.spec.labels  # the server's, not the CLI's
        # `sandbox exec` runs through it: the exit code and output come back, and the server
        # saw the activity.
        seen = info["last_active"]
        ran = _cli("sandbox", "exec", sandbox_id, "--", "sh", "-c", "echo hi; exit 3", env=env)
        assert (ran.returncode, ran.stdout) == (3, "hi\n"), ran.stderr
        assert api.get(f"/v1/sandboxes/{sandbox_id}").json()["last_active"] > seen
        audit = api.get(f"/v1/sandboxes/{sandbox_id}/audit").json()
        assert any("echo hi" in json.dumps(entry) for entry in audit), audit

        # A wrong token: one line, naming the refusal, no traceback, exit 1; so is a missing one.
        bad = {"ROCKROLL_SERVER": server.url, "ROCKROLL_TOKEN": "rr_wrong"}
        for args in (
            ("sandbox", "exec", sandbox_id, "--", "true"),
            ("sandbox", "create", "--memory", "256m"),
        ):
            res = _cli(*args, env=bad)
            assert res.returncode == 1 and res.stdout == "", res
            lines = res.stderr.splitlines()
            assert len(lines) == 1, res.stderr
            assert lines[0] == "error: unknown or revoked token (HTTP 401)", lines
        res = _cli("sandbox", "exec", sandbox_id, "--", "true", env={"ROCKROLL_SERVER": server.url})
        assert res.returncode == 1 and len(res.stderr.splitlines()) == 1, res.stderr
        assert "needs a token" in res.stderr and "ROCKROLL_TOKEN" in res.stderr
        assert api.get(f"/v1/sandboxes/{sandbox_id}").json()["status"] == "running"
        assert api.delete(f"/v1/sandboxes/{sandbox_id}").status_code == 204

        # The SDK, in this process: `Sandbox.create()` with no server arguments goes there too.
        monkeypatch.setenv("ROCKROLL_SERVER", server.url)
        monkeypatch.setenv("ROCKROLL_TOKEN", token)
        with Sandbox.create(**SMALL) as sb:
            made.append(sb.id)
            assert isinstance(sb, RemoteSandbox)
            live = api.get("/v1/sandboxes").json()["sandboxes"]
            assert [s["id"] for s in live] == [sb.id]
            assert sb.exec("echo remote").stdout == "remote\n"
            assert Sandbox.connect(sb.id).exec("echo again").stdout == "again\n"
        assert api.get(f"/v1/sandboxes/{sb.id}").json()["status"] == "deleted"
        monkeypatch.setenv("ROCKROLL_TOKEN", "rr_wrong")
        with pytest.raises(AccessDenied, match=r"^unknown or revoked token \(HTTP 401\)$"):
            Sandbox.create(**SMALL)
    finally:
        assert server.stop() == 0, server.logs()
