"""Scheduled QFieldCloud stuck-job cleanup, installed by the qfieldcloud.ops.job_cleanup role and run by cron or a
systemd timer.

One run does what the module qfc_job_cleanup does, once per configured mode, with the collection's own code
(module_utils/_cleanup.py, _jobs.py, _postgres.py, copied beside this script: one source of truth for the rules and
the SQL). It prints one summary line per mode (stdout; failures on stderr) and logs it to syslog (tag
qfc-job-cleanup). A mode that fails does not stop the others; the exit code says that one failed.

Deadlines: the whole run has one deadline (``timeout`` seconds): every database call, the login included, is capped
by it on the client side (a server that accepts the login and never answers cannot hold the run), modes that find
no time left are not run, and a SIGALRM a little after it is the backstop. A lock (``lock_file``) makes sure two
runs never overlap: a run that finds it held ends at once.

Secrets: nothing printed or logged holds the database password or a secret-looking value of ``.env``.

Exit codes: 0 every mode ran; 1 a mode failed (or the configuration is unusable); 2 out of time; 3 psycopg2 is
missing; 4 another run holds the lock.

    qfc-job-cleanup --config /opt/qfieldcloud-ops/cleanup/cleanup.json [--check]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
import syslog
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

from ansible_collections.qfieldcloud.ops.plugins.module_utils import (  # noqa: E402
    _cleanup, _envfile, _jobs, _oplog, _postgres)

TAG = "qfc-job-cleanup"
GRACE_S = 3.0  # the SIGALRM backstop fires this long after the run's deadline
EXIT_OK, EXIT_FAILED, EXIT_TIMEOUT, EXIT_NO_PSYCOPG2, EXIT_LOCKED = 0, 1, 2, 3, 4
MODES = ("stale", "orphaned_queued", "age")
IDS_IN_LINE = 10  # job ids named in a summary line; the count is always exact

# qfc_job_cleanup's own options and their defaults (its main()); the connection options and their defaults come from
# _postgres.argument_spec(), the module's too. tests/unit/test_cleanup_schedule_command.py compares both with the
# module's argument spec.
MODULE_DEFAULTS = {
    "mode": "stale",
    "worker_timeout_s": None,
    "older_than": None,
    "statuses": list(_jobs.BUSY_STATUSES),
    "allow_pending": False,
    "batch_size": 500,
    "check_containers": True,
    "lock_timeout": 1000,
    "statement_timeout": 5000,
    "max_jobs_listed": 100,
    # the operations log: a run that fails jobs appends a record with actor kind "schedule"
    "operations_log": _oplog.DEFAULT_PATH,
    "operation": None,
    "operation_reason": "",
    "operation_actor": None,
}


def default_params():
    """Every option of qfc_job_cleanup with the module's default."""
    params = {name: spec.get("default") for name, spec in _postgres.argument_spec().items()}
    params.update((k, list(v) if isinstance(v, list) else v) for k, v in MODULE_DEFAULTS.items())
    return params


class Timeout(BaseException):
    """The run's deadline passed. A BaseException, so no ``except Exception`` on the way can swallow it."""


class Run:
    """The run's clock: one deadline for everything."""

    def __init__(self, timeout):
        self.timeout = float(timeout)
        self.deadline = time.monotonic() + self.timeout

    def left(self):
        return self.deadline - time.monotonic()


class Params:
    """What _cleanup.Cleanup and _postgres.load_env ask of an AnsibleModule: ``params``, ``check_mode``, ``warn``
    and ``no_log_values`` (the secrets of .env, masked in everything this script prints)."""

    def __init__(self, params, check_mode):
        self.params = params
        self.check_mode = check_mode
        self.no_log_values = set()
        self.warnings = []
        self.actor_kind = "schedule"  # the operations log's actor: this host's timer, not a person

    def warn(self, message):
        self.warnings.append(message)


def read_config(path):
    """The role's JSON configuration, checked; ValueError says what is wrong."""
    with open(path) as handle:
        config = json.load(handle)
    if not isinstance(config, dict):
        raise ValueError("the configuration must be a JSON object")
    modes = config.get("modes")
    if not isinstance(modes, list) or not modes or any(m not in MODES for m in modes):
        raise ValueError("modes must be a non-empty list of %s, got %r" % (", ".join(MODES), modes))
    timeout = config.get("timeout")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 1 <= timeout <= 86400:
        raise ValueError("timeout must be 1 to 86400 seconds, got %r" % (timeout,))
    params = config.get("params") or {}
    unknown = sorted(set(params) - set(default_params()) - {"login_password_file"})
    if unknown or "mode" in params or "older_than" in params:
        raise ValueError("unknown or per-mode options in params: %s" % ", ".join(unknown or ["mode/older_than"]))
    return config


def mode_params(config, mode):
    """qfc_job_cleanup's options for one mode: the module's defaults, the configuration's ``params``, the mode and
    its ``older_than`` (from ``older_than``, keyed by mode); the password from its own file."""
    params = default_params()
    given = dict(config.get("params") or {})
    password_file = given.pop("login_password_file", None)
    params.update((k, v) for k, v in given.items() if v is not None and v != "")
    if given.get("operations_log") == "":
        params["operations_log"] = ""  # "" turns the operations log off, it does not mean "the default"
    if password_file:
        with open(password_file) as handle:
            params["login_password"] = handle.read().rstrip("\r\n")
    params["mode"] = mode
    params["older_than"] = (config.get("older_than") or {}).get(mode) or None
    return params


def run_mode(params, check_mode, run, module=None):
    """What qfc_job_cleanup runs (``_cleanup.run``), for one mode: (result dict, the Params object). A failure's
    result has ``failed`` and the module's own message."""
    module = module or Params(params, check_mode)
    return _cleanup.run(module, deadline=run.deadline), module


