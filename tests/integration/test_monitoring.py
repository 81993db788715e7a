"""The monitoring role and its cron collector on real parts: PostgreSQL with QFieldCloud's schema, a DB-backed compose
stack, a real Ansible converge, the exact command from the cron entry, and a webhook receiver on loopback."""

from __future__ import annotations

import fcntl
import http.server
import json
import re
import shlex
import subprocess
import threading
import time

import pytest
from conftest import BIN, ROOT, all_versions, make_db_stack, run_playbook

from tests.support import datagen

PLAYBOOK = ROOT / "playbooks" / "monitoring.yml"


class Hooks(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        Hooks.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    Hooks.received = []
    server = http.server.HTTPServer(("127.0.0.1", 0), Hooks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d/hook" % server.server_port, Hooks.received
    server.shutdown()


@pytest.fixture
def monitored(tmp_path, qfcdb, webhook):
    """A quiet queue (every job is stuck or locked, so the worker takes none), one worker, the role's paths in tmp."""
    (user,) = datagen.make_users(qfcdb.conn, 1)
    locked, stale_p, orphan_p = datagen.make_projects(qfcdb.conn, qfcdb.project_table, 3, user, locked=1)
    jobs = {"locked": datagen.add_job(qfcdb.conn, locked, user, "pending", created_ago_s=60),
            "stale": datagen.add_job(qfcdb.conn, stale_p, user, "started", created_ago_s=7300, started_ago_s=7200),
            "orphaned": datagen.add_job(qfcdb.conn, orphan_p, user, "queued", created_ago_s=7200)}
    stack = make_db_stack(tmp_path, qfcdb, replicas=1)
    paths = {"qfc_project_src": stack.path, "qfc_monitoring_dir": tmp_path / "mon",
             "qfc_monitoring_python": BIN / "python", "qfc_monitoring_install_packages": False,
             "qfc_monitoring_cron_file": tmp_path / "cron.d" / "qfieldcloud-queue-metrics",
             "qfc_monitoring_log": tmp_path / "log" / "queue_metrics.log",
             "qfc_monitoring_logrotate_file": tmp_path / "logrotate.d" / "qfieldcloud-queue-metrics",
             "qfc_monitoring_textfile": tmp_path / "textfile" / "qfieldcloud_queue.prom",
             "qfc_monitoring_webhook_url": webhook[0], "qfc_monitoring_timeout": 10}
    (tmp_path / "cron.d").mkdir()
    (tmp_path / "logrotate.d").mkdir()
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("qfieldcloud:\n  hosts:\n    qfc1:\n      ansible_connection: local\n"
                         "      ansible_python_interpreter: %s\n" % (BIN / "python")
                         + "".join("      %s: %s\n" % (k, json.dumps(str(v) if not isinstance(v, (bool, int)) else v))
                                   for k, v in paths.items()))
    yield {"inventory": inventory, "paths": paths, "stack": stack, "db": qfcdb, "jobs": jobs, "hooks": webhook[1]}
    stack.down()


def changed(proc):
    match = re.search(r"qfc1\s+: ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=(\d+)", proc.stdout)
    assert match and match.group(2) == "0", proc.stdout[-3000:]
    return int(match.group(1))


def cron_command(paths):
    """The command exactly as the cron entry runs it."""
    line = [ln for ln in paths["qfc_monitoring_cron_file"].read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(line) == 1
    fields = line[0].split(None, 6)
    assert fields[:5] == ["*/5", "*", "*", "*", "*"] and fields[5] == "root"
    return fields[6]


def run_cron_command(paths):
    command = cron_command(paths).replace(">/dev/null 2>&1", "")
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60, check=False)


def rows(paths):
    return [line.split(",") for line in paths["qfc_monitoring_log"].read_text().splitlines()]


def test_converge_is_idempotent_check_safe_and_removable(monitored):
    inv, paths = monitored["inventory"], monitored["paths"]
    assert changed(run_playbook(PLAYBOOK, inv, check=True)) > 0  # predicts the install, writes nothing
    assert not paths["qfc_monitoring_dir"].exists() and not paths["qfc_monitoring_cron_file"].exists()
    assert changed(run_playbook(PLAYBOOK, inv)) > 0
    assert changed(run_playbook(PLAYBOOK, inv)) == 0
    assert changed(run_playbook(PLAYBOOK, inv, check=True)) == 0
    assert "qfc-queue-collector --config" in cron_command(paths)
    rotate = paths["qfc_monitoring_logrotate_file"].read_text()
    assert str(paths["qfc_monitoring_log"]) in rotate and "rotate 12" in rotate
    # the collector runs the collection's own query code, copied verbatim
    copied = paths["qfc_monitoring_dir"] / "lib/ansible_collections/qfieldcloud/ops/plugins/module_utils/_queue.py"
    assert copied.read_text() == (ROOT / "plugins/module_utils/_queue.py").read_text()
    assert run_cron_command(paths).returncode == 0
    removed = run_playbook(PLAYBOOK, inv, {"qfc_monitoring_state": "absent"})
    assert changed(removed) > 0
    assert not paths["qfc_monitoring_cron_file"].exists() and not paths["qfc_monitoring_dir"].exists()
    assert not paths["qfc_monitoring_textfile"].exists() and not paths["qfc_monitoring_logrotate_file"].exists()
    assert paths["qfc_monitoring_log"].exists()  # history is kept unless purged
    assert changed(run_playbook(PLAYBOOK, inv, {"qfc_monitoring_state": "absent"})) == 0
    rotated = paths["qfc_monitoring_log"].with_name("queue_metrics.log.1.gz")
    rotated.write_text("old")
    purged = run_playbook(PLAYBOOK, inv, {"qfc_monitoring_state": "absent", "qfc_monitoring_purge_log": True})
    assert changed(purged) > 0 and not paths["qfc_monitoring_log"].exists() and not rotated.exists()


@all_versions
def test_cron_command_writes_csv_and_textfile_matching_the_database(monitored):
    inv, paths, db = monitored["inventory"], monitored["paths"], monitored["db"]
    assert changed(run_playbook(PLAYBOOK, inv)) > 0
    proc = run_cron_command(paths)
    assert proc.returncode == 0, proc.stderr
    assert len(rows(paths)) == 2  # the role's own first run, then cron's
    row = rows(paths)[-1]
    assert len(row) == 20 and re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", row[0])
    live = dict(db.all("SELECT status, count(*) FROM core_job GROUP BY status"))
    assert int(row[1]) == live.get("pending", 0) + live.get("queued", 0) == 2
    assert row[2:9] == ["1", "1", "1", "0", "1", "1", "0"]  # pending queued started backlog configured running busy
    assert row[14:19] == ["1", "1", "0", "ok", ""]
    # The worker timeout's source, last column: .env on v26.24+ (the stack's compose file passes the variable, as
    # upstream's does from v26.24, which tells a v26.23-shaped schema apart); no constance row on the older ones.
    source = "env" if db.version not in ("v25.26", "v26.20") else "default"
    assert row[19] == source
    prom = paths["qfc_monitoring_textfile"].read_text()
    project = monitored["stack"].project
    assert "# HELP qfieldcloud_queue_depth " in prom and "# TYPE qfieldcloud_queue_depth gauge" in prom
    assert 'qfieldcloud_queue_depth{project="%s"} 2' % project in prom
    assert 'qfieldcloud_stuck_jobs{kind="stale",project="%s"} 1' % project in prom
    assert 'qfieldcloud_workers_running{project="%s"} 1' % project in prom
    assert 'qfieldcloud_worker_timeout_seconds{project="%s",source="%s"} 600' % (project, source) in prom
    assert 'qfieldcloud_collector_up{project="%s"} 1' % project in prom
    # the seed's awk one-liner still reads the log
    awk = subprocess.run(["awk", "-F,", "{sum+=$2; count++} END {print sum/count}", str(paths["qfc_monitoring_log"])],
                         capture_output=True, text=True, check=True)
    assert awk.stdout.strip() == "2"


def test_alerts_fire_once_per_change_and_survive_a_database_outage(monitored):
    inv, paths, db, hooks = monitored["inventory"], monitored["paths"], monitored["db"], monitored["hooks"]
    assert changed(run_playbook(PLAYBOOK, inv)) > 0
    assert run_cron_command(paths).returncode == 0
    started = sorted(h["alert"]["code"] for h in hooks if h["event"] == "started")
    assert started == ["stuck_orphaned_queued", "stuck_stale"]
    assert run_cron_command(paths).returncode == 0
    assert len(hooks) == 2  # nothing new: no repeat every run

    with db.conn, db.conn.cursor() as cur:  # the stale job ends
        cur.execute("UPDATE core_job SET status = 'finished', finished_at = now() WHERE id = %s",
                    [monitored["jobs"]["stale"]])
    assert run_cron_command(paths).returncode == 0
    assert [(h["event"], h["alert"]["code"]) for h in hooks[2:]] == [("ended", "stuck_stale")]

    env_file = monitored["stack"].env_file
    good = env_file.read_text()
    env_file.write_text(re.sub(r"^POSTGRES_PORT=.*$", "POSTGRES_PORT=1", good, flags=re.M))  # database unreachable
    down = run_cron_command(paths)
    assert down.returncode == 1 and "Cannot connect to PostgreSQL" in down.stderr
    assert db.pg.password not in down.stderr
    last = rows(paths)[-1]
    assert last[1] == "" and last[17] == "error" and "Cannot connect" in last[18]
    prom = paths["qfc_monitoring_textfile"].read_text()
    assert re.search(r"qfieldcloud_collector_up\{[^}]*\} 0", prom)
    assert re.search(r"qfieldcloud_collector_last_success_timestamp_seconds\{[^}]*\} \d+", prom)
    assert "qfieldcloud_queue_depth" not in prom
    assert hooks[-1]["event"] == "started" and hooks[-1]["alert"]["code"] == "collector_failed"

    env_file.write_text(good)  # the next run recovers by itself
    assert run_cron_command(paths).returncode == 0
    assert rows(paths)[-1][17] == "ok"
    assert ("ended", "collector_failed") in [(h["event"], h["alert"]["code"]) for h in hooks]


def test_timeout_and_concurrent_runs(monitored):
    inv, paths = monitored["inventory"], monitored["paths"]
    assert changed(run_playbook(PLAYBOOK, inv, {"qfc_monitoring_timeout": 2})) > 0
    lock = open(paths["qfc_monitoring_dir"] / "var" / "collector.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)  # a previous run that hangs on to the lock
    try:
        start = time.monotonic()
        proc = run_cron_command(paths)
        assert proc.returncode == 2 and "longer than 2s" in proc.stderr
        assert time.monotonic() - start < 5
    finally:
        lock.close()
    assert len(rows(paths)) == 1  # the role's first run only: without the lock the run writes nothing
    assert changed(run_playbook(PLAYBOOK, inv)) > 0  # back to the default timeout (and a first run again)
    command = cron_command(paths).replace(">/dev/null 2>&1", "")
    procs = [subprocess.Popen(["sh", "-c", command]) for _n in range(6)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 6
    assert len(rows(paths)) == 8 and all(len(r) == 20 and r[17] == "ok" for r in rows(paths))


def test_argument_spec_rejects_bad_state(monitored):
    proc = run_playbook(PLAYBOOK, monitored["inventory"], {"qfc_monitoring_state": "gone"})
    assert proc.returncode != 0 and "qfc_monitoring_state" in proc.stdout
    assert not monitored["paths"]["qfc_monitoring_dir"].exists()


def test_cron_entry_is_a_shell_command(monitored):
    assert changed(run_playbook(PLAYBOOK, monitored["inventory"])) > 0
    argv = shlex.split(cron_command(monitored["paths"]))
    assert argv[0] == str(BIN / "python") and argv[-2:] == [">/dev/null", "2>&1"]


def test_a_broken_webhook_never_breaks_a_run(monitored):
    inv, paths = monitored["inventory"], monitored["paths"]
    assert changed(run_playbook(PLAYBOOK, inv, {"qfc_monitoring_webhook_url": "not a url"})) > 0
    first = run_cron_command(paths)
    assert first.returncode == 0, first.stderr
    state = json.loads((paths["qfc_monitoring_dir"] / "var" / "state.json").read_text())
    assert set(state["alerts"]) == {"stuck_stale", "stuck_orphaned_queued"}  # saved, so not re-sent next run
    assert run_cron_command(paths).returncode == 0 and [r[17] for r in rows(paths)] == ["ok", "ok", "ok"]
