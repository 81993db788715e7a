"""QFieldCloud queue metrics collector, installed by the qfieldcloud.ops.monitoring role and run by cron.

One run: gather the queue facts with the collection's own code (module_utils/_queue.py, copied beside this script:
one source of truth for the SQL), append a CSV row whose first two columns are the seed's `timestamp,queue_depth`,
rewrite the node_exporter textfile atomically, and report alerts only when they start or end (syslog, optional
webhook). A database failure is recorded (CSV row, qfieldcloud_collector_up 0) and the run exits 1; the next run
recovers by itself. The run never outlives its timeout, and concurrent runs are serialised by a lock, so their lines
never interleave.

    qfc-queue-collector --config /opt/qfieldcloud-ops/monitoring/collector.json
"""

from __future__ import annotations

import argparse
import fcntl
import http.client
import json
import os
import signal
import socket
import sys
import syslog
import tempfile
import time
import urllib.request
from urllib.parse import quote, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _envfile, _jobs, _postgres, _queue  # noqa: E402

COLUMNS = ("timestamp", "queue_depth", "pending", "queued", "started", "useful_backlog", "workers_configured",
           "workers_running", "workers_busy", "finished_last_hour", "failed_last_hour", "success_rate",
           "duration_p50_s", "duration_p95_s", "stuck_stale", "stuck_orphaned_queued", "stuck_old_pending", "status",
           "error")
DOCKER_SOCKET = "/var/run/docker.sock"


class Timeout(Exception):
    pass


class UnixHTTPConnection(http.client.HTTPConnection):
    """The Docker Engine API over its unix socket, with the standard library only (no SDK import, no CLI spawn)."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def running_workers(project, service, timeout=3.0):
    """Running containers of the service by Compose labels; None when the engine cannot be asked."""
    if not os.path.exists(DOCKER_SOCKET):
        return None
    filters = json.dumps({"label": ["com.docker.compose.project=%s" % project,
                                    "com.docker.compose.service=%s" % service,
                                    "com.docker.compose.oneoff=False"], "status": ["running"]})
    conn = UnixHTTPConnection(DOCKER_SOCKET, timeout)
    try:
        conn.request("GET", "/containers/json?filters=%s" % quote(filters))
        response = conn.getresponse()
        if response.status != 200:
            return None
        return len(json.loads(response.read()))
    except (OSError, ValueError):
        return None
    finally:
        conn.close()


def project_name(env, project_src):
    """Compose's project name: COMPOSE_PROJECT_NAME, else the directory name, normalised as Compose does."""
    name = os.environ.get("COMPOSE_PROJECT_NAME") or env.get("COMPOSE_PROJECT_NAME")
    if not name:
        name = os.path.basename(os.path.normpath(project_src)).lower()
        name = "".join(ch for ch in name if ch.isalnum() or ch in "-_")
    return name


def read_env(path):
    _raw, _text, entries = _envfile.read(path)
    return {e.key: e.value for e in entries}, _envfile.secret_values(entries)


def fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return ("%.4f" % value).rstrip("0").rstrip(".")
    return str(value)


def csv_row(stamp, facts=None, workers=None, error=None):
    if facts is None:
        values = [stamp] + [""] * 16 + ["error", (error or "").replace(",", ";").replace("\n", " ")]
    else:
        by = facts["by_status"]
        values = [stamp, facts["queue_depth"], by["pending"], by["queued"], by["started"], facts["useful_backlog"],
                  workers["configured"], workers["running"], workers["busy"], facts["last_hour"]["finished"],
                  facts["last_hour"]["failed"], facts["last_hour"]["success_rate"], facts["duration"]["p50_s"],
                  facts["duration"]["p95_s"], facts["stuck"]["stale"], facts["stuck"]["orphaned_queued"],
                  facts["stuck"]["old_pending"], "ok", ""]
    return ",".join(fmt(v) for v in values) + "\n"


