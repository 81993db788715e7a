"""No secret in any output of any role, in any mode: every playbook users run (scale.yml, cleanup.yml, monitoring.yml,
queue_report.yml), run for real with --diff and with --check --diff at -vvv, and once more with an event callback that
records every event's full result the way ansible-runner does for AWX ("Show Changes" reads the diffs from them).

Secrets set: the .env values of the test stacks (conftest.SECRETS plus the database password), a database password
passed as qfc_db_password, and for the monitoring role a webhook URL that carries its token. Each role also logs in
with a password of digits only and with one holding $, #, both quotes and spaces (issue 21), each of a database role
of its own, through .env (read by the modules and the collector, and by Compose for the simulated workers) and
through qfc_db_password; and the collector's CSV log, textfile and state are read too."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import contextlib

from ansible_collections.qfieldcloud.ops.plugins.module_utils._metrics_log import STATUS_INDEX
from conftest import BIN, FIXTURE_DB, ROOT, SECRETS, WORKER_SIM, ansible_env, instantiate
from psycopg2 import sql

from tests.support import datagen
from tests.support.ansible_run import DIGITS_SECRET, SPECIAL_SECRET, SPECIAL_SECRET_ENV

# What a partial leak of SPECIAL_SECRET would show: up to its first quote, the rest as Go or JSON escape it.
SPECIAL_FRAGMENTS = ("p$ss #w", "rd x-7731")

WEBHOOK_TOKEN = "T0KEN-abc123"
WEBHOOK_URL = "https://127.0.0.1:9/hooks/%s" % WEBHOOK_TOKEN

# ansible-runner's event capture in miniature: every runner event with its full (callback) result, diffs included,
# and the play's custom stats (AWX job artifacts).
EVENTS_CALLBACK = '''
from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "qfc_events"
    CALLBACK_NEEDS_ENABLED = True

    def _event(self, event, result=None, **data):
        if result is not None:
            data.update(host=result._host.get_name(), task=result._task.get_name(), res=result._result)
        with open(os.environ["QFC_EVENTS_FILE"], "a") as out:
            out.write(json.dumps(dict(data, event=event), default=repr) + "\\n")

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._event("playbook_on_task_start", task=task.get_name(), task_args=repr(task.args))

    def v2_runner_on_ok(self, result):
        self._event("runner_on_ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._event("runner_on_failed", result)

    def v2_runner_on_skipped(self, result):
        self._event("runner_on_skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._event("runner_on_unreachable", result)

    def v2_runner_item_on_ok(self, result):
        self._event("runner_item_on_ok", result)

    def v2_runner_item_on_failed(self, result):
        self._event("runner_item_on_failed", result)

    def v2_runner_item_on_skipped(self, result):
        self._event("runner_item_on_skipped", result)

    def v2_on_file_diff(self, result):
        self._event("on_file_diff", result)

    def v2_playbook_on_stats(self, stats):
        self._event("playbook_on_stats", artifact_data=stats.custom)
'''

MODES = {
    "check_diff": {"check": True, "diff": True},
    "diff": {"check": False, "diff": True},
    "events_diff": {"check": False, "diff": True, "events": True},
}


def play(playbook, inventory, extra_vars, tmp_path, check=False, diff=False, events=False, timeout=600,
         vars_file=None):
    """One real ansible-playbook run at -vvv with task arguments shown; with events=True also every event's result
    recorded as JSON lines. Returns (proc, all the text it produced, events file text)."""
    cmd = [str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / playbook), "-i", str(inventory), "-vvv",
           "-e", json.dumps(extra_vars)]
    if vars_file:
        cmd += ["-e", "@%s" % vars_file]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    extra_env = {"ANSIBLE_DISPLAY_ARGS_TO_STDOUT": "1"}
    events_file = tmp_path / ("events-%s.jsonl" % os.urandom(4).hex())
    if events:
        plugins = tmp_path / "callback_plugins"
        plugins.mkdir(exist_ok=True)
        (plugins / "qfc_events.py").write_text(EVENTS_CALLBACK)
        extra_env.update({"ANSIBLE_CALLBACK_PLUGINS": str(plugins), "ANSIBLE_CALLBACKS_ENABLED": "qfc_events",
                          "QFC_EVENTS_FILE": str(events_file)})
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=ansible_env(extra_env), capture_output=True, text=True, timeout=timeout,
                          check=False)
    print("%s %s: %.1f s" % (playbook, " ".join(cmd[6:]), time.monotonic() - started))
    recorded = events_file.read_text() if events_file.exists() else ""
    if events:
        assert '"event": "playbook_on_stats"' in recorded, proc.stdout[-3000:]
    return proc, proc.stdout + proc.stderr + recorded, recorded


def assert_secret_free(text, secrets):
    leaked = [s for s in secrets if s in text]
    assert not leaked, "secrets leaked into the output: %s\n%s" % (
        leaked, "\n".join(line for line in text.splitlines() if any(s in line for s in leaked))[:3000])


def inventory(tmp_path, project, **host_vars):
    lines = ["qfieldcloud:", "  hosts:", "    qfc1:", "      ansible_connection: local",
             "      ansible_python_interpreter: %s" % (BIN / "python"), "      qfc_project_src: %s" % project]
    lines += ["      %s: %s" % (k, json.dumps(str(v) if not isinstance(v, (bool, int)) else v))
              for k, v in host_vars.items()]
    path = tmp_path / "inventory.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def login_role(qfcdb, prefix, password):
    """A database role of its own with ``password``, allowed what the roles and the simulated workers do."""
    user = "%s_%s" % (prefix, os.urandom(3).hex())
    admin = qfcdb.pg.connect(host=str(qfcdb.pg.datadir), user=qfcdb.pg.superuser, dbname=qfcdb.name)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(user)), [password])
        cur.execute(sql.SQL("GRANT SELECT, UPDATE ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(user)))
    try:
        yield user
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(user)))
            cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(user)))
        admin.close()


@pytest.fixture
def digits_user(qfcdb):
    """A database role whose password is DIGITS_SECRET."""
    with login_role(qfcdb, "qfct_digits", DIGITS_SECRET) as user:
        yield user


@pytest.fixture
def special_user(qfcdb):
    """A database role whose password is SPECIAL_SECRET ($, #, both quotes, spaces)."""
    with login_role(qfcdb, "qfct_special", SPECIAL_SECRET) as user:
        yield user


def secret_stack(tmp_path, db, replicas, env_password=None, user=None, extra_env=None):
    """The DB-backed stack (a worker simulator on the test database) whose .env carries every kind of secret;
    ``extra_env``: more .env lines, appended (the last assignment of a key is the one Compose and _envfile use)."""
    settings = {"QFIELDCLOUD_WORKER_REPLICAS": replicas, "POSTGRES_PASSWORD": env_password or db.pg.password,
                "POSTGRES_PORT": db.pg.port, "POSTGRES_DB": db.name, "POSTGRES_USER": user or db.pg.user,
                "QFC_SIM_DIR": WORKER_SIM, "QFC_SIM_JOB_S": 1.0, "QFC_SIM_POLL_S": "0.2",
                "POSTGRES_SSLMODE": "disable"}
    extra = {"EMAIL_HOST_PASSWORD": SECRETS[0],
             "STORAGES": "'{\"default\": {\"OPTIONS\": {\"access_key_id\": \"rustfsadmin\", "
                         "\"secret_access_key\": \"%s\"}}}'" % SECRETS[2]}
    extra.update(extra_env or {})
    stack = instantiate(FIXTURE_DB, tmp_path / "qfieldcloud", "qfcs", settings, extra)
    assert SECRETS[1] in stack.env_text()  # SECRET_KEY of env.example
    return stack


def stuck_jobs(db, n=1):
    (user,) = datagen.make_users(db.conn, 1)
    projects = datagen.make_projects(db.conn, db.project_table, 2 * n, user)
    for i in range(n):
        datagen.add_job(db.conn, projects[2 * i], user, "started", created_ago_s=7300, started_ago_s=7200)
        datagen.add_job(db.conn, projects[2 * i + 1], user, "queued", created_ago_s=7200)


@pytest.fixture
def secrets(qfcdb):
    """What must never show: the .env secrets of the stacks (with the digit-only and the special password, and what
    a partial leak of the special one would show) and the database password."""
    return SECRETS + SPECIAL_FRAGMENTS + (qfcdb.pg.password,)


def test_scale_role_shows_no_secret(qfcdb, tmp_path, secrets, digits_user, special_user):
    """scale.yml with the health gate on (it logs in with qfc_db_password: the digit-only, the special, then the
    fixture's password), a change in each mode, and a gate that fails on a wrong qfc_db_password: no .env value, no
    password in any output. The simulated workers log in with the digit-only password of .env; .env also holds the
    special one."""
    stack = secret_stack(tmp_path, qfcdb, replicas=1, env_password=DIGITS_SECRET, user=digits_user,
                         extra_env={"MINIO_ROOT_PASSWORD": SPECIAL_SECRET_ENV})
    try:
        inv = inventory(tmp_path, stack.path)
        base = {"qfc_db_password": qfcdb.pg.password, "qfc_db_host": "127.0.0.1"}
        logins = {"check_diff": (digits_user, DIGITS_SECRET), "diff": (special_user, SPECIAL_SECRET),
                  "events_diff": (qfcdb.pg.user, qfcdb.pg.password)}
        counts = {"check_diff": 2, "diff": 2, "events_diff": 1}
        for mode, count in counts.items():
            user, password = logins[mode]
            proc, text, events = play("scale.yml", inv, dict(base, qfc_worker_replicas=count, qfc_db_user=user,
                                                             qfc_db_password=password), tmp_path, **MODES[mode])
            assert proc.returncode == 0, (mode, proc.stdout[-4000:])
            assert "Health gate - read the queue" in text
            # the .env diff was shown (and recorded as an event, where AWX's "Show Changes" reads it)
            assert "+++ after: %s (QFIELDCLOUD_WORKER_REPLICAS)" % stack.env_file in proc.stdout
            assert not MODES[mode].get("events") or '"event": "on_file_diff"' in events
            assert_secret_free(text, secrets)
        assert stack.env_value() == "1"
        wrong = "Wr0ng-T0ps3cret-db-pass"
        proc, text, _events = play("scale.yml", inv, dict(base, qfc_worker_replicas=3, qfc_db_password=wrong),
                                   tmp_path, diff=True, events=True)
        assert proc.returncode != 0 and "password authentication failed" in text
        assert_secret_free(text, secrets + (wrong,))
        assert stack.env_value() == "1"
        # a Compose error that echoes the digit-only and the special password: the failed call's stderr, the task's
        # outcome and the play's custom stats (the AWX artifacts), at -vvv with the events recorded
        (stack.path / "echo-secrets.yml").write_text(
            "services:\n  worker_wrapper:\n    stop_grace_period: ${POSTGRES_PASSWORD}\n"
            "    mem_limit: ${MINIO_ROOT_PASSWORD}\n")
        stack.set_env("COMPOSE_FILE", "docker-compose.yml:echo-secrets.yml")
        direct = stack.compose("config", check=False)
        assert 'duration "%s"' % DIGITS_SECRET in direct.stderr and "invalid size: 'p$ss #w" in direct.stderr
        proc, text, events = play("scale.yml", inv, dict(base, qfc_worker_replicas=3, qfc_db_user=qfcdb.pg.user),
                                  tmp_path, diff=True, events=True)
        assert proc.returncode != 0 and "does not load" in text and "invalid size" in text
        assert '"qfc_scale_outcomes"' in events and "missing unit in duration" in events
        assert_secret_free(text, secrets)
        stack.set_env("COMPOSE_FILE", "docker-compose.yml")
        assert stack.env_value() == "1"
    finally:
        stack.down()


def test_job_cleanup_role_shows_no_secret(qfcdb, tmp_path, secrets, digits_user, special_user):
    """The check run logs in with .env's digit-only password, the next with the special one as qfc_db_password (and
    .env holds it too), the last with the fixture's."""
    project = tmp_path / "qfieldcloud"
    project.mkdir()
    (project / ".env").write_text(qfcdb.env_text(SECRET_KEY='"%s"' % SECRETS[1], EMAIL_HOST_PASSWORD=SECRETS[0],
                                                 AWS_SECRET_ACCESS_KEY=SECRETS[2],
                                                 GEODB_PASSWORD=SPECIAL_SECRET_ENV)
                                  + "POSTGRES_USER=%s\nPOSTGRES_PASSWORD=%s\n" % (digits_user, DIGITS_SECRET))
    inv = inventory(tmp_path, project)
    logins = {"check_diff": {}, "diff": {"qfc_db_user": special_user, "qfc_db_password": SPECIAL_SECRET},
              "events_diff": {"qfc_db_user": qfcdb.pg.user, "qfc_db_password": qfcdb.pg.password}}
    # each run adds a stale job: the check run predicts the first, the next runs fail what is there
    for mode, expected in (("check_diff", "1 job(s) would be failed"), ("diff", "2 job(s) failed"),
                           ("events_diff", "1 job(s) failed")):
        stuck_jobs(qfcdb)
        proc, text, _events = play("cleanup.yml", inv, logins[mode], tmp_path, **MODES[mode])
        assert proc.returncode == 0, (mode, proc.stdout[-4000:])
        assert "stale: " + expected in text
        assert_secret_free(text, secrets)


def test_queue_report_shows_no_secret(qfcdb, tmp_path, secrets, digits_user, special_user):
    """The .env holds a stale password: the report logs in with qfc_db_password (the digit-only, the special, then
    the fixture's), and shows neither."""
    stuck_jobs(qfcdb)
    stale = "St4le-env-password-0042"
    stack = secret_stack(tmp_path, qfcdb, replicas=0, env_password=stale)
    secrets += (stale,)
    logins = {"check_diff": (digits_user, DIGITS_SECRET), "diff": (special_user, SPECIAL_SECRET),
              "events_diff": (qfcdb.pg.user, qfcdb.pg.password)}
    try:
        inv = inventory(tmp_path, stack.path)
        for mode in ("check_diff", "diff", "events_diff"):
            user, password = logins[mode]
            proc, text, _events = play("queue_report.yml", inv, {"qfc_db_user": user, "qfc_db_password": password},
                                       tmp_path, **MODES[mode])
            assert proc.returncode == 0, (mode, proc.stdout[-4000:])
            assert "queue depth" in text
            assert_secret_free(text, secrets)
    finally:
        stack.down()


def test_monitoring_role_shows_no_secret(qfcdb, tmp_path, secrets, special_user):
    """Install (check, real), a change of the webhook's token (events recorded), and removal: the webhook URL carries
    its token, so neither the URL nor the token may show, nor any .env value, in the runs' output nor in what the
    collector wrote (CSV log, textfile, state). The collector logs in with .env's special password; .env also holds
    the digit-only one."""
    stack = secret_stack(tmp_path, qfcdb, replicas=0, user=special_user,
                         extra_env={"POSTGRES_PASSWORD": SPECIAL_SECRET_ENV, "GEODB_PASSWORD": DIGITS_SECRET})
    try:
        for sub in ("cron.d", "logrotate.d"):
            (tmp_path / sub).mkdir()
        host_vars = {"qfc_monitoring_dir": tmp_path / "mon", "qfc_monitoring_python": BIN / "python",
                     "qfc_monitoring_install_packages": False,
                     "qfc_monitoring_cron_file": tmp_path / "cron.d" / "qfieldcloud-queue-metrics",
                     "qfc_monitoring_log": tmp_path / "log" / "queue_metrics.log",
                     "qfc_monitoring_logrotate_file": tmp_path / "logrotate.d" / "qfieldcloud-queue-metrics",
                     "qfc_monitoring_textfile": tmp_path / "textfile" / "qfieldcloud_queue.prom",
                     "qfc_monitoring_timeout": 10}
        inv = inventory(tmp_path, stack.path, **host_vars)
        rotated = WEBHOOK_URL.replace(WEBHOOK_TOKEN, "R0TATED-def456")
        # install predicted, installed, then the token rotated (a diff between two secret URLs) with events recorded
        runs = [("check_diff", WEBHOOK_URL), ("diff", WEBHOOK_URL), ("events_diff", rotated)]
        for mode, url in runs:
            proc, text, _events = play("monitoring.yml", inv, {"qfc_monitoring_webhook_url": url,
                                                               "qfc_db_password": qfcdb.pg.password},
                                       tmp_path, **MODES[mode])
            assert proc.returncode == 0, (mode, proc.stdout[-4000:])
            assert "collector" in text
            assert_secret_free(text, secrets + (WEBHOOK_URL, WEBHOOK_TOKEN, rotated, "R0TATED-def456",
                                                "127.0.0.1:9/hooks"))
        assert (tmp_path / "mon" / "collector.json").exists()
        # what the collector wrote: its CSV log (a row, not an error: it logged in with the special password), its
        # textfile, its configuration and state (webhook.url is where the role keeps the URL, 0600, on purpose)
        rows = (tmp_path / "log" / "queue_metrics.log").read_text().splitlines()
        assert rows and rows[-1].split(",")[STATUS_INDEX] != "error", rows[-1:]
        written = [p for p in (tmp_path / "log", tmp_path / "textfile", tmp_path / "mon") for p in p.rglob("*")
                   if p.is_file() and p.suffix not in (".py", ".pyc") and p.name != "webhook.url"]
        assert tmp_path / "textfile" / "qfieldcloud_queue.prom" in written
        assert "collector_up 1" in (tmp_path / "textfile" / "qfieldcloud_queue.prom").read_text()
        assert_secret_free("\n".join(p.read_text(errors="replace") for p in written),
                           secrets + (WEBHOOK_TOKEN, "R0TATED-def456"))
        proc, text, _events = play("monitoring.yml", inv, {"qfc_monitoring_state": "absent",
                                                           "qfc_monitoring_webhook_url": rotated}, tmp_path,
                                   diff=True, events=True)
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert_secret_free(text, secrets + (rotated, "R0TATED-def456"))
    finally:
        stack.down()


def test_a_password_with_template_characters_passed_unsafe(qfcdb, tmp_path, secrets):
    """A password with {{ {% {# in it, passed as !unsafe (as AWX passes survey answers): the role logs in with it
    literally and never shows it. (Passed as a plain -e value, Ansible itself would try to template it and print it
    in its template error, before the role runs: the roles' READMEs say to pass such secrets as !unsafe.)"""
    password = "Br{{ace}}-{%pw%}-{#x#}-9731"
    with login_role(qfcdb, "qfct_brace", password) as user:
        stuck_jobs(qfcdb)
        project = tmp_path / "qfieldcloud"
        project.mkdir()
        (project / ".env").write_text(qfcdb.env_text(SECRET_KEY='"%s"' % SECRETS[1]))
        inv = inventory(tmp_path, project)
        vars_file = tmp_path / "secrets.yml"
        vars_file.write_text("qfc_db_user: %s\nqfc_db_password: !unsafe '%s'\n" % (user, password))
        for mode in ("check_diff", "events_diff"):
            proc, text, _events = play("cleanup.yml", inv, {}, tmp_path, vars_file=vars_file, **MODES[mode])
            assert proc.returncode == 0, (mode, proc.stdout[-4000:])
            assert "stale: 1 job(s) " in text
            assert_secret_free(text, secrets + (password, "Br{{ace"))
