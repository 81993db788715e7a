# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the scale role: its input rules, each host's outcome and the rollout summary table, in Python with
unit tests (tests/unit/plugins/filter/test_scale.py) instead of Jinja. Documented in the YAML files beside this one."""

from __future__ import annotations

import json
import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.collections import is_sequence

from ansible_collections.qfieldcloud.ops.plugins.module_utils._replicas import ENV_VAR_RE, SERVICE_RE

# [variable, lowest, highest, whole number]: the ranges of qfc_scale's and qfc_queue_facts' own checks, refused by
# the role before the health gate (which runs before qfc_scale) reads anything. The argument spec checks the types
# only: NaN, infinities and numbers out of range pass it.
NUMBER_RULES = (
    ("qfc_wait_timeout", 1, 86400, True),
    ("qfc_settle_time", 0, 3600, False),
    ("qfc_max_replicas_per_core", 0.01, 100, False),
    ("qfc_lock_timeout", 0, 86400, True),
    ("qfc_command_timeout", 10, 86400, True),
    ("qfc_backup_keep", 1, 1000, True),
    ("qfc_auto_max_replicas", 1, 100, True),
    ("qfc_health_gate_delay", 0, 3600, True),
    ("qfc_health_gate_timeout", 1, 3600, True),
    ("qfc_poll", 1, 3600, True),
    # optional: unset (or 0, as the job_cleanup role reads the same variables) reads them from .env / the release
    ("qfc_worker_timeout_s", 0, 3153600000, True),
    ("qfc_db_port", 0, 65535, True),
    ("qfc_expect_current", 0, 100, True),  # unset: no compare-and-set
)
# \Z, not $: $ also matches before a final newline (the values are stripped first: spaces around a number are fine)
NUMBER_RE = re.compile(r"^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?\Z")
# (variable, pattern, what it must be) for the names that reach .env and the Compose command line
NAME_RULES = (
    ("qfc_env_var", ENV_VAR_RE, ".env variable name"),
    ("qfc_worker_service", SERVICE_RE, "Compose service name"),
)
# qfc_scale's options as the role's variables, for its input errors ("replicas must be ..." names qfc_worker_replicas)
OPTION_VARS = {
    "replicas": "qfc_worker_replicas", "auto_max": "qfc_auto_max_replicas", "env_file": "qfc_env_file",
    "env_var": "qfc_env_var", "service": "qfc_worker_service", "docker_cli": "qfc_docker_cli",
    "wait_timeout": "qfc_wait_timeout", "settle_time": "qfc_settle_time",
    "max_replicas_per_core": "qfc_max_replicas_per_core", "lock_timeout": "qfc_lock_timeout",
    "command_timeout": "qfc_command_timeout", "backup_keep": "qfc_backup_keep",
    "expect_current": "qfc_expect_current",
}
OPTION_RE = re.compile(r"^(%s)\b(?=[ =])" % "|".join(sorted(OPTION_VARS, key=len, reverse=True)))
# the play keywords' values: a batch is a number of hosts from 1 or a percentage from 1% to 100%
# \Z: a list item "50%\n" reaches Ansible as it is, and Ansible then fails with a ValueError of int()
SERIAL_BATCH_RE = re.compile(r"^([1-9][0-9]{0,5}|([1-9][0-9]?|100)%)\Z")
FAIL_PERCENTAGE_RE = re.compile(r"^([0-9]{1,2}([.][0-9]+)?|100([.]0+)?)\Z")
GATE_TASK = "Health gate"  # the health gate's tasks are named so
SCALE_TASK = "Scale QFieldCloud workers"
FAILED_RESULTS = ("failed", "unreachable")
ROW = "%-*s  %-11s  %6s  %6s  %s"


def _number_problem(name, value, low, high, whole):
    text = str(value).strip()
    ok = not isinstance(value, bool) and NUMBER_RE.match(text) is not None  # NaN and the infinities fail here
    if ok:
        number = float(text)
        ok = low <= number <= high and (not whole or number == round(number))
    if ok:
        return None
    return "%s must be %s from %s to %s, got %s" % (name, "a whole number" if whole else "a finite number", low, high,
                                                    text)


def qfc_input_problems(values):
    """What is wrong with the role's numbers and names, one sentence each; [] when nothing is.

    ``values`` maps the role's variable names to their values; a missing or None value is unset and not checked."""
    if not isinstance(values, dict):
        raise AnsibleFilterError("qfc_input_problems expects a dict of the role's variables, got %s"
                                 % type(values).__name__)
    problems = []
    for name, low, high, whole in NUMBER_RULES:
        if values.get(name) is not None:
            problem = _number_problem(name, values[name], low, high, whole)
            if problem:
                problems.append(problem)
    wait, settle = values.get("qfc_wait_timeout"), values.get("qfc_settle_time")
    if not problems and wait is not None and settle is not None and float(settle) >= float(wait):
        problems.append("qfc_wait_timeout (%s s) must be longer than qfc_settle_time (%s s), or no worker can ever "
                        "count as settled" % (wait, settle))
    for name, pattern, what in NAME_RULES:
        if name not in values:
            continue
        value = values[name]
        if not isinstance(value, str) or not pattern.match(value) or "\n" in value:
            problems.append("%s must be a %s (%s: no newline, no =, no space), got %s"
                            % (name, what, pattern.pattern.strip("^$"), json.dumps(str(value))))
    return problems


