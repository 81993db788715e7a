"""Fault injection for the monitoring collector and its role (issue 9): a database that hangs after the login or at
the login, a webhook that accepts and never answers, a full or read-only filesystem and missing directories under the
sinks, an interpreter without psycopg2, a non-root cron user, Compose's project name, secrets in diffs, removal of a
directory the role did not create, and bad numbers.

Real parts only: the session's PostgreSQL (SIGSTOP/SIGCONT of the backend or the postmaster), the collector run as a
subprocess exactly as cron runs it, a real tmpfs, loopback TCP listeners, the Docker Compose CLI and real
ansible-playbook runs of playbooks/monitoring.yml."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import BIN, FIXTURE_DB, ROOT, WORKER_SIM, ansible_env, make_db_stack, run_playbook

from tests.support import datagen
from tests.support.project import copy_project

PLAYBOOK = ROOT / "playbooks" / "monitoring.yml"
# QFC_TEST_COLLECTOR: run these tests against another collector script (e.g. an older one, to see them fail)
COLLECTOR = Path(os.environ.get("QFC_TEST_COLLECTOR") or ROOT / "roles/monitoring/files/qfc_queue_collector.py")
MODULE_UTILS = Path(os.environ.get("QFC_TEST_MODULE_UTILS") or ROOT / "plugins" / "module_utils")
# What the role copies beside the collector: its one list (roles/monitoring/vars/main.yml)
ROLE_VARS = yaml.safe_load((ROOT / "roles" / "monitoring" / "vars" / "main.yml").read_text())
COPIED_MODULE_UTILS = ROLE_VARS["_qfc_monitoring_module_utils"]
sys.path.insert(0, str(ROOT / "roles" / "monitoring" / "files"))
sys.path.insert(0, str(ROOT / ".collections"))
from ansible_collections.qfieldcloud.ops.plugins.module_utils import _engine  # noqa: E402


# --- helpers ------------------------------------------------------------------------------------------------------
def install(base, env_file, project_src, **config):
    """The collector laid out as the role installs it, with a config like the role's."""
    mon = base / "mon"
    lib = mon / "lib" / "ansible_collections" / "qfieldcloud" / "ops" / "plugins" / "module_utils"
    lib.mkdir(parents=True)
    (mon / "bin").mkdir()
    for name in COPIED_MODULE_UTILS:
        shutil.copy(MODULE_UTILS / name, lib / name)
    shutil.copy(COLLECTOR, mon / "bin" / "qfc-queue-collector")
    settings = {"project_src": str(project_src), "env_file": str(env_file), "csv_log": str(base / "log" / "q.log"),
                "textfile": str(base / "textfile" / "q.prom"), "state_file": str(mon / "var" / "state.json"),
                "lock_file": str(mon / "var" / "collector.lock"), "timeout": 10, "webhook_timeout": 5,
                "thresholds": {}}
    settings.update(config)
    for key in ("csv_log", "textfile", "state_file", "lock_file"):  # as the role does
        Path(settings[key]).parent.mkdir(parents=True, exist_ok=True)
    (mon / "collector.json").write_text(json.dumps(settings))
    return mon, settings


def run_collector(mon, python=None, timeout=120):
    start = time.monotonic()
    proc = subprocess.run([str(python or BIN / "python"), str(mon / "bin" / "qfc-queue-collector"), "--config",
                           str(mon / "collector.json")], capture_output=True, text=True, timeout=timeout, check=False)
    return proc, time.monotonic() - start


def csv_rows(settings):
    path = Path(settings["csv_log"])
    return [line.split(",") for line in path.read_text().splitlines()] if path.exists() else []


def up_value(settings):
    text = Path(settings["textfile"]).read_text()
    match = re.search(r"^qfieldcloud_collector_up\{[^}]*\} (\d)$", text, re.M)
    return int(match.group(1)) if match else None


def state_alerts(settings):
    return set(json.loads(Path(settings["state_file"]).read_text())["alerts"])


