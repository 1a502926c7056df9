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

from rockroll.errors import QuotaExceeded
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
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('token_generation', 0);
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
# Columns added since the first schema: (table, column, declaration).
_ADDED = (
    ("tokens", "max_cpus", "REAL"),
    ("tokens", "max_pids", "INTEGER"),
    ("tokens", "max_execs", "INTEGER"),
    ("tokens", "max_snapshots", "INTEGER"),
    ("tokens", "max_disk", "INTEGER"),
    ("tokens", "allow_network", "INTEGER NOT NULL DEFAULT 0"),
    ("tokens", "unlimited", "INTEGER NOT NULL DEFAULT 0"),
    ("sandboxes", "cpus", "REAL NOT NULL DEFAULT 0"),
    ("sandboxes", "pids", "INTEGER NOT NULL DEFAULT 0"),
    ("sandboxes", "disk", "INTEGER NOT NULL DEFAULT 0"),
    ("snapshots", "size", "INTEGER NOT NULL DEFAULT 0"),
    ("snapshots", "orphaned", "REAL"),
)
# What a token may hold when it was not given a limit (and was not made `unlimited`): enough
# for a busy RL run, not enough for one tenant to take a machine.
DEFAULT_LIMITS: dict[str, int | float] = {
    "max_sandboxes": 32,
    "max_memory": 64 << 30,
    "max_cpus": 32.0,
    "max_pids": 32768,
    "max_execs": 64,
    "max_snapshots": 64,
    "max_disk": 400 << 30,
}


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
    max_cpus: float | None = None
    max_pids: int | None = None
    max_execs: int | None = None
    max_snapshots: int | None = None
    max_disk: int | None = None
    allow_network: bool = False
    unlimited: bool = False

    def limit(self, name: str) -> int | float | None:
        """The limit that applies: the token's own, else the default (None: unlimited)."""
        own = getattr(self, name)
        if own is not None or self.unlimited:
            return own
        return DEFAULT_LIMITS[name]


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
    cpus: float = 0.0
    pids: int = 0
    disk: int = 0


@dataclass(frozen=True)
class SnapshotRow:
    id: str
    owner: str
    source: str
    spec: str
    created: float
    size: int = 0
    orphaned: float | None = None  # when its sandbox ended: removed once no fork uses it


@dataclass(frozen=True)
class Ask:
    """What one new sandbox takes from its owner's quotas."""

    memory: int
    cpus: float
    pids: int
    disk: int


