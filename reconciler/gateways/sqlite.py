"""The only module that touches SQLite: jobs, their logs, and the inventory of what the reconciler made.

The schema is versioned (PRAGMA user_version) and migrated forward on open, in one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from reconciler.model.errors import StateError
from reconciler.model.observed import Held
from reconciler.model.setup import SetupRecord
from reconciler.model.vocab import JobStatus, ResourceKind, ResourceState

# Each migration takes the database from the version before it (its index) to the next; PRAGMA user_version
# records how far a file got. Release 0.1.0 wrote version 0 with the tables of the first entry already there,
# so its statements are all IF NOT EXISTS: they make a new file and leave a 0.1.0 file as it is.
MIGRATIONS: tuple[str, ...] = (
    # 1: jobs, their logs, and the containers created (as release 0.1.0 made them)
    """
    CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        type TEXT NOT NULL,
        request TEXT NOT NULL,
        profile TEXT,
        payload_json TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
        summary TEXT NOT NULL DEFAULT '',
        result_json TEXT,
        error_message TEXT
    );
    CREATE INDEX IF NOT EXISTS jobs_request ON jobs (request, id);
    CREATE TABLE IF NOT EXISTS job_logs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id INTEGER NOT NULL REFERENCES jobs (id),
        timestamp TEXT NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS job_logs_job ON job_logs (job_id, id);
    CREATE TABLE IF NOT EXISTS created_resources (
        request TEXT PRIMARY KEY,
        vmid INTEGER NOT NULL,
        node TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('creating', 'created')),
        address TEXT,
        job_id INTEGER REFERENCES jobs (id),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
    # 2: the inventory: a request may own several resources of several kinds (a container, a DNS record,
    # a target file), each keyed within its kind; states are the model's vocabulary, not a CHECK.
    """
    CREATE TABLE inventory (
        request TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        node TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        address TEXT,
        job_id INTEGER REFERENCES jobs (id),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (request, kind, key)
    );
    INSERT INTO inventory (request, kind, key, node, state, address, job_id, created_at, updated_at)
        SELECT request, kind, CAST(vmid AS TEXT), node, state, address, job_id, created_at, updated_at
        FROM created_resources;
    DROP TABLE created_resources;
    """,
    # 3: the last successful setup in each request's container, so a cycle does not run the same steps again
    """
    CREATE TABLE setups (
        request TEXT PRIMARY KEY,
        vmid INTEGER NOT NULL,
        digest TEXT NOT NULL,
        job_id INTEGER REFERENCES jobs (id),
        updated_at TEXT NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Job:
    id: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    type: str
    request: str
    profile: str | None
    payload: dict[str, object]
    status: str
    summary: str
    result: dict[str, object] | None
    error_message: str | None


@dataclass(frozen=True)
class LogLine:
    timestamp: str
    level: str
    message: str


class JobStore:
    """Jobs, job logs and the inventory in one SQLite file; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._migrate()
            except BaseException:
                self._db.close()  # a refused or failed file is not left open (nor its -wal beside it)
                raise

    def _migrate(self) -> None:
        if self._stored_version() == SCHEMA_VERSION:
            return
        # One transaction, rolled back whole on any error. Not executescript: it commits whatever is pending,
        # and stops at a failing statement with the transaction still open. The version is read again inside
        # the transaction, so that two processes opening the same old file do not both migrate it.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._stored_version()
            for migration in MIGRATIONS[version:]:
                for statement in _statements(migration):
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _stored_version(self) -> int:
        """The file's schema version; a file from a newer release is refused."""
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StateError(
                self.path,
                f"the job database is at schema version {version}, newer than this reconciler's"
                f" {SCHEMA_VERSION}: run the newer release, or restore a backup",
            )
        return version

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # jobs

    def create_job(self, type_: str, request: str, profile: str | None, payload: dict[str, object]) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO jobs (created_at, type, request, profile, payload_json, status)"
                " VALUES (?, ?, ?, ?, ?, 'pending')",
                (now(), type_, request, profile, json.dumps(payload, sort_keys=True)),
            )
            return int(cur.lastrowid or 0)

    def start_job(self, job_id: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET status='running', started_at=? WHERE id=?", (now(), job_id))

    def finish_job(
        self,
        job_id: int,
        ok: bool,
        summary: str,
        result: dict[str, object] | None = None,
        error: str | None = None,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET status=?, finished_at=?, summary=?, result_json=?, error_message=? WHERE id=?",
                (
                    JobStatus.SUCCEEDED if ok else JobStatus.FAILED,
                    now(),
                    summary,
                    json.dumps(result, sort_keys=True) if result is not None else None,
                    error,
                    job_id,
                ),
            )

    def interrupt_running(self, reason: str) -> int:
        """Mark jobs left running (by a crash or a stop) as failed; how many there were."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status='failed', finished_at=?, error_message=?, summary='interrupted'"
                " WHERE status IN ('pending', 'running')",
                (now(), reason),
            )
            return cur.rowcount

    def log(self, job_id: int, level: str, message: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO job_logs (job_id, timestamp, level, message) VALUES (?, ?, ?, ?)",
                (job_id, now(), level, message),
            )

    def job(self, job_id: int) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def jobs(self, limit: int = 50, request: str | None = None) -> list[Job]:
        """The newest jobs first, optionally of one request."""
        query, args = "SELECT * FROM jobs", []
        if request:
            query, args = query + " WHERE request=?", [request]
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_job(r) for r in rows]

    def logs(self, job_id: int) -> list[LogLine]:
        with self._lock:
            rows = self._db.execute(
                "SELECT timestamp, level, message FROM job_logs WHERE job_id=? ORDER BY id", (job_id,)
            ).fetchall()
        return [LogLine(r["timestamp"], r["level"], r["message"]) for r in rows]

    def last_jobs(self) -> dict[str, int]:
        """Request -> the id of its newest job."""
        with self._lock:
            rows = self._db.execute("SELECT request, MAX(id) FROM jobs GROUP BY request").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    # the inventory

    def hold(
        self,
        request: str,
        kind: ResourceKind,
        key: str,
        node: str,
        state: ResourceState,
        job_id: int | None,
        address: str | None = None,
    ) -> None:
        """Record a resource of a request (its one resource of this kind: an earlier one is forgotten)."""
        stamp = now()
        with self._tx() as db:
            db.execute("DELETE FROM inventory WHERE request=? AND kind=? AND key!=?", (request, kind, key))
            db.execute(
                "INSERT INTO inventory (request, kind, key, node, state, address, job_id, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (request, kind, key) DO UPDATE SET node=excluded.node, state=excluded.state,"
                " address=COALESCE(excluded.address, address), job_id=excluded.job_id, updated_at=excluded.updated_at",
                (request, kind, key, node, state, address, job_id, stamp, stamp),
            )

    def set_address(self, request: str, kind: ResourceKind, key: str, address: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE inventory SET address=?, updated_at=? WHERE request=? AND kind=? AND key=?",
                (address, now(), request, kind, key),
            )

    def inventory(self) -> dict[str, tuple[Held, ...]]:
        """Request -> every resource held for it."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM inventory ORDER BY request, kind, key").fetchall()
        out: dict[str, list[Held]] = {}
        for r in rows:
            out.setdefault(r["request"], []).append(
                Held(
                    r["request"],
                    ResourceKind(r["kind"]),
                    r["key"],
                    r["node"],
                    ResourceState(r["state"]),
                    r["address"],
                    r["job_id"],
                )
            )
        return {k: tuple(v) for k, v in out.items()}

    # setups

    def record_setup(self, request: str, vmid: int, digest: str, job_id: int | None) -> None:
        """Remember that these steps (by digest) succeeded in this container."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO setups (request, vmid, digest, job_id, updated_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (request) DO UPDATE SET vmid=excluded.vmid, digest=excluded.digest,"
                " job_id=excluded.job_id, updated_at=excluded.updated_at",
                (request, vmid, digest, job_id, now()),
            )

    def forget_setup(self, request: str) -> None:
        """A new container for the request: whatever ran in an earlier one does not count for it."""
        with self._tx() as db:
            db.execute("DELETE FROM setups WHERE request=?", (request,))

    def setups(self) -> dict[str, SetupRecord]:
        """Request -> the last setup that succeeded in its container."""
        with self._lock:
            rows = self._db.execute("SELECT request, vmid, digest, job_id FROM setups").fetchall()
        return {r["request"]: SetupRecord(int(r["vmid"]), r["digest"], r["job_id"]) for r in rows}


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration, one at a time (a `;` inside a literal does not split one)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending.strip()
            pending = ""
    if pending.strip(" \t\r\n;"):
        raise ValueError(f"an incomplete statement in a migration: {pending.strip()!r}")


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        type=row["type"],
        request=row["request"],
        profile=row["profile"],
        payload=json.loads(row["payload_json"]),
        status=row["status"],
        summary=row["summary"],
        result=json.loads(row["result_json"]) if row["result_json"] else None,
        error_message=row["error_message"],
    )
