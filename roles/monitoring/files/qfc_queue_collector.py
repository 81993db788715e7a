"""QFieldCloud queue metrics collector, installed by the qfieldcloud.ops.monitoring role and run by cron.

One run: gather the queue facts with the collection's own code (its module_utils, copied beside this script: _queue
for the SQL, _policy for the alerts, _metrics_log for the CSV row, _engine for the running workers, _files for the
atomic writes), append a CSV row whose first two columns are the seed's `timestamp,queue_depth`, rewrite the
node_exporter textfile atomically, and report alerts only when they start or end (syslog, optional webhook). A
failure (database down or hung, psycopg2 missing, a sink that cannot be written) is recorded in every sink that
still works (CSV row, qfieldcloud_collector_up 0, a collector_failed alert) and the run exits non-zero; the next run
recovers by itself.

Deadlines: the whole run has one deadline (``timeout`` seconds) that nothing swallows. Every database call is capped
by it on the client side (a server that accepts the login and never answers cannot hold the run), the Docker and
webhook calls get what is left of it, and a SIGALRM a little after it is the backstop. Concurrent runs are
serialised by a lock, so their lines never interleave.

Exit codes: 0 ok; 1 the queue could not be read or a sink failed; 2 out of time (lock, or notices not sent);
3 psycopg2 is missing; 5 the database is unavailable (the connection was refused, the server did not answer in time,
is starting up or shutting down, has no connection slot left, or cancelled the query on its statement timeout) and
nothing else failed. A failure that does not heal by itself (the password refused, a host name that does not
resolve, a database that is not QFieldCloud's, .env unreadable) is 1. The role's first run installs the collector on
5 (with a warning: the outage is then recorded and alerted every run) and fails on anything else.

    qfc-queue-collector --config /opt/qfieldcloud-ops/monitoring/collector.json
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import re
import signal
import socket
import sys
import syslog
import time
import urllib.request
from urllib.parse import urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

from ansible_collections.qfieldcloud.ops.plugins.module_utils import (  # noqa: E402
    _engine, _envfile, _files, _jobs, _metrics_log, _policy, _postgres, _queue)

fmt = _metrics_log.fmt
GRACE_S = 3.0  # the SIGALRM backstop fires this long after the run's deadline
WRITE_RESERVE_S = 1.0  # the database must give up this long before the deadline: the sinks still need writing
EXIT_OK, EXIT_FAILED, EXIT_TIMEOUT, EXIT_NO_PSYCOPG2, EXIT_UNAVAILABLE = 0, 1, 2, 3, 5
# The database is unavailable, not misconfigured: it heals by itself. SQLSTATEs of a server that is there but cannot
# serve now, and libpq's (C locale: cron's and the role's environment) and _postgres's words for one that does not
# answer. Anything else (authentication, a host name that does not resolve, no such database, no core_job table, a
# bad .env) is a failure the next run will meet again.
UNAVAILABLE_SQLSTATES = frozenset((
    "57P01",  # admin_shutdown: terminating connection due to administrator command
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now: starting up, shutting down, in recovery
    "53300",  # too_many_connections
    "57014",  # query_canceled: the server's statement timeout (a table lock held, an overloaded server)
    "55P03",  # lock_not_available
))
UNAVAILABLE_RE = re.compile(
    r"connection refused|is the server running|timeout expired|did not answer within|stopped answering"
    r"|server closed the connection unexpectedly|no route to host|network is unreachable"
    r"|the database system is (starting up|shutting down|in recovery mode|not (yet )?accepting connections)"
    r"|too many clients|remaining connection slots are reserved|canceling statement due to statement timeout"
    r"|terminating connection due to administrator command", re.I)
CONNECTION_ERRORS = (_postgres.ConnectionFailed,)  # _postgres's "no connection" error


class Timeout(BaseException):
    """The run's deadline passed. A BaseException, so no ``except Exception`` on the way can swallow it."""


class Run:
    """The run's clock: one deadline for everything."""

    def __init__(self, timeout):
        self.timeout = float(timeout)
        self.started = time.time()
        self.monotonic = time.monotonic()
        self.deadline = self.monotonic + self.timeout

    def left(self):
        return self.deadline - time.monotonic()

    def elapsed(self):
        return time.monotonic() - self.monotonic


