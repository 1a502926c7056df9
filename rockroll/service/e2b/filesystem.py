"""envd's `filesystem.Filesystem` service: Stat, ListDir (to a depth), MakeDir, Remove and
Move, done by the host inside the sandbox's root as rockroll's file routes are (Move alone
runs `mv` in the sandbox, as its root). Symlinks are listed as files; owners as root. The
watchers (WatchDir, CreateWatcher, GetWatcherEvents, RemoveWatcher) are refused as
unimplemented, saying so."""

from __future__ import annotations

import io
import tarfile
from pathlib import PurePosixPath
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from rockroll.errors import InvalidArgument
from rockroll.sandbox.base import Sandbox
from rockroll.sandbox.types import FileInfo
from rockroll.service.e2b import messages
from rockroll.service.e2b.connect import RpcError
from rockroll.service.e2b.unary import refuse_the_rest, unary
from rockroll.service.state import Svc

router = APIRouter(include_in_schema=False)
PREFIX = "/filesystem.Filesystem"
MAX_ENTRIES = 100_000  # entries of one listing


def _path(sandbox: Sandbox, message: dict[str, Any], key: str = "path") -> str:
    value = message.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{key} must be a path")
    return sandbox.path(value)


def stat_of(sandbox: Sandbox, path: str) -> FileInfo:
    """The listing entry of `path` (its parent's listing; "/" is made up)."""
    if path == "/":
        return FileInfo(path="/", name="", is_dir=True, size=0, mode=0o755, mtime=0.0)
    parent, name = str(PurePosixPath(path).parent), PurePosixPath(path).name
    for entry in sandbox.list_dir(parent):
        if entry.name == name:
            return entry
    raise RpcError("not_found", f"no such file or directory: {path}")


@router.post(f"{PREFIX}/Stat")
async def stat(request: Request, svc: Svc) -> Response:
    def work(sandbox: Sandbox, message: dict[str, Any]) -> dict[str, Any]:
        return {"entry": messages.entry_info(stat_of(sandbox, _path(sandbox, message)))}

    return await unary(request, svc, work)


@router.post(f"{PREFIX}/ListDir")
async def list_dir(request: Request, svc: Svc) -> Response:
    def work(sandbox: Sandbox, message: dict[str, Any]) -> dict[str, Any]:
        path, depth = _path(sandbox, message), int(message.get("depth") or 1)
        if not stat_of(sandbox, path).is_dir:
            raise RpcError("invalid_argument", f"path is not a directory: {path}")
        entries: list[FileInfo] = []
        _walk(sandbox, path, depth, entries)
        return {"entries": [messages.entry_info(e) for e in entries]}

    return await unary(request, svc, work)


def _walk(sandbox: Sandbox, path: str, depth: int, out: list[FileInfo]) -> None:
    for entry in sandbox.list_dir(path):
        if len(out) >= MAX_ENTRIES:
            raise RpcError("resource_exhausted", f"over {MAX_ENTRIES} entries under {path}")
        out.append(entry)
        if entry.is_dir and depth > 1:
            _walk(sandbox, entry.path, depth - 1, out)


@router.post(f"{PREFIX}/MakeDir")
async def make_dir(request: Request, svc: Svc) -> Response:
    def work(sandbox: Sandbox, message: dict[str, Any]) -> dict[str, Any]:
        path = _path(sandbox, message)
        if sandbox.exists(path):
            raise RpcError("already_exists", f"directory already exists: {path}")
        sandbox.write_tree(path, _EMPTY_TAR)  # creates it and its parents
        return {"entry": messages.entry_info(stat_of(sandbox, path))}

    return await unary(request, svc, work)


@router.post(f"{PREFIX}/Remove")
async def remove(request: Request, svc: Svc) -> Response:
    def work(sandbox: Sandbox, message: dict[str, Any]) -> dict[str, Any]:
        path = _path(sandbox, message)
        if not sandbox.remove(path):
            raise RpcError("not_found", f"no such file or directory: {path}")
        return {}

    return await unary(request, svc, work)


@router.post(f"{PREFIX}/Move")
async def move(request: Request, svc: Svc) -> Response:
    def work(sandbox: Sandbox, message: dict[str, Any]) -> dict[str, Any]:
        source, target = _path(sandbox, message, "source"), _path(sandbox, message, "destination")
        stat_of(sandbox, source)
        result = sandbox.exec(["mv", "-T", "--", source, target], timeout=60, user="0")
        if result.exit_code != 0:
            raise RpcError("invalid_argument", result.stderr.strip() or "mv failed")
        return {"entry": messages.entry_info(stat_of(sandbox, target))}

    return await unary(request, svc, work)


refuse_the_rest(router, PREFIX, "directory watchers")


def _empty_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w"):
        pass
    return out.getvalue()


_EMPTY_TAR = _empty_tar()
