"""The job database across releases: a file release 0.1.0 wrote is migrated on open, in one transaction.

tests/fixtures/sqlite/jobs-0.1.0.sqlite was written by release 0.1.0's own JobStore (make_0_1_0.py there):
job 1 a succeeded `create` of `blog`, job 2 a failed `validate` of `bad`, and the containers blog (200,
created, with an address) and slow (201, still creating). Every test works on a copy.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from reconciler.gateways import sqlite as gateway
from reconciler.gateways.sqlite import MIGRATIONS, JobStore
from reconciler.model.errors import StateError
from reconciler.model.observed import Held
from reconciler.model.vocab import ResourceKind, ResourceState

FIXTURE = Path(__file__).parent / "fixtures" / "sqlite" / "jobs-0.1.0.sqlite"

BLOG = Held("blog", ResourceKind.LXC, "200", "pve1", ResourceState.CREATED, "192.168.50.210", 1)
SLOW = Held("slow", ResourceKind.LXC, "201", "pve1", ResourceState.CREATING, None, None)
BLOG_LOG = [
    ("info", "create container 200 for blog on pve1"),
    ("info", "create task UPID:pve1:00001234:00000000:00000000:vzcreate:200:root@pam:"),
    ("info", "container 200 created on pve1"),
    ("info", "container 200 started"),
    ("info", "done: Ready: container 200 running on pve1 at 192.168.50.210"),
]
BAD_LOG = [("error", "requests/bad.yaml: profile: unknown profile 'huge'")]


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    """A copy of the database release 0.1.0 wrote (the fixture itself is never opened for writing)."""
    path = tmp_path / "jobs.sqlite"
    shutil.copyfile(FIXTURE, path)
    return path


@contextmanager
def opened(path: Path) -> Iterator[JobStore]:
    store = JobStore(path)
    try:
        yield store
    finally:
        store.close()


def raw(path: Path) -> closing[sqlite3.Connection]:
    """A plain connection that fails at once instead of waiting on a lock."""
    return closing(sqlite3.connect(path, timeout=0))


def user_version(path: Path) -> int:
    with raw(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Each table -> its columns (name, type, not null, default, primary key), and each index -> its columns."""
    with raw(path) as db:
        names = db.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'index') ORDER BY type, name"
        ).fetchall()
        return {
            f"{kind} {name}": [
                tuple(row)[1:]
                for row in db.execute(f"PRAGMA {'table_info' if kind == 'table' else 'index_info'}({name})")
            ]
            for kind, name in names
        }


def dump(path: Path) -> list[str]:
    with raw(path) as db:
        return list(db.iterdump())


def assert_writable(path: Path) -> None:
    """No connection is left holding a transaction on the file."""
    with raw(path) as db:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")