def read_env(path):
    _raw, _text, entries = _envfile.read(path)
    return {e.key: e.value for e in entries}, _envfile.secret_values(entries)


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
        metric("qfieldcloud_useful_backlog", "Jobs free workers could start now: one per project with a pending "
               "job, no queued or started job and no lock (upstream's dequeue rule).", [({}, facts["useful_backlog"])])
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
    if facts is not None:
        metric("qfieldcloud_worker_timeout_seconds", "Worker timeout of the stale rule; source: option, env "
               "(.env, v26.24+), constance (WORKER_TIMEOUT_S row, v26.23 and before) or default (600).",
               [({"source": facts["worker_timeout_source"]}, facts["worker_timeout_s"])])
    metric("qfieldcloud_collector_up", "1 when the last collection succeeded.", [({}, 1 if up else 0)])
    metric("qfieldcloud_collector_last_success_timestamp_seconds", "Unix time of the last successful collection.",
           [({}, last_success)])
    metric("qfieldcloud_collector_duration_seconds", "Wall time of the last collection.", [({}, duration)])
    return "\n".join(lines) + "\n"


def append_line(path, line):
    """One write of one line (under the lock). A short write (disk full) is cut back, so no half line stays."""
    with open(path, "a") as handle:
        size = handle.tell()
        try:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        except OSError:
            try:
                handle.truncate(size)
            except OSError:
                pass
            raise


def load_state(path):
    try:
        with open(path) as handle:
            state = json.load(handle)
        if isinstance(state, dict) and isinstance(state.get("alerts"), dict):
            return state
    except (OSError, ValueError):
        pass
    return {"alerts": {}, "last_success": None}


def describe_error(exc, secrets=()):
    if isinstance(exc, OSError) and exc.errno is not None:
        text = "%s: %s" % (exc.strerror or errno.errorcode.get(exc.errno, exc.errno), exc.filename or "")
        return _envfile.mask(text.rstrip(": "), secrets)
    return _envfile.mask(str(exc).strip() or type(exc).__name__, secrets)


def log(priority, message):
    """syslog and stderr (cron discards stderr, but the role's first run and an operator at a shell see it)."""
    print("qfc-queue-collector: %s" % message, file=sys.stderr)
    try:
        syslog.openlog("qfc-queue-collector", 0, syslog.LOG_DAEMON)
        syslog.syslog(priority, message)
    except Exception:  # noqa: BLE001  no syslog is one sink less, never a crash
        pass


def webhook_url(config):
    """The URL from its own file (kept out of collector.json, so no diff of the config can show it)."""
    path = config.get("webhook_url_file")
    if path:
        try:
            with open(path) as handle:
                return handle.read().strip()
        except OSError as exc:
            log(syslog.LOG_ERR, "cannot read the webhook URL file: %s" % describe_error(exc))
            return ""
    return config.get("webhook_url") or ""


def notify(config, url, event, alert, project, run):
    """Syslog always; the webhook when configured, within its own timeout and what is left of the run.

    A failing webhook is logged (its host only: webhook URLs carry tokens) and never stops the run; the run's
    :class:`Timeout` is a BaseException and passes through."""
    message = "qfieldcloud %s alert %s %s (%s): %s" % (
        project, alert["severity"], event, alert["code"], alert["message"])
    priority = {"critical": syslog.LOG_CRIT, "error": syslog.LOG_ERR}.get(alert["severity"], syslog.LOG_WARNING)
    try:
        syslog.openlog("qfc-queue-collector", 0, syslog.LOG_DAEMON)
        syslog.syslog(priority if event == "started" else syslog.LOG_NOTICE, message)
    except Exception:  # noqa: BLE001
        pass
    if not url:
        return True
    left = run.left()
    if left <= 0.05:
        return False
    body = json.dumps({"event": event, "project": project, "host": socket.gethostname(), "alert": alert,
                       "text": message}).encode()
    try:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(request, timeout=min(float(config.get("webhook_timeout", 5)), left)).close()
    except Exception as exc:  # noqa: BLE001  a broken webhook must never stop the run
        log(syslog.LOG_ERR, "webhook to %s failed: %s" % (urlsplit(url).hostname, type(exc).__name__))
    return True


def is_unavailable(exc):
    """Whether a failure to read the queue means the database is down or does not answer (it heals by itself), as
    opposed to a misconfiguration (see UNAVAILABLE_SQLSTATES)."""
    if not _postgres.HAS_PSYCOPG2:
        return False
    if isinstance(exc, _postgres.NoAnswer):
        return True
    if getattr(exc, "pgcode", None) in UNAVAILABLE_SQLSTATES:
        return True
    if isinstance(exc, CONNECTION_ERRORS + (_postgres.psycopg2.OperationalError,)):
        return UNAVAILABLE_RE.search(str(exc)) is not None
    return False


