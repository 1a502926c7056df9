"""`AsyncSandbox`: any `Sandbox` for asyncio code, its blocking calls run on a thread pool."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rockroll.sandbox.base import Sandbox, Snapshot
from rockroll.sandbox.types import ExecResult, FileInfo


class AsyncSandbox:
    """`Sandbox` for asyncio code: `async with await AsyncSandbox.create() as sb: ...`.

    Each call runs the blocking operation on a thread of a pool sized for hundreds of concurrent
    commands (asyncio's default pool has only a handful of threads), so many sandboxes and
    commands proceed concurrently on one event loop.
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self.sync = sandbox

    @classmethod
    async def create(cls, image: str | Snapshot = "base", **kwargs: Any) -> AsyncSandbox:
        return cls(await in_thread(Sandbox.create, image, **kwargs))

    @property
    def id(self) -> str:
        return self.sync.id

    async def exec(self, cmd: str | list[str], **kwargs: Any) -> ExecResult:
        return await in_thread(self.sync.exec, cmd, **kwargs)

    async def read_bytes(self, path: str) -> bytes:
        return await in_thread(self.sync.read_bytes, path)

    async def read_text(self, path: str) -> str:
        return await in_thread(self.sync.read_text, path)

    async def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        await in_thread(self.sync.write_bytes, path, data, mode)

    async def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        await in_thread(self.sync.write_text, path, text, mode)

    async def list_dir(self, path: str = ".") -> list[FileInfo]:
        return await in_thread(self.sync.list_dir, path)

    async def upload(self, local: str | os.PathLike[str], remote: str) -> None:
        await in_thread(self.sync.upload, local, remote)

    async def download(self, remote: str, local: str | os.PathLike[str]) -> None:
        await in_thread(self.sync.download, remote, local)

    async def snapshot(self) -> Snapshot:
        return await in_thread(self.sync.snapshot)

    async def fork(self, **overrides: Any) -> AsyncSandbox:
        return AsyncSandbox(await in_thread(self.sync.fork, **overrides))

    async def close(self) -> None:
        await in_thread(self.sync.close)

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


_POOL: ThreadPoolExecutor | None = None


async def in_thread(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking call on the shared pool; threads are started only as needed."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=512, thread_name_prefix="rockroll-async")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_POOL, functools.partial(func, *args, **kwargs))