class Silent:
    """A loopback TCP listener that accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.held = []
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d/hooks/T0KEN-silent" % self.sock.getsockname()[1]

    def serve(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                continue

    def close(self):
        self.stop = True
        self.thread.join(5)
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent_hook():
    listener = Silent()
    yield listener
    listener.close()


@pytest.fixture
def queue_db(qfcdb):
    """Two stuck jobs: the collector raises two alerts."""
    (user,) = datagen.make_users(qfcdb.conn, 1)
    stale_p, orphan_p = datagen.make_projects(qfcdb.conn, qfcdb.project_table, 2, user)
    datagen.add_job(qfcdb.conn, stale_p, user, "started", created_ago_s=7300, started_ago_s=7200)
    datagen.add_job(qfcdb.conn, orphan_p, user, "queued", created_ago_s=7200)
    return qfcdb


@pytest.fixture
def tmpfs(tmp_path):
    mounted = []

    def make(name, size="16k"):
        path = tmp_path / name
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path):
    """Fill a filesystem to the last byte (big writes, then single bytes)."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (4096, 1):
            try:
                while True:
                    os.write(fd, b"x" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


# --- the database hangs -------------------------------------------------------------------------------------------
def backend_waiting_for_lock(admin, deadline):
    while time.monotonic() < deadline:
        with admin.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'qfieldcloud.ops' "
                        "AND wait_event_type = 'Lock'")
            row = cur.fetchone()
        if row:
            return row[0]
        time.sleep(0.02)
    raise AssertionError("the collector's backend never waited for the lock")


