"""`rockroll serve`: one server per database, reconciled at start, drained at stop.

The database is locked for as long as the server runs, so a second server on the same state
cannot adopt (and then delete) the first one's sandboxes. A SIGTERM or Ctrl-C stops accepting
requests, lets uvicorn finish the ones in flight, then deletes every live sandbox unless
`keep` was asked for (then the next start adopts them).
"""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rockroll.sandbox.errors import SetupError
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
    log_level: str = "warning"


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
        # uvicorn drains requests on SIGTERM, then re-raises the signal; with the default
        # handler that would kill the process before the sandboxes are deleted.
        previous = signal.signal(signal.SIGTERM, _exit_cleanly)
        try:
            uvicorn.run(
                create_app(pool, max_upload=options.max_upload),
                host=options.host,
                port=options.port,
                log_level=options.log_level,
                timeout_graceful_shutdown=30,
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
