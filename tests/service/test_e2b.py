"""The real `e2b` SDK, unchanged, against a real `rockroll serve --e2b` on loopback.

The SDK is configured only by its own documented settings (E2B_API_URL, E2B_SANDBOX_URL,
E2B_API_KEY, E2B_HTTP_VERSION); E2B_DOMAIN names a host that cannot resolve, so anything the
SDK tried to reach besides this server would fail the test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.prereqs import require_module
from tests.serverproc import ServerProc

e2b = require_module("e2b", "pip install -e '.[e2b]'")
from e2b import (  # noqa: E402
    AsyncSandbox,
    CommandExitException,
    ConnectionConfig,
    FileNotFoundException,
    RateLimitException,
    Sandbox,
    SandboxException,
    SandboxQuery,
    TimeoutException,
    Volume,
    VolumeException,
)
from e2b.exceptions import (  # noqa: E402
    AuthenticationException,
    SandboxNotFoundException,
    SandboxNotRunningException,
)
from packaging.version import Version  # noqa: E402


@pytest.fixture(scope="module")
def server(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    proc = ServerProc(tmp_path_factory.mktemp("e2b") / "service.db", e2b=True).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def keys(server: ServerProc) -> dict[str, str]:
    return {"alice": server.token("alice"), "bob": server.token("bob")}


@pytest.fixture(scope="module", autouse=True)
def e2b_env(server: ServerProc, keys: dict[str, str]) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("E2B_API_URL", server.url)
        mp.setenv("E2B_SANDBOX_URL", server.url)
        mp.setenv("E2B_API_KEY", keys["alice"])
        mp.setenv("E2B_HTTP_VERSION", "1.1")
        mp.setenv("E2B_DOMAIN", "nowhere.invalid")  # any other host: a DNS failure
        mp.delenv("E2B_DEBUG", raising=False)
        yield


@pytest.fixture(scope="module")
def sbx(e2b_env: None) -> Iterator[Sandbox]:
    box = Sandbox.create(timeout=300, envs={"FROM_CREATE": "made"}, metadata={"test": "e2b"})
    yield box
    box.kill()


def test_command_output_streams_in_order_with_its_exit_code(sbx: Sandbox) -> None:
    out: list[str] = []
    err: list[str] = []
    cmd = "for i in 1 2 3 4 5; do echo $i; sleep 0.1; done; echo oops >&2"
    result = sbx.commands.run(cmd, on_stdout=out.append, on_stderr=err.append)
    assert result.exit_code == 0 and result.error is None
    assert result.stdout == "1\n2\n3\n4\n5\n" == "".join(out)
    assert len(out) >= 3, out  # streamed as it came, not in one piece at the end
    assert result.stderr == "oops\n" == "".join(err)
    with pytest.raises(CommandExitException) as failed:
        sbx.commands.run("echo partial; echo bad >&2; exit 7")
    assert failed.value.exit_code == 7
    assert failed.value.stdout == "partial\n" and failed.value.stderr == "bad\n"


def test_env_cwd_and_the_sandboxs_own_env(sbx: Sandbox) -> None:
    result = sbx.commands.run('echo "$FOO $FROM_CREATE"; pwd', envs={"FOO": "bar"}, cwd="/tmp")
    assert result.stdout == "bar made\n/tmp\n"
    assert sbx.commands.run("whoami", user="root").stdout == "root\n"


def test_a_command_past_its_timeout_is_killed(sbx: Sandbox) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 20", timeout=1)
    assert time.monotonic() - started < 10

    def still_running() -> bool:
        return any("sleep 20" in " ".join(p.args) for p in sbx.commands.list())

    while still_running() and time.monotonic() - started < 5:  # killed at the deadline
        time.sleep(0.1)
    assert not still_running()


def test_background_commands_are_listed_waited_for_and_killed(sbx: Sandbox) -> None:
    counting = sbx.commands.run("for i in 1 2 3; do echo $i; sleep 0.2; done", background=True)
    sleeper = sbx.commands.run("sleep 60", background=True)
    other = sbx.commands.run("sleep 60", background=True)
    running = {p.pid: p for p in sbx.commands.list()}
    assert {counting.pid, sleeper.pid, other.pid} <= set(running)
    assert running[sleeper.pid].cmd == "/bin/bash" and "sleep 60" in running[sleeper.pid].args
    # Both run at once: waiting for the counter does not wait for the sleepers.
    assert counting.wait().stdout == "1\n2\n3\n"
    assert sleeper.kill() is True
    with pytest.raises(CommandExitException) as killed:
        sleeper.wait()
    assert killed.value.exit_code == -1
    assert sbx.commands.kill(other.pid) is True
    with pytest.raises(CommandExitException):
        other.wait()
    left = {p.pid for p in sbx.commands.list()}
    assert not left & {counting.pid, sleeper.pid, other.pid}
    assert sbx.commands.kill(sleeper.pid) is False  # gone: not found
    # A disconnected command runs on, and can be followed again by pid.
    late = sbx.commands.run("sleep 0.5; echo late", background=True)
    late.disconnect()
    assert sbx.commands.connect(late.pid).wait().stdout == "late\n"


def test_files_read_write_list_exists_remove_make_dir(sbx: Sandbox) -> None:
    blob = bytes(range(256)) * 64 + b"\r\n--boundary\r\n"
    info = sbx.files.write("/work/e2b/data.bin", blob)
    assert info.path == "/work/e2b/data.bin" and info.name == "data.bin"
    assert bytes(sbx.files.read("/work/e2b/data.bin", format="bytes")) == blob
    sbx.files.write("/work/e2b/note.txt", "hello")
    assert sbx.files.read("/work/e2b/note.txt") == "hello"
    assert sbx.commands.run("cat /work/e2b/note.txt").stdout == "hello"
    with open(__file__, "rb") as fh:  # a file object goes as application/octet-stream
        sbx.files.write("/work/e2b/this.py", fh)
    assert sbx.files.read("/work/e2b/this.py") == Path(__file__).read_text()
    many = [{"path": "/work/e2b/a.txt", "data": "a"}, {"path": "/work/e2b/b.txt", "data": "b"}]
    assert [w.path for w in sbx.files.write_files(many)] == ["/work/e2b/a.txt", "/work/e2b/b.txt"]
    assert sbx.files.make_dir("/work/e2b/sub/deeper") is True
    assert sbx.files.make_dir("/work/e2b/sub/deeper") is False
    listed = {e.name: e for e in sbx.files.list("/work/e2b")}
    assert set(listed) == {"data.bin", "note.txt", "this.py", "a.txt", "b.txt", "sub"}
    assert listed["data.bin"].size == len(blob) and listed["sub"].type.value == "dir"
    assert "deeper" in {e.name for e in sbx.files.list("/work/e2b", depth=2)}
    assert sbx.files.exists("/work/e2b/note.txt") and not sbx.files.exists("/work/e2b/nope")
    assert sbx.files.get_info("/work/e2b/note.txt").size == 5
    moved = sbx.files.rename("/work/e2b/a.txt", "/work/e2b/sub/c.txt")
    assert moved.path == "/work/e2b/sub/c.txt" and sbx.files.read(moved.path) == "a"
    sbx.files.remove("/work/e2b/note.txt")
    sbx.files.remove("/work/e2b/sub")
    assert not sbx.files.exists("/work/e2b/note.txt") and not sbx.files.exists("/work/e2b/sub")
    with pytest.raises(FileNotFoundException):
        sbx.files.read("/work/e2b/note.txt")
    with pytest.raises(FileNotFoundException):
        sbx.files.remove("/work/e2b/note.txt")


def test_info_list_and_kill(sbx: Sandbox) -> None:
    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id and info.metadata == {"test": "e2b"}
    assert info.template_id == "base" and sbx.is_running()
    found = Sandbox.list(query=SandboxQuery(metadata={"test": "e2b"})).next_items()
    assert [s.sandbox_id for s in found] == [sbx.sandbox_id]
    assert Sandbox.list(query=SandboxQuery(metadata={"test": "other"})).next_items() == []
    again = Sandbox.connect(sbx.sandbox_id)
    assert again.commands.run("echo $FROM_CREATE").stdout == "made\n"
    before = sbx.get_info().end_at
    Sandbox.connect(sbx.sandbox_id, timeout=10)  # connect only ever lengthens the timeout
    assert sbx.get_info().end_at == before
    Sandbox.connect(sbx.sandbox_id, timeout=900)
    assert sbx.get_info().end_at > before
    doomed = Sandbox.create(timeout=60)
    assert doomed.kill() is True
    assert not doomed.is_running()
    assert Sandbox.kill(doomed.sandbox_id) is False
    with pytest.raises(SandboxNotFoundException):
        doomed.get_info()


def test_the_timeout_kills_the_sandbox(e2b_env: None) -> None:
    short = Sandbox.create(timeout=2)
    moved = Sandbox.create(timeout=120)
    moved.set_timeout(2)
    started = time.monotonic()
    assert short.is_running() and moved.is_running()
    while (short.is_running() or moved.is_running()) and time.monotonic() - started < 15:
        time.sleep(0.25)
    assert not short.is_running() and not moved.is_running()
    with pytest.raises(SandboxNotFoundException):
        short.get_info()
    with pytest.raises(SandboxException):
        moved.commands.run("true")


def _aimed_at(sandbox_id: str, key: str) -> Sandbox:
    """An SDK sandbox object for `sandbox_id` that authenticates with another `key`."""
    headers = {"E2b-Sandbox-Id": sandbox_id, "X-Access-Token": key}
    return Sandbox(
        sandbox_id=sandbox_id,
        sandbox_domain=None,
        envd_version=Version("0.5.7"),
        envd_access_token=key,
        traffic_access_token=None,
        connection_config=ConnectionConfig(api_key=key, extra_sandbox_headers=headers),
    )


def test_another_token_cannot_see_kill_or_use_the_sandbox(
    sbx: Sandbox, keys: dict[str, str], server: ServerProc
) -> None:
    bob = keys["bob"]
    victim = sbx.sandbox_id
    running = sbx.commands.run("sleep 60", background=True)
    try:
        with pytest.raises(SandboxNotFoundException):
            Sandbox.connect(victim, api_key=bob)
        with pytest.raises(SandboxNotFoundException):
            Sandbox.get_info(victim, api_key=bob)
        with pytest.raises(SandboxNotFoundException):
            Sandbox.set_timeout(victim, 1, api_key=bob)
        assert Sandbox.kill(victim, api_key=bob) is False
        assert Sandbox.list(api_key=bob).next_items() == []
        # envd with bob's token: the sandbox answers exactly as a missing one, nothing runs.
        thief, nothing = _aimed_at(victim, bob), _aimed_at("no-such-sandbox", keys["alice"])
        attempts = [
            lambda box: box.commands.run("touch /tmp/stolen"),
            lambda box: box.commands.run("sleep 1", background=True),
            lambda box: box.commands.list(),
            lambda box: box.commands.kill(running.pid),
            lambda box: box.commands.connect(running.pid),
            lambda box: box.files.read("/etc/hostname"),
            lambda box: box.files.write("/tmp/planted", "x"),
            lambda box: box.files.list("/"),
            lambda box: box.files.make_dir("/tmp/planted-dir"),
            lambda box: box.files.remove("/etc/hostname"),
        ]
        for attempt in attempts:
            errors = []
            for box in (thief, nothing):
                with pytest.raises(SandboxNotRunningException) as refused:
                    attempt(box)
                errors.append(
                    str(refused.value).replace(victim, "ID").replace("no-such-sandbox", "ID")
                )
            assert errors[0] == errors[1] and "was not found" in errors[0]
        assert not thief.is_running()
        assert not sbx.files.exists("/tmp/stolen") and not sbx.files.exists("/tmp/planted")
        assert sbx.files.exists("/etc/hostname") and not sbx.files.exists("/tmp/planted-dir")
        assert running.pid in {p.pid for p in sbx.commands.list()}
        assert sbx.is_running() and sbx.get_info().sandbox_id == victim
        # Without a token, or with a wrong one: refused outright.
        with pytest.raises(AuthenticationException):
            _aimed_at(victim, "rr_wrong").commands.run("true")
        bare = httpx.get(f"{server.url}/health", headers={"E2b-Sandbox-Id": victim})
        assert bare.status_code == 401
        with pytest.raises(AuthenticationException):
            Sandbox.create(api_key="rr_wrong")
    finally:
        running.kill()


def test_unsupported_features_are_refused_clearly(sbx: Sandbox) -> None:
    with pytest.raises(SandboxException, match="not supported"):
        sbx.pause()
    with pytest.raises(SandboxException, match="not supported"):
        sbx.commands.run("cat", stdin=True)
    with pytest.raises(SandboxException, match="not supported"):
        sbx.files.watch_dir("/tmp")
    with pytest.raises(SandboxException, match="not supported"):
        Sandbox.create(mcp={"exa": {"apiKey": "x"}})  # type: ignore[typeddict-item]
    with pytest.raises(VolumeException, match="not supported"):
        Volume.create("data")
    with pytest.raises(SandboxException, match="not built"):  # a template is an image name
        Sandbox.create("no-such-template")
    with pytest.raises(SandboxException, match="not supported"):
        from e2b.sandbox.commands.command_handle import PtySize

        sbx.pty.create(PtySize(rows=24, cols=80))


async def test_the_async_sdk_too(e2b_env: None) -> None:
    box = await AsyncSandbox.create(timeout=60)
    try:
        chunks: list[str] = []
        result = await box.commands.run("echo one; sleep 0.1; echo two", on_stdout=chunks.append)
        assert result.stdout == "one\ntwo\n" == "".join(chunks)
        handle = await box.commands.run("sleep 60", background=True)
        assert await box.commands.kill(handle.pid) is True
        with pytest.raises(CommandExitException):
            await handle.wait()
        await box.files.write("/tmp/async.txt", "async")
        assert await box.files.read("/tmp/async.txt") == "async"
        assert (await box.get_info()).sandbox_id == box.sandbox_id
    finally:
        assert await box.kill() is True
    assert not await box.is_running()


def test_a_token_runs_at_most_max_execs_commands_at_once(server: ServerProc) -> None:
    key = server.token("carol", max_execs=2)
    box = Sandbox.create(timeout=60, api_key=key)
    try:
        first = box.commands.run("sleep 30", background=True)
        second = box.commands.run("sleep 30", background=True)
        with pytest.raises(RateLimitException, match="max_execs"):
            box.commands.run("true")
        first.kill()
        with pytest.raises(CommandExitException):
            first.wait()
        assert box.commands.run("echo room").stdout == "room\n"
        second.kill()
    finally:
        box.kill()
