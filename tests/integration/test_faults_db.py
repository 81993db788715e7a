"""Database faults against qfc_queue_facts and qfc_job_cleanup (issue 9): a real PostgreSQL, real Ansible runs.

Hangs are injected with SIGSTOP: on the postmaster (the login gets no answer) or on the backend serving the module
(found in pg_stat_activity by application_name 'qfieldcloud.ops' once it waits on something the test controls: a
table lock or a pg_sleep in a trigger), always resumed with SIGCONT in a finally. Each hang must end within the
configured timeout + 5 s, with a message that names the server and says what was already changed. The backend
cases set connect_timeout=20: a later call must give up after statement_timeout + 2 s, not after the login's timeout.

Runs that may hang, run in the background, are timed or are in check mode are ad-hoc subprocesses with a deadline
(run_module); the others run in-process through pytest-ansible (run_qfc_module). tests/support/ansible_run.py says why.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
from conftest import run_module

from tests.support import datagen
from tests.support.pgcluster import free_port

FACTS = "qfieldcloud.ops.qfc_queue_facts"
CLEANUP = "qfieldcloud.ops.qfc_job_cleanup"
GRACE_S = 2.0  # _postgres.CANCEL_GRACE_S: the client waits statement_timeout + this for one call
MARGIN_S = 5.0  # the bound: a hang ends within its timeout + 5 s
MEASURED = {}  # name -> seconds, printed at the end of the module (pytest -s) for the reliability notes


@pytest.fixture(scope="module", autouse=True)
def report_measurements():
    yield
    for name, value in sorted(MEASURED.items()):
        print("measured %s: %s" % (name, value))


class Background:
    """One module run in a thread, so that the test can inject the fault while it runs."""

    def __init__(self, args, module, check=False):
        self.result = None
        self.started = time.monotonic()
        self.ended = None
        self.thread = threading.Thread(target=self._run, args=(args, module, check), daemon=True)
        self.thread.start()

    def _run(self, args, module, check):
        try:
            self.result = run_module(args, module=module, check=check, timeout=180)
        finally:
            self.ended = time.monotonic()

    def join(self, timeout=180):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the module run did not end"
        return self.result


def monitor(db):
    conn = db.pg.connect(dbname=db.name)
    conn.autocommit = True
    return conn


def wait_for_backend(db, condition, run, timeout=60):
    """pid of the module's backend once ``condition`` (SQL on pg_stat_activity) holds for it."""
    conn = monitor(db)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert run.ended is None, "the module ended before the fault could be injected: %r" % (run.result,)
            with conn.cursor() as cur:
                cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'qfieldcloud.ops'"
                            " AND datname = %%s AND %s" % condition, [db.name])
                row = cur.fetchone()
            if row:
                return row[0]
            time.sleep(0.01)
    finally:
        conn.close()
    raise AssertionError("the module's backend never reached: %s" % condition)


def wait_gone(db, pid, timeout=30):
    conn = monitor(db)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
                if not cur.fetchone()[0]:
                    return
            time.sleep(0.05)
    finally:
        conn.close()


def postmaster_pid(pg):
    return int((pg.datadir / "postmaster.pid").read_text().split()[0])


def statuses(db, ids):
    return [db.status(i) for i in ids]


def stale_jobs(db, n, delta_apply_at=()):
    """n stale jobs on separate projects, oldest first; the ones at ``delta_apply_at`` are delta_apply jobs."""
    (user,) = datagen.make_users(db.conn, 1)
    projects = datagen.make_projects(db.conn, db.project_table, n, user)
    ids, deltas = [], {}
    for i, project in enumerate(projects):
        age = 9000 - i * 10  # oldest first: the cleanup runs its batches in created_at order
        if i in delta_apply_at:
            job, deltas[i] = datagen.add_delta_apply_job(db.conn, project, user, n_deltas=2, status="started",
                                                         created_ago_s=age, started_ago_s=age - 5)
        else:
            job = datagen.add_job(db.conn, project, user, "started", created_ago_s=age, started_ago_s=age - 5)
        ids.append(job)
    return ids, deltas


