"""envd's plain HTTP routes: `GET /health`, and `/files` to read a file (`GET`) or write
files (`POST`, a multipart/form-data body of `file` parts named by their paths, or one
application/octet-stream body for `?path=`). Sizes are bounded by the server's
--max-download and --max-upload; files are written by the host, owned by the sandbox's root
(`?username=` is not honoured); gzip-encoded bodies are refused."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from rockroll.service.e2b import messages
from rockroll.service.e2b.access import E2bHttpError, envd_sandbox, envd_target, http_error_of
from rockroll.service.routes.files import file_chunks, read_body
from rockroll.service.state import Svc

router = APIRouter(include_in_schema=False)
PathQ = Annotated[str | None, Query()]


@router.get("/health")
async def health(request: Request, svc: Svc) -> Response:
    """204 while the caller's sandbox runs; the proxy's 502 once it is gone."""
    who, sandbox_id = envd_target(request)
    await svc.slots.control(who, envd_sandbox, svc, who, sandbox_id)
    return Response(status_code=204)


@router.get("/files")
async def read_file(request: Request, svc: Svc, path: PathQ = None) -> Response:
    who, sandbox_id = envd_target(request)
    if not path:
        raise E2bHttpError(400, "the path query parameter names the file to read")
    cap = svc.limits.download

    def opened() -> tuple[Any, int]:
        sandbox = envd_sandbox(svc, who, sandbox_id)
        try:
            return sandbox.open_read(path, cap)
        except Exception as exc:
            raise http_error_of(exc) from None

    fh, size = await svc.slots.run(who, opened)
    return StreamingResponse(
        file_chunks(fh, svc.slots.threads),
        media_type="application/octet-stream",
        headers={"content-length": str(size)},
    )


@router.post("/files")
async def write_files(request: Request, svc: Svc, path: PathQ = None) -> Response:
    who, sandbox_id = envd_target(request)
    if request.headers.get("content-encoding", "identity") != "identity":
        raise E2bHttpError(400, "compressed uploads (gzip=True) are not supported")
    kind = request.headers.get("content-type", "")
    try:
        body = await read_body(request, svc.limits.upload)
    except Exception as exc:
        raise http_error_of(exc) from None
    if kind.startswith("multipart/form-data"):
        files = _multipart(body, kind)
        if path and len(files) == 1:
            files = [(path, files[0][1])]
    elif path:
        files = [(path, body)]
    else:
        raise E2bHttpError(400, "an octet-stream upload names its file with ?path=")

    def write() -> list[dict[str, Any]]:
        sandbox = envd_sandbox(svc, who, sandbox_id)
        written = []
        try:
            for name, data in files:
                sandbox.write_bytes(name, data)
                written.append(messages.write_info(sandbox.path(name)))
        except Exception as exc:
            raise http_error_of(exc) from None
        return written

    return _json(await svc.slots.run(who, write))


def _json(value: Any) -> Response:
    return Response(json.dumps(value), media_type="application/json")


def _multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """The (filename, data) of each part of a multipart/form-data body."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        raise E2bHttpError(400, "the multipart body has no boundary")
    delimiter = b"\r\n--" + boundary.encode()
    files = []
    for part in (b"\r\n" + body).split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            raise E2bHttpError(400, "a multipart part has no header")
        name = _filename(head.decode(errors="replace"))
        if name:
            files.append((name, data))
    if not files:
        raise E2bHttpError(400, "the multipart body has no file part")
    return files


def _filename(head: str) -> str | None:
    for line in head.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() != "content-disposition":
            continue
        for param in value.split(";"):
            name, _, quoted = param.strip().partition("=")
            if name.lower() == "filename":
                return quoted.strip().strip('"') or None
    return None
