"""`rockroll serve`: one server per database, reconciled at start, drained at stop.

The database is locked for as long as the server runs, so a second server on the same state
cannot adopt (and then delete) the first one's sandboxes. A SIGTERM or Ctrl-C stops accepting
requests, lets uvicorn finish the ones in flight, then deletes every live sandbox unless
`keep` was asked for (then the next start adopts them). A connection that has not sent a whole
request head within `header_timeout` seconds is closed (uvicorn itself waits forever), and the
server holds at most `max_connections` at once.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rockroll.errors import SetupError
from rockroll.service.pool import Pool, ReconcileReport
from rockroll.service.store import Store

DEFAULT_PORT = 8321


@dataclass
class ServeOptions:
    """How `rockroll serve` runs."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: str | None = None  # default: $ROCKROLL_HOME/service.db
    keep: bool = False  # leave sandboxes running at shutdown, for the next start to adopt
    reap_every: float = 1.0  # seconds between idle-TTL and deadline checks
    max_upload: int = 256 << 20  # bytes of one file or tree upload
    max_download: int = 256 << 20  # bytes of one file read (GET /files)
    max_tree: int = 1 << 30  # bytes of files in one tree read (GET /tree)
    public_metrics: bool = False  # /metrics and the OpenAPI documents without a token
    header_timeout: float = 10.0  # seconds a client has to send a request's head
    max_connections: int = 4096
    log_level: str = "warning"
    e2b: bool = False  # also speak E2B's API, for the e2b SDK (rockroll.service.e2b)


def lock_database(path: Path) -> int:
    """Hold an exclusive lock beside the database; refuse if another server holds it."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SetupError(
            f"another `rockroll serve` uses {path}; stop it, or give this one its own --db"
        ) from None
    return fd


def serve(options: ServeOptions, say: Callable[[str], None] = print) -> ReconcileReport:
    """Run the server until it is stopped; returns what the start-up reconciliation found."""
    import uvicorn

    from rockroll.service.app import create_app

    store = Store(options.db)
    lock = lock_database(store.path)
    try:
        pool = Pool(store)
        report = pool.reconcile()
        say(
            f"state {store.path}: {len(report.adopted)} sandbox(es) adopted, "
            f"{len(report.lost)} lost, {len(report.removed)} stray removed"
        )
        pool.start_reaper(options.reap_every)
        say(f"serving sandboxes on http://{options.host}:{options.port} (docs at /docs)")
        if options.e2b:
            say(f"E2B API on: E2B_API_URL=E2B_SANDBOX_URL=http://{options.host}:{options.port}")
        HeadDeadline.seconds = options.header_timeout
        # uvicorn drains requests on SIGTERM, then re-raises the signal; with the default
        # handler that would kill the process before the sandboxes are deleted.
        previous = signal.signal(signal.SIGTERM, _exit_cleanly)
        try:
            app = create_app(
                pool,
                max_upload=options.max_upload,
                max_download=options.max_download,
                max_tree=options.max_tree,
                public_metrics=options.public_metrics,
                e2b=options.e2b,
            )
            uvicorn.run(
                app,
                host=options.host,
                port=options.port,
                log_level=options.log_level,
                timeout_graceful_shutdown=30,
                http=HeadDeadline,
                limit_concurrency=options.max_connections,
            )
        finally:
            signal.signal(signal.SIGTERM, previous)
            pool.shutdown(keep=options.keep)
            say("stopped" + (" (sandboxes kept)" if options.keep else "; sandboxes deleted"))
        return report
    finally:
        os.close(lock)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


class HeadDeadline(HttpToolsProtocol):
    """uvicorn's protocol, closing connections whose request head takes longer than `seconds`
    (from the connection, or from the first byte of a kept-alive connection's next request):
    a client that opens connections and never finishes a request cannot hold them forever."""

    seconds = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()