def ansible_overhead(db, module):
    """Seconds of a run that fails at once (an invalid option): Ansible's own start and stop on this machine, which
    a whole-run bound adds to the module's share."""
    started = time.monotonic()
    result = run_module(env(db, connect_timeout=0), module=module)
    assert result.failed and "connect_timeout must be" in result["msg"], result
    return time.monotonic() - started


def env(db, **args):
    # env_file first: ansible-core 2.19 prints an ad-hoc task's first argument in its error "Origin" line (the
    # command line's own text, not the module's output), so a password given first on the command line shows there
    return dict({"env_file": str(db.env_file)}, **args)


# --- a server that accepts the login and then never answers ---------------------------------------------------


def test_facts_backend_hung_after_login(qfcdb):
    """The backend stops while the facts query runs: the client gives up at statement_timeout + 2 s."""
    datagen.add_stuck(qfcdb.conn, qfcdb.project_table, 3, "stale")
    blocker = monitor(qfcdb)
    blocker.autocommit = False
    pid = None
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE core_job IN ACCESS EXCLUSIVE MODE")
        run = Background(env(qfcdb, statement_timeout=3000, connect_timeout=20), FACTS)
        pid = wait_for_backend(qfcdb, "wait_event_type = 'Lock'", run)
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        result = run.join()
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)
        blocker.rollback()
        blocker.close()
    hang_s = run.ended - stopped
    MEASURED["facts backend hung (statement_timeout 3 s, client gives up at 5 s)"] = "%.1f s after SIGSTOP, " \
        "%.1f s whole run" % (hang_s, run.ended - run.started)
    assert result.failed, result
    assert hang_s <= 3 + GRACE_S + MARGIN_S
    msg = result["msg"]
    assert "PostgreSQL at qfieldcloud_db_admin@127.0.0.1:%d/%s stopped answering" % (qfcdb.pg.port, qfcdb.name) in msg
    assert "client-side deadline" in msg and "nothing was changed" in msg


@pytest.mark.parametrize("module", [FACTS, CLEANUP])
def test_login_gets_no_answer(qfcdb, module):
    """The postmaster is stopped: TCP connects (the kernel's backlog), the login never gets an answer."""
    datagen.add_stuck(qfcdb.conn, qfcdb.project_table, 2, "stale")
    overhead = ansible_overhead(qfcdb, module)
    pid = postmaster_pid(qfcdb.pg)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = run_module(env(qfcdb, connect_timeout=3), module=module, timeout=120)
        took = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    MEASURED["%s login hung (connect_timeout 3 s)" % module.rsplit(".", 1)[1]] = \
        "%.1f s whole run, %.1f s for a run that fails at once" % (took, overhead)
    assert result.failed, result
    assert took <= 3 + MARGIN_S + overhead
    msg = result["msg"]
    assert "Cannot connect to PostgreSQL at qfieldcloud_db_admin@127.0.0.1:%d/%s" % (qfcdb.pg.port, qfcdb.name) in msg
    assert "did not answer within 3.0 s" in msg and "othing was changed" in msg
    assert qfcdb.one("SELECT count(*) FROM core_job WHERE status = 'failed'")[0] == 0


def test_cleanup_backend_hung_during_the_selection(qfcdb):
    ids, _deltas = stale_jobs(qfcdb, 2)
    blocker = monitor(qfcdb)
    blocker.autocommit = False
    pid = None
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE core_job IN ACCESS EXCLUSIVE MODE")
        run = Background(env(qfcdb, statement_timeout=3000, lock_timeout=3000, connect_timeout=20), CLEANUP)
        pid = wait_for_backend(qfcdb, "wait_event_type = 'Lock'", run)
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        result = run.join()
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)
        blocker.rollback()
        blocker.close()
    hang_s = run.ended - stopped
    MEASURED["cleanup backend hung in the selection (statement_timeout 3 s)"] = "%.1f s after SIGSTOP" % hang_s
    assert result.failed and hang_s <= 3 + GRACE_S + MARGIN_S, result
    msg = result["msg"]
    assert "Cleanup failed on qfieldcloud_db_admin@127.0.0.1:%d/%s during the selection of stuck jobs: the server " \
           "stopped answering" % (qfcdb.pg.port, qfcdb.name) in msg
    assert msg.endswith("Nothing was changed.")
    assert result["changed"] is False and result["count"] == 0 and result["batches"] == 0
    wait_gone(qfcdb, pid)
    assert statuses(qfcdb, ids) == ["started", "started"]