def test_the_fixture_is_what_release_0_1_0_left() -> None:
    with closing(sqlite3.connect(f"file:{FIXTURE}?immutable=1", uri=True)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
        assert db.execute("SELECT request, vmid, state FROM created_resources ORDER BY request").fetchall() == [
            ("blog", 200, "created"),
            ("slow", 201, "creating"),
        ]
    assert not FIXTURE.with_name(FIXTURE.name + "-wal").exists()


def test_a_0_1_0_database_is_migrated_on_open_and_keeps_its_jobs(old_file: Path) -> None:
    with opened(old_file) as store:
        assert store.schema_version == len(MIGRATIONS) == 3

        # Jobs, their statuses and their logs, under the same ids.
        jobs = store.jobs()
        assert [(j.id, j.type, j.request, j.status) for j in jobs] == [
            (2, "validate", "bad", "failed"),
            (1, "create", "blog", "succeeded"),
        ]
        blog_job = store.job(1)
        assert blog_job is not None
        assert blog_job.result == {"vmid": 200, "node": "pve1", "address": "192.168.50.210"}
        assert blog_job.summary == "container 200 running on pve1 at 192.168.50.210"
        bad_job = store.job(2)
        assert bad_job is not None and bad_job.error_message == "profile: unknown profile 'huge'"
        assert [(line.level, line.message) for line in store.logs(1)] == BLOG_LOG
        assert [(line.level, line.message) for line in store.logs(2)] == BAD_LOG
        assert store.last_jobs() == {"blog": 1, "bad": 2}

        # The containers 0.1.0 recorded are now the inventory's; no setup has run in them yet.
        assert store.inventory() == {"blog": (BLOG,), "slow": (SLOW,)}
        assert store.setups() == {}
        assert BLOG.vmid == 200

        # New jobs and log lines continue after the old ones.
        new = store.create_job("start", "blog", "small", {"vmid": 200})
        assert new == 3
        store.log(new, "info", "container 200 started")
        assert store.last_jobs() == {"blog": 3, "bad": 2}
        assert [(line.level, line.message) for line in store.logs(1)] == BLOG_LOG

    with raw(old_file) as db:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "created_resources" not in names
        assert {"jobs", "job_logs", "inventory"} <= names
        assert db.execute("SELECT MAX(id) FROM job_logs").fetchone()[0] == len(BLOG_LOG) + len(BAD_LOG) + 1


def test_opening_a_migrated_database_again_changes_nothing(old_file: Path) -> None:
    with opened(old_file):
        pass
    migrated = dump(old_file)
    with opened(old_file) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert store.inventory() == {"blog": (BLOG,), "slow": (SLOW,)}
        assert [j.id for j in store.jobs()] == [2, 1]
    assert dump(old_file) == migrated
    assert user_version(old_file) == len(MIGRATIONS)


def test_a_new_file_gets_the_current_schema_directly(tmp_path: Path, old_file: Path) -> None:
    new_file = tmp_path / "new" / "jobs.sqlite"
    with opened(new_file) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert store.inventory() == {}
        assert store.jobs() == []
        assert store.last_jobs() == {}
    with opened(old_file):
        pass
    assert tables(new_file) == tables(old_file)
    assert "table inventory" in tables(new_file)
    assert "table created_resources" not in tables(new_file)


def test_a_database_from_a_newer_release_is_refused_and_left_alone(old_file: Path) -> None:
    with raw(old_file) as db:
        db.execute("PRAGMA user_version = 99")
    before = old_file.read_bytes()
    with pytest.raises(StateError, match=r"schema version 99, newer than this reconciler's 3\b"):
        JobStore(old_file)
    assert old_file.read_bytes() == before
    assert user_version(old_file) == 99
    assert_writable(old_file)
    assert not old_file.with_name(old_file.name + "-wal").exists()


def test_a_migration_that_fails_halfway_leaves_the_file_as_it_was(old_file: Path) -> None:
    # A table in the way of migration 2's CREATE TABLE (migration 1 has already run over the file by then).
    with raw(old_file) as db:
        db.execute("CREATE TABLE inventory (note TEXT)")
        db.commit()
    before = dump(old_file)

    with pytest.raises(sqlite3.OperationalError, match="table inventory already exists"):
        JobStore(old_file)

    # Rolled back whole, and not left holding the file: the next user can write to it at once.
    assert_writable(old_file)
    assert dump(old_file) == before
    assert user_version(old_file) == 0
    with raw(old_file) as db:
        assert db.execute(
            "SELECT request, vmid, state, address FROM created_resources ORDER BY request"
        ).fetchall() == [
            ("blog", 200, "created", "192.168.50.210"),
            ("slow", 201, "creating", None),
        ]
        assert [r[1] for r in db.execute("PRAGMA table_info(inventory)")] == ["note"]

    # Once the obstacle is gone, the same file migrates.
    with raw(old_file) as db:
        db.execute("DROP TABLE inventory")
        db.commit()
    with opened(old_file) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert store.inventory() == {"blog": (BLOG,), "slow": (SLOW,)}


def test_a_migration_failing_after_it_dropped_the_old_table_is_rolled_back_whole(
    old_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every migration as it is, then one more statement after the last that fails: by then migration 2 has made
    # the inventory, copied the rows and dropped created_resources.
    failing = (*MIGRATIONS[:-1], MIGRATIONS[-1] + "\nSELECT no_such_function();\n")
    monkeypatch.setattr(gateway, "MIGRATIONS", failing)
    before = dump(old_file)

    with pytest.raises(sqlite3.OperationalError, match="no such function"):
        JobStore(old_file)

    assert_writable(old_file)
    assert dump(old_file) == before
    assert user_version(old_file) == 0
    assert "table inventory" not in tables(old_file)
    with raw(old_file) as db:
        assert db.execute("SELECT request, vmid FROM created_resources ORDER BY request").fetchall() == [
            ("blog", 200),
            ("slow", 201),
        ]


def test_two_openers_of_an_old_file_migrate_it_once(old_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Say a CLI command and the upgraded daemon start together: the one that waited must not migrate again."""
    with closing(sqlite3.connect(old_file, isolation_level=None, timeout=0)) as first:
        # The first opener is migrating, its transaction still open, when the second one looks at the file.
        first.executescript(f"BEGIN IMMEDIATE;\n{''.join(MIGRATIONS)}\nPRAGMA user_version = {len(MIGRATIONS)};")

        waiting = threading.Event()  # the second opener read version 0 and now waits for the write lock
        connect = sqlite3.connect

        def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            db: sqlite3.Connection = connect(*args, **kwargs)
            if threading.current_thread().name == "second-opener":
                db.set_trace_callback(lambda sql: waiting.set() if sql.lstrip().startswith("BEGIN") else None)
            return db

        monkeypatch.setattr(sqlite3, "connect", traced)
        outcome: list[object] = []

        def second_opener() -> None:
            try:
                store = JobStore(old_file)
                outcome.append(store.inventory())
                store.close()
            except Exception as exc:
                outcome.append(exc)

        second = threading.Thread(target=second_opener, name="second-opener")
        second.start()
        assert waiting.wait(10), "the second opener never tried to take the write lock"
        first.execute("COMMIT")
        second.join(30)
    assert outcome == [{"blog": (BLOG,), "slow": (SLOW,)}]
    assert user_version(old_file) == len(MIGRATIONS)


def test_hold_keeps_one_container_per_request(tmp_path: Path) -> None:
    lxc = ResourceKind.LXC
    with opened(tmp_path / "jobs.sqlite") as store:
        first = store.create_job("create", "web", "small", {"vmid": 300})
        store.hold("web", lxc, "300", "pve1", ResourceState.CREATING, first)
        store.hold("db", lxc, "310", "pve3", ResourceState.CREATED, None, address="192.168.50.31")
        assert store.inventory()["web"] == (Held("web", lxc, "300", "pve1", ResourceState.CREATING, None, first),)

        # The same container again: updated in place; an address once found is kept when none is given.
        store.hold("web", lxc, "300", "pve1", ResourceState.CREATED, first)
        store.set_address("web", lxc, "300", "192.168.50.30")
        store.hold("web", lxc, "300", "pve1", ResourceState.CREATED, first)
        assert store.inventory()["web"] == (
            Held("web", lxc, "300", "pve1", ResourceState.CREATED, "192.168.50.30", first),
        )

        # Another container for the same request replaces the first; other requests keep theirs.
        second = store.create_job("create", "web", "small", {"vmid": 301})
        store.hold("web", lxc, "301", "pve2", ResourceState.CREATING, second)
        assert store.inventory() == {
            "db": (Held("db", lxc, "310", "pve3", ResourceState.CREATED, "192.168.50.31", None),),
            "web": (Held("web", lxc, "301", "pve2", ResourceState.CREATING, None, second),),
        }

        # An address for a container not held changes nothing.
        store.set_address("web", lxc, "300", "192.168.50.99")
        assert store.inventory()["web"] == (Held("web", lxc, "301", "pve2", ResourceState.CREATING, None, second),)


def test_last_jobs_gives_each_requests_newest_job(tmp_path: Path) -> None:
    with opened(tmp_path / "jobs.sqlite") as store:
        assert store.last_jobs() == {}
        a1 = store.create_job("create", "a", "small", {})
        b1 = store.create_job("validate", "b", None, {})
        a2 = store.create_job("start", "a", "small", {})
        store.finish_job(a1, True, "created")
        assert store.last_jobs() == {"a": a2, "b": b1}
        assert a2 > b1 > a1
