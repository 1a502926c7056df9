"""Files: read, write and remove one, list a directory, stat a path, and read or write a
whole tree as a tar archive (the `files` tag). Reads stream; sizes are checked first."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from rockroll.service.api_errors import ERRORS, ApiError
from rockroll.service.auth import Caller
from rockroll.service.bodies import FileInfo
from rockroll.service.state import Svc

CHUNK = 1 << 20
router = APIRouter(tags=["files"])
PathQ = Annotated[str, Query(description="path inside the sandbox", min_length=1)]
_BINARY = {"schema": {"type": "string", "format": "binary"}}
RAW_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": _BINARY}}}
TAR_BODY = {"requestBody": {"required": True, "content": {"application/x-tar": _BINARY}}}
RAW_REPLY: dict = {200: {"content": {"application/octet-stream": _BINARY}}}
TAR_REPLY: dict = {200: {"content": {"application/x-tar": _BINARY}}}
TOO_BIG = {413: ERRORS[400] | {"description": "over the upload limit"}}


@router.get("/v1/sandboxes/{sandbox_id}/files", response_class=Response, responses=RAW_REPLY)
async def read_file(
    sandbox_id: str,
    path: PathQ,
    who: Caller,
    svc: Svc,
    max_bytes: Annotated[int | None, Query(ge=0, description="refuse bigger files")] = None,
) -> Response:
    """The file's bytes (application/octet-stream), streamed; 413 (before reading) for a
    file over `max_bytes` or the server's --max-download."""
    limit = svc.limits.download
    cap = limit if max_bytes is None else min(max_bytes, limit)
    pool = svc.pool

    def opened() -> tuple[Any, int]:
        return pool.get(who, sandbox_id).open_read(path, cap)

    fh, size = await svc.slots.run(who, opened)
    return StreamingResponse(
        file_chunks(fh, svc.slots.threads),
        media_type="application/octet-stream",
        headers={"content-length": str(size)},
    )


@router.put(
    "/v1/sandboxes/{sandbox_id}/files", status_code=204, openapi_extra=RAW_BODY, responses=TOO_BIG
)
async def write_file(
    sandbox_id: str,
    path: PathQ,
    request: Request,
    who: Caller,
    svc: Svc,
    mode: Annotated[str, Query(pattern="^0?[0-7]{3,4}$")] = "0644",
) -> Response:
    """Write the request body to `path`, creating parent directories."""
    data = await read_body(request, svc.limits.upload)
    pool = svc.pool

    def write() -> None:
        pool.get(who, sandbox_id).write_bytes(path, data, int(mode, 8))

    await svc.slots.run(who, write)
    return Response(status_code=204)


@router.delete("/v1/sandboxes/{sandbox_id}/files")
async def remove_file(sandbox_id: str, path: PathQ, who: Caller, svc: Svc) -> dict[str, bool]:
    """Remove a file, link or whole directory (never following links)."""
    removed = await svc.slots.run(who, lambda: svc.pool.get(who, sandbox_id).remove(path))
    return {"removed": removed}


@router.get("/v1/sandboxes/{sandbox_id}/dir", response_model=list[FileInfo])
async def list_dir(sandbox_id: str, path: PathQ, who: Caller, svc: Svc) -> list[FileInfo]:
    return await svc.slots.run(who, lambda: svc.pool.get(who, sandbox_id).list_dir(path))


@router.get("/v1/sandboxes/{sandbox_id}/stat")
async def stat(sandbox_id: str, path: PathQ, who: Caller, svc: Svc) -> dict[str, bool]:
    """Whether `path` exists, and whether it is a directory."""

    def look() -> dict[str, bool]:
        sandbox = svc.pool.get(who, sandbox_id)
        found = sandbox.exists(path)
        return {"exists": found, "is_dir": found and sandbox.is_dir(path)}

    return await svc.slots.run(who, look)


@router.get("/v1/sandboxes/{sandbox_id}/tree", response_class=Response, responses=TAR_REPLY)
async def read_tree(
    sandbox_id: str,
    path: PathQ,
    who: Caller,
    svc: Svc,
    max_bytes: Annotated[int | None, Query(ge=0, description="refuse bigger trees")] = None,
) -> Response:
    """A directory's contents as an uncompressed tar archive (application/x-tar), made by
    the server (never by the sandbox's own `tar`); 413 for a tree whose files pass
    `max_bytes` or the server's --max-tree, checked before anything is sent."""
    limit = svc.limits.tree
    cap = limit if max_bytes is None else min(max_bytes, limit)

    def archive() -> Any:
        sandbox = svc.pool.get(who, sandbox_id)
        if not sandbox.is_dir(path):
            raise ApiError(400, "invalid_argument", f"{path!r} is not a directory", "path")
        spool = tempfile.SpooledTemporaryFile(8 << 20)  # noqa: SIM115 (closed by the stream)
        try:
            sandbox.write_tar(path, spool, cap)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool

    spool = await svc.slots.run(who, archive)
    return StreamingResponse(file_chunks(spool, svc.slots.threads), media_type="application/x-tar")


@router.put(
    "/v1/sandboxes/{sandbox_id}/tree", status_code=204, openapi_extra=TAR_BODY, responses=TOO_BIG
)
async def write_tree(
    sandbox_id: str,
    path: PathQ,
    request: Request,
    who: Caller,
    svc: Svc,
    owner: Annotated[str | None, Query(description="user[:group] to own the files")] = None,
) -> Response:
    """Unpack the tar archive in the body into the directory `path` (created if missing)."""
    data = await read_body(request, svc.limits.upload)
    pool = svc.pool

    def unpack() -> None:
        pool.get(who, sandbox_id).write_tree(path, data, owner=owner)

    await svc.slots.run(who, unpack)
    return Response(status_code=204)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the upload is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the upload passed the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def file_chunks(fh: Any, threads: anyio.CapacityLimiter) -> AsyncIterator[bytes]:
    try:
        while chunk := await anyio.to_thread.run_sync(fh.read, CHUNK, limiter=threads):
            yield chunk
    finally:
        fh.close()
