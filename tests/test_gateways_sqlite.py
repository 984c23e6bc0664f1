"""The job database across releases: a file release 0.1.0 wrote is migrated on open, in one transaction.

tests/fixtures/sqlite/jobs-0.1.0.sqlite was written by release 0.1.0's own JobStore (make_0_1_0.py there):
job 1 a succeeded `create` of `blog`, job 2 a failed `validate` of `bad`, and the containers blog (200,
created, with an address) and slow (201, still creating). Every test works on a copy.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from reconciler.gateways import sqlite as gateway
from reconciler.gateways.sqlite import MIGRATIONS, JobStore
from reconciler.model.errors import StateError
from reconciler.model.observed import Applied, Held
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
        assert store.schema_version == len(MIGRATIONS) == 4

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
    with pytest.raises(StateError, match=r"schema version 99, newer than this reconciler's 4\b"):
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


# Release 0.3's state: intents, the fields last applied, corrections; and a file that cannot be used, said plainly.

EMPTY_V4: dict[str, object] = {"intents": [], "applied": {}, "corrections": {}}


def state_of_v4(store: JobStore) -> dict[str, object]:
    """What migration 4 added, as the store reads it."""
    return {"intents": store.intents(), "applied": store.applied(), "corrections": store.corrections(0)}


def test_a_version_3_database_is_migrated_and_keeps_its_rows(
    tmp_path: Path, old_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v3.sqlite"
    with monkeypatch.context() as release_0_2:  # the store as it was with three migrations
        release_0_2.setattr(gateway, "MIGRATIONS", MIGRATIONS[:3])
        release_0_2.setattr(gateway, "SCHEMA_VERSION", 3)
        with opened(path) as store:
            job = store.create_job("create", "web", "small", {"vmid": 300})
            store.log(job, "info", "container 300 created on pve1")
            store.hold("web", ResourceKind.LXC, "300", "pve1", ResourceState.CREATED, job, "192.168.50.30")
            store.record_setup("web", 300, "sha256:abc", job)
    assert user_version(path) == 3
    assert "table intents" not in tables(path)

    with opened(path) as store:
        assert store.schema_version == 4
        assert [(j.id, j.type, j.request) for j in store.jobs()] == [(job, "create", "web")]
        assert [line.message for line in store.logs(job)] == ["container 300 created on pve1"]
        assert store.inventory() == {
            "web": (Held("web", ResourceKind.LXC, "300", "pve1", ResourceState.CREATED, "192.168.50.30", job),)
        }
        assert store.setups()["web"].digest == "sha256:abc"
        assert state_of_v4(store) == EMPTY_V4
        assert store.intend("web", 300, "pve1", "update", job) == 1
    # The same schema as a file made new, and as a 0.1.0 file migrated.
    with opened(old_file):
        pass
    with opened(tmp_path / "new.sqlite"):
        pass
    assert tables(path) == tables(tmp_path / "new.sqlite") == tables(old_file)
    assert {"table intents", "table applied", "table corrections", "index corrections_request"} <= set(tables(path))


def test_an_intent_is_kept_until_it_is_settled(tmp_path: Path) -> None:
    with opened(tmp_path / "jobs.sqlite") as store:
        job = store.create_job("destroy", "web", "small", {"vmid": 300})
        first = store.intend("web", 300, "pve1", "stop", job)
        second = store.intend("web", 300, "pve1", "destroy", job)
        other = store.intend("db", 310, "pve3", "adopt", None)
        intents = store.intents()
        assert [(i.id, i.request, i.vmid, i.node, i.action, i.job_id) for i in intents] == [
            (first, "web", 300, "pve1", "stop", job),
            (second, "web", 300, "pve1", "destroy", job),
            (other, "db", 310, "pve3", "adopt", None),
        ]
        assert intents[0].created_at <= intents[1].created_at <= intents[2].created_at

        store.settle(first)
        store.settle(first)  # settling twice is harmless
        assert [i.id for i in store.intents()] == [second, other]
        store.settle(second)
        store.settle(other)
        assert store.intents() == []


def test_the_fields_applied_are_one_record_per_request_replaced_on_each_write(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    with opened(path) as store:
        assert store.applied() == {}
        store.record_applied("web", 300, {"memory": "512", "cores": "1"}, None)
        store.record_applied("db", 310, {}, None)
        job = store.create_job("update", "web", "small", {"vmid": 300})
        store.record_applied("web", 301, {"memory": "1024", "cores": "2", "tags": "a;b"}, job)
        assert store.applied() == {
            "web": Applied(301, {"cores": "2", "memory": "1024", "tags": "a;b"}),
            "db": Applied(310, {}),
        }
    with raw(path) as db:  # stored sorted, so that the same values are the same text
        assert db.execute("SELECT fields_json, job_id FROM applied WHERE request='web'").fetchone() == (
            '{"cores": "2", "memory": "1024", "tags": "a;b"}',
            job,
        )


def test_corrections_are_counted_since_a_time_and_pruned_after_a_day(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    day = 24 * 3600.0
    t0 = 1_700_000_000.0
    with opened(path) as store:
        store.record_correction("web", 300, ["memory", "cores"], t0)
        store.record_correction("web", 300, ["memory"], t0 + 60)
        store.record_correction("db", 310, ["tags"], t0 + 120)
        assert store.corrections(t0) == {"web": 2, "db": 1}
        assert store.corrections(t0 + 60) == {"web": 1, "db": 1}  # at or after
        assert store.corrections(t0 + 61) == {"db": 1}
        assert store.corrections(t0 + 121) == {}

        # A day later, the first two go as the next one is recorded; the one of exactly a day ago stays.
        store.record_correction("web", 300, ["swap"], t0 + 120 + day)
        assert store.corrections(0) == {"web": 1, "db": 1}
    with raw(path) as db:
        assert db.execute("SELECT request, vmid, fields FROM corrections ORDER BY id").fetchall() == [
            ("db", 310, '["tags"]'),
            ("web", 300, '["swap"]'),
        ]


def test_forget_drops_what_is_known_of_a_request_but_keeps_its_jobs(tmp_path: Path) -> None:
    with opened(tmp_path / "jobs.sqlite") as store:
        for request, vmid in (("web", 300), ("db", 310)):
            job = store.create_job("create", request, "small", {"vmid": vmid})
            store.log(job, "info", f"container {vmid} created")
            store.hold(request, ResourceKind.LXC, str(vmid), "pve1", ResourceState.CREATED, job)
            store.record_setup(request, vmid, "sha256:abc", job)
            store.record_applied(request, vmid, {"memory": "512"}, job)
            store.record_correction(request, vmid, ["memory"], 1_700_000_000.0)
            store.intend(request, vmid, "pve1", "destroy", job)
        web_job = store.last_jobs()["web"]

        store.forget("web")

        assert set(store.inventory()) == set(store.setups()) == set(store.applied()) == {"db"}
        assert store.corrections(0) == {"db": 1}
        assert [i.request for i in store.intents()] == ["db"]
        assert store.last_jobs() == {"web": web_job, "db": web_job + 1}
        assert [line.message for line in store.logs(web_job)] == ["container 300 created"]
        store.forget("nobody")  # nothing held: nothing happens
        assert set(store.inventory()) == {"db"}


# Another process holding the file: a temporary error after the wait, in words.

HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
for statement in sys.argv[2:]:
    db.execute(statement).fetchall()
print("holding", flush=True)
sys.stdin.read()
"""