class Store:
    """Typed access to the service database; safe to share between threads."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_db()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns a database made by an earlier version lacks."""
        conn = self._conn()
        for table, column, declaration in _ADDED:
            have = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

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
        max_cpus: float | None = None,
        max_pids: int | None = None,
        max_execs: int | None = None,
        max_snapshots: int | None = None,
        max_disk: int | None = None,
        allow_network: bool = False,
        unlimited: bool = False,
    ) -> tuple[Token, str]:
        """A new token and its secret; the secret is shown once and only its hash is kept.
        Limits left None get DEFAULT_LIMITS, unless `unlimited`."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = Token(
            id="tok-" + secrets.token_hex(6),
            name=name,
            admin=admin,
            max_sandboxes=max_sandboxes,
            max_memory=max_memory,
            created=time.time(),
            max_cpus=max_cpus,
            max_pids=max_pids,
            max_execs=max_execs,
            max_snapshots=max_snapshots,
            max_disk=max_disk,
            allow_network=allow_network,
            unlimited=unlimited,
        )
        row = {k: v for k, v in vars(token).items() if k != "revoked"}
        row |= {"hash": hash_token(secret), "admin": int(admin)}
        row |= {"allow_network": int(allow_network), "unlimited": int(unlimited)}
        with self._tx() as db:
            db.execute(
                f"INSERT INTO tokens ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )
            _bump_generation(db)
        return token, secret

    def token_generation(self) -> int:
        """A number that changes whenever a token is created or revoked (by any process)."""
        row = self._conn().execute("SELECT value FROM meta WHERE key = 'token_generation'")
        return int(row.fetchone()[0])

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
            _bump_generation(db)
        return cur.rowcount > 0

    # -- sandboxes -----------------------------------------------------------------------------
    def reserve_sandbox(
        self,
        owner: Token,
        spec_json: str,
        ask: Ask,
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
            count, memory, cpus, pids, disk = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(memory), 0), COALESCE(SUM(cpus), 0),"
                " COALESCE(SUM(pids), 0), COALESCE(SUM(disk), 0) FROM sandboxes"
                " WHERE owner = ? AND status IN (?, ?)",
                (owner.id, *LIVE),
            ).fetchone()
            disk += _snapshot_bytes(db, owner.id)
            _within(owner, "max_sandboxes", count, 1, "live sandboxes")
            _within(owner, "max_memory", memory, ask.memory, "bytes of sandbox memory")
            _within(owner, "max_cpus", cpus, ask.cpus, "CPUs")
            _within(owner, "max_pids", pids, ask.pids, "processes")
            _within(owner, "max_disk", disk, ask.disk, "bytes of disk (sandboxes and snapshots)")
            db.execute(
                "INSERT INTO sandboxes (key, owner, status, spec, memory, cpus, pids, disk, labels,"
                " created, last_active, idle_ttl, deadline)"
                " VALUES (?, ?, 'creating', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    owner.id,
                    spec_json,
                    ask.memory,
                    ask.cpus,
                    ask.pids,
                    ask.disk,
                    labels_json,
                    now,
                    now,
                    idle_ttl,
                    deadline,
                ),
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

    def set_deadline(self, sandbox_id: str, deadline: float | None) -> None:
        """Move a sandbox's hard deadline (the reaper deletes it once passed)."""
        with self._tx() as db:
            db.execute("UPDATE sandboxes SET deadline = ? WHERE id = ?", (deadline, sandbox_id))

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
    def check_snapshot_room(self, owner: Token) -> None:
        """Refuse (QuotaExceeded) a snapshot the owner has no room for by count."""
        count = (
            self._conn()
            .execute("SELECT COUNT(*) FROM snapshots WHERE owner = ?", (owner.id,))
            .fetchone()[0]
        )
        _within(owner, "max_snapshots", count, 1, "snapshots")

    def add_snapshot(
        self, snapshot_id: str, owner: Token, source: str, spec_json: str, size: int
    ) -> None:
        """Record a snapshot of `size` bytes, checking the owner's count and disk quotas in the
        same transaction; QuotaExceeded leaves nothing recorded."""
        with self._tx() as db:
            count = db.execute(
                "SELECT COUNT(*) FROM snapshots WHERE owner = ?", (owner.id,)
            ).fetchone()[0]
            _within(owner, "max_snapshots", count, 1, "snapshots")
            disk = db.execute(
                "SELECT COALESCE(SUM(disk), 0) FROM sandboxes WHERE owner = ? AND status IN (?, ?)",
                (owner.id, *LIVE),
            ).fetchone()[0] + _snapshot_bytes(db, owner.id)
            _within(owner, "max_disk", disk, size, "bytes of disk (sandboxes and snapshots)")
            db.execute(
                "INSERT INTO snapshots (id, owner, source, spec, created, size)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (snapshot_id, owner.id, source, spec_json, time.time(), size),
            )

    def orphan_snapshots(self, source: str) -> list[str]:
        """Mark the snapshots of a sandbox that ended; their ids."""
        with self._tx() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM snapshots WHERE source = ? AND orphaned IS NULL", (source,)
                )
            ]
            db.execute(
                "UPDATE snapshots SET orphaned = ? WHERE source = ? AND orphaned IS NULL",
                (time.time(), source),
            )
        return ids

    def snapshots(self, *, orphaned: bool | None = None) -> list[SnapshotRow]:
        query = "SELECT * FROM snapshots"
        if orphaned is not None:
            query += " WHERE orphaned IS " + ("NOT NULL" if orphaned else "NULL")
        return [SnapshotRow(**dict(r)) for r in self._conn().execute(query + " ORDER BY created")]

    def snapshot(self, snapshot_id: str) -> SnapshotRow | None:
        row = (
            self._conn().execute("SELECT * FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone()
        )
        return SnapshotRow(**dict(row)) if row else None

    def remove_snapshot(self, snapshot_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))


def _token(row: sqlite3.Row) -> Token:
    fields = dict(row)
    fields.pop("hash")
    for flag in ("admin", "allow_network", "unlimited"):
        fields[flag] = bool(fields[flag])
    return Token(**fields)


def _bump_generation(db: sqlite3.Connection) -> None:
    db.execute("UPDATE meta SET value = value + 1 WHERE key = 'token_generation'")


def _snapshot_bytes(db: sqlite3.Connection, owner: str) -> int:
    row = db.execute("SELECT COALESCE(SUM(size), 0) FROM snapshots WHERE owner = ?", (owner,))
    return int(row.fetchone()[0])


def _within(owner: Token, limit: str, used: float, more: float, what: str) -> None:
    cap = owner.limit(limit)
    if cap is not None and used + more > cap:
        raise QuotaExceeded(
            f"token {owner.name!r} may hold {_num(cap)} {what} and holds {_num(used)}; this "
            f"asks for {_num(more)} more (delete something first, or use a token with a larger "
            f"{limit})"
        )


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