def qfc_serial_batches(value):
    """The play's ``serial`` from qfc_serial: a list, one batch size, or a comma list (an AWX survey's text) such as
    ``1,25%,100%``. Refuses, before any host is touched, what Ansible would misread (NaN, booleans, 0, negative or
    over 100%) or an empty list."""
    if isinstance(value, str):
        batches = [item.strip() for item in value.split(",")]
    elif is_sequence(value):
        batches = list(value)
    else:
        batches = [value]
    if not batches or any(isinstance(b, bool) or not SERIAL_BATCH_RE.match(str(b)) for b in batches):
        raise AnsibleFilterError("qfc_serial must be batch sizes, each a whole number of hosts from 1 or a percentage "
                                 "from 1%% to 100%% (a list, or a comma list such as 1,25%%,100%%), got %s. Nothing "
                                 "was changed." % (value,))
    return batches


def qfc_fail_percentage(value):
    """The play's ``max_fail_percentage`` from qfc_max_fail_percentage, a number from 0 to 100; refused otherwise
    (Ansible itself would crash on NaN, or with a negative value silently run no task at all)."""
    if isinstance(value, bool) or not FAIL_PERCENTAGE_RE.match(str(value).strip()):
        raise AnsibleFilterError("qfc_max_fail_percentage must be a number from 0 to 100, got %s. Nothing was "
                                 "changed." % (value,))
    return value


def _get(result, *path):
    """result[path[0]][path[1]]..., None where anything on the way is missing."""
    for key in path:
        if not isinstance(result, dict):
            return None
        result = result.get(key)
    return result


def _first(*values):
    return next((v for v in values if v is not None), None)


def _blocking(result, severities):
    alerts = _get(result, "ansible_facts", "qfc_queue", "alerts") or []
    return [a for a in alerts if isinstance(a, dict) and a.get("severity") in severities]


def qfc_gate_failed(result, severities):
    """True when a health gate's read of the queue failed or shows an alert of a blocking severity."""
    return bool(_get(result, "failed")) or bool(_blocking(result, severities or ()))


def _failure_message(failure, stage, severities, gate_timeout):
    task, result = failure.get("task") or "", failure.get("result") or {}
    if GATE_TASK in task:
        if result.get("timedout"):  # a task timeout's own message names neither the gate nor what to check
            return ("the health gate could not read the queue within qfc_health_gate_timeout=%ss: the database (or "
                    "the Docker Engine) does not answer" % gate_timeout)
        blocking = _blocking(result, severities)
        if blocking:
            alerts = ["%s: %s" % (a.get("severity"), a.get("message")) for a in blocking]
            return "health gate %s: %s" % (stage, "; ".join(alerts))
    problems = (result.get("ansible_facts") or {}).get("qfc_scale_input_problems")
    if problems:  # the role's input check (a set_fact that fails): its problems are the message
        return "%s. Nothing was changed." % "; ".join(str(p) for p in problems)
    msg = result.get("msg") or "failed (no message)"
    if SCALE_TASK in task:  # the module's input errors name its options: say the role's variable instead
        msg = OPTION_RE.sub(lambda m: OPTION_VARS[m.group(1)], str(msg), count=1)
    return msg


def _report(scale, service, env_var, check_mode):
    """The before/after line of a qfc_scale run that succeeded; None when it did not run or failed."""
    if not scale or "replicas" not in scale or scale.get("failed") or scale.get("skipped") or scale.get("refused"):
        return None

    def show(value, missing):
        return missing if value is None else value

    return "%s: running %s -> %s (%s %s -> %s)%s" % (
        service, show(scale.get("previous_running"), "n/a"), show(scale.get("running"), "n/a"), env_var,
        show(scale.get("previous_replicas"), "unset"), scale["replicas"],
        " [check mode: predicted]" if check_mode else "")