SLEEP_TRIGGER = """
CREATE FUNCTION qfct_slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(60); RETURN NEW; END $$;
CREATE TRIGGER qfct_slow BEFORE UPDATE ON core_job FOR EACH ROW WHEN (OLD.id = '%s') EXECUTE FUNCTION qfct_slow();
"""


def slow_update_of(db, job_id):
    """Updating this one job sleeps in the server: the test knows which batch the backend is in."""
    with db.conn, db.conn.cursor() as cur:
        cur.execute(SLEEP_TRIGGER % job_id)


def test_cleanup_backend_hung_in_batch_2_reports_batch_1(qfcdb):
    ids, _deltas = stale_jobs(qfcdb, 3)
    slow_update_of(qfcdb, ids[1])
    pid = None
    try:
        run = Background(env(qfcdb, batch_size=1, statement_timeout=4000, connect_timeout=20), CLEANUP)
        pid = wait_for_backend(qfcdb, "wait_event = 'PgSleep'", run)
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        result = run.join()
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)
    hang_s = run.ended - stopped
    MEASURED["cleanup backend hung in batch 2 (statement_timeout 4 s)"] = "%.1f s after SIGSTOP" % hang_s
    assert result.failed and hang_s <= 4 + GRACE_S + MARGIN_S, result
    assert result["changed"] is True and result["count"] == 1 and [j["id"] for j in result["jobs"]] == ids[:1]
    assert (result["failed_batch"], result["failed_batch_jobs"], result["failed_batch_outcome"]) == \
        (2, ids[1:2], "rolled back")
    assert result["batches"] == 1
    msg = result["msg"]
    assert "during batch 2 of 3: the server stopped answering" in msg
    assert "Batch 1 of 3 was committed: 1 job failed (listed in jobs). Batch 2 (1 job) was rolled back: " \
           "nothing of it was changed. Batch 3 was not run." in msg
    wait_gone(qfcdb, pid)  # the resumed backend finds the client gone and rolls back
    assert statuses(qfcdb, ids) == ["failed", "started", "started"]


def test_cleanup_connection_killed_in_batch_2(qfcdb):
    """The server ends the session in the middle of batch 2 (a restart, pg_terminate_backend): batch 1 stays."""
    ids, _deltas = stale_jobs(qfcdb, 3)
    slow_update_of(qfcdb, ids[1])
    run = Background(env(qfcdb, batch_size=1), CLEANUP)
    pid = wait_for_backend(qfcdb, "wait_event = 'PgSleep'", run)
    killer = monitor(qfcdb)
    try:
        with killer.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        killer.close()
    result = run.join()
    assert result.failed, result
    assert result["changed"] is True and result["count"] == 1 and [j["id"] for j in result["jobs"]] == ids[:1]
    assert (result["failed_batch"], result["failed_batch_outcome"]) == (2, "rolled back")
    assert "during batch 2 of 3: the connection to the server was lost (FATAL: terminating connection due to " \
           "administrator command" in result["msg"]
    assert "Batch 1 of 3 was committed: 1 job failed" in result["msg"]
    assert statuses(qfcdb, ids) == ["failed", "started", "started"]


COMMIT_TRIGGER = """
CREATE FUNCTION qfct_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END
$$;
CREATE CONSTRAINT TRIGGER qfct_slow_commit AFTER UPDATE ON core_job DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.id = '%s') EXECUTE FUNCTION qfct_slow_commit();
"""