def prom_text(project, facts, workers, up, last_success, duration):
    """node_exporter textfile: HELP and TYPE for every metric, one label set per project."""
    lines = []

    def metric(name, help_text, samples):
        samples = [(labels, value) for labels, value in samples if value is not None]
        if not samples:
            return
        lines.append("# HELP %s %s" % (name, help_text))
        lines.append("# TYPE %s gauge" % name)
        for labels, value in samples:
            pairs = dict(labels, project=project)
            label_text = ",".join('%s="%s"' % (k, str(v).replace('"', '\\"')) for k, v in sorted(pairs.items()))
            lines.append("%s{%s} %s" % (name, label_text, fmt(float(value))))

    if facts is not None:
        by = facts["by_status"]
        metric("qfieldcloud_queue_depth", "Jobs pending or queued.", [({}, facts["queue_depth"])])
        metric("qfieldcloud_jobs", "Jobs now in a live status.",
               [({"status": s}, by[s]) for s in ("pending", "queued", "started")])
        metric("qfieldcloud_useful_backlog", "Pending jobs whose project is free and unlocked.",
               [({}, facts["useful_backlog"])])
        metric("qfieldcloud_oldest_pending_age_seconds", "Age of the oldest pending job.",
               [({}, facts["oldest_pending_age_s"])])
        metric("qfieldcloud_workers_configured", "QFIELDCLOUD_WORKER_REPLICAS in .env.", [({}, workers["configured"])])
        metric("qfieldcloud_workers_running", "Running worker_wrapper containers (Compose labels).",
               [({}, workers["running"])])
        metric("qfieldcloud_workers_busy", "Workers with a queued or started job.", [({}, workers["busy"])])
        metric("qfieldcloud_jobs_last_hour", "Jobs that ended in the last hour.",
               [({"result": "finished"}, facts["last_hour"]["finished"]),
                ({"result": "failed"}, facts["last_hour"]["failed"])])
        metric("qfieldcloud_success_ratio_last_hour", "Finished / (finished + failed) in the last hour.",
               [({}, facts["last_hour"]["success_rate"])])
        metric("qfieldcloud_job_duration_seconds", "Run time of finished jobs over the last 24 h.",
               [({"percentile": "50"}, facts["duration"]["p50_s"]), ({"percentile": "95"}, facts["duration"]["p95_s"])])
        metric("qfieldcloud_stuck_jobs", "Stuck jobs by kind.",
               [({"kind": k}, facts["stuck"][k]) for k in ("stale", "orphaned_queued", "old_pending")])
    metric("qfieldcloud_collector_up", "1 when the last collection succeeded.", [({}, 1 if up else 0)])
    metric("qfieldcloud_collector_last_success_timestamp_seconds", "Unix time of the last successful collection.",
           [({}, last_success)])
    metric("qfieldcloud_collector_duration_seconds", "Wall time of the last collection.", [({}, duration)])
    return "\n".join(lines) + "\n"


