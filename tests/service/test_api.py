"""The sandbox server over real HTTP on loopback: auth, quotas, streaming, files, bad input."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from rockroll import AccessDenied, QuotaExceeded, Sandbox, SandboxClosed, SandboxNotFound
from rockroll.errors import InUse
from tests.serverproc import ServerProc


@pytest.fixture(scope="module")
def server(sandbox_server: ServerProc) -> ServerProc:
    return sandbox_server


@pytest.fixture(scope="module")
def alice(server: ServerProc) -> httpx.Client:
    return _client(server, server.token("alice"))


@pytest.fixture(scope="module")
def bob(server: ServerProc) -> httpx.Client:
    return _client(server, server.token("bob"))


def _client(server: ServerProc, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code and body["message"], body
    return str(body["message"])


@pytest.fixture
def box(alice: httpx.Client):  # type: ignore[no-untyped-def]
    reply = alice.post("/v1/sandboxes", json={"memory": "256m", "labels": {"t": "api"}})
    assert reply.status_code == 201, reply.text
    info = reply.json()
    yield info["id"]
    alice.delete(f"/v1/sandboxes/{info['id']}")


def test_auth_refusals_are_401_403_404(server: ServerProc, alice, bob, box) -> None:  # type: ignore[no-untyped-def]
    anonymous = _client(server, None)
    assert "Bearer" in _error(anonymous.get("/v1/sandboxes"), 401, "unauthorized")
    assert "unknown" in _error(
        _client(server, "rr_wrong").get("/v1/sandboxes"), 401, "unauthorized"
    )
    basic = httpx.get(f"{server.url}/v1/sandboxes", headers={"Authorization": "Basic eDp5"})
    _error(basic, 401, "unauthorized")
    # Another owner's sandbox answers exactly as a missing one: 404, on every route.
    for method, path in [
        ("GET", f"/v1/sandboxes/{box}"),
        ("DELETE", f"/v1/sandboxes/{box}"),
        ("POST", f"/v1/sandboxes/{box}/snapshots"),
        ("GET", f"/v1/sandboxes/{box}/files?path=/etc/hostname"),
    ]:
        _error(bob.request(method, path), 404, "not_found")
    _error(bob.post(f"/v1/sandboxes/{box}/exec", json={"cmd": "true"}), 404, "not_found")
    assert box not in [s["id"] for s in bob.get("/v1/sandboxes").json()["sandboxes"]]
    assert alice.post(f"/v1/sandboxes/{box}/exec", json={"cmd": "true"}).json()["exit_code"] == 0
    _error(alice.get("/v1/tokens"), 403, "forbidden")
    admin = _client(server, server.token("root", admin=True))
    assert admin.get(f"/v1/sandboxes/{box}").json()["owner"] != ""
    assert (
        admin.post(f"/v1/sandboxes/{box}/exec", json={"cmd": "echo hi"}).json()["stdout"] == "hi\n"
    )
    made = admin.post("/v1/tokens", json={"name": "carol"}).json()
    carol = _client(server, made["secret"])
    assert carol.get("/v1/sandboxes").status_code == 200
    assert admin.delete(f"/v1/tokens/{made['id']}").status_code == 204
    _error(carol.get("/v1/sandboxes"), 401, "unauthorized")
    # The SDK raises the runtime's exceptions for the same refusals.
    with pytest.raises(AccessDenied, match="unknown or revoked"):
        Sandbox.create(server=server.url, token="rr_wrong")
    with pytest.raises(SandboxNotFound):
        Sandbox.connect(box, server=server.url, token=server.token("dave"))


def test_quotas_count_and_memory(server: ServerProc) -> None:
    token = server.token("quota", max_sandboxes=2, max_memory=600 << 20)
    client = _client(server, token)
    first = client.post("/v1/sandboxes", json={"memory": "256m"})
    second = client.post("/v1/sandboxes", json={"memory": "256m"})
    assert first.status_code == second.status_code == 201
    assert "may hold 2 live sandboxes" in _error(
        client.post("/v1/sandboxes", json={"memory": "64m"}), 403, "quota_exceeded"
    )
    client.delete(f"/v1/sandboxes/{second.json()['id']}")
    too_big = client.post("/v1/sandboxes", json={"memory": "512m"})
    assert "bytes of sandbox memory" in _error(too_big, 403, "quota_exceeded")
    _error(client.post("/v1/sandboxes", json={"memory": None}), 403, "quota_exceeded")
    third = client.post("/v1/sandboxes", json={"memory": "256m"})
    assert third.status_code == 201, third.text
    with pytest.raises(QuotaExceeded):
        Sandbox.create(memory="64m", server=server.url, token=token)
    for reply in (first, third):
        client.delete(f"/v1/sandboxes/{reply.json()['id']}")
    assert client.get("/v1/sandboxes").json()["sandboxes"] == []


@pytest.mark.slow
def test_a_30_second_command_streams_its_output(server: ServerProc) -> None:
    token = server.token("stream")
    with Sandbox.create(memory="256m", server=server.url, token=token) as sb:
        seen: list[tuple[float, str]] = []
        start = time.monotonic()
        stream = sb.stream("for i in $(seq 1 30); do echo tick $i; sleep 1; done; echo done >&2")
        for name, text in stream:
            seen.append((time.monotonic() - start, f"{name}:{text}"))
        elapsed = time.monotonic() - start
    ticks = [t for t, text in seen if text.startswith("stdout:tick")]
    assert elapsed >= 29
    # compared with the run's own length, not with a clock: the end is 29 s after the start
    assert seen[0][0] < elapsed - 20, "the first line should arrive at once, not at the end"
    assert len(ticks) == 30 or "".join(x for _, x in seen).count("tick") == 30
    assert ticks[-1] - ticks[0] > 25, "lines must arrive as they are printed"
    assert seen[-1][1] == "stderr:done\n"


def test_tree_with_binary_files_round_trips_byte_for_byte(
    server: ServerProc, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "bin/deep").mkdir(parents=True)
    files = {
        "bin/deep/random.bin": os.urandom(1 << 20),
        "bin/zeros": bytes(70_000),
        "all-bytes": bytes(range(256)) * 64,
        "empty": b"",
        "naïve name.txt": "ünïcode\n".encode(),
    }
    for name, data in files.items():
        (src / name).write_bytes(data)
    (src / "bin/deep/random.bin").chmod(0o755)
    with Sandbox.create(memory="256m", server=server.url, token=server.token("tree")) as sb:
        sb.upload(src, "/data/in")
        assert sb.exec("sha256sum /data/in/bin/deep/random.bin").stdout.split()[0] == _sha(
            files["bin/deep/random.bin"]
        )
        assert sb.exec("test -x /data/in/bin/deep/random.bin").exit_code == 0
        sb.upload(src / "all-bytes", "/single")
        assert sb.exec("sha256sum /single").stdout.split()[0] == _sha(files["all-bytes"])
        sb.exec("head -c 100000 /dev/urandom > /data/in/bin/made-inside")
        made = sb.exec("sha256sum /data/in/bin/made-inside").stdout.split()[0]
        sb.download("/data/in", tmp_path / "back")
    assert _sha((tmp_path / "back/bin/made-inside").read_bytes()) == made
    for name, data in files.items():
        assert (tmp_path / "back" / name).read_bytes() == data, name


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_bad_input_is_a_4xx_never_a_500(server: ServerProc, alice: httpx.Client, box: str) -> None:
    bad_json = alice.post(
        "/v1/sandboxes", content=b"{not json", headers={"content-type": "application/json"}
    )
    _error(bad_json, 400, "invalid_json")
    unknown = alice.post("/v1/sandboxes", json={"memroy": "1g"})
    assert _error(unknown, 422, "validation_error") and unknown.json()["error"]["field"] == "memroy"
    wrong_type = alice.post(f"/v1/sandboxes/{box}/exec", json={"cmd": "true", "timeout": "soon"})
    assert wrong_type.json()["error"]["field"] == "timeout"
    _error(wrong_type, 422, "validation_error")
    _error(alice.post("/v1/sandboxes", json={"memory": "lots"}), 400, "invalid_argument")
    _error(alice.post("/v1/sandboxes", json={"image": "no-such"}), 404, "image_not_found")
    for path in ("../../etc/passwd", "/../x", "a/../../../b"):
        msg = _error(
            alice.get(f"/v1/sandboxes/{box}/files", params={"path": path}), 400, "invalid_argument"
        )
        assert "escapes the sandbox" in msg
        _error(
            alice.put(f"/v1/sandboxes/{box}/files", params={"path": path}, content=b"x"),
            400,
            "invalid_argument",
        )
        _error(
            alice.get(f"/v1/sandboxes/{box}/tree", params={"path": path}), 400, "invalid_argument"
        )
    _error(alice.get(f"/v1/sandboxes/{box}/files", params={"path": "/nope"}), 404, "no_such_file")
    _error(alice.get(f"/v1/sandboxes/{box}/files", params={"path": "/etc"}), 400, "is_a_directory")
    _error(alice.get(f"/v1/sandboxes/{box}/files"), 422, "validation_error")
    for unknown_id in ("0123456789ab", "../../etc", "x" * 300):
        _error(alice.get(f"/v1/sandboxes/{unknown_id}"), 404, "not_found")
        _error(
            alice.post(f"/v1/sandboxes/{unknown_id}/exec", json={"cmd": "true"}), 404, "not_found"
        )
    _error(alice.post("/v1/snapshots/snap-nope/fork", json={}), 404, "not_found")
    _error(alice.post("/v1/sessions/ses-nope/run", json={"cmd": "true"}), 404, "not_found")
    _error(alice.get("/v1/nowhere"), 404, "not_found")
    assert alice.get("/v1/health").status_code == 200


def test_oversized_uploads_are_413(tmp_path: Path, server: ServerProc) -> None:
    # the control: a server with the default limit takes the body the 1m one refuses
    big = os.urandom((1 << 20) + 1)
    default = _client(server, server.token("up-default"))
    sid = default.post("/v1/sandboxes", json={"memory": "128m"}).json()["id"]
    try:
        put = default.put(f"/v1/sandboxes/{sid}/files", params={"path": "/big"}, content=big)
        assert put.status_code == 204, put.text
        ran = default.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "stat -c %s /big"}).json()
        assert ran["stdout"] == f"{len(big)}\n", ran
    finally:
        default.delete(f"/v1/sandboxes/{sid}")
    server = ServerProc(tmp_path / "small.db").start("--max-upload", "1m")
    try:
        client = _client(server, server.token("up"))
        sid = client.post("/v1/sandboxes", json={"memory": "128m"}).json()["id"]
        _error(
            client.put(f"/v1/sandboxes/{sid}/files", params={"path": "/big"}, content=big),
            413,
            "too_large",
        )

        def chunks():  # no Content-Length: the limit must hold while streaming too
            for _ in range(3):
                yield bytes(1 << 19)

        _error(
            client.put(f"/v1/sandboxes/{sid}/tree", params={"path": "/t"}, content=chunks()),
            413,
            "too_large",
        )
        ok = client.put(f"/v1/sandboxes/{sid}/files", params={"path": "/ok"}, content=bytes(1000))
        assert ok.status_code == 204
        ls = client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "stat -c %s /ok; ls /"}).json()
        assert ls["stdout"].startswith("1000\n"), ls  # the small one landed
        assert "big" not in ls["stdout"].split() and "t" not in ls["stdout"].split(), ls
    finally:
        server.stop()


def test_idle_ttl_and_lifetime_delete_sandboxes_with_a_reason(server: ServerProc) -> None:
    token = server.token("ttl")
    idle = Sandbox.create(memory="128m", ttl=2, server=server.url, token=token)
    short = Sandbox.create(memory="128m", server=server.url, token=token, labels={"k": "v"})
    client = _client(server, token)
    client.delete(f"/v1/sandboxes/{short.id}")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        info = client.get(f"/v1/sandboxes/{idle.id}").json()
        if info["status"] != "running":
            break
        time.sleep(0.3)
    assert info["status"] == "deleted" and "idle" in info["reason"], info
    with pytest.raises(SandboxClosed, match="idle"):
        idle.exec("true")
    made = time.monotonic()  # before the request: the server's clock starts after this
    timed = client.post("/v1/sandboxes", json={"memory": "128m", "lifetime": 3}).json()
    # activity does not extend a lifetime: kept busy all along, it still ends
    deadline = made + 30
    while client.get(f"/v1/sandboxes/{timed['id']}").json()["status"] == "running":
        assert time.monotonic() < deadline, "busy, the sandbox outlived its lifetime"
        client.post(f"/v1/sandboxes/{timed['id']}/exec", json={"cmd": "true"})
        time.sleep(0.2)
    assert time.monotonic() - made >= 3  # at its lifetime, not before
    assert "lifetime" in client.get(f"/v1/sandboxes/{timed['id']}").json()["reason"]
    gone = client.get("/v1/sandboxes", params={"status": "deleted", "label": "k=v"}).json()
    assert [s["id"] for s in gone["sandboxes"]] == [short.id]


def test_sessions_snapshots_forks_and_audit_over_http(server: ServerProc) -> None:
    token = server.token("snap")
    with Sandbox.create(memory="256m", server=server.url, token=token) as sb:
        with sb.session() as sh:
            sh.run("cd /tmp && export X=1")
            assert sh.run('echo "$X $(pwd)"').stdout == "1 /tmp\n"
        sb.write_text("/state", "v1")
        snap = sb.snapshot()
        sb.write_text("/state", "v2")
        with snap.fork(labels={"from": "snap"}) as child:
            assert child.read_text("/state") == "v1"
            with pytest.raises(InUse, match="in use"):
                snap.remove()  # 409 while the fork stands on it
            assert child.info["labels"] == {"from": "snap"}
        with pytest.raises(SandboxNotFound):
            Sandbox.create(snap.id, server=server.url, token=server.token("other"))
        assert [e["command"] for e in sb.audit_log()][-1].startswith("echo")
        kept = sb.snapshot()
        kept.remove()
        with pytest.raises(SandboxNotFound):
            kept.remove()
    # the sandbox is gone, and with it the snapshot nothing stands on any more
    with pytest.raises(SandboxNotFound):
        snap.remove()


def test_openapi_health_and_metrics(server: ServerProc, alice: httpx.Client, box: str) -> None:
    for route in ("/openapi.json", "/docs", "/metrics"):
        _error(httpx.get(f"{server.url}{route}"), 401, "unauthorized")
    spec = alice.get("/openapi.json").json()
    paths = spec["paths"]
    for route in (
        "/v1/sandboxes",
        "/v1/sandboxes/{sandbox_id}/exec",
        "/v1/sandboxes/{sandbox_id}/tree",
    ):
        assert route in paths
    create = paths["/v1/sandboxes"]["post"]
    assert {"201", "401", "403", "422"} <= set(create["responses"])
    assert create["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ErrorBody"
    )
    upload = paths["/v1/sandboxes/{sandbox_id}/files"]["put"]
    assert "application/octet-stream" in upload["requestBody"]["content"]
    assert "413" in upload["responses"]
    exec_reply = paths["/v1/sandboxes/{sandbox_id}/exec"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "application/x-ndjson"} <= set(exec_reply)
    health = httpx.get(f"{server.url}/v1/health").json()
    assert health["status"] == "ok" and health["sandboxes"] >= 1
    alice.post(f"/v1/sandboxes/{box}/exec", json={"cmd": "true"})
    assert "swagger" in alice.get("/docs").text.lower()
    text = alice.get("/metrics").text
    assert "rockroll_sandboxes_live" in text and "rockroll_exec_commands_total" in text
    assert 'route="/v1/sandboxes/{sandbox_id}/exec"' in text


def test_a_second_server_on_the_same_state_is_refused(server: ServerProc) -> None:
    twin = ServerProc(server.db)
    with pytest.raises(RuntimeError, match="another `rockroll serve`"):
        twin.start(timeout=30)