def test_cleanup_backend_hung_during_commit_reports_an_unknown_outcome(qfcdb):
    """The server stops while it commits batch 2 (a deferred trigger runs at COMMIT): the client cannot know whether
    the batch was committed and must say so, not claim it was rolled back."""
    ids, _deltas = stale_jobs(qfcdb, 3)
    with qfcdb.conn, qfcdb.conn.cursor() as cur:
        cur.execute(COMMIT_TRIGGER % ids[1])
    pid = None
    try:
        run = Background(env(qfcdb, batch_size=1, statement_timeout=3000, connect_timeout=20), CLEANUP)
        pid = wait_for_backend(qfcdb, "wait_event = 'PgSleep'", run)
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        result = run.join()
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)
    hang_s = run.ended - stopped
    MEASURED["cleanup backend hung in COMMIT of batch 2 (statement_timeout 3 s)"] = "%.1f s after SIGSTOP" % hang_s
    assert result.failed and hang_s <= 3 + GRACE_S + MARGIN_S, result
    assert result["changed"] is True and result["count"] == 1 and [j["id"] for j in result["jobs"]] == ids[:1]
    assert (result["failed_batch"], result["failed_batch_jobs"], result["failed_batch_outcome"]) == \
        (2, ids[1:2], "unknown")
    assert "Batch 2 (1 job, listed in failed_batch_jobs) may or may not have been committed" in result["msg"]
    wait_gone(qfcdb, pid)
    assert statuses(qfcdb, ids)[0] == "failed" and statuses(qfcdb, ids)[2] == "started"


# --- defect 9: statement and lock timeouts on every statement ---------------------------------------------------


def test_cleanup_statement_timeout_cancels_a_slow_batch(qfcdb):
    ids, _deltas = stale_jobs(qfcdb, 3)
    slow_update_of(qfcdb, ids[1])
    overhead = ansible_overhead(qfcdb, CLEANUP)
    started = time.monotonic()
    result = run_module(env(qfcdb, batch_size=1, statement_timeout=1000), module=CLEANUP, timeout=60)
    took = time.monotonic() - started
    MEASURED["cleanup statement_timeout 1 s on a 60 s statement"] = \
        "%.1f s whole run, %.1f s for a run that fails at once" % (took, overhead)
    assert result.failed and took <= 1 + MARGIN_S + overhead, result
    assert "a statement ran longer than statement_timeout (1000 ms) and the server cancelled it" in result["msg"]
    assert result["changed"] is True and result["count"] == 1 and result["failed_batch"] == 2
    assert statuses(qfcdb, ids) == ["failed", "started", "started"]


@pytest.mark.parametrize("check", [False, True])
def test_cleanup_fails_fast_on_a_table_lock(qfcdb, check):
    """LOCK TABLE core_job IN ACCESS EXCLUSIVE MODE (a migration, VACUUM FULL): the selection waits lock_timeout."""
    ids, _deltas = stale_jobs(qfcdb, 2)
    overhead = ansible_overhead(qfcdb, CLEANUP)
    blocker = monitor(qfcdb)
    blocker.autocommit = False
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE core_job IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        result = run_module(env(qfcdb), module=CLEANUP, check=check, timeout=60)
        took = time.monotonic() - started
    finally:
        blocker.rollback()
        blocker.close()
    MEASURED["cleanup under LOCK TABLE core_job (lock_timeout 1 s)%s" % (" check" if check else "")] = \
        "%.1f s whole run, %.1f s for a run that fails at once" % (took, overhead)
    assert result.failed, result
    assert "core_job is locked by another session (a migration, VACUUM FULL or LOCK TABLE?): lock_timeout of " \
           "1000 ms exceeded" in result["msg"]
    assert result["msg"].endswith("Nothing was changed.") and result["changed"] is False
    assert took <= 1 + MARGIN_S + overhead
    assert statuses(qfcdb, ids) == ["started", "started"]


# --- defect 10: partial failures told truthfully; locked delta rows skipped with their job ---------------------