def gather(params, run, worker_timeout, config, env=None):
    """_queue.gather with every database call capped by the run's deadline, less the time the sinks need.

    The server's statement timeout is half the run's; each call's client-side limit is _queue's default (that plus a
    grace, so a live server's own timeout wins); the deadline caps the login and every call, so a server that accepts
    the login and then never answers cannot hold the run."""
    deadline = run.deadline - min(WRITE_RESERVE_S, run.timeout / 4)
    return _queue.gather(params, worker_timeout, 86400, config["pending_after_s"], int(run.timeout * 500),
                         deadline=deadline, env=env, compose_text=_jobs.read_compose(config.get("project_src")))


def collect(config, context, run):
    """One gathering. ``context["project"]`` is set as soon as it is known, for a timeout's report."""
    stamp = time.strftime(_metrics_log.TIMESTAMP_FORMAT)
    facts = workers = error = None
    secrets = []
    thresholds = dict(_policy.DEFAULT_THRESHOLDS)
    try:
        env, secrets = read_env(config["env_file"])
        context["project"] = _engine.project_name(env, config["project_src"], config.get("compose_project"))
        thresholds.update({k: float(v) for k, v in config.get("thresholds", {}).items()})
        if not _postgres.HAS_PSYCOPG2:
            raise RuntimeError("psycopg2 is missing from %s; install python3-psycopg2" % sys.executable)
        params = _postgres.connection_params({"connect_timeout": max(int(run.timeout / 2), 1)}, env)
        facts = gather(params, run, config.get("worker_timeout_s"),
                       dict(config, pending_after_s=thresholds["pending_after_s"]), env)
        configured = env.get(config.get("env_var") or "QFIELDCLOUD_WORKER_REPLICAS", "")
        workers = {"configured": int(configured) if configured.strip().isdigit() else None,
                   "running": _engine.count_running_stdlib(
                       context["project"], config.get("service") or "worker_wrapper",
                       min(3.0, max(run.left() - WRITE_RESERVE_S, 0.1))),
                   "busy": _queue.busy_workers(facts)}
    except Exception as exc:  # noqa: BLE001  any failure is recorded as a failed run, never a silent crash
        error = describe_error(exc, secrets)
        context["unavailable"] = is_unavailable(exc)
        facts = workers = None
    return stamp, facts, workers, error, thresholds


class Sinks:
    """Each sink is tried whatever happened to the others; failures are collected, never raised."""

    def __init__(self, config):
        self.config = config
        self.errors = []
        self.textfile_up = None  # what the textfile on disk says now (None: not written by this run)

    def attempt(self, what, action):
        try:
            action()
            return True
        except Exception as exc:  # noqa: BLE001
            self.errors.append("%s: %s" % (what, describe_error(exc)))
            log(syslog.LOG_ERR, "cannot write the %s: %s" % (what, describe_error(exc)))
            return False

    def make_dirs(self):
        for key in ("csv_log", "textfile", "state_file"):
            path = self.config.get(key)
            if path:
                directory = os.path.dirname(path)
                self.attempt("%s directory" % key, lambda d=directory: os.makedirs(d, mode=0o755, exist_ok=True))

    def csv(self, line):
        return self.attempt("CSV log", lambda: append_line(self.config["csv_log"], line))

    def textfile(self, text, up):
        """Rewrite the textfile; when that fails, remove the old one, so a stale collector_up 1 cannot survive
        (node_exporter then reports the metrics missing, which is an alert of its own)."""
        path = self.config.get("textfile")
        if not path:
            return True
        if self.attempt("textfile", lambda: _files.write_atomically(path, text, 0o644, keep_owner="try")):
            self.textfile_up = up
            return True
        try:
            os.unlink(path)
            self.textfile_up = None
        except FileNotFoundError:
            self.textfile_up = None
        except OSError as exc:
            log(syslog.LOG_ERR, "cannot remove the stale textfile either: %s" % describe_error(exc))
        return False

    def state(self, state):
        # keep_owner="try": a state file an earlier root run left is replaced by the cron user's own
        return self.attempt("state file", lambda: _files.write_atomically(
            self.config["state_file"], json.dumps(state), 0o600, keep_owner="try"))


def record_failure(config, context, run, message):
    """A run that cannot go on (out of time): a CSV error row and collector_up 0, best effort."""
    sinks = Sinks(config)
    sinks.make_dirs()
    sinks.csv(_metrics_log.format_row(time.strftime(_metrics_log.TIMESTAMP_FORMAT), error=message))
    state = load_state(config["state_file"])
    sinks.textfile(prom_text(context["project"], None, None, False, state.get("last_success"), run.elapsed()), False)


