"""The monitoring role and its cron collector on real parts: PostgreSQL with QFieldCloud's schema, a DB-backed compose
stack, a real Ansible converge, the exact command from the cron entry, and a webhook receiver on loopback."""

from __future__ import annotations

import fcntl
import http.server
import json
import re
import shlex
import subprocess
import sys
import threading
import time

import pytest
from conftest import BIN, ROOT, all_versions, make_db_stack, run_module, run_playbook

from tests.support import datagen

sys.path.insert(0, str(ROOT / ".collections"))
from ansible_collections.qfieldcloud.ops.plugins.module_utils import _metrics_log  # noqa: E402

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


def role_inventory(tmp_path, stack, **extra):
    """An inventory of one local host with the role's paths in tmp (and ``extra`` host variables)."""
    paths = {"qfc_project_src": stack.path, "qfc_monitoring_dir": tmp_path / "mon",
             "qfc_monitoring_python": BIN / "python", "qfc_monitoring_install_packages": False,
             "qfc_monitoring_cron_file": tmp_path / "cron.d" / "qfieldcloud-queue-metrics",
             "qfc_monitoring_log": tmp_path / "log" / "queue_metrics.log",
             "qfc_monitoring_logrotate_file": tmp_path / "logrotate.d" / "qfieldcloud-queue-metrics",
             "qfc_monitoring_textfile": tmp_path / "textfile" / "qfieldcloud_queue.prom",
             "qfc_monitoring_timeout": 10}
    paths.update(extra)
    (tmp_path / "cron.d").mkdir()
    (tmp_path / "logrotate.d").mkdir()
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("qfieldcloud:\n  hosts:\n    qfc1:\n      ansible_connection: local\n"
                         "      ansible_python_interpreter: %s\n" % (BIN / "python")
                         + "".join("      %s: %s\n" % (k, json.dumps(str(v) if not isinstance(v, (bool, int)) else v))
                                   for k, v in paths.items()))
    return inventory, paths


@pytest.fixture
def monitored(tmp_path, qfcdb, webhook):
    """A quiet queue (every job is stuck or locked, so the worker takes none), one worker, the role's paths in tmp."""
    (user,) = datagen.make_users(qfcdb.conn, 1)
    locked, stale_p, orphan_p = datagen.make_projects(qfcdb.conn, qfcdb.project_table, 3, user, locked=1)
    jobs = {"locked": datagen.add_job(qfcdb.conn, locked, user, "pending", created_ago_s=60),
            "stale": datagen.add_job(qfcdb.conn, stale_p, user, "started", created_ago_s=7300, started_ago_s=7200),
            "orphaned": datagen.add_job(qfcdb.conn, orphan_p, user, "queued", created_ago_s=7200)}
    stack = make_db_stack(tmp_path, qfcdb, replicas=1)
    inventory, paths = role_inventory(tmp_path, stack, qfc_monitoring_webhook_url=webhook[0])
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
    # the operations log of the scale and job_cleanup roles, by their default path, renamed monthly
    operations = rotate.split("/var/log/qfieldcloud/operations.jsonl {", 1)[1]
    assert "monthly" in operations and "rotate 24" in operations and "copytruncate" not in operations
    # the collector runs the collection's own query code, copied verbatim
    copied = paths["qfc_monitoring_dir"] / "lib/ansible_collections/qfieldcloud/ops/plugins/module_utils"
    assert copied.joinpath("_queue.py").read_text() == (ROOT / "plugins/module_utils/_queue.py").read_text()
    assert {"_queue.py", "_metrics_log.py", "_policy.py", "_files.py"} <= {p.name for p in copied.glob("*.py")}
    for path in copied.glob("*.py"):
        assert path.read_text() == (ROOT / "plugins/module_utils" / path.name).read_text(), path.name
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
    # what the collector really wrote is what the capacity report reads (_metrics_log, the format's one home)
    parsed = _metrics_log.parse(paths["qfc_monitoring_log"].read_text())
    assert (parsed["lines"], parsed["garbled"], len(parsed["rows"])) == (2, 0, 2)
    last = parsed["rows"][-1]
    assert last["ts"].strftime(_metrics_log.TIMESTAMP_FORMAT) == row[0]
    assert (last["status"], last["error"], last["worker_timeout_source"]) == ("ok", "", source)
    assert {c: last[c] for c in _metrics_log.NUMERIC_COLUMNS} == {
        "queue_depth": 2, "pending": 1, "queued": 1, "started": 1, "useful_backlog": 0, "workers_configured": 1,
        "workers_running": 1, "workers_busy": 0, "finished_last_hour": int(row[9]), "failed_last_hour": int(row[10]),
        "success_rate": float(row[11]) if row[11] else None, "duration_p50_s": float(row[12]) if row[12] else None,
        "duration_p95_s": float(row[13]) if row[13] else None, "stuck_stale": 1, "stuck_orphaned_queued": 1,
        "stuck_old_pending": 0}
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
    assert down.returncode == 5 and "Cannot connect to PostgreSQL" in down.stderr  # unavailable, and only that
    assert db.pg.password not in down.stderr
    last = rows(paths)[-1]
    assert last[1] == "" and last[17] == "error" and "Cannot connect" in last[18]
    parsed = _metrics_log.parse_line(paths["qfc_monitoring_log"].read_text().splitlines()[-1])
    assert parsed["status"] == "error" and parsed["error"].startswith("Cannot connect")
    assert parsed["queue_depth"] is None and parsed["worker_timeout_source"] is None
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