@pytest.mark.parametrize("table", ["core_delta", "core_applyjobdelta"])
def test_cleanup_skips_a_job_whose_delta_rows_are_locked(qfcdb, table, run_qfc_module):
    ids, deltas = stale_jobs(qfcdb, 3, delta_apply_at=(1,))
    holder = monitor(qfcdb)
    holder.autocommit = False
    try:
        with holder.cursor() as cur:
            if table == "core_delta":
                cur.execute("SELECT 1 FROM core_delta WHERE id = %s FOR UPDATE", [deltas[1][1]])
            else:
                cur.execute("SELECT 1 FROM core_applyjobdelta WHERE delta_id = %s FOR UPDATE", [deltas[1][0]])
        started = time.monotonic()
        result = run_module(env(qfcdb, batch_size=1), module=CLEANUP, timeout=60)
        took = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert not result.failed, result
    assert result["changed"] is True and result["count"] == 2
    assert [j["id"] for j in result["jobs"]] == [ids[0], ids[2]]
    assert result["left_alone"] == {"running_container": 0, "changed_meanwhile": 0, "locked_deltas": 1}
    assert took < 30
    assert statuses(qfcdb, ids) == ["failed", "started", "failed"]
    # the job left alone keeps its deltas as they were: nothing half-done
    assert qfcdb.all("SELECT DISTINCT last_status FROM core_delta WHERE id = ANY(%s::uuid[])", [deltas[1]]) == \
        [("pending",)]
    assert qfcdb.all("SELECT DISTINCT status FROM core_applyjobdelta WHERE apply_job_id = %s", [ids[1]]) == \
        [("pending",)]
    # once the lock is gone, the next run fails it the way upstream does
    again = run_qfc_module(env(qfcdb), module=CLEANUP)
    assert again["count"] == 1 and [j["id"] for j in again["jobs"]] == [ids[1]]
    assert qfcdb.all("SELECT DISTINCT last_status FROM core_delta WHERE id = ANY(%s::uuid[])", [deltas[1]]) == \
        [("error",)]


def test_cleanup_reports_the_batches_committed_before_a_failure(qfcdb):
    """batch_size 1; batch 2 (a delta_apply job) cannot lock core_applyjobdelta: batch 1 stays committed, and the
    result says so: changed, the job failed, which batch failed and that it was rolled back."""
    ids, deltas = stale_jobs(qfcdb, 3, delta_apply_at=(1,))
    blocker = monitor(qfcdb)
    blocker.autocommit = False
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE core_applyjobdelta IN ACCESS EXCLUSIVE MODE")
        result = run_module(env(qfcdb, batch_size=1), module=CLEANUP, timeout=60)
    finally:
        blocker.rollback()
        blocker.close()
    assert result.failed, result
    assert result["changed"] is True and result["count"] == 1 and [j["id"] for j in result["jobs"]] == ids[:1]
    assert (result["failed_batch"], result["failed_batch_jobs"], result["failed_batch_outcome"]) == \
        (2, ids[1:2], "rolled back")
    msg = result["msg"]
    assert "during batch 2 of 3: core_delta or core_applyjobdelta is locked by another session" in msg
    assert "Batch 1 of 3 was committed: 1 job failed (listed in jobs)." in msg
    assert "Batch 2 (1 job) was rolled back: nothing of it was changed. Batch 3 was not run." in msg
    assert statuses(qfcdb, ids) == ["failed", "started", "started"]
    assert qfcdb.all("SELECT DISTINCT last_status FROM core_delta WHERE id = ANY(%s::uuid[])", [deltas[1]]) == \
        [("pending",)]


def test_cleanup_result_lists_at_most_100_jobs_and_counts_all(qfcdb, run_qfc_module):
    ids = datagen.add_stuck(qfcdb.conn, qfcdb.project_table, 130, "stale")
    oldest = [r[0] for r in qfcdb.all("SELECT id::text FROM core_job WHERE id = ANY(%s::uuid[]) "
                                      "ORDER BY created_at LIMIT 100", [ids])]
    check = run_module(env(qfcdb), module=CLEANUP, check=True)
    assert check["count"] == 130 and len(check["jobs"]) == 100 and check["jobs_truncated"] is True
    assert [j["id"] for j in check["jobs"]] == oldest
    result = run_qfc_module(env(qfcdb, batch_size=40, max_jobs_listed=5), module=CLEANUP)
    assert result["count"] == 130 and result["batches"] == 4
    assert [j["id"] for j in result["jobs"]] == oldest[:5] and result["jobs_truncated"] is True
    assert qfcdb.one("SELECT count(*) FROM core_job WHERE status = 'failed'")[0] == 130
    none = run_qfc_module(env(qfcdb), module=CLEANUP)
    assert none["count"] == 0 and none["jobs"] == [] and none["jobs_truncated"] is False


# --- database down, wrong password, where the credentials go ---------------------------------------------------


@pytest.mark.parametrize("module", [FACTS, CLEANUP])
def test_database_down(qfcdb, module):
    port = free_port()  # nothing listens there
    result = run_module(env(qfcdb, login_port=port, connect_timeout=3), module=module, timeout=60)
    assert result.failed
    msg = result["msg"]
    assert "Cannot connect to PostgreSQL at qfieldcloud_db_admin@127.0.0.1:%d/%s" % (port, qfcdb.name) in msg
    assert "Connection refused" in msg and "othing was changed" in msg


