"""The app as `create_app` assembles it from the route modules, in process: every operation of
the HTTP API in its place (paths, methods, tags, operation ids: what clients generated from the
OpenAPI document rely on), the documents behind a token unless public, and each app's state its
own. Real HTTP, sandboxes and the error bodies of each route are in test_api.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rockroll.service.app import create_app
from rockroll.service.pool import Pool
from rockroll.service.store import Store

# (method, path, tag, the route's name: its operationId is made from name, path and method),
# in the order the document lists them.
OPERATIONS = [
    ("GET", "/v1/health", "service", "health"),
    ("GET", "/metrics", "service", "prometheus"),
    ("POST", "/v1/sandboxes", "sandboxes", "create_sandbox"),
    ("GET", "/v1/sandboxes", "sandboxes", "list_sandboxes"),
    ("GET", "/v1/sandboxes/{sandbox_id}", "sandboxes", "get_sandbox"),
    ("DELETE", "/v1/sandboxes/{sandbox_id}", "sandboxes", "delete_sandbox"),
    ("GET", "/v1/sandboxes/{sandbox_id}/audit", "sandboxes", "audit"),
    ("PUT", "/v1/sandboxes/{sandbox_id}/network", "sandboxes", "set_network"),
    ("GET", "/v1/sandboxes/{sandbox_id}/events", "sandboxes", "events"),
    ("POST", "/v1/sandboxes/{sandbox_id}/exec", "commands", "execute"),
    ("POST", "/v1/sandboxes/{sandbox_id}/kill", "commands", "kill_all"),
    ("POST", "/v1/sandboxes/{sandbox_id}/sessions", "commands", "open_session"),
    ("POST", "/v1/sessions/{session_id}/run", "commands", "session_run"),
    ("DELETE", "/v1/sessions/{session_id}", "commands", "close_session"),
    ("GET", "/v1/sandboxes/{sandbox_id}/files", "files", "read_file"),
    ("PUT", "/v1/sandboxes/{sandbox_id}/files", "files", "write_file"),
    ("DELETE", "/v1/sandboxes/{sandbox_id}/files", "files", "remove_file"),
    ("GET", "/v1/sandboxes/{sandbox_id}/dir", "files", "list_dir"),
    ("GET", "/v1/sandboxes/{sandbox_id}/stat", "files", "stat"),
    ("GET", "/v1/sandboxes/{sandbox_id}/tree", "files", "read_tree"),
    ("PUT", "/v1/sandboxes/{sandbox_id}/tree", "files", "write_tree"),
    ("POST", "/v1/sandboxes/{sandbox_id}/snapshots", "snapshots", "snapshot"),
    ("POST", "/v1/snapshots/{snapshot_id}/fork", "snapshots", "fork"),
    ("DELETE", "/v1/snapshots/{snapshot_id}", "snapshots", "remove_snapshot"),
    ("GET", "/v1/tokens", "tokens", "list_tokens"),
    ("POST", "/v1/tokens", "tokens", "create_token"),
    ("DELETE", "/v1/tokens/{token_id}", "tokens", "revoke_token"),
]


@pytest.fixture
def pool(tmp_path: Path) -> Pool:
    return Pool(Store(tmp_path / "service.db"))


def _operations(spec: dict) -> list[tuple[str, str, str, str]]:
    found = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            # FastAPI's default operationId: route name + path, non-word characters as "_"
            suffix = re.sub(r"\W", "_", path) + "_" + method
            assert op["operationId"].endswith(suffix), op["operationId"]
            name = op["operationId"].removesuffix(suffix)
            found.append((method.upper(), path, op["tags"][0], name))
    return found


@pytest.mark.parametrize("public", [False, True])
def test_every_operation_is_mounted_once(pool: Pool, public: bool) -> None:
    spec = create_app(pool, public_metrics=public).openapi()
    expected = list(OPERATIONS)
    if public:  # /metrics is then the unguarded endpoint, named as it is
        expected[1] = ("GET", "/metrics", "service", "_metrics")
    assert _operations(spec) == expected
    assert spec["info"]["title"] == "rockroll sandbox service" and spec["info"]["version"] == "1"
    # Every operation documents the error body, whichever route module it comes from.
    for path, ops in spec["paths"].items():
        for op in ops.values():
            ref = op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorBody"), path


def test_documents_and_metrics_need_a_token_unless_public(pool: Pool) -> None:
    secret = pool.store.create_token("alice")[1]
    guarded = TestClient(create_app(pool))
    public = TestClient(create_app(pool, public_metrics=True))
    for route in ("/openapi.json", "/docs", "/metrics"):
        refused = guarded.get(route)
        assert refused.status_code == 401, route
        assert refused.json()["error"]["code"] == "unauthorized"
        assert guarded.get(route, headers={"Authorization": f"Bearer {secret}"}).status_code == 200
        assert public.get(route).status_code == 200, route
    assert guarded.get("/v1/health").json()["status"] == "ok"


def test_each_app_keeps_its_own_state(pool: Pool) -> None:
    secret = pool.store.create_token("alice")[1]
    auth = {"Authorization": f"Bearer {secret}"}
    first, second = TestClient(create_app(pool)), TestClient(create_app(pool, max_upload=10))
    assert first.get("/v1/sandboxes", headers=auth).status_code == 200
    counted = 'rockroll_http_requests_total{method="GET",route="/v1/sandboxes",status="200"} 1.0'
    assert counted in first.get("/metrics", headers=auth).text
    assert 'route="/v1/sandboxes"' not in second.get("/metrics", headers=auth).text
    # The upload limit is the app's: 11 bytes pass one app's check (then the sandbox is not
    # found) and not the other's.
    put = "/v1/sandboxes/sb-none/files?path=/x"
    assert first.put(put, content=b"x" * 11, headers=auth).status_code == 404
    too_big = second.put(put, content=b"x" * 11, headers=auth)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "too_large"


def test_a_revoked_token_is_refused_at_once(pool: Pool) -> None:
    admin = {"Authorization": f"Bearer {pool.store.create_token('root', admin=True)[1]}"}
    client = TestClient(create_app(pool))
    made = client.post("/v1/tokens", json={"name": "carol"}, headers=admin).json()
    carol = {"Authorization": f"Bearer {made['secret']}"}
    assert client.get("/v1/sandboxes", headers=carol).status_code == 200
    assert client.delete(f"/v1/tokens/{made['id']}", headers=admin).status_code == 204
    gone = client.get("/v1/sandboxes", headers=carol)
    assert gone.status_code == 401 and "revoked" in gone.json()["error"]["message"]
