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
    assert proc.returncode == 5, err  # the database is unavailable (heals by itself), nothing else failed
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
    assert proc.returncode == 5, proc.stderr
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
             "qfc_operations_log": tmp_path / "log" / "operations.jsonl",  # beside the CSV log, as by default
             "qfc_monitoring_timeout": 10}
    paths.update(overrides)
    (tmp_path / "cron.d").mkdir(exist_ok=True)
    (tmp_path / "logrotate.d").mkdir(exist_ok=True)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"qfieldcloud": {"hosts": {"qfc1": host_vars(paths)}}}))
    return inventory, paths


def host_vars(paths):
    return dict({k: (str(v) if isinstance(v, Path) else v) for k, v in paths.items()},
                ansible_connection="local", ansible_python_interpreter=str(BIN / "python"))


def fatal_messages(output):
    """{host: the message of its failed task} from ansible-playbook's output."""
    return {m.group(1): json.loads(m.group(2)).get("msg", "")
            for m in re.finditer(r"^fatal: \[([^\]]+)\]: FAILED! => (\{.*\})$", output, re.M)}


def recap(output):
    """{host: (changed, failed)} from the play recap."""
    return {m.group(1): (int(m.group(2)), int(m.group(3)))
            for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", output, re.M)}


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


# A line break at the end passed every `match('^...$')` rule (Python's $ also matches before a final newline), and in a
# path or the cron minute it splits the cron entry or the logrotate rule over several lines. {base} is the host's own
# directory, {python} the test interpreter. One playbook run, one host per bad value (the hosts run in parallel).
LINE_BREAKS = {
    "timeout": ("qfc_monitoring_timeout", "20\n"),
    "webhook_timeout": ("qfc_monitoring_webhook_timeout", "5\n"),
    "worker_timeout": ("qfc_monitoring_worker_timeout_s", "600\n"),
    "logrotate_keep": ("qfc_monitoring_logrotate_keep", "12\n"),
    "oplog_keep": ("qfc_monitoring_operations_log_keep", "24\n"),
    "threshold": ("qfc_monitoring_thresholds", {"queue_depth_warning": "5\n"}),
    "env_var": ("qfc_monitoring_env_var", "QFIELDCLOUD_WORKER_REPLICAS\n"),
    "service": ("qfc_monitoring_service", "worker_wrapper\n"),
    "cron_minute": ("qfc_monitoring_cron_minute", "*/5\n"),
    "cron_minute_job": ("qfc_monitoring_cron_minute", "*/5 * * * * root touch /tmp/qfc-injected\n*/5"),
    "cron_file": ("qfc_monitoring_cron_file", "qfieldcloud-queue-metrics\n"),
    "dir": ("qfc_monitoring_dir", "{base}/mon\n"),
    "dir_slash": ("qfc_monitoring_dir", "{base}/mon/\n"),
    "dir_cr": ("qfc_monitoring_dir", "{base}/mon\r"),
    "python": ("qfc_monitoring_python", "{python}\n"),
    "log": ("qfc_monitoring_log", "{base}/log/queue_metrics.log\n"),
    "logrotate_file": ("qfc_monitoring_logrotate_file", "{base}/logrotate.d/qfieldcloud-queue-metrics\n"),
    "textfile": ("qfc_monitoring_textfile", "{base}/textfile/q.prom\n"),
    "oplog": ("qfc_operations_log", "{base}/log/operations.jsonl\n"),
    "oplog_brace": ("qfc_operations_log", "{base}/log/x {\n  postrotate\n"),
}


def test_role_rejects_a_line_break_in_every_input(tmp_path):
    hosts = {}
    for name, (variable, value) in LINE_BREAKS.items():
        base = tmp_path / name
        base.mkdir()
        _inv, paths = monitoring_inventory(base, base / "nowhere")
        given = value.replace("{base}", str(base)).replace("{python}", str(BIN / "python")) \
            if isinstance(value, str) else value
        hosts[name] = dict(host_vars(paths), **{variable: given})
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"qfieldcloud": {"hosts": hosts}}))
    proc = run_playbook(PLAYBOOK, inventory, check=True)
    messages, results = fatal_messages(proc.stdout), recap(proc.stdout)
    not_refused = {name: messages.get(name) for name, (variable, _value) in LINE_BREAKS.items()
                   if results.get(name) != (0, 1) or not messages[name].startswith("Invalid option:")
                   or variable not in messages[name]}
    assert not not_refused, "not refused: %s\n%s" % (sorted(not_refused), not_refused)  # all, by the first check
    for name in LINE_BREAKS:
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["cron.d", "inventory.yml", "logrotate.d"], name
    assert not Path("/tmp/qfc-injected").exists()