@pytest.mark.parametrize("module", [FACTS, CLEANUP])
def test_wrong_password(qfcdb, module):
    result = run_module(env(qfcdb, login_password="N0t-The-Pw-31"), module=module, verbose=True)
    assert result.failed and "password authentication failed" in result["msg"]
    assert "othing was changed" in result["msg"]
    assert "N0t-The-Pw-31" not in result.output and qfcdb.pg.password not in result.output


@pytest.mark.parametrize("module", [FACTS, CLEANUP])
def test_a_resolvable_dotless_postgres_host_is_refused(qfcdb, module, run_qfc_module):
    """A dotless POSTGRES_HOST that this host resolves (here: its own hostname) may not be the server the containers
    reach: nothing is sent to it."""
    name = socket.gethostname()
    try:
        socket.getaddrinfo(name, None)
    except OSError:
        pytest.skip("the hostname does not resolve here")
    if "." in name:
        pytest.skip("the hostname has a domain")
    qfcdb.env_file.write_text(qfcdb.env_text(host=name))
    result = run_qfc_module(env(qfcdb), module=module)
    assert result.is_failed
    assert "POSTGRES_HOST=%s in .env is a name without a domain that this host resolves" % name in result["msg"]
    assert "Nothing was sent" in result["msg"]
    # an explicit login_host is the operator's decision
    explicit = run_qfc_module(env(qfcdb, login_host="127.0.0.1"), module=module)
    assert not explicit.is_failed, explicit


# --- bad numbers: refused before any connection ------------------------------------------------------------------

@pytest.mark.parametrize("module, args, fragment", [
    (CLEANUP, {"statement_timeout": 0}, "statement_timeout must be 1 to 2147483647 milliseconds"),
    (CLEANUP, {"statement_timeout": 2 ** 31}, "statement_timeout must be 1 to 2147483647 milliseconds"),
    (CLEANUP, {"lock_timeout": -1}, "lock_timeout must be 1 to 2147483647 milliseconds"),
    (CLEANUP, {"lock_timeout": 10 ** 12}, "lock_timeout must be 1 to 2147483647 milliseconds"),
    (CLEANUP, {"max_jobs_listed": -1}, "max_jobs_listed must be 0 or more"),
    (CLEANUP, {"connect_timeout": 0}, "connect_timeout must be 1 to 3600 seconds"),
    (CLEANUP, {"worker_timeout_s": 10 ** 12}, "worker_timeout_s must be positive and at most"),
    (CLEANUP, {"mode": "age", "older_than": "999999d"}, "a duration must be at most 36500d"),
    (CLEANUP, {"statement_timeout": "inf"}, "cannot convert Infinity to integer"),  # ansible-core's own check
    (FACTS, {"statement_timeout": 0}, "statement_timeout must be 1 to 2147483647 milliseconds"),
    (FACTS, {"connect_timeout": -3}, "connect_timeout must be 1 to 3600 seconds"),
    (FACTS, {"connect_timeout": 10 ** 9}, "connect_timeout must be 1 to 3600 seconds"),
    (FACTS, {"max_replicas_per_core": "inf"}, "max_replicas_per_core must be above 0 and at most 64"),
    (FACTS, {"max_replicas_per_core": "nan"}, "max_replicas_per_core must be above 0 and at most 64"),
    (FACTS, {"max_replicas_per_core": 0}, "max_replicas_per_core must be above 0 and at most 64"),
    (FACTS, {"thresholds": {"queue_depth_warning": "nan"}}, "thresholds must be finite and not negative"),
    (FACTS, {"thresholds": {"failed_ratio_critical": -1}}, "thresholds must be finite and not negative"),
    (FACTS, {"window": "999999d"}, "a duration must be at most 36500d"),
])
def test_bad_numbers_are_refused_before_any_change(qfcdb, module, args, fragment, run_qfc_module):
    ids, _deltas = stale_jobs(qfcdb, 1)
    result = run_qfc_module(env(qfcdb, **args), module=module)
    assert result.is_failed and fragment in result["msg"], result
    assert statuses(qfcdb, ids) == ["started"]