def qfc_scale_outcome(scale, gate=None, rollback=None, failure=None, check_mode=False,
                      severities=("critical",), gate_timeout=None, host=None, worker_node=False,
                      service="worker_wrapper", env_var="QFIELDCLOUD_WORKER_REPLICAS"):
    """One host's outcome for the rollout summary and the set_stats artifact.

    ``scale``: qfc_scale's registered result; ``gate``: the health gate's read before the change; ``rollback``: the
    rescue's rollback result; ``failure``: {"task": name, "result": result} of the task that failed (the gate's read
    after the change included), None or {} when none did. A result may be empty or a skipped task's. Returns a dict
    with host, layout, before, after (running counts; the .env value where no count was read), replicas, result,
    message and report; for ``refused`` (qfc_scale's expect_current did not hold) also refused: {expected,
    configured}."""
    scale, gate, rollback = scale or {}, gate or {}, rollback or {}
    reach = next((r for r in (gate, scale) if _get(r, "unreachable")), None)
    changed = bool(scale.get("changed"))
    failed = bool(failure)
    stage = "after the change" if changed else "before the change"
    gate_failed = failed and GATE_TASK in (failure.get("task") or "")
    # a rollback that could not reach the host failed as much as one that ran and failed: the new count is in place
    rollback_failed = bool(rollback.get("failed") or rollback.get("unreachable"))
    gate_rolled_back = "running" in rollback and not rollback_failed
    # running before: from qfc_scale, else from the gate's read of the queue, else the .env value
    before = _first(scale.get("previous_running"), _get(gate, "ansible_facts", "qfc_queue", "workers", "running"),
                    scale.get("previous_replicas"))
    if reach:
        result = "unreachable"
    elif failed:
        result = "failed%s%s%s" % (" at the health gate " + stage if gate_failed else "",
                                   ", rolled back" if gate_rolled_back or scale.get("rolled_back") else "",
                                   ", ROLLBACK FAILED" if rollback_failed else "")
    elif scale.get("refused"):  # qfc_scale's compare-and-set (expect_current): nothing changed, not a failure
        result = "refused"
    elif changed:
        result = "would change" if check_mode else "changed"
    else:
        result = "unchanged"
    if gate_rolled_back:
        after = rollback.get("running")
    elif scale.get("running") is not None:
        after = scale["running"]
    else:
        after = before if failed and not changed else None
    if result == "refused":  # the count found under the lock is newer than the gate's read, which came before it
        before = after = _first(scale.get("previous_replicas"), before)
    if reach:
        message = reach.get("msg") or ""
    elif failed:
        message = _failure_message(failure, stage, severities or (), gate_timeout)
    else:
        message = str(scale.get("msg") or "") if result == "refused" else ""
    outcome = {
        "host": host,
        "layout": "worker node" if worker_node else "server",
        "before": before,
        "after": after,
        "replicas": scale.get("replicas"),
        "result": result,
        "message": message,
        "report": _report(scale, service, env_var, check_mode),
    }
    if result == "refused":  # the count the caller expected and the one .env held under the lock
        outcome["refused"] = {"expected": scale.get("expect_current"), "configured": scale.get("previous_replicas")}
    return outcome


def qfc_scale_outcomes(hostvars, hosts, var="qfc_scale_outcome"):
    """{host: outcome} for the hosts of ``hosts`` that have one in ``hostvars`` (the role registers the result of
    qfc_scale_rollout, whose ``outcome`` it is); hosts without one (not reached yet, failed before the role
    recorded it, or an earlier run's leftover reset to {}) are left out."""
    if not is_sequence(hosts):
        raise AnsibleFilterError("qfc_scale_outcomes expects a list of hosts, got %s" % type(hosts).__name__)
    out = {}
    for host in hosts:
        try:
            value = hostvars[host].get(var)
        except (KeyError, AttributeError):
            continue
        if isinstance(value, dict) and isinstance(value.get("outcome"), dict):
            value = value["outcome"]
        if isinstance(value, dict) and "result" in value:
            out[host] = value
    return out


def qfc_rollout_table(hosts, outcomes, active_hosts=()):
    """The rollout summary as lines: a header, one row per host of ``hosts`` (the play's hosts, in order), a total.

    ``outcomes``: {host: outcome} (qfc_scale_outcome); a host without one is ``not reached`` while it is in
    ``active_hosts`` (a later batch), else ``failed (no result)``."""
    if not is_sequence(hosts) or not isinstance(outcomes, dict):
        raise AnsibleFilterError("qfc_rollout_table expects a list of hosts and a dict of outcomes by host")
    width = max([4] + [len(str(h)) for h in hosts])
    lines = [ROW % (width, "host", "layout", "before", "after", "result")]
    reached = failed = 0
    for host in hosts:
        outcome = outcomes.get(host)
        if not isinstance(outcome, dict) or "result" not in outcome:
            lines.append(ROW % (width, host, "-", "-", "-",
                                "not reached" if host in active_hosts else "failed (no result)"))
            continue
        reached += 1
        failed += str(outcome["result"]).startswith(FAILED_RESULTS)
        lines.append(ROW % (width, host, outcome.get("layout", "-"), "-" if outcome.get("before") is None
                            else outcome["before"], "-" if outcome.get("after") is None else outcome["after"],
                            outcome["result"]))
    lines.append("%d of %d hosts reached, %d failed.%s" % (
        reached, len(hosts), failed,
        " Batches stop at max_fail_percentage; hosts not reached keep their count." if reached < len(hosts) else ""))
    return lines


class FilterModule:
    """qfieldcloud.ops filters of the scale role."""

    def filters(self):
        return {
            "qfc_input_problems": qfc_input_problems,
            "qfc_serial_batches": qfc_serial_batches,
            "qfc_fail_percentage": qfc_fail_percentage,
            "qfc_gate_failed": qfc_gate_failed,
            "qfc_scale_outcome": qfc_scale_outcome,
            "qfc_scale_outcomes": qfc_scale_outcomes,
            "qfc_rollout_table": qfc_rollout_table,
        }