def take_lock(path, run):
    """The lock, waited for until the run's deadline (a previous run may hang on to it)."""
    lock = open(path, "a")
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if run.left() <= 0:
                lock.close()
                raise Timeout("collection took longer than %ss (waiting for the lock)" % fmt(run.timeout)) from None
            time.sleep(min(0.05, max(run.left(), 0.001)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    with open(parser.parse_args(argv).config) as handle:
        config = json.load(handle)
    run = Run(config["timeout"])
    context = {"project": _engine.project_name({}, config["project_src"], config.get("compose_project"))}
    lock_dir = os.path.dirname(config["lock_file"])

    def on_alarm(_signum, _frame):
        raise Timeout("collection took longer than %ss" % fmt(run.timeout))

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, run.timeout + GRACE_S)
    locked = False
    lock = None
    try:
        os.makedirs(lock_dir, mode=0o700, exist_ok=True)
        lock = take_lock(config["lock_file"], run)
        locked = True
        return after_lock(config, context, run)
    except Timeout as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        log(syslog.LOG_ERR, str(exc))
        if locked:  # without the lock another run is writing, so stay silent
            record_failure(config, context, run, str(exc))
        return EXIT_TIMEOUT
    except OSError as exc:  # the lock cannot even be opened: record what can be recorded
        if locked:
            raise
        signal.setitimer(signal.ITIMER_REAL, 0)
        message = "cannot open the lock file: %s" % describe_error(exc)
        log(syslog.LOG_ERR, message)
        record_failure(config, context, run, message)
        return EXIT_FAILED
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if lock is not None:
            lock.close()


def after_lock(config, context, run):
    stamp, facts, workers, error, thresholds = collect(config, context, run)
    project = context["project"]
    sinks = Sinks(config)
    sinks.make_dirs()
    sinks.csv(_metrics_log.format_row(stamp, facts, workers, error))
    state = load_state(config["state_file"])
    if error is None:
        last_success = time.time()
    else:
        last_success = state.get("last_success")
    up = error is None and not sinks.errors
    sinks.textfile(prom_text(project, facts, workers, up, last_success, run.elapsed()), up)
    previous = state["alerts"]
    if error is None:
        active = {a["code"]: a for a in _policy.alerts(facts, workers, thresholds)}
    else:  # the queue cannot be seen: its alerts stay as they were
        active = {k: v for k, v in previous.items() if k != "collector_failed"}
    problems = ([error] if error else []) + sinks.errors
    if problems:  # the outage is an alert of its own
        active["collector_failed"] = {"severity": "error", "code": "collector_failed",
                                      "message": "collection failed: %s" % "; ".join(problems)}
        if "collector_failed" in previous:  # the same outage: no new notice, whatever its detail now
            active["collector_failed"] = previous["collector_failed"]
    # Saved before notifying: a webhook that hangs past the deadline loses its notice instead of repeating every run.
    saved = sinks.state({"alerts": active, "last_success": last_success})
    if not saved and "collector_failed" not in active:
        active["collector_failed"] = {"severity": "error", "code": "collector_failed",
                                      "message": "collection failed: %s" % "; ".join(sinks.errors)}
    if sinks.errors and sinks.textfile_up:  # a sink failed after the textfile said up: it must not stay
        sinks.textfile(prom_text(project, facts, workers, False, last_success, run.elapsed()), False)
    notices = [("started", active[code]) for code in sorted(set(active) - set(previous))]
    notices += [("ended", previous[code]) for code in sorted(set(previous) - set(active))]
    url = webhook_url(config)
    unsent = []
    try:
        for position, (event, alert) in enumerate(notices):
            if not notify(config, url, event, alert, project, run):
                unsent = notices[position:]
                break
    except Timeout:
        unsent = notices[position:]
    signal.setitimer(signal.ITIMER_REAL, 0)
    if unsent:
        log(syslog.LOG_ERR, "collection took longer than %ss while notifying: %d webhook notice(s) not sent (%s)"
            % (fmt(run.timeout), len(unsent), ", ".join("%s %s" % (e, a["code"]) for e, a in unsent)))
    if error is not None:
        log(syslog.LOG_ERR, error)
    if not _postgres.HAS_PSYCOPG2:
        return EXIT_NO_PSYCOPG2
    if sinks.errors or (error is not None and not context.get("unavailable")):
        return EXIT_FAILED
    if unsent:
        return EXIT_TIMEOUT
    if error is not None:  # the database is unavailable, and that alone: recorded, alerted, healing by itself
        return EXIT_UNAVAILABLE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