def test_database_hung_after_login_fails_within_timeout_and_is_recorded(tmp_path, queue_db, pg):
    """The backend serving the collector stops answering mid-query (SIGSTOP): no server-side timeout can fire."""
    mon, settings = install(tmp_path, queue_db.env_file, tmp_path, timeout=6)
    assert run_collector(mon)[0].returncode == 0 and up_value(settings) == 1
    locker = pg.connect(dbname=queue_db.name)
    admin = pg.connect(dbname=queue_db.name)
    admin.autocommit = True
    stopped = None
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE core_job IN ACCESS EXCLUSIVE MODE")
        start = time.monotonic()
        proc = subprocess.Popen([str(BIN / "python"), str(mon / "bin" / "qfc-queue-collector"), "--config",
                                 str(mon / "collector.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        stopped = backend_waiting_for_lock(admin, time.monotonic() + 5)
        os.kill(stopped, signal.SIGSTOP)
        locker.rollback()  # the lock is free, but the stopped backend never answers
        try:
            _out, err = proc.communicate(timeout=40)
        finally:
            proc.kill()
        elapsed = time.monotonic() - start
    finally:
        if stopped:
            os.kill(stopped, signal.SIGCONT)
        locker.close()
        admin.close()
    print("hung backend: collector finished in %.2f s (timeout 6 s)" % elapsed)
    assert elapsed < 6 + 5, elapsed
    assert proc.returncode == 1, err
    assert "did not answer" in err and queue_db.pg.password not in err
    last = csv_rows(settings)[-1]
    assert last[17] == "error" and "did not answer" in last[18]
    assert up_value(settings) == 0
    assert "collector_failed" in state_alerts(settings)


def test_database_hung_at_login_fails_within_timeout_and_is_recorded(tmp_path, queue_db, pg):
    """The postmaster is stopped (SIGSTOP): the kernel accepts the TCP connection, nobody answers the login."""
    mon, settings = install(tmp_path, queue_db.env_file, tmp_path, timeout=6)
    postmaster = int((pg.datadir / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGSTOP)
    try:
        proc, elapsed = run_collector(mon, timeout=60)
    finally:
        os.kill(postmaster, signal.SIGCONT)
    print("hung postmaster: collector finished in %.2f s (timeout 6 s)" % elapsed)
    assert elapsed < 6 + 5, elapsed
    assert proc.returncode == 1, proc.stderr
    assert "Cannot connect to PostgreSQL" in proc.stderr
    (row,) = csv_rows(settings)
    assert row[17] == "error"
    assert up_value(settings) == 0
    assert state_alerts(settings) == {"collector_failed"}


# --- the webhook never answers ------------------------------------------------------------------------------------
def test_a_webhook_that_never_answers_cannot_extend_the_run(tmp_path, queue_db, silent_hook):
    """Ten alert changes (7 ended, 3 started) against a webhook that accepts and never answers: the run ends at its
    deadline, says how many notices were not sent, and has saved its state (so they are not repeated every run)."""
    mon, settings = install(tmp_path, queue_db.env_file, tmp_path, timeout=6, webhook_timeout=5,
                            webhook_url_file=str(tmp_path / "webhook.url"), webhook_url=silent_hook.url)
    (tmp_path / "webhook.url").write_text(silent_hook.url + "\n")
    ended = {"old_%d" % n: {"severity": "warning", "code": "old_%d" % n, "message": "m"} for n in range(7)}
    Path(settings["state_file"]).write_text(json.dumps({"alerts": ended, "last_success": None}))
    proc, elapsed = run_collector(mon, timeout=120)
    print("silent webhook, 10 notices: collector finished in %.2f s (timeout 6 s, webhook timeout 5 s)" % elapsed)
    assert elapsed < 6 + 5, elapsed
    assert proc.returncode == 2, proc.stderr
    assert "notice(s) not sent" in proc.stderr and "T0KEN" not in proc.stderr
    assert csv_rows(settings)[-1][17] == "ok" and up_value(settings) == 1
    assert state_alerts(settings) == {"stuck_stale", "stuck_orphaned_queued", "workers_missing"}  # old_* ended
    assert len(silent_hook.held) >= 1


# --- sinks that fail ----------------------------------------------------------------------------------------------
def test_missing_directories_are_created(tmp_path, queue_db):
    mon, settings = install(tmp_path, queue_db.env_file, tmp_path)
    proc, _elapsed = run_collector(mon)
    assert proc.returncode == 0, proc.stderr
    shutil.rmtree(tmp_path / "log")
    shutil.rmtree(tmp_path / "textfile")
    shutil.rmtree(mon / "var")
    proc, _elapsed = run_collector(mon)
    assert proc.returncode == 0, proc.stderr
    assert len(csv_rows(settings)) == 1 and up_value(settings) == 1
    assert state_alerts(settings) == {"stuck_stale", "stuck_orphaned_queued", "workers_missing"}


def test_disk_full_under_the_csv_log_still_records_the_run_elsewhere(tmp_path, queue_db, tmpfs):
    full = tmpfs("logfs")
    mon, settings = install(tmp_path, queue_db.env_file, tmp_path, csv_log=str(full / "q.log"))
    assert run_collector(mon)[0].returncode == 0 and up_value(settings) == 1
    log = Path(settings["csv_log"])
    log.write_text(log.read_text() + "#" * (4095 - log.stat().st_size) + "\n")  # a full page: the next line needs one
    fill(full)
    before = log.read_text()
    proc, _elapsed = run_collector(mon)
    assert proc.returncode == 1
    assert "CSV log" in proc.stderr and "No space left on device" in proc.stderr
    assert Path(settings["csv_log"]).read_text() == before  # no half line
    assert up_value(settings) == 0  # the stale 1 is gone
    assert "collector_failed" in state_alerts(settings)
    os.unlink(full / "filler")  # space again: the next run recovers and ends the alert
    proc, _elapsed = run_collector(mon)
    assert proc.returncode == 0, proc.stderr
    assert up_value(settings) == 1 and "collector_failed" not in state_alerts(settings)


def test_disk_full_under_the_textfile_removes_the_stale_up_metric(tmp_path, queue_db, tmpfs):
    full = tmpfs("textfs")
    mon, settings = install(tmp_path, queue_db.env_file, tmp_path, textfile=str(full / "q.prom"))
    assert run_collector(mon)[0].returncode == 0 and up_value(settings) == 1
    fill(full)
    proc, _elapsed = run_collector(mon)
    assert proc.returncode == 1
    assert "textfile" in proc.stderr
    assert not Path(settings["textfile"]).exists()  # no collector_up 1 survives; node_exporter reports it missing
    assert csv_rows(settings)[-1][17] == "ok"  # the CSV sink worked
    assert "collector_failed" in state_alerts(settings)


def test_read_only_state_and_textfile_still_write_the_csv_and_alert(tmp_path, queue_db, tmpfs, silent_hook):
    ro = tmpfs("rofs", size="1m")
    mon, settings = install(tmp_path, queue_db.env_file, tmp_path, textfile=str(ro / "t" / "q.prom"),
                            state_file=str(ro / "s" / "state.json"))
    assert run_collector(mon)[0].returncode == 0 and up_value(settings) == 1
    subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
    proc, elapsed = run_collector(mon)
    assert proc.returncode == 1 and elapsed < 15
    assert "state file" in proc.stderr and "textfile" in proc.stderr
    assert csv_rows(settings)[-1][17] == "ok"
    # unlink fails too on a read-only filesystem: that is said, and the state (old) is untouched
    assert "cannot remove the stale textfile" in proc.stderr


# --- psycopg2 missing ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """An interpreter without psycopg2: a venv without the system's site packages."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import psycopg2"], capture_output=True, check=False).returncode != 0
    return python


def test_without_psycopg2_the_run_is_still_recorded(tmp_path, queue_db, bare_python):
    mon, settings = install(tmp_path, queue_db.env_file, tmp_path)
    proc, _elapsed = run_collector(mon, python=bare_python)
    assert proc.returncode == 3
    assert "psycopg2 is missing" in proc.stderr
    (row,) = csv_rows(settings)
    assert row[17] == "error" and "psycopg2 is missing" in row[18]
    assert up_value(settings) == 0
    assert state_alerts(settings) == {"collector_failed"}


# --- Compose's project name ---------------------------------------------------------------------------------------
NAMES = ["_Rel-Qfc.Été", "My Project!", "--Dash_start", "ÄÖÜ-x_1", "a.b.c", "UPPER_case-9"]


@pytest.mark.parametrize("directory", NAMES)
def test_project_name_normalisation_matches_the_compose_cli(tmp_path, directory):
    path = tmp_path / directory
    path.mkdir()
    (path / "compose.yaml").write_text("services:\n  a:\n    image: busybox\n")
    env = {k: v for k, v in os.environ.items() if k != "COMPOSE_PROJECT_NAME"}
    out = subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=path, capture_output=True,
                         text=True, check=True, env=env)
    assert _engine.normalize_project_name(directory) == json.loads(out.stdout)["name"]
    assert _engine.project_name({}, str(path), environ=env) == json.loads(out.stdout)["name"]


def monitoring_inventory(tmp_path, project_src, **overrides):
    paths = {"qfc_project_src": project_src, "qfc_monitoring_dir": tmp_path / "mon",
             "qfc_monitoring_python": BIN / "python", "qfc_monitoring_install_packages": False,
             "qfc_monitoring_cron_file": tmp_path / "cron.d" / "qfieldcloud-queue-metrics",
             "qfc_monitoring_log": tmp_path / "log" / "queue_metrics.log",
             "qfc_monitoring_logrotate_file": tmp_path / "logrotate.d" / "qfieldcloud-queue-metrics",
             "qfc_monitoring_textfile": tmp_path / "textfile" / "qfieldcloud_queue.prom",
             "qfc_monitoring_timeout": 10}
    paths.update(overrides)
    (tmp_path / "cron.d").mkdir(exist_ok=True)
    (tmp_path / "logrotate.d").mkdir(exist_ok=True)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"qfieldcloud": {"hosts": {"qfc1": dict(
        {k: (str(v) if isinstance(v, Path) else v) for k, v in paths.items()},
        ansible_connection="local", ansible_python_interpreter=str(BIN / "python"))}}}))
    return inventory, paths