def test_role_keeps_the_operations_log_out_of_the_cron_users_reach_before_any_change(tmp_path):
    """The CSV log or the textfile as the operations log; with a non-root user, the textfile in the operations log's
    directory (the user would need to write there); an operations log or a CSV log that is a symbolic link."""
    target = tmp_path / "root-only"
    target.write_text("root's\n")
    target.chmod(0o600)
    cases = {
        "csv_is_oplog": ({"qfc_operations_log": "{base}/log/queue_metrics.log"}, "must not be the operations log"),
        "textfile_is_oplog": ({"qfc_operations_log": "{base}/textfile/qfieldcloud_queue.prom"},
                              "must not be the operations log"),
        "textfile_beside_oplog": ({"qfc_monitoring_cron_user": "nobody",
                                   "qfc_monitoring_textfile": "{base}/log/qfieldcloud_queue.prom"},
                                  "the textfile must not be in the operations log's directory"),
        "oplog_link": ({}, "is not a regular file"),
        "csv_link": ({}, "is not a regular file"),
    }
    hosts = {}
    for name, (overrides, _message) in cases.items():
        base = tmp_path / name
        base.mkdir()
        (base / "nowhere").mkdir()
        (base / "nowhere" / "compose.yaml").write_text("services:\n  worker_wrapper:\n    image: busybox\n")
        _inv, paths = monitoring_inventory(base, base / "nowhere")
        hosts[name] = dict(host_vars(paths), **{k: v.replace("{base}", str(base)) for k, v in overrides.items()})
        if name.endswith("_link"):
            (base / "log").mkdir()
            link = base / "log" / ("operations.jsonl" if name == "oplog_link" else "queue_metrics.log")
            link.symlink_to(target)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"qfieldcloud": {"hosts": hosts}}))
    proc = run_playbook(PLAYBOOK, inventory, check=True)
    messages, results = fatal_messages(proc.stdout), recap(proc.stdout)
    not_refused = {name: messages.get(name) for name, (_overrides, message) in cases.items()
                   if results.get(name, (None, None))[1] != 1 or message not in " ".join(messages[name].split())}
    assert not not_refused, "not refused: %s\n%s" % (sorted(not_refused), not_refused)
    for name in cases:
        assert not (tmp_path / name / "mon").exists() and not (tmp_path / name / "textfile").exists(), name
    assert target.read_text() == "root's\n" and target.stat().st_uid == 0 and target.stat().st_mode & 0o777 == 0o600


def test_role_fails_clearly_when_the_first_run_cannot_import_psycopg2(tmp_path, role_stack, bare_python):
    inv, paths = monitoring_inventory(tmp_path, role_stack.path, qfc_monitoring_python=bare_python)
    proc = run_playbook(PLAYBOOK, inv)
    assert proc.returncode != 0
    assert "psycopg2 is missing" in proc.stdout and "first run" in proc.stdout
    assert not paths["qfc_monitoring_cron_file"].exists()  # not scheduled
    text = paths["qfc_monitoring_textfile"].read_text()
    assert re.search(r"qfieldcloud_collector_up\{[^}]*\} 0", text)
    assert "psycopg2 is missing" in paths["qfc_monitoring_log"].read_text()


