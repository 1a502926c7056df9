"""envd's `process.Process` service: Start (a server stream of the command's pid, output and
exit), Connect (follow a running command), List and SendSignal. PTYs, stdin (`stdin=True`,
SendInput, StreamInput, CloseStdin) and Update are refused as unimplemented, saying so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from rockroll.errors import InvalidArgument, QuotaExceeded, SandboxClosed
from rockroll.sandbox.base import Sandbox
from rockroll.service.e2b import messages
from rockroll.service.e2b.access import E2bHttpError, envd_sandbox, envd_target, envd_user
from rockroll.service.e2b.connect import (
    STREAM_TYPE,
    RpcError,
    end_stream,
    envelope,
    rpc_error_of,
    stream_request,
    timeout_of,
    unimplemented,
)
from rockroll.service.e2b.processes import SIGNALS, Config, Follower, Process, ProcessTable
from rockroll.service.e2b.unary import refuse_the_rest, unary
from rockroll.service.state import Svc

router = APIRouter(include_in_schema=False)
PREFIX = "/process.Process"
KEEPALIVE = 50.0  # seconds between keepalive events of an idle stream


def table(request: Request) -> ProcessTable:
    return request.app.state.e2b_processes  # type: ignore[no-any-return]


@router.post(f"{PREFIX}/Start")
async def start(request: Request, svc: Svc) -> Response:
    who, sandbox_id = envd_target(request)
    procs, loop = table(request), asyncio.get_running_loop()
    user, deadline = envd_user(request), timeout_of(request)
    try:
        message = await stream_request(request)
        config, tag = _config(message)

        def begin() -> tuple[Process, Follower]:
            sandbox = envd_sandbox(svc, who, sandbox_id)
            return procs.start(
                who, sandbox, config, tag=tag, user=user, timeout=deadline, loop=loop
            )

        proc, follower = await svc.slots.run(who, begin)
    except E2bHttpError:
        raise  # the proxy's answer: the sandbox is not the caller's to reach
    except Exception as exc:
        return _stream(_failed(_error(exc, sandbox_id)))
    return _stream(_events(proc, follower))


@router.post(f"{PREFIX}/Connect")
async def connect(request: Request, svc: Svc) -> Response:
    who, sandbox_id = envd_target(request)
    procs, loop = table(request), asyncio.get_running_loop()
    try:
        message = await stream_request(request)

        def find() -> Process:
            envd_sandbox(svc, who, sandbox_id)
            return _select(procs, sandbox_id, message.get("process"))

        proc = await svc.slots.run(who, find)
    except E2bHttpError:
        raise
    except Exception as exc:
        return _stream(_failed(_error(exc, sandbox_id)))
    return _stream(_events(proc, proc.follow(loop)))


@router.post(f"{PREFIX}/List")
async def list_processes(request: Request, svc: Svc) -> Response:
    procs = table(request)

    def work(sandbox: Sandbox, message: dict[str, Any]) -> dict[str, Any]:
        return {"processes": [messages.process_info(p) for p in procs.running(sandbox.id)]}

    return await unary(request, svc, work)


@router.post(f"{PREFIX}/SendSignal")
async def send_signal(request: Request, svc: Svc) -> Response:
    procs = table(request)

    def work(sandbox: Sandbox, message: dict[str, Any]) -> dict[str, Any]:
        sig = SIGNALS.get(message.get("signal", ""))
        if sig is None:
            raise InvalidArgument(f"signal must be SIGNAL_SIGKILL or SIGNAL_SIGTERM: {message}")
        procs.signal(sandbox, _select(procs, sandbox.id, message.get("process")), sig)
        return {}

    return await unary(request, svc, work)


refuse_the_rest(router, PREFIX, "stdin and PTYs")


def _config(message: dict[str, Any]) -> tuple[Config, str | None]:
    if message.get("pty"):
        raise unimplemented("a PTY (sandbox.pty)")
    if message.get("stdin"):
        raise unimplemented("a command's stdin (stdin=True)")
    process = message.get("process") or {}
    cmd = process.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        raise InvalidArgument("process.cmd must name the program to run")
    args, envs = process.get("args") or [], process.get("envs") or {}
    if not all(isinstance(a, str) for a in args):
        raise InvalidArgument("process.args must be strings")
    cwd = process.get("cwd") or None
    return Config(cmd=cmd, args=list(args), envs=dict(envs), cwd=cwd), message.get("tag")


def _select(procs: ProcessTable, sandbox_id: str, selector: Any) -> Process:
    """The running command a ProcessSelector (`{"pid": N}` or `{"tag": T}`) names."""
    selector = selector if isinstance(selector, dict) else {}
    if "pid" in selector:
        pid = selector["pid"]
        found = procs.get(sandbox_id, int(pid)) if str(pid).isdigit() else None
        what = f"pid {pid}"
    elif "tag" in selector:
        found, what = procs.find(sandbox_id, str(selector["tag"])), f"tag {selector['tag']!r}"
    else:
        raise InvalidArgument("process must select a command by pid or tag")
    if found is None:
        raise RpcError("not_found", f"process with {what} not found")
    return found


def _error(exc: BaseException, sandbox_id: str) -> RpcError:
    if isinstance(exc, SandboxClosed):
        return RpcError("unavailable", f"The sandbox {sandbox_id} was not found ({exc})")
    if isinstance(exc, TimeoutError):
        return RpcError("deadline_exceeded", str(exc))
    if isinstance(exc, QuotaExceeded):
        return RpcError("resource_exhausted", str(exc))
    return rpc_error_of(exc)


def _stream(frames: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(frames, media_type=STREAM_TYPE)


async def _failed(error: RpcError) -> AsyncIterator[bytes]:
    yield end_stream(error)


async def _events(proc: Process, follower: Follower) -> AsyncIterator[bytes]:
    """The command's events as Connect frames: start, output, end (or the run's error). The
    caller leaving does not stop the command (E2B's `disconnect`); its deadline does."""
    try:
        yield envelope(messages.start_event(proc.pid))
        while True:
            item = await follower.next(KEEPALIVE)
            if item is None:
                yield envelope(messages.keepalive_event())
                continue
            kind, value = item
            if kind != "end":
                yield envelope(messages.data_event(kind, value))
                continue
            if value.timed_out:
                yield end_stream(RpcError("deadline_exceeded", "the command's timeout passed"))
            elif value.error is not None:
                yield end_stream(_error(value.error, proc.sandbox_id))
            else:
                yield envelope(messages.end_event(value))
                yield end_stream()
            return
    finally:
        proc.leave(follower)