def test_role_follows_composes_name_and_a_non_default_service(tmp_path, qfcdb):
    """No COMPOSE_PROJECT_NAME, a top-level `name:` (in an extra compose file), a directory name that Compose
    normalises, a non-default service and worker-count variable: the role asks Compose and the collector counts
    the service's containers."""
    name = "qfcnm%s" % uuid.uuid4().hex[:8]
    src = tmp_path / "_Rel-Qfc.Été"
    settings = {"POSTGRES_PASSWORD": qfcdb.pg.password, "POSTGRES_PORT": qfcdb.pg.port, "POSTGRES_DB": qfcdb.name,
                "POSTGRES_USER": qfcdb.pg.user, "QFC_SIM_DIR": WORKER_SIM, "POSTGRES_SSLMODE": "disable",
                "QFIELDCLOUD_WORKER_REPLICAS": 1, "COMPOSE_FILE": "docker-compose.yml:name.yml"}
    copy_project(FIXTURE_DB, src, settings, {"QFC_APP_COUNT": 1})
    env = src / ".env"
    env.write_text(re.sub(r"^COMPOSE_PROJECT_NAME=.*\n", "", env.read_text(), flags=re.M))
    (src / "name.yml").write_text("name: %s\n" % name)
    subprocess.run(["docker", "compose", "up", "-d", "app"], cwd=src, check=True, capture_output=True)
    try:
        inv, paths = monitoring_inventory(tmp_path, src, qfc_monitoring_service="app",
                                          qfc_monitoring_env_var="QFC_APP_COUNT")
        proc = run_playbook(PLAYBOOK, inv)
        assert proc.returncode == 0, proc.stdout[-3000:]
        config = json.loads((paths["qfc_monitoring_dir"] / "collector.json").read_text())
        assert config["compose_project"] == name
        assert (config["service"], config["env_var"]) == ("app", "QFC_APP_COUNT")
        assert config["webhook_timeout"] == 5 and config["worker_timeout_s"] is None
        row = paths["qfc_monitoring_log"].read_text().splitlines()[-1].split(",")
        assert row[6:8] == ["1", "1"], row  # configured (QFC_APP_COUNT), running (the app container)
        prom = paths["qfc_monitoring_textfile"].read_text()
        assert 'qfieldcloud_workers_running{project="%s"} 1' % name in prom
    finally:
        subprocess.run(["docker", "compose", "down", "--timeout", "1"], cwd=src, check=False, capture_output=True)


