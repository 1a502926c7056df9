"""The server's state in SQLite: tokens, sandboxes and snapshots, and who owns each.

One file (`$ROCKROLL_HOME/service.db` by default) in WAL mode, so a reader never waits for a
writer and a `kill -9` loses nothing that was committed. A sandbox's row is written (status
`creating`) before the sandbox is started and updated once it runs, so after a crash every
sandbox the server ever started has a row to reconcile against.

Each call opens its own short transaction on a per-thread connection: the API runs handlers
on a thread pool, and sqlite3 connections must not cross threads.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rockroll.sandbox.errors import QuotaExceeded
from rockroll.sandbox.paths import rockroll_home

TOKEN_PREFIX = "rr_"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    admin INTEGER NOT NULL DEFAULT 0,
    max_sandboxes INTEGER,
    max_memory INTEGER,
    created REAL NOT NULL,
    revoked REAL
);
CREATE TABLE IF NOT EXISTS sandboxes (
    key TEXT PRIMARY KEY,
    id TEXT UNIQUE,
    owner TEXT NOT NULL REFERENCES tokens(id),
    status TEXT NOT NULL,
    reason TEXT,
    spec TEXT NOT NULL,
    memory INTEGER NOT NULL DEFAULT 0,
    labels TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    last_active REAL NOT NULL,
    idle_ttl REAL,
    deadline REAL,
    ended REAL
);
CREATE INDEX IF NOT EXISTS sandboxes_owner ON sandboxes(owner, status);
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES tokens(id),
    source TEXT NOT NULL,
    spec TEXT NOT NULL,
    created REAL NOT NULL
);
"""
LIVE = ("creating", "running")


def default_db() -> Path:
    return rockroll_home() / "service.db"


