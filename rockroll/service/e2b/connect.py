"""Connect-RPC as the e2b SDK speaks it to envd: the JSON codec over HTTP/1.1.

Unary calls carry one JSON message as the body (`application/json`) and answer one, or an
error status with `{"code", "message"}`. Server-streaming calls carry one enveloped message
(`application/connect+json`) and answer enveloped messages: a 5-byte prefix (a flags byte and
a big-endian uint32 length) before each JSON message, the last one flagged 0x02 with
`{}` or `{"error": {"code", "message"}}`. Only the JSON codec is spoken (the SDK's); a binary
protobuf request is refused, saying so. Messages are plain dicts in proto3's JSON mapping
(camelCase names, int64 as strings, bytes as base64, enums by name).
"""

from __future__ import annotations

import json
import struct
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from rockroll.errors import wire

END_STREAM = 0x02
STREAM_TYPE = "application/connect+json"
UNARY_TYPE = "application/json"
# Connect's HTTP status for each error code (connectrpc.com/docs/protocol#error-codes).
STATUS = {
    "canceled": 499,
    "unknown": 500,
    "invalid_argument": 400,
    "deadline_exceeded": 504,
    "not_found": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "resource_exhausted": 429,
    "failed_precondition": 400,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "data_loss": 500,
    "unauthenticated": 401,
}
# rockroll's HTTP status of an error (rockroll.errors.wire) as a Connect code.
_BY_STATUS = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    409: "already_exists",
    410: "not_found",
    413: "resource_exhausted",
    422: "invalid_argument",
    429: "resource_exhausted",
}


class RpcError(Exception):
    """An error a Connect call answers with: its code (a key of STATUS) and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

    def body(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def unimplemented(what: str) -> RpcError:
    return RpcError("unimplemented", f"{what} is not supported by rockroll's E2B layer")


def rpc_error_of(exc: BaseException) -> RpcError:
    """The Connect error for any exception: RpcError as it is, rockroll's and Python's known
    errors by their status, anything else as internal (naming the bug)."""
    if isinstance(exc, RpcError):
        return exc
    if isinstance(exc, FileExistsError):
        return RpcError("already_exists", str(exc))
    known = wire(exc)
    if known is None:
        return RpcError("internal", f"{type(exc).__name__}: {exc}")
    status, _, message = known
    return RpcError(_BY_STATUS.get(status, "internal"), message)


def error_response(error: RpcError) -> Response:
    """A unary call's error: the code's status and the JSON error body."""
    return Response(
        json.dumps(error.body()), status_code=STATUS.get(error.code, 500), media_type=UNARY_TYPE
    )


def unary_response(message: dict[str, Any]) -> Response:
    return Response(json.dumps(message), media_type=UNARY_TYPE)


async def unary_request(request: Request) -> dict[str, Any]:
    """The JSON message of a unary call; RpcError for another codec or a body that is not
    one JSON object."""
    _check_codec(request.headers.get("content-type", ""), UNARY_TYPE)
    return _decode(await request.body())


async def stream_request(request: Request) -> dict[str, Any]:
    """The one enveloped JSON message of a server-streaming call."""
    _check_codec(request.headers.get("content-type", ""), STREAM_TYPE)
    body = await request.body()
    if len(body) < 5:
        raise RpcError("invalid_argument", "the request is not an enveloped Connect message")
    flags, size = struct.unpack(">BI", body[:5])
    if flags & 0x01:
        raise RpcError("unimplemented", "compressed requests are not supported")
    return _decode(body[5 : 5 + size])


def envelope(message: dict[str, Any], flags: int = 0) -> bytes:
    data = json.dumps(message).encode()
    return struct.pack(">BI", flags, len(data)) + data


def end_stream(error: RpcError | None = None) -> bytes:
    """The last frame of a stream: `{}`, or the error."""
    return envelope({} if error is None else {"error": error.body()}, END_STREAM)


def timeout_of(request: Request) -> float | None:
    """Seconds of the call's `Connect-Timeout-Ms` header (None: no deadline)."""
    value = request.headers.get("connect-timeout-ms", "")
    return int(value) / 1000 if value.isdigit() and int(value) > 0 else None


def _check_codec(content_type: str, wanted: str) -> None:
    kind = content_type.partition(";")[0].strip().lower()
    if kind != wanted:
        raise RpcError(
            "unimplemented",
            f"content-type {kind or '(none)'!r}: only Connect's JSON codec ({wanted}) is "
            "spoken here, as the e2b SDK sends it",
        )


def _decode(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data or b"{}")
    except ValueError as exc:
        raise RpcError("invalid_argument", f"the message is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise RpcError("invalid_argument", "the message must be a JSON object")
    return message