def test_a_renamed_worker_service_and_variable_are_followed(tmp_path, qfcdb):
    """The scale role's qfc_worker_service and qfc_env_var, set in the inventory, are what the monitoring role counts
    (and qfc_queue_facts with the same names): a real stack whose workers are the service `qfc_worker`, counted by
    QFC_WORKERS, while QFIELDCLOUD_WORKER_REPLICAS says something else."""
    stack = make_db_stack(tmp_path, qfcdb, replicas=2, start=False)
    compose = stack.path / "docker-compose.yml"
    compose.write_text(compose.read_text().replace("\n  worker_wrapper:\n", "\n  qfc_worker:\n")
                       .replace("${QFIELDCLOUD_WORKER_REPLICAS}", "${QFC_WORKERS}"))
    stack.set_env("QFC_WORKERS", "2")
    stack.set_env("QFIELDCLOUD_WORKER_REPLICAS", "7")
    stack.up()
    try:
        assert len(stack.running("qfc_worker")) == 2 and stack.running() == []
        inventory, paths = role_inventory(tmp_path, stack, qfc_worker_service="qfc_worker", qfc_env_var="QFC_WORKERS")
        assert changed(run_playbook(PLAYBOOK, inventory)) > 0  # includes the role's first run, which must succeed
        config = json.loads((paths["qfc_monitoring_dir"] / "collector.json").read_text())
        assert (config["service"], config["env_var"]) == ("qfc_worker", "QFC_WORKERS")
        proc = run_cron_command(paths)
        assert proc.returncode == 0, proc.stderr
        row = _metrics_log.parse(paths["qfc_monitoring_log"].read_text())["rows"][-1]
        assert (row["status"], row["workers_configured"], row["workers_running"]) == ("ok", 2, 2)
        prom = paths["qfc_monitoring_textfile"].read_text()
        assert 'qfieldcloud_workers_running{project="%s"} 2' % stack.project in prom
        assert "workers_missing" not in json.loads((paths["qfc_monitoring_dir"] / "var" / "state.json").read_text())[
            "alerts"]
        facts = run_module({"project_src": str(stack.path), "service": "qfc_worker", "env_var": "QFC_WORKERS"},
                           module="qfieldcloud.ops.qfc_queue_facts")
        assert not facts.failed, facts
        assert facts["ansible_facts"]["qfc_queue"]["workers"] == {"configured": 2, "running": 2, "busy": 0}
        # the module's defaults count worker_wrapper and QFIELDCLOUD_WORKER_REPLICAS: none of 7 runs here
        default = run_module({"project_src": str(stack.path)}, module="qfieldcloud.ops.qfc_queue_facts")
        assert default["ansible_facts"]["qfc_queue"]["workers"] == {"configured": 7, "running": 0, "busy": 0}
    finally:
        stack.down()
