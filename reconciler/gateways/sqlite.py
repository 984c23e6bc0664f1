"""The only module that touches SQLite: jobs, their logs, and the inventory of what the reconciler made.

The schema is versioned (PRAGMA user_version) and migrated forward on open, in one transaction. A file that
cannot be used (unwritable, not a database, held by another process) is a StateError in plain words.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from reconciler.logs import scrub
from reconciler.model.errors import StateError
from reconciler.model.observed import Applied, Held, Intent
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
    # 4: each call that changes Proxmox, recorded before it is made and deleted once its outcome is known; the
    # owned fields last written to each request's guest; and the hand edits put back, to see one that recurs.
    """
    CREATE TABLE intents (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request TEXT NOT NULL,
        vmid INTEGER NOT NULL,
        node TEXT NOT NULL,
        action TEXT NOT NULL,
        job_id INTEGER REFERENCES jobs (id),
        created_at TEXT NOT NULL
    );
    CREATE TABLE applied (
        request TEXT PRIMARY KEY,
        vmid INTEGER NOT NULL,
        fields_json TEXT NOT NULL,
        job_id INTEGER,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE corrections (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request TEXT NOT NULL,
        vmid INTEGER NOT NULL,
        fields TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX corrections_request ON corrections (request, at);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

CORRECTIONS_KEPT_S = 24 * 3600.0  # corrections older than this are pruned: only recent ones are ever asked for


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

    def __init__(self, path: Path, busy_timeout: float = 30.0) -> None:
        """Open the file to read and write it, creating it (and its directory) or migrating it as needed.

        busy_timeout is how long (seconds) a call waits for another process's lock before a temporary StateError.
        """
        self._open(path, busy_timeout, readonly=False)

    @classmethod
    def open_readonly(cls, path: Path, busy_timeout: float = 30.0) -> JobStore | None:
        """Open the file only to read it, beside a daemon that may be writing it (for `reconciler plan`).

        Nothing is migrated or written; every reader works, every writer raises StateError. None when there is no
        file yet; a file at another schema version than this release's is a StateError.
        """
        if not path.exists():
            return None
        store = cls.__new__(cls)
        store._open(path, busy_timeout, readonly=True)
        return store

    def _open(self, path: Path, busy_timeout: float, readonly: bool) -> None:
        self.path = str(path)
        self.readonly = readonly
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()
        if not readonly:
            _refuse_unwritable(path)
            _create_owner_only(path)
        # mode=ro: SQLite itself refuses every write. as_uri() escapes a '?', '#' or '%' in the path.
        target = path.absolute().as_uri() + "?mode=ro" if readonly else str(path)
        with self._guard():
            self._db = sqlite3.connect(
                target, uri=readonly, check_same_thread=False, isolation_level=None, timeout=busy_timeout
            )
        self._db.row_factory = sqlite3.Row
        try:
            with self._lock, self._guard():
                if readonly:
                    self._refuse_other_version()
                else:
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

    def _refuse_other_version(self) -> None:
        """A reader does not migrate: an older file is read only after a writer (the daemon) has migrated it."""
        version = self._stored_version()
        if version != SCHEMA_VERSION:
            raise StateError(
                self.path,
                f"the job database is at schema version {version}, older than this reconciler's"
                f" {SCHEMA_VERSION}: start the upgraded daemon once (it migrates the file), then try again",
            )

    @property
    def schema_version(self) -> int:
        with self._reading() as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn SQLite's word for a file that cannot be used (held by another process, unwritable, not a database)
        into a StateError that says what to do; any other error (a bug, a broken migration) passes as it is."""
        try:
            yield
        except sqlite3.Error as exc:
            refusal = self._refusal(exc)
            if refusal is None:
                raise
            raise refusal from exc

    def _refusal(self, exc: sqlite3.Error) -> StateError | None:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code, under any extended one
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return StateError(
                self.path,
                f"the job database is locked by another process (waited {self._busy_timeout:g} s);"
                " jobs wait until it is free",
                temporary=True,
            )
        if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            return StateError(
                self.path,
                f"this file is not a usable SQLite database ({exc}): check the path in the config,"
                " or move the file aside (a new one is made) or restore a backup",
            )
        if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_IOERR):
            if self.readonly:
                return StateError(self.path, f"cannot read the job database: {exc}; this user must be able to read it")
            return StateError(self.path, f"cannot write the job database: {exc}; {_WRITERS}")
        return None

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._guard():
            yield self._db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise StateError(self.path, "the job database was opened read-only here: nothing can be recorded")
        with self._lock, self._guard():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a failed COMMIT may leave it open; SQLite may have ended it itself
                    self._db.execute("ROLLBACK")
                raise

    # jobs

    def create_job(self, type_: str, request: str, profile: str | None, payload: dict[str, object]) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO jobs (created_at, type, request, profile, payload_json, status)"
                " VALUES (?, ?, ?, ?, ?, 'pending')",
                (now(), type_, request, profile, scrub(json.dumps(payload, sort_keys=True))),
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
                    scrub(summary),
                    scrub(json.dumps(result, sort_keys=True)) if result is not None else None,
                    scrub(error) if error is not None else None,
                    job_id,
                ),
            )

    def interrupt_running(self, reason: str) -> int:
        """Mark jobs left running (by a crash or a stop) as failed; how many there were."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status='failed', finished_at=?, error_message=?, summary='interrupted'"
                " WHERE status IN ('pending', 'running')",
                (now(), scrub(reason)),
            )
            return cur.rowcount

    def log(self, job_id: int, level: str, message: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO job_logs (job_id, timestamp, level, message) VALUES (?, ?, ?, ?)",
                (job_id, now(), level, scrub(message)),
            )

    def job(self, job_id: int) -> Job | None:
        with self._reading() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def jobs(self, limit: int = 50, request: str | None = None) -> list[Job]:
        """The newest jobs first, optionally of one request."""
        query, args = "SELECT * FROM jobs", []
        if request:
            query, args = query + " WHERE request=?", [request]
        with self._reading() as db:
            rows = db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_job(r) for r in rows]

    def logs(self, job_id: int) -> list[LogLine]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT timestamp, level, message FROM job_logs WHERE job_id=? ORDER BY id", (job_id,)
            ).fetchall()
        return [LogLine(r["timestamp"], r["level"], r["message"]) for r in rows]

    def last_jobs(self) -> dict[str, int]:
        """Request -> the id of its newest job."""
        with self._reading() as db:
            rows = db.execute("SELECT request, MAX(id) FROM jobs GROUP BY request").fetchall()
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

    def hold_record(self, request: str, name: str, data: str, job_id: int | None) -> None:
        """Record a DNS record written for a request (one of several: keyed by its name)."""
        stamp = now()
        with self._tx() as db:
            db.execute(
                "INSERT INTO inventory (request, kind, key, node, state, address, job_id, created_at, updated_at)"
                " VALUES (?, ?, ?, '', ?, ?, ?, ?, ?)"
                " ON CONFLICT (request, kind, key) DO UPDATE SET address=excluded.address, job_id=excluded.job_id,"
                " updated_at=excluded.updated_at",
                (request, ResourceKind.DNS, name, ResourceState.CREATED, data, job_id, stamp, stamp),
            )

    def drop_record(self, request: str, name: str) -> None:
        """Forget a DNS record of a request: deleted, or found to be no longer the reconciler's."""
        with self._tx() as db:
            db.execute("DELETE FROM inventory WHERE request=? AND kind=? AND key=?", (request, ResourceKind.DNS, name))

    def set_address(self, request: str, kind: ResourceKind, key: str, address: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE inventory SET address=?, updated_at=? WHERE request=? AND kind=? AND key=?",
                (address, now(), request, kind, key),
            )

    def inventory(self) -> dict[str, tuple[Held, ...]]:
        """Request -> every resource held for it."""
        with self._reading() as db:
            rows = db.execute("SELECT * FROM inventory ORDER BY request, kind, key").fetchall()
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
        with self._reading() as db:
            rows = db.execute("SELECT request, vmid, digest, job_id FROM setups").fetchall()
        return {r["request"]: SetupRecord(int(r["vmid"]), r["digest"], r["job_id"]) for r in rows}

    # intents: a call that changes Proxmox is recorded before it is made, so a crash mid-call is noticed

    def intend(self, request: str, vmid: int, node: str, action: str, job_id: int | None) -> int:
        """Record a call about to change Proxmox (action is the job type); its id, to settle it by."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO intents (request, vmid, node, action, job_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (request, vmid, node, action, job_id, now()),
            )
            return int(cur.lastrowid or 0)

    def settle(self, intent_id: int) -> None:
        """The call's outcome is known (it succeeded, or failed without changing anything): forget the intent."""
        with self._tx() as db:
            db.execute("DELETE FROM intents WHERE id=?", (intent_id,))

    def intents(self) -> list[Intent]:
        """The calls not settled, oldest first."""
        with self._reading() as db:
            rows = db.execute("SELECT * FROM intents ORDER BY id").fetchall()
        return [
            Intent(r["id"], r["request"], int(r["vmid"]), r["node"], r["action"], r["job_id"], r["created_at"])
            for r in rows
        ]

    # the owned fields last written to each request's guest

    def record_applied(self, request: str, vmid: int, fields: Mapping[str, str], job_id: int | None) -> None:
        """Remember the values (field -> normal form) just written to the request's guest, in place of earlier ones."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO applied (request, vmid, fields_json, job_id, updated_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (request) DO UPDATE SET vmid=excluded.vmid, fields_json=excluded.fields_json,"
                " job_id=excluded.job_id, updated_at=excluded.updated_at",
                (request, vmid, json.dumps(dict(fields), sort_keys=True), job_id, now()),
            )

    def applied(self) -> dict[str, Applied]:
        """Request -> the values last written to its guest."""
        with self._reading() as db:
            rows = db.execute("SELECT request, vmid, fields_json FROM applied").fetchall()
        return {r["request"]: Applied(int(r["vmid"]), json.loads(r["fields_json"])) for r in rows}

    # corrections: hand edits put back

    def record_correction(self, request: str, vmid: int, fields: Sequence[str], at: float) -> None:
        """Remember that these fields were edited by hand and put back at `at` (time.time())."""
        with self._tx() as db:
            # Only recent corrections are asked for: the older ones go here, so the table stays small.
            db.execute("DELETE FROM corrections WHERE at < ?", (at - CORRECTIONS_KEPT_S,))
            db.execute(
                "INSERT INTO corrections (request, vmid, fields, at) VALUES (?, ?, ?, ?)",
                (request, vmid, json.dumps(sorted(fields)), at),
            )

    def corrections(self, since: float) -> dict[str, int]:
        """Request -> how many corrections were recorded at or after `since` (time.time())."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT request, COUNT(*) FROM corrections WHERE at >= ? GROUP BY request", (since,)
            ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def forget(self, request: str) -> None:
        """The request's container is destroyed: drop what is known of it (its jobs and logs stay, as history).

        Its DNS records stay in the inventory until they are deleted: they go after the container."""
        with self._tx() as db:
            db.execute("DELETE FROM inventory WHERE request=? AND kind=?", (request, ResourceKind.LXC))
            for table in ("setups", "applied", "corrections", "intents"):
                db.execute(f"DELETE FROM {table} WHERE request=?", (request,))


