"""The SDK against real sandboxes: exec, streaming, sessions, files, snapshots, TTL, audit."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

from rockroll import AsyncSandbox, InvalidArgument, Sandbox, SandboxClosed
from rockroll.errors import ImageNotFound

# Every test that takes `via` runs twice: on the local runtime, and through a real
# `rockroll serve` on loopback with the same SDK calls (server=..., token=...).


@pytest.fixture(scope="session")
def server_token(sandbox_server) -> str:  # type: ignore[no-untyped-def]
    return sandbox_server.token("sdk-tests")


@pytest.fixture(params=["local", "remote"])
def via(request: pytest.FixtureRequest, base_image: str) -> dict[str, str]:
    if request.param == "local":
        return {}
    server = request.getfixturevalue("sandbox_server")
    return {"server": server.url, "token": request.getfixturevalue("server_token")}


@pytest.fixture
def sandbox(via: dict[str, str], base_image: str):  # type: ignore[no-untyped-def]
    with Sandbox.create(base_image, memory="512m", pids=256, **via) as sb:
        yield sb


def test_exec_result_fields(sandbox: Sandbox) -> None:
    res = sandbox.exec("echo out; echo err >&2; exit 3")
    assert (res.exit_code, res.stdout, res.stderr) == (3, "out\n", "err\n")
    assert not res.timed_out and not res.truncated and res.duration > 0


def test_exec_argv_cwd_env_stdin(sandbox: Sandbox) -> None:
    res = sandbox.exec(["sh", "-c", 'pwd; echo "$X"; cat'], cwd="/tmp", env={"X": "y"}, stdin="in")
    assert res.stdout == "/tmp\ny\nin"


def test_output_is_capped_head_and_tail(base_image: str, via: dict[str, str]) -> None:
    with Sandbox.create(base_image, max_output=4096, **via) as sb:
        res = sb.exec("echo HEAD; head -c 1000000 /dev/zero | tr '\\0' x; echo; echo TAIL")
    assert res.truncated
    assert res.stdout.startswith("HEAD") and res.stdout.rstrip().endswith("TAIL")
    assert len(res.stdout) < 5000


def test_streaming_delivers_output_before_exit(sandbox: Sandbox) -> None:
    """The command prints, then waits for a file that only the callback, on seeing that first
    line, writes: if output were handed over at exit only, the command would never end."""
    seen: list[bytes] = []

    def on_output(stream: str, chunk: bytes) -> None:
        seen.append(chunk)
        if chunk.startswith(b"first"):
            sandbox.write_text("/tmp/go", "")

    res = sandbox.exec(
        "echo first; until [ -e /tmp/go ]; do sleep 0.01; done; echo second",
        timeout=60,
        on_output=on_output,
    )
    assert not res.timed_out and res.stdout == "first\nsecond\n", res
    assert b"".join(seen) == b"first\nsecond\n" and seen[0] == b"first\n"
    chunks = list(sandbox.stream("echo a; echo b >&2"))
    assert ("stdout", "a\n") in chunks and ("stderr", "b\n") in chunks


def test_session_keeps_state(sandbox: Sandbox) -> None:
    with sandbox.session() as sh:
        assert sh.run("cd /tmp && export FOO=bar").exit_code == 0
        res = sh.run('echo "$FOO $(pwd)"')
        assert res.stdout == "bar /tmp\n"
        assert sh.run("false").exit_code == 1
        assert sh.run("echo oops >&2; (exit 7)").stderr == "oops\n"
        sh.run("sleep 300 &")
        res = sh.run("sleep 100", timeout=1)
        assert res.timed_out
        assert sh.run("echo alive").stdout == "alive\n"
        assert "sleep 300" in sandbox.exec("ps -e -o args=").stdout
        res = sh.run("exit 0")
    with pytest.raises(SandboxClosed):
        sh.run("echo after close")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_files_roundtrip(sandbox: Sandbox, tmp_path: Path) -> None:
    """Each way is checked against the other side: what the SDK writes, a program inside reads;
    what a program inside writes, the SDK reads."""
    data = bytes(range(256)) * 10
    sandbox.write_bytes("/data/bin.dat", data)
    assert sandbox.exec("sha256sum /data/bin.dat").stdout.split()[0] == _sha(data)
    sandbox.exec("head -c 4096 /dev/urandom > /data/made-inside; echo made >> /data/made-inside")
    inside = sandbox.exec("sha256sum /data/made-inside").stdout.split()[0]
    made = sandbox.read_bytes("/data/made-inside")
    assert len(made) == 4101 and made.endswith(b"made\n") and _sha(made) == inside
    sandbox.write_text("notes.txt", "héllo")
    assert sandbox.exec("cat /notes.txt").stdout == "héllo"
    names = [f.name for f in sandbox.list_dir("/data")]
    assert sorted(names) == ["bin.dat", "made-inside"]
    src = tmp_path / "tree"
    (src / "sub/deep").mkdir(parents=True)
    blob = os.urandom(300_000)
    (src / "sub/deep/blob").write_bytes(blob)
    (src / "a.txt").write_text("a")
    sandbox.upload(src, "/up")
    assert sandbox.exec("cat /up/a.txt").stdout == "a"
    assert sandbox.exec("sha256sum /up/sub/deep/blob").stdout.split()[0] == _sha(blob)
    sandbox.exec("echo from-inside > /up/sub/new")
    sandbox.download("/up", tmp_path / "back")
    assert (tmp_path / "back/sub/deep/blob").read_bytes() == blob
    assert (tmp_path / "back/sub/new").read_text() == "from-inside\n"


def test_hostile_input_is_refused(sandbox: Sandbox, base_image: str, via: dict[str, str]) -> None:
    with pytest.raises(ImageNotFound, match="rockroll image build"):
        Sandbox.create("no-such-image", **via)
    with pytest.raises(InvalidArgument, match="memory"):
        Sandbox.create(base_image, memory=-1, **via)
    with pytest.raises(InvalidArgument, match="escapes the sandbox"):
        sandbox.read_text("../../etc/passwd")
    with pytest.raises(InvalidArgument, match="cmd must be a string"):
        sandbox.exec(123)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="timeout"):
        sandbox.exec("true", timeout=-1)


def test_symlinks_resolve_inside_the_sandbox(sandbox: Sandbox) -> None:
    host_only = Path(f"/tmp/rockroll-host-only-{os.getpid()}")
    host_only.write_text("host")
    try:
        sandbox.exec(f"ln -s {host_only} /link; ln -s ../../../../etc/hostname /rel")
        with pytest.raises(FileNotFoundError):
            sandbox.read_text("/link")
        assert sandbox.read_text("/rel") == "sandbox\n"
        assert Path("/etc/hostname").read_text() != "sandbox\n"  # the control: the host's
        sandbox.write_text("/link", "inside")
        assert host_only.read_text() == "host"
        assert sandbox.exec(f"cat {host_only}").stdout == "inside"  # the link's target inside
    finally:
        host_only.unlink()


def test_snapshot_and_fork_are_independent(sandbox: Sandbox) -> None:
    sandbox.write_text("/state", "v1")
    snap = sandbox.snapshot()
    sandbox.write_text("/state", "v2-parent")
    with snap.fork() as child:
        assert child.read_text("/state") == "v1"
        child.write_text("/state", "v3-child")
        child.exec("rm /etc/hostname")
        assert sandbox.read_text("/state") == "v2-parent"
        assert sandbox.exec("cat /etc/hostname").exit_code == 0
        with child.fork() as grandchild:
            assert grandchild.read_text("/state") == "v3-child"
            assert grandchild.exec("test -e /etc/hostname").exit_code == 1
    assert sandbox.read_text("/state") == "v2-parent"


def test_idle_ttl_closes_the_sandbox(base_image: str) -> None:
    sb = Sandbox.create(base_image, ttl=2)
    sb.exec("true")
    deadline = time.monotonic() + 30
    while sb.record.dir.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not sb.record.dir.exists()
    with pytest.raises(SandboxClosed):
        sb.exec("true")
    sb.close()


def test_audit_log_records_commands(sandbox: Sandbox) -> None:
    sandbox.exec("echo one")
    sandbox.exec("exit 4")
    with sandbox.session() as sh:
        sh.run("echo two")
    log = sandbox.audit_log()
    assert [e["command"] for e in log] == ["echo one", "exit 4", "echo two"]
    assert log[1]["exit_code"] == 4 and all("duration" in e and "time" in e for e in log)


def test_close_is_idempotent_and_final(base_image: str, via: dict[str, str]) -> None:
    sb = Sandbox.create(base_image, **via)
    sb.close()
    sb.close()
    with pytest.raises(SandboxClosed):
        sb.exec("true")


async def test_async_sandbox_runs_commands_concurrently(
    base_image: str, via: dict[str, str]
) -> None:
    """A barrier inside: each command says it started, then waits until all 32 have. Run one
    after another, the first would wait until its timeout."""
    async with await AsyncSandbox.create(base_image, **via) as sb:
        barrier = (
            "mkdir -p /tmp/started; touch /tmp/started/$$; "
            "until [ $(ls /tmp/started | wc -l) -ge 32 ]; do sleep 0.1; done; echo done"
        )
        results = await asyncio.gather(*(sb.exec(barrier, timeout=120) for _ in range(32)))
        assert [(r.stdout, r.timed_out) for r in results] == [("done\n", False)] * 32
        await sb.write_text("/x", "y")
        assert await sb.read_text("/x") == "y"


def test_warm_sandboxes_are_hidden_and_adopted_with_the_callers_settings(base_image: str) -> None:
    from rockroll.sandbox.runtime import local_runtime
    from rockroll.sandbox.spec import SandboxSpec
    from rockroll.sandbox.warm import warm_key

    runtime = local_runtime()
    for _ in range(2):
        Sandbox.create(base_image).close()
    deadline = time.monotonic() + 60
    key = warm_key(SandboxSpec(image=base_image))
    # Wait for the pool to be full: a sandbox that became ready after the list below was taken
    # would be the one handed out (the pool hands out its newest).
    while len(runtime.warm.ready.get(key, ())) < runtime.warm.size and time.monotonic() < deadline:
        time.sleep(0.05)
    warm = [rec.id for rec, _ in runtime.warm.ready[key]]
    assert warm, "the warm pool did not fill"
    listed = {rec.id for rec in runtime.list()}
    assert not listed & set(warm)
    with Sandbox.create(base_image, memory="96m", workdir="/srv/app", env={"K": "v"}) as sb:
        assert sb.id in warm
        assert sb.exec('pwd; echo "$K"').stdout == "/srv/app\nv\n"
        res = sb.exec("python3 -c 'a = bytearray(200 << 20)'", timeout=60)
        assert res.exit_code == 137, res
        assert sb.id in {rec.id for rec in runtime.list()}


def test_session_exit_reports_the_shells_exit_code(sandbox: Sandbox) -> None:
    for code in (0, 7, 42):
        with sandbox.session() as sh:
            assert sh.run(f"exit {code}").exit_code == code
            with pytest.raises(SandboxClosed):
                sh.run("true")


def test_one_interface_chooses_the_implementation(base_image: str, via: dict[str, str]) -> None:
    import rockroll.sandbox
    from rockroll.sandbox.local import LocalSandbox
    from rockroll.sandbox.remote import RemoteSandbox

    with pytest.raises(TypeError, match="abstract"):
        Sandbox()  # type: ignore[abstract]
    kind = RemoteSandbox if via else LocalSandbox
    with rockroll.sandbox.create(base_image, memory="256m", **via) as sb:
        assert isinstance(sb, Sandbox) and type(sb) is kind
        sb.write_text("/mark", "here")
        again = rockroll.sandbox.connect(sb.id, **via)
        assert type(again) is kind and again.id == sb.id
        assert again.read_text("/mark") == "here"
        snap = sb.snapshot()
        assert isinstance(snap, rockroll.Snapshot) and snap.source == sb.id
        snap.remove()


def test_a_default_user_runs_commands_that_name_none(base_image: str, via: dict[str, str]) -> None:
    """Docker's USER: `user=` at create is who exec, sessions and streams run as by default;
    a command may still name another (root included)."""
    with Sandbox.create(base_image, user="nobody", **via) as sb:
        assert sb.spec.user == "nobody"
        assert sb.exec("id -un").stdout == "nobody\n"
        assert sb.exec("id -un", user="root").stdout == "root\n"
        with sb.session() as sh:
            assert sh.run("id -un").stdout == "nobody\n"
        assert sb.exec("touch /root/x").exit_code != 0  # nobody may not write there
    with Sandbox.create(base_image, **via) as plain:
        assert plain.exec("id -un").stdout == "root\n"