# --- the role -----------------------------------------------------------------------------------------------------
@pytest.fixture
def role_stack(tmp_path, qfcdb):
    stack = make_db_stack(tmp_path, qfcdb, replicas=0, start=False)
    yield stack
    stack.down()


def test_role_diff_never_shows_the_webhook_url(tmp_path, role_stack):
    token = "T0KEN-%s" % uuid.uuid4().hex[:10]
    inv, paths = monitoring_inventory(tmp_path, role_stack.path,
                                      qfc_monitoring_webhook_url="http://127.0.0.1:9/hooks/%s" % token)
    legacy = paths["qfc_monitoring_dir"]  # an install by the older role: the URL inside collector.json
    for sub in ("bin", "lib"):
        (legacy / sub).mkdir(parents=True)
    (legacy / "collector.json").write_text(json.dumps({"timeout": 20, "webhook_url": "http://h/LEGACY-tok1"}, indent=2))
    for extra, check in ((None, True), (None, False), ({"qfc_monitoring_webhook_url":
                                                        "http://127.0.0.1:9/hooks/R0TATED-x1"}, True),
                         ({"qfc_monitoring_webhook_url": "http://127.0.0.1:9/hooks/R0TATED-x1"}, False)):
        proc = run_playbook(PLAYBOOK, inv, extra, check=check, diff=True)
        assert proc.returncode == 0, proc.stdout[-3000:]
        out = proc.stdout + proc.stderr
        for secret in (token, "R0TATED-x1", "127.0.0.1:9/hooks", "LEGACY-tok1"):
            assert secret not in out, secret
    # and at -vvv (module arguments and results in full)
    verbose = subprocess.run([str(BIN / "ansible-playbook"), str(PLAYBOOK), "-i", str(inv), "--diff", "-vvv", "-e",
                              json.dumps({"qfc_monitoring_webhook_url": "http://127.0.0.1:9/hooks/V3RBOSE-y2"})],
                             cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=600, check=False)
    assert verbose.returncode == 0, verbose.stdout[-3000:]
    assert "V3RBOSE-y2" not in verbose.stdout + verbose.stderr and "R0TATED-x1" not in verbose.stdout
    assert (paths["qfc_monitoring_dir"] / "webhook.url").read_text().strip().endswith("V3RBOSE-y2")
    assert oct((paths["qfc_monitoring_dir"] / "webhook.url").stat().st_mode & 0o777) == "0o600"
    assert "hooks" not in (paths["qfc_monitoring_dir"] / "collector.json").read_text()