def hash_token(secret: str) -> str:
    """Tokens are stored as SHA-256 digests: they are long random strings, so no salt or slow
    hash is needed (nothing to brute-force), and a stolen database grants nothing."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Token:
    id: str
    name: str
    admin: bool
    max_sandboxes: int | None
    max_memory: int | None
    created: float
    revoked: float | None = None


@dataclass(frozen=True)
class SandboxRow:
    key: str
    id: str | None
    owner: str
    status: str
    reason: str | None
    spec: str
    memory: int
    labels: str
    created: float
    last_active: float
    idle_ttl: float | None
    deadline: float | None
    ended: float | None


@dataclass(frozen=True)
class SnapshotRow:
    id: str
    owner: str
    source: str
    spec: str
    created: float


class Store:
    """Typed access to the service database; safe to share between threads."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_db()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- tokens --------------------------------------------------------------------------------
    def create_token(
        self,
        name: str,
        *,
        admin: bool = False,
        max_sandboxes: int | None = None,
        max_memory: int | None = None,
    ) -> tuple[Token, str]:
        """A new token and its secret; the secret is shown once and only its hash is kept."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = Token(
            id="tok-" + secrets.token_hex(6),
            name=name,
            admin=admin,
            max_sandboxes=max_sandboxes,
            max_memory=max_memory,
            created=time.time(),
        )
        with self._tx() as db:
            db.execute(
                "INSERT INTO tokens (id, name, hash, admin, max_sandboxes, max_memory, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    token.id,
                    name,
                    hash_token(secret),
                    int(admin),
                    max_sandboxes,
                    max_memory,
                    token.created,
                ),
            )
        return token, secret

    def token_for(self, secret: str) -> Token | None:
        """The live token whose secret this is, or None."""
        row = (
            self._conn()
            .execute(
                "SELECT * FROM tokens WHERE hash = ? AND revoked IS NULL", (hash_token(secret),)
            )
            .fetchone()
        )
        return _token(row) if row else None

    def tokens(self) -> list[Token]:
        rows = self._conn().execute("SELECT * FROM tokens ORDER BY created").fetchall()
        return [_token(r) for r in rows]

    def revoke_token(self, token_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL",
                (time.time(), token_id),
            )
        return cur.rowcount > 0

    # -- sandboxes -----------------------------------------------------------------------------
    def reserve_sandbox(
        self,
        owner: Token,
        spec_json: str,
        memory: int,
        labels_json: str,
        idle_ttl: float | None,
        deadline: float | None,
    ) -> str:
        """Write the row of a sandbox about to be started, checking the owner's quotas in the
        same transaction (so concurrent creates cannot both slip under a limit); returns its key.
        Raises QuotaExceeded."""
        now = time.time()
        key = "req-" + secrets.token_hex(8)
        with self._tx() as db:
            count, used = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(memory), 0) FROM sandboxes"
                " WHERE owner = ? AND status IN (?, ?)",
                (owner.id, *LIVE),
            ).fetchone()
            if owner.max_sandboxes is not None and count + 1 > owner.max_sandboxes:
                raise QuotaExceeded(
                    f"token {owner.name!r} may have {owner.max_sandboxes} live sandboxes and "
                    f"has {count}; delete one first"
                )
            if owner.max_memory is not None and used + memory > owner.max_memory:
                raise QuotaExceeded(
                    f"token {owner.name!r} may hold {owner.max_memory} bytes of sandbox memory "
                    f"and holds {used}; this sandbox asks for {memory} more"
                )
            db.execute(
                "INSERT INTO sandboxes (key, owner, status, spec, memory, labels, created,"
                " last_active, idle_ttl, deadline) VALUES (?, ?, 'creating', ?, ?, ?, ?, ?, ?, ?)",
                (key, owner.id, spec_json, memory, labels_json, now, now, idle_ttl, deadline),
            )
        return key

    def started(self, key: str, sandbox_id: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE sandboxes SET id = ?, status = 'running' WHERE key = ?", (sandbox_id, key)
            )

    def ended(self, key: str, status: str, reason: str) -> None:
        """Mark a sandbox `deleted` or `lost` (with why); its memory no longer counts."""
        with self._tx() as db:
            db.execute(
                "UPDATE sandboxes SET status = ?, reason = ?, ended = ? WHERE key = ?",
                (status, reason, time.time(), key),
            )

    def touch(self, sandbox_id: str, when: float | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE sandboxes SET last_active = ? WHERE id = ?",
                (when or time.time(), sandbox_id),
            )

    def sandbox(self, sandbox_id: str) -> SandboxRow | None:
        row = self._conn().execute("SELECT * FROM sandboxes WHERE id = ?", (sandbox_id,)).fetchone()
        return SandboxRow(**dict(row)) if row else None

    def sandboxes(
        self, *, owner: str | None = None, statuses: tuple[str, ...] | None = None
    ) -> list[SandboxRow]:
        query, params = "SELECT * FROM sandboxes WHERE 1=1", []
        if owner is not None:
            query += " AND owner = ?"
            params.append(owner)
        if statuses:
            query += f" AND status IN ({','.join('?' * len(statuses))})"
            params.extend(statuses)
        rows = self._conn().execute(query + " ORDER BY created", params).fetchall()
        return [SandboxRow(**dict(r)) for r in rows]

    # -- snapshots -----------------------------------------------------------------------------
    def add_snapshot(self, snapshot_id: str, owner: str, source: str, spec_json: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO snapshots (id, owner, source, spec, created) VALUES (?, ?, ?, ?, ?)",
                (snapshot_id, owner, source, spec_json, time.time()),
            )

    def snapshot(self, snapshot_id: str) -> SnapshotRow | None:
        row = (
            self._conn().execute("SELECT * FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone()
        )
        return SnapshotRow(**dict(row)) if row else None

    def remove_snapshot(self, snapshot_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))


def _token(row: sqlite3.Row) -> Token:
    return Token(
        id=row["id"],
        name=row["name"],
        admin=bool(row["admin"]),
        max_sandboxes=row["max_sandboxes"],
        max_memory=row["max_memory"],
        created=row["created"],
        revoked=row["revoked"],
    )