def write_atomically(path, text, mode=0o644):
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_state(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {"alerts": {}, "last_success": None}


def notify(config, event, alert, project):
    """Syslog always; the webhook when configured. A failing webhook is logged and never fails the run."""
    message = "qfieldcloud %s alert %s %s (%s): %s" % (
        project, alert["severity"], event, alert["code"], alert["message"])
    priority = {"critical": syslog.LOG_CRIT, "error": syslog.LOG_ERR}.get(alert["severity"], syslog.LOG_WARNING)
    syslog.openlog("qfc-queue-collector", 0, syslog.LOG_DAEMON)
    syslog.syslog(priority if event == "started" else syslog.LOG_NOTICE, message)
    url = config.get("webhook_url")
    if not url:
        return
    body = json.dumps({"event": event, "project": project, "host": socket.gethostname(), "alert": alert,
                       "text": message}).encode()
    try:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(request, timeout=config.get("webhook_timeout", 5)).close()
    except Exception as exc:  # noqa: BLE001  a broken webhook must never stop the state from being saved
        # the URL's host only: webhook URLs often carry a token in their path or query
        syslog.syslog(syslog.LOG_ERR, "webhook to %s failed: %s" % (urlsplit(url).hostname, type(exc).__name__))


def collect(config, context):
    """One gathering. ``context["project"]`` is set as soon as it is known, for a timeout's report."""
    started = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    facts = workers = error = None
    env, secrets = {}, []
    project = context["project"]
    thresholds = dict(_queue.DEFAULT_THRESHOLDS)
    try:
        env, secrets = read_env(config["env_file"])
        project = context["project"] = project_name(env, config["project_src"])
        thresholds.update({k: float(v) for k, v in config.get("thresholds", {}).items()})
        params = _postgres.connection_params({"connect_timeout": max(int(config["timeout"] / 2), 1)}, env)
        facts = _queue.gather(params, _jobs.worker_timeout(env, config.get("worker_timeout_s")), 86400,
                              thresholds["pending_after_s"], int(config["timeout"] * 500))
        configured = env.get(config.get("env_var", "QFIELDCLOUD_WORKER_REPLICAS"), "")
        workers = {"configured": int(configured) if configured.strip().isdigit() else None,
                   "running": running_workers(project, config.get("service", "worker_wrapper")),
                   "busy": _queue.busy_workers(facts)}
    except Timeout:
        raise
    except Exception as exc:  # noqa: BLE001  any failure is recorded as a failed run, never a silent crash
        error = _envfile.mask(str(exc).strip() or type(exc).__name__, secrets)
    return project, stamp, facts, workers, error, started, thresholds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    config = json.load(open(parser.parse_args().config))

    def on_alarm(_signum, _frame):
        raise Timeout("collection took longer than %ss" % config["timeout"])

    if not _postgres.HAS_PSYCOPG2:
        print("qfc-queue-collector: psycopg2 is missing; install python3-psycopg2", file=sys.stderr)
        return 3
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, config["timeout"])
    lock = open(config["lock_file"], "a")
    locked = False
    context = {"project": os.path.basename(os.path.normpath(config["project_src"]))}
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # interrupted by the alarm if a previous run hangs on to it
        locked = True
        project, stamp, facts, workers, error, started, thresholds = collect(config, context)
    except Timeout as exc:
        syslog.syslog(syslog.LOG_ERR, "qfc-queue-collector: %s" % exc)
        print("qfc-queue-collector: %s" % exc, file=sys.stderr)
        if locked:  # the database hung: record it; without the lock another run is writing, so stay silent
            with open(config["csv_log"], "a") as handle:
                handle.write(csv_row(time.strftime("%Y-%m-%d %H:%M:%S"), error=str(exc)))
            if config.get("textfile"):
                state = load_state(config["state_file"])
                write_atomically(config["textfile"], prom_text(context["project"], None, None, False,
                                                               state["last_success"], config["timeout"]))
        return 2
    state = load_state(config["state_file"])
    if error is None:
        state["last_success"] = time.time()
        active = {a["code"]: a for a in _queue.alerts(facts, workers, thresholds)}
    else:  # the queue cannot be seen: its alerts stay as they were, and the outage is an alert of its own
        active = dict(state["alerts"], collector_failed={"severity": "error", "code": "collector_failed",
                                                         "message": "cannot read the job queue: %s" % error})
    with open(config["csv_log"], "a") as handle:  # one write of one line, under the lock
        handle.write(csv_row(stamp, facts, workers, error))
    if config.get("textfile"):
        write_atomically(config["textfile"], prom_text(project, facts, workers, error is None, state["last_success"],
                                                       time.time() - started))
    previous, state["alerts"] = state["alerts"], active
    # Saved before notifying: a webhook that hangs past the timeout loses its notice instead of repeating every run.
    write_atomically(config["state_file"], json.dumps(state), 0o600)
    try:
        for code in sorted(set(active) - set(previous)):
            notify(config, "started", active[code], project)
        for code in sorted(set(previous) - set(active)):
            notify(config, "ended", previous[code], project)
    except Timeout as exc:
        syslog.syslog(syslog.LOG_ERR, "qfc-queue-collector: %s while notifying" % exc)
        print("qfc-queue-collector: %s while notifying" % exc, file=sys.stderr)
        return 2
    signal.setitimer(signal.ITIMER_REAL, 0)
    if error is not None:
        print("qfc-queue-collector: %s" % error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