def secrets_of(params, module):
    """Everything to mask: the .env secrets load_env found, and the password given, as error messages may quote it."""
    values = set(module.no_log_values)
    if params.get("login_password"):
        values.update(v for v in _envfile.escaped_forms(params["login_password"]) if v)
    return sorted(values, key=len, reverse=True)


def summary(mode, result, check_mode):
    """One line for one mode's result."""
    if result.get("failed"):
        return "%s: FAILED: %s" % (mode, result.get("msg", "").strip())
    count = result["count"]
    ids = [j["id"] for j in result.get("jobs", [])]
    listed = ids[:IDS_IN_LINE]
    more = count - len(listed)
    line = "%s: %d job%s %s (threshold %ss, worker timeout %ss from %s)" % (
        mode, count, "" if count == 1 else "s", "would be failed (check)" if check_mode else "failed",
        result["threshold_s"], result["worker_timeout_s"], result["worker_timeout_source"])
    left = {k: v for k, v in sorted(result.get("left_alone", {}).items()) if v}
    if left:
        line += ", left alone: %s" % ", ".join("%s %d" % kv for kv in left.items())
    if listed:
        line += ": %s%s" % (", ".join(listed), " and %d more" % more if more > 0 else "")
    return line


def log(priority, message, stream=None):
    """stdout or stderr, and syslog (no syslog is one sink less, never a crash)."""
    print("%s: %s" % (TAG, message), file=stream or sys.stdout, flush=True)
    try:
        syslog.openlog(TAG, syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(priority, message)
    except Exception:  # noqa: BLE001
        pass


def take_lock(path):
    """The run's lock (flock on ``path``), or None when another run holds it. The holder's pid is written in it."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        return None, holder
    handle.seek(0)
    handle.truncate()
    handle.write("%d\n" % os.getpid())
    handle.flush()
    return handle, None


def run_modes(config, check_mode, run, progress=None):
    """Every mode in order, whatever happened to the ones before; the exit code. ``progress["at"]`` is the position
    of the mode being run, for the backstop's message."""
    code = EXIT_OK
    progress = {} if progress is None else progress
    for position, mode in enumerate(config["modes"]):
        progress["at"] = position
        if run.left() <= 0:
            rest = config["modes"][position:]
            log(syslog.LOG_ERR, "out of time (timeout %ss): %s not run" % (config["timeout"], ", ".join(rest)),
                sys.stderr)
            return EXIT_TIMEOUT
        params, module = {}, None
        try:
            params = mode_params(config, mode)
            module = Params(params, check_mode)  # load_env adds the .env secrets to its no_log_values
            result, module = run_mode(params, check_mode, run, module)
        except OSError as exc:  # the password file
            result = {"failed": True, "msg": "cannot read %s: %s" % (exc.filename, exc.strerror)}
        except Exception as exc:  # noqa: BLE001  a bug in one mode must not stop the others
            result = {"failed": True, "msg": "unexpected %s: %s" % (type(exc).__name__, exc)}
        secrets = secrets_of(params, module) if module else []
        for warning in module.warnings if module else ():
            log(syslog.LOG_WARNING, "%s: warning: %s" % (mode, _envfile.mask(warning, secrets)), sys.stderr)
        line = _envfile.mask(summary(mode, result, check_mode), secrets)
        if result.get("failed"):
            log(syslog.LOG_ERR, line, sys.stderr)
            if run.left() <= 0:
                code = EXIT_TIMEOUT
            elif code == EXIT_OK:
                code = EXIT_FAILED
        else:
            log(syslog.LOG_NOTICE if result["count"] else syslog.LOG_INFO, line)
    return code


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the JSON configuration the role writes")
    parser.add_argument("--check", action="store_true", help="read-only: say which jobs would be failed")
    args = parser.parse_args(argv)
    try:
        config = read_config(args.config)
    except (OSError, ValueError) as exc:
        log(syslog.LOG_ERR, "cannot use the configuration %s: %s" % (args.config, exc), sys.stderr)
        return EXIT_FAILED
    if not _postgres.HAS_PSYCOPG2:
        log(syslog.LOG_ERR, "psycopg2 is missing from %s; install python3-psycopg2" % sys.executable, sys.stderr)
        return EXIT_NO_PSYCOPG2
    run = Run(config["timeout"])

    def on_alarm(_signum, _frame):
        raise Timeout("out of time: the run took longer than its timeout of %ss" % config["timeout"])

    lock = None
    progress = {}
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, run.timeout + GRACE_S)
    try:
        try:
            lock, holder = take_lock(config["lock_file"])
        except OSError as exc:
            log(syslog.LOG_ERR, "cannot open the lock file %s: %s" % (config["lock_file"], exc.strerror), sys.stderr)
            return EXIT_FAILED
        if lock is None:
            log(syslog.LOG_ERR, "another run (pid %s) holds the lock %s; nothing was done"
                % (holder or "unknown", config["lock_file"]), sys.stderr)
            return EXIT_LOCKED
        return run_modes(config, args.check, run, progress)
    except Timeout as exc:  # the backstop: a call that the client-side deadline did not end
        at = progress.get("at", 0)
        rest = config["modes"][at + 1:]
        log(syslog.LOG_ERR, "%s: %s interrupted%s" % (exc, config["modes"][at],
                                                      "; %s not run" % ", ".join(rest) if rest else ""), sys.stderr)
        return EXIT_TIMEOUT
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if lock is not None:
            lock.close()


if __name__ == "__main__":
    sys.exit(main())