# What heals by itself (the database refuses connections: down, restarting) installs the collector with a warning, so
# that the outage is recorded and alerted; what does not (a wrong password, a host name that does not resolve, a
# database that is not QFieldCloud's, a directory without a Compose file) fails the role and schedules nothing.
# One playbook run, one host per case (in parallel); each host has its own project and paths.
FIRST_RUN_CASES = {
    "refused": ({"POSTGRES_PORT": "1"}, None),
    "password": ({"POSTGRES_PASSWORD": "not-the-password"}, "password authentication failed"),
    "hostname": ({"POSTGRES_HOST": "qfc-no-such-host.invalid"}, "could not translate host name"),
    "not_qfc": ({"POSTGRES_DB": "postgres"}, "has no QFieldCloud job tables"),
    "no_compose": ({}, "has no Compose file"),
}


def test_role_installs_while_the_database_is_down_and_fails_on_what_will_not_heal(tmp_path, qfcdb):
    stacks, hosts, paths = [], {}, {}
    try:
        for name, (env, _message) in FIRST_RUN_CASES.items():
            base = tmp_path / name
            base.mkdir()
            if name == "no_compose":
                project = base / "project"
                project.mkdir()
                (project / ".env").write_text(qfcdb.env_text())
            else:
                stack = make_db_stack(base, qfcdb, replicas=0, start=False)
                stacks.append(stack)
                for key, value in env.items():
                    stack.set_env(key, value)
                project = stack.path
            _inv, paths[name] = monitoring_inventory(base, project)
            hosts[name] = host_vars(paths[name])
        inventory = tmp_path / "inventory.yml"
        inventory.write_text(json.dumps({"qfieldcloud": {"hosts": hosts}}))
        proc = run_playbook(PLAYBOOK, inventory)
    finally:
        for stack in stacks:
            stack.down()
    out = proc.stdout
    messages, results = fatal_messages(out), recap(out)
    assert qfcdb.pg.password not in out + proc.stderr

    # misconfigured: fails with the cause, no cron entry
    for name, (_env, message) in FIRST_RUN_CASES.items():
        if message is None:
            continue
        assert results[name][1] == 1, (name, out[-4000:])
        assert message in messages[name], (name, messages[name])
        assert not paths[name]["qfc_monitoring_cron_file"].exists(), name
        if name == "no_compose":
            assert not paths[name]["qfc_monitoring_dir"].exists()
        else:
            assert "first run" in messages[name] and "The cron entry was not scheduled" in messages[name], name

    # refused: scheduled, with a warning; the first run recorded the outage in every sink
    refused = paths["refused"]
    assert results["refused"][1] == 0, out[-4000:]
    assert re.search(r'ok: \[refused\] => \{\s*"msg": "WARNING: the collector\'s first run as root could not read '
                     r'the queue because the database is unavailable: [^"]*Connection refused', out), out[-4000:]
    assert "qfc-queue-collector --config" in refused["qfc_monitoring_cron_file"].read_text()
    (row,) = csv_rows({"csv_log": refused["qfc_monitoring_log"]})
    assert row[17] == "error" and "Connection refused" in row[18]
    assert re.search(r"qfieldcloud_collector_up\{[^}]*\} 0", refused["qfc_monitoring_textfile"].read_text())
    assert state_alerts({"state_file": refused["qfc_monitoring_dir"] / "var" / "state.json"}) == {"collector_failed"}


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


def as_nobody(command):
    return subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-c", command], capture_output=True, text=True,
                          timeout=60, check=False)