def test_role_refuses_to_remove_a_directory_it_did_not_create(tmp_path, role_stack):
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "data.txt").write_text("keep me")
    inv, paths = monitoring_inventory(tmp_path, role_stack.path, qfc_monitoring_dir=foreign)
    proc = run_playbook(PLAYBOOK, inv, {"qfc_monitoring_state": "absent"})
    assert proc.returncode != 0 and "did not create it" in proc.stdout
    assert (foreign / "data.txt").read_text() == "keep me"
    proc = run_playbook(PLAYBOOK, inv)  # nor installs into it (a later absent would delete it)
    assert proc.returncode != 0 and "was not created by this role" in proc.stdout
    assert sorted(p.name for p in foreign.iterdir()) == ["data.txt"]
    # in check mode only: a mistake here must never delete them for real
    for path in ("/", "/root", pwd.getpwnam("nobody").pw_dir, "/opt"):
        proc = run_playbook(PLAYBOOK, inv, {"qfc_monitoring_state": "absent", "qfc_monitoring_dir": path},
                            check=True)
        assert proc.returncode != 0, (path, proc.stdout[-2000:])
        assert "home directory" in proc.stdout or "Invalid option" in proc.stdout or "did not create" in proc.stdout
    # its own directory it removes
    mine = tmp_path / "mine"
    assert run_playbook(PLAYBOOK, inv, {"qfc_monitoring_dir": str(mine)}).returncode == 0
    assert (mine / ".qfieldcloud-ops-monitoring").exists()
    proc = run_playbook(PLAYBOOK, inv, {"qfc_monitoring_dir": str(mine), "qfc_monitoring_state": "absent"})
    assert proc.returncode == 0 and not mine.exists()


@pytest.mark.parametrize("variable, value", [
    ("qfc_monitoring_timeout", 0), ("qfc_monitoring_timeout", -5), ("qfc_monitoring_timeout", 10 ** 12),
    ("qfc_monitoring_timeout", "inf"), ("qfc_monitoring_webhook_timeout", 0), ("qfc_monitoring_webhook_timeout", -1),
    ("qfc_monitoring_webhook_timeout", "nan"), ("qfc_monitoring_webhook_timeout", "inf"),
    ("qfc_monitoring_webhook_timeout", 1e9), ("qfc_monitoring_worker_timeout_s", 0),
    ("qfc_monitoring_thresholds", {"queue_depth_warning": "nan"}),
    ("qfc_monitoring_thresholds", {"queue_depth_warning": -1}), ("qfc_monitoring_thresholds", {"typo": 1}),
    ("qfc_monitoring_env_var", "QFC_X\nPOSTGRES_PASSWORD"),
])
def test_role_rejects_bad_numbers_and_names(tmp_path, variable, value):
    inv, paths = monitoring_inventory(tmp_path, tmp_path / "nowhere")
    proc = run_playbook(PLAYBOOK, inv, {variable: value}, check=True)
    assert proc.returncode != 0, proc.stdout[-2000:]
    # the role's assert names the option; ansible-core's int check says "cannot convert Infinity to integer"
    assert variable in proc.stdout or "cannot convert Infinity" in proc.stdout
    assert "changed=0" in proc.stdout and not paths["qfc_monitoring_dir"].exists()