@contextmanager
def held_by_another_process(path: Path, *statements: str) -> Iterator[None]:
    """A separate python runs the statements on the file and holds what they took until the block ends."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), *statements], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline() == "holding\n"
            yield
        finally:
            holder.stdin.close()  # its read ends, and it exits
            assert holder.wait(10) == 0


def test_a_write_while_another_process_holds_the_file_is_a_temporary_error(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    store = JobStore(path, busy_timeout=0.2)
    try:
        job = store.create_job("create", "web", "small", {})
        with held_by_another_process(path, "BEGIN EXCLUSIVE"):
            for write in (
                lambda: store.log(job, "info", "waiting"),
                lambda: store.intend("web", 300, "pve1", "create", job),
                lambda: store.forget("web"),
            ):
                started = time.monotonic()
                with pytest.raises(StateError, match=r"locked by another process \(waited 0\.2 s\)") as refused:
                    write()
                assert time.monotonic() - started >= 0.2
                assert refused.value.temporary
                assert refused.value.path == str(path)
            assert store.jobs()[0].id == job  # reading a WAL file is not blocked by a writer
        # Free again: the store was left usable, with no transaction open.
        store.log(job, "info", "free")
        assert [line.message for line in store.logs(job)] == ["free"]
    finally:
        store.close()
    assert_writable(path)


def test_opening_a_file_another_process_holds_exclusively_is_a_temporary_error(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    with opened(path) as store:
        store.create_job("create", "web", "small", {})
    with held_by_another_process(path, "PRAGMA locking_mode=EXCLUSIVE", "BEGIN EXCLUSIVE"):
        opens: list[Callable[[], object]] = [
            lambda: JobStore(path, busy_timeout=0.1),
            lambda: JobStore.open_readonly(path, busy_timeout=0.1),
        ]
        for open_ in opens:
            with pytest.raises(StateError, match=r"locked by another process \(waited 0\.1 s\); jobs wait") as refused:
                open_()
            assert refused.value.temporary
    with opened(path) as store:
        assert [j.request for j in store.jobs()] == ["web"]


# A file the daemon cannot use is refused at open, in words.


def assert_cannot_write(path: Path, why: str) -> None:
    with pytest.raises(StateError, match=rf"cannot write the job database: {why}") as refused:
        JobStore(path)
    assert refused.value.path == str(path)
    assert not refused.value.temporary
    assert "the daemon's user must be able to write it and its directory" in refused.value.reason


def test_a_path_under_a_regular_file_is_refused_at_open(tmp_path: Path) -> None:
    parent = tmp_path / "state"
    parent.write_text("not a directory\n")
    assert_cannot_write(parent / "jobs.sqlite", rf"{parent} is a file, not a directory")
    assert_cannot_write(parent / "deeper" / "jobs.sqlite", rf"cannot create its directory {parent}/deeper: ")
    assert parent.read_text() == "not a directory\n"


def test_a_directory_in_place_of_the_file_is_refused_at_open(tmp_path: Path) -> None:
    (tmp_path / "jobs.sqlite").mkdir()
    assert_cannot_write(tmp_path / "jobs.sqlite", "that path is a directory")


def test_a_file_that_is_not_a_database_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    garbage = bytes(range(256)) * 64
    path.write_bytes(garbage)
    for open_ in (JobStore, JobStore.open_readonly):
        with pytest.raises(StateError, match="this file is not a usable SQLite database") as refused:
            open_(path)
        assert not refused.value.temporary
        assert "restore a backup" in refused.value.reason
    assert path.read_bytes() == garbage
    assert not path.with_name("jobs.sqlite-wal").exists()


def skip_as_root() -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root, which ignores file modes: the root-proof cases above cover the refusal")


def test_a_read_only_file_is_refused_at_open(tmp_path: Path) -> None:
    skip_as_root()
    path = tmp_path / "jobs.sqlite"
    with opened(path) as store:
        store.create_job("create", "web", "small", {})
    path.chmod(0o444)
    before = path.read_bytes()
    assert_cannot_write(path, "the file is read-only to this user")
    assert path.read_bytes() == before
    # Reading it is still possible.
    reader = JobStore.open_readonly(path)
    assert reader is not None
    try:
        assert [j.request for j in reader.jobs()] == ["web"]
    finally:
        reader.close()


def test_a_directory_the_daemon_cannot_create_files_in_is_refused_at_open(tmp_path: Path) -> None:
    skip_as_root()
    state = tmp_path / "state"
    state.mkdir()
    with opened(state / "old.sqlite"):
        pass
    state.chmod(0o555)
    try:
        assert_cannot_write(state / "jobs.sqlite", rf"this user cannot create files in {state}")
        # An existing file too: its -wal and -shm files could not be made beside it.
        assert_cannot_write(state / "old.sqlite", rf"this user cannot create files in {state}")
        assert_cannot_write(
            state / "sub" / "jobs.sqlite", rf"cannot create its directory {state}/sub: Permission denied"
        )
    finally:
        state.chmod(0o755)  # so that pytest can remove it
    assert sorted(p.name for p in state.iterdir()) == ["old.sqlite"]


# Read-only, beside the daemon: `reconciler plan`.


def test_a_read_only_store_reads_what_a_writer_has_open(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    with opened(path) as writer:
        job = writer.create_job("create", "web", "small", {"vmid": 300})
        writer.log(job, "info", "container 300 created")
        writer.hold("web", ResourceKind.LXC, "300", "pve1", ResourceState.CREATED, job, "192.168.50.30")
        writer.record_setup("web", 300, "sha256:abc", job)
        writer.record_applied("web", 300, {"memory": "512"}, job)
        writer.record_correction("web", 300, ["memory"], 1_700_000_000.0)
        intent = writer.intend("web", 300, "pve1", "update", job)

        reader = JobStore.open_readonly(path)
        assert reader is not None
        try:
            assert reader.readonly and reader.schema_version == len(MIGRATIONS)
            assert reader.inventory() == writer.inventory() != {}
            assert reader.setups() == writer.setups() != {}
            assert reader.applied() == {"web": Applied(300, {"memory": "512"})}
            assert reader.intents() == writer.intents() != []
            assert reader.corrections(0) == {"web": 1}
            assert reader.last_jobs() == {"web": job}
            assert reader.jobs() == writer.jobs() != []
            assert reader.job(job) == writer.job(job)
            assert [line.message for line in reader.logs(job)] == ["container 300 created"]

            # What the writer does next is seen at the next read.
            writer.settle(intent)
            writer.finish_job(job, True, "created")
            assert reader.intents() == []
            done = reader.job(job)
            assert done is not None and done.status == "succeeded"
        finally:
            reader.close()
        writer.log(job, "info", "still writable")  # the reader left no lock behind
    assert_writable(path)


def test_a_read_only_store_refuses_every_write_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    with opened(path) as writer:
        job = writer.create_job("create", "web", "small", {})
        intent = writer.intend("web", 300, "pve1", "create", job)
    before = dump(path)
    reader = JobStore.open_readonly(path)
    assert reader is not None
    try:
        writes: list[Callable[[], object]] = [
            lambda: reader.create_job("create", "db", "small", {}),
            lambda: reader.start_job(job),
            lambda: reader.finish_job(job, True, "done"),
            lambda: reader.interrupt_running("restarted"),
            lambda: reader.log(job, "info", "x"),
            lambda: reader.hold("web", ResourceKind.LXC, "300", "pve1", ResourceState.CREATED, job),
            lambda: reader.set_address("web", ResourceKind.LXC, "300", "192.168.50.30"),
            lambda: reader.record_setup("web", 300, "sha256:abc", job),
            lambda: reader.forget_setup("web"),
            lambda: reader.intend("web", 300, "pve1", "create", job),
            lambda: reader.settle(intent),
            lambda: reader.record_applied("web", 300, {}, job),
            lambda: reader.record_correction("web", 300, ["memory"], 1.0),
            lambda: reader.forget("web"),
        ]
        for write in writes:
            with pytest.raises(StateError, match="opened read-only"):
                write()
        assert [i.id for i in reader.intents()] == [intent]
    finally:
        reader.close()
    assert dump(path) == before


def test_a_read_only_open_of_a_missing_file_is_none_and_makes_nothing(tmp_path: Path) -> None:
    assert JobStore.open_readonly(tmp_path / "jobs.sqlite") is None
    assert JobStore.open_readonly(tmp_path / "missing" / "jobs.sqlite") is None
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_open_of_a_file_at_another_version_is_refused(tmp_path: Path, old_file: Path) -> None:
    # 0.1.0's file, not migrated yet: a reader does not migrate it.
    before = old_file.read_bytes()
    with pytest.raises(StateError, match=r"schema version 0, older than this reconciler's 4: start the upgraded"):
        JobStore.open_readonly(old_file)
    assert old_file.read_bytes() == before
    assert user_version(old_file) == 0

    newer = tmp_path / "newer.sqlite"
    with opened(newer):
        pass
    with raw(newer) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StateError, match=r"schema version 99, newer than this reconciler's 4\b"):
        JobStore.open_readonly(newer)


def test_a_path_with_uri_characters_opens_read_only(tmp_path: Path) -> None:
    path = tmp_path / "a ?b#c%d" / "jobs.sqlite"
    with opened(path) as writer:
        writer.create_job("create", "web", "small", {})
    reader = JobStore.open_readonly(path)
    assert reader is not None
    try:
        assert [j.request for j in reader.jobs()] == ["web"]
    finally:
        reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a ?b#c%d"]


def test_a_database_an_older_release_left_open_to_others_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    JobStore(path).close()
    for part in tmp_path.iterdir():
        part.chmod(0o644)
    store = JobStore(path)
    try:
        store.create_job("create", "blog", None, {})
        assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == dict.fromkeys(
            ("jobs.sqlite", "jobs.sqlite-wal", "jobs.sqlite-shm"), 0o600
        )
    finally:
        store.close()