def test_role_makes_a_non_root_cron_user_work(open_base, qfcdb):
    """The user writes the collector's own files, and nothing else: the operations log (the audit trail, beside the
    CSV log by default) stays root's. An older version of the role gave the log directory to the user: taken back."""
    user = pwd.getpwnam("nobody")
    stack = make_db_stack(open_base, qfcdb, replicas=0, start=False)
    log_dir = open_base / "log"
    oplog = log_dir / "operations.jsonl"
    log_dir.mkdir()  # as the older role left it: the user's (and here world-writable too)
    os.chown(log_dir, user.pw_uid, user.pw_gid)
    log_dir.chmod(0o777)
    record = '{"time": "2026-01-01T00:00:00+00:00", "action": "scale", "before": 1, "after": 2, "result": "changed"}\n'
    oplog.write_text(record)
    os.chown(oplog, user.pw_uid, user.pw_gid)  # the user had replaced it with its own
    oplog.chmod(0o666)
    try:
        stack.env_file.chmod(0o600)  # root's .env: the user cannot read it, and the role says so
        inv, paths = monitoring_inventory(open_base, stack.path, qfc_monitoring_cron_user="nobody",
                                          qfc_monitoring_python=user_python(open_base))
        assert paths["qfc_operations_log"] == oplog and paths["qfc_monitoring_log"].parent == log_dir
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
        command_line = fields[6].replace(">/dev/null 2>&1", "")
        run = as_nobody(command_line)
        assert run.returncode == 0, run.stderr
        # the role's failed run (recorded), its successful run, and this one
        assert [r.split(",")[17] for r in paths["qfc_monitoring_log"].read_text().splitlines()] == ["error", "ok", "ok"]
        mon = paths["qfc_monitoring_dir"]
        for path in (paths["qfc_monitoring_log"], paths["qfc_monitoring_textfile"], mon / "var" / "state.json",
                     mon / "collector.json", mon / "webhook.url"):
            assert path.stat().st_uid == user.pw_uid, path
        assert (paths["qfc_monitoring_dir"] / "bin" / "qfc-queue-collector").stat().st_uid == 0
        assert paths["qfc_monitoring_textfile"].parent.stat().st_uid == user.pw_uid  # replaced atomically there
        # the operations log and its directory are root's again, and not group or world writable
        for path in (log_dir, oplog):
            assert path.stat().st_uid == 0 and path.stat().st_mode & 0o022 == 0, (path, oct(path.stat().st_mode))
        for command in ("echo forged >> %s" % oplog, "rm -f %s" % oplog, "mv %s %s.x" % (oplog, oplog),
                        "touch %s/operations.jsonl.1" % log_dir, "ln -s /etc/shadow %s/x" % log_dir):
            assert as_nobody(command).returncode != 0, command
        assert oplog.read_text() == record and sorted(p.name for p in log_dir.iterdir()) == [
            "operations.jsonl", "queue_metrics.log"]
        # the collector, as the user, still appends to its CSV log
        assert as_nobody(command_line).returncode == 0
        assert len(paths["qfc_monitoring_log"].read_text().splitlines()) == 4
        # logrotate: the operations log is renamed and never created (its next writer, root, creates it); the CSV log
        # is copied and truncated, so the user's file stays
        rules = paths["qfc_monitoring_logrotate_file"].read_text()
        oplog_rule = rules[rules.index("%s {" % oplog):]
        assert "nocreate" in oplog_rule and "copytruncate" not in oplog_rule and "\n    su " not in rules
        assert "copytruncate" in rules[rules.index("%s {" % paths["qfc_monitoring_log"]):rules.index("%s {" % oplog)]
        # and the real thing (scripts/bootstrap.sh installs logrotate): then the user still appends
        assert shutil.which("logrotate"), "logrotate is not installed (scripts/bootstrap.sh installs it)"
        rotated = subprocess.run(["logrotate", "-f", "-s", str(open_base / "logrotate.state"),
                                  str(paths["qfc_monitoring_logrotate_file"])], capture_output=True, text=True,
                                 timeout=60, check=False)
        assert rotated.returncode == 0, rotated.stderr
        assert not oplog.exists() and (log_dir / "operations.jsonl.1").stat().st_uid == 0
        assert paths["qfc_monitoring_log"].stat().st_uid == user.pw_uid
        assert as_nobody(command_line).returncode == 0
        assert len(paths["qfc_monitoring_log"].read_text().splitlines()) == 1
        assert as_nobody("touch %s/operations.jsonl" % log_dir).returncode != 0
    finally:
        stack.down()