def test_role_fails_clearly_when_the_first_run_cannot_import_psycopg2(tmp_path, role_stack, bare_python):
    inv, paths = monitoring_inventory(tmp_path, role_stack.path, qfc_monitoring_python=bare_python)
    proc = run_playbook(PLAYBOOK, inv)
    assert proc.returncode != 0
    assert "psycopg2 is missing" in proc.stdout and "first run" in proc.stdout
    assert not paths["qfc_monitoring_cron_file"].exists()  # not scheduled
    text = paths["qfc_monitoring_textfile"].read_text()
    assert re.search(r"qfieldcloud_collector_up\{[^}]*\} 0", text)
    assert "psycopg2 is missing" in paths["qfc_monitoring_log"].read_text()


def test_role_fails_clearly_when_the_first_run_cannot_connect(tmp_path, role_stack):
    role_stack.set_env("POSTGRES_PORT", "1")
    inv, paths = monitoring_inventory(tmp_path, role_stack.path)
    proc = run_playbook(PLAYBOOK, inv)
    assert proc.returncode != 0
    assert "Cannot connect to PostgreSQL" in proc.stdout and "first run" in proc.stdout
    assert not paths["qfc_monitoring_cron_file"].exists()


@pytest.fixture
def open_base():
    """A directory a non-root user can reach (pytest's tmp dirs are 0700 root)."""
    base = Path(tempfile.mkdtemp(prefix="qfc-mon-user-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def user_python(base):
    """An interpreter the user can execute (the test venv's lives under /root), with the test venv's psycopg2."""
    venv = base / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    version = "python%d.%d" % sys.version_info[:2]
    site = venv / "lib" / version / "site-packages"
    if not site.is_dir():
        pytest.skip("/usr/bin/python3 is not Python %d.%d like the test venv" % sys.version_info[:2])
    (site / "qfc.pth").write_text(str(ROOT / ".venv" / "lib" / version / "site-packages") + "\n")
    return venv / "bin" / "python"


def test_role_makes_a_non_root_cron_user_work(open_base, qfcdb):
    user = pwd.getpwnam("nobody")
    stack = make_db_stack(open_base, qfcdb, replicas=0, start=False)
    try:
        stack.env_file.chmod(0o600)  # root's .env: the user cannot read it, and the role says so
        inv, paths = monitoring_inventory(open_base, stack.path, qfc_monitoring_cron_user="nobody",
                                          qfc_monitoring_python=user_python(open_base))
        proc = run_playbook(PLAYBOOK, inv)
        assert proc.returncode != 0 and "first run as nobody" in proc.stdout
        assert "Permission denied" in proc.stdout
        assert not paths["qfc_monitoring_cron_file"].exists()
        stack.env_file.chmod(0o644)
        proc = run_playbook(PLAYBOOK, inv)
        assert proc.returncode == 0, proc.stdout[-3000:]
        line = [ln for ln in paths["qfc_monitoring_cron_file"].read_text().splitlines()
                if ln and not ln.startswith("#")][0]
        fields = line.split(None, 6)
        assert fields[5] == "nobody"
        command = fields[6].replace(">/dev/null 2>&1", "")
        run = subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-c", command], capture_output=True, text=True,
                             timeout=60, check=False)
        assert run.returncode == 0, run.stderr
        # the role's failed run (recorded), its successful run, and this one
        assert [r.split(",")[17] for r in paths["qfc_monitoring_log"].read_text().splitlines()] == ["error", "ok", "ok"]
        mon = paths["qfc_monitoring_dir"]
        for path in (paths["qfc_monitoring_log"], paths["qfc_monitoring_textfile"], mon / "var" / "state.json",
                     mon / "collector.json", mon / "webhook.url"):
            assert path.stat().st_uid == user.pw_uid, path
        assert (paths["qfc_monitoring_dir"] / "bin" / "qfc-queue-collector").stat().st_uid == 0
    finally:
        stack.down()