_WRITERS = "the daemon's user must be able to write it and its directory"


def _refuse_unwritable(path: Path) -> None:
    """Say why the file cannot be written before SQLite is asked: it would open such a file read-only without a
    word, and fail only at the first write, or give only "unable to open database file"."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        why = f"{parent} is a file, not a directory"
    except OSError as exc:
        why = f"cannot create its directory {parent}: {exc.strerror}"
    else:
        # The directory too: the -wal and -shm files beside the database are made and removed as it is used.
        if path.is_dir():
            why = "that path is a directory"
        elif path.exists() and not os.access(path, os.W_OK):
            why = "the file is read-only to this user"
        elif not os.access(parent, os.W_OK | os.X_OK):
            why = f"this user cannot create files in {parent}"
        else:
            return
    raise StateError(str(path), f"cannot write the job database: {why}; {_WRITERS}")


def _create_owner_only(path: Path) -> None:
    """Make the database file readable by its owner only (SQLite gives its -wal and -shm files the same mode);
    one an older release left open to others is closed, with its -wal and -shm."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            with contextlib.suppress(OSError):  # gone, or not ours to change: opening it says what matters
                found = part.lstat()
                if stat.S_ISREG(found.st_mode) and stat.S_IMODE(found.st_mode) & 0o077:
                    part.chmod(0o600)
    except OSError as exc:
        raise StateError(str(path), f"cannot create the job database: {exc.strerror}; {_WRITERS}") from None


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
