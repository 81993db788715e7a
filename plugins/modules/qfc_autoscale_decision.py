#!/usr/bin/python
# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: qfc_autoscale_decision
short_description: Decide the QFieldCloud worker count from the queue, its recorded history and the last change
version_added: 0.1.0
description:
  - Read-only. Reads the job queue the way M(qfieldcloud.ops.qfc_queue_facts) does (the same query, the same
    deadlines, running workers through the Docker Engine's socket), the recent part of the monitoring collector's
    metrics log (O(metrics_log)) and the last change from the operations log (O(operations_log)), and returns one
    decision in C(qfc_autoscale) - V(up) or V(down) to a C(target) count, V(hold), or V(investigate) - with its
    reason in words. It never changes anything; the C(qfieldcloud.ops.autoscale) role applies V(up) and V(down)
    with the scale role.
  - "The rules, in order. A critical alert (C(failure_rate_high)) holds everything: V(investigate). A count outside
    [O(min_replicas), O(max_replicas)] (the upper bound also capped by the core guard, CPU cores x
    O(max_replicas_per_core), and the hard ceiling of 100) moves into the bounds. Within O(cooldown) seconds of the
    last change (a C(scale), C(autoscale) or C(rollback) record that changed or rolled back) nothing changes."
  - "V(up) when jobs that free workers could start now (the useful backlog) have waited for at least O(up_after)
    seconds: every collector sample over that time had a useful backlog and the samples reach back that far; without
    recent samples, the oldest such job has waited that long. The target is busy + waiting workers, raised by at most
    O(max_step_up) (default: double), within the bounds. Stuck jobs (C(stuck_stale), C(stuck_orphaned_queued)) and
    idle workers with jobs waiting (C(workers_idle_with_jobs_waiting)) explain a wait better than a lack of workers:
    V(investigate) instead."
  - "V(down) when the samples show the workers idle for at least O(down_after) seconds (fewer busy than configured,
    no useful backlog in any sample or now), by at most O(max_step_down), never below the busiest sample of that
    time nor O(min_replicas). Without recent samples the count never goes down."
  - "Samples: the metrics log's rows (the host's local time) are read in the host's current zone. A failed collector
    run (C(status=error)) or a missing one (two samples further apart than 1.5 collector intervals) breaks a
    window. Only the end of a large log is read."
  - A database that cannot be reached, a schema that is not QFieldCloud's or an unreadable operations log fails the
    task with a message that says no change was made.
extends_documentation_fragment:
  - qfieldcloud.ops._postgres
  - qfieldcloud.ops._queue
  - qfieldcloud.ops._attributes
  - qfieldcloud.ops._attributes.action_group
attributes:
  action_group:
    membership: [qfieldcloud.ops.qfc, qfieldcloud.ops.qfc_db, qfieldcloud.ops.qfc_project]
  check_mode:
    support: full
    details: [Read-only; decides the same in check mode.]
  diff_mode:
    support: none
  idempotent:
    support: full
    details: [Never changes anything (C(changed) is always false).]
options:
  metrics_log:
    description:
      - The monitoring collector's CSV log on the host (the history). A missing file means no history; an unreadable
        one warns and is treated the same way.
    type: path
    default: /var/log/qfieldcloud/queue_metrics.log
  operations_log:
    description:
      - The operations log (JSON Lines) whose last change starts the cooldown. A missing file means no change yet.
        V("") reads none (no cooldown).
      - When it holds no change (just rotated), its last rotation (the same path with C(.1)) is read too.
      - Only the last 16 MiB of each file are read, backwards from the end (tens of thousands of records, far more
        than a cooldown of at most a week holds); a change older than that counts as no recent change. Lines that
        are not records are skipped with a warning.
    type: path
    default: /var/log/qfieldcloud/operations.jsonl
  min_replicas:
    description: The fewest workers (0 to 100).
    type: int
    default: 1
  max_replicas:
    description: The most workers (1 to 100, not below O(min_replicas)); the core guard may lower it.
    type: int
    default: 100
  up_after:
    description: Seconds jobs must have waited for a free worker before a scale-up. V(0) acts on the queue as it is now.
    type: int
    default: 600
  down_after:
    description: Seconds of recorded idle samples before a scale-down.
    type: int
    default: 1800
  cooldown:
    description: Seconds after the last change during which nothing changes.
    type: int
    default: 900
  max_step_up:
    description: Workers added at most by one decision. Unset (null) doubles the current count (at least +1).
    type: int
  max_step_down:
    description: Workers removed at most by one decision.
    type: int
    default: 1
seealso:
  - module: qfieldcloud.ops.qfc_queue_facts
  - module: qfieldcloud.ops.qfc_scale
author:
  - qfieldcloud.ops contributors (@qfieldcloud-ops)
"""

EXAMPLES = r"""
- name: Decide from the database named in .env, the collector's log and the operations log
  qfieldcloud.ops.qfc_autoscale_decision:
    project_src: /opt/qfieldcloud
    min_replicas: 2
    max_replicas: 8
  register: decision

- name: Apply it with the scale role
  ansible.builtin.include_role:
    name: qfieldcloud.ops.scale
  vars:
    qfc_worker_replicas: "{{ decision.qfc_autoscale.target }}"
    qfc_scale_operation: autoscale
    qfc_scale_reason: "{{ decision.qfc_autoscale.reason }}"
  when: decision.qfc_autoscale.action in ['up', 'down']
"""

RETURN = r"""
qfc_autoscale:
  description: The decision.
  returned: success
  type: dict
  contains:
    action:
      description: V(up) or V(down) (change to RV(qfc_autoscale.target)), V(hold) or V(investigate) (no change).
      type: str
      sample: up
    current:
      description: The worker count now (configured in C(.env), else running).
      type: int
      sample: 2
    target:
      description: The count to scale to (RV(qfc_autoscale.current) for hold and investigate).
      type: int
      sample: 4
    reason:
      description: Why, naming the figures.
      type: str
      sample: "18 job(s) could start now and have waited 900s (up_after 600s, from the history): 2 busy + 18 waiting
        = 20 wanted, 2 -> 4 (limited by step 2)"
    alert:
      description: The alert code behind an V(investigate), else null.
      type: str
      sample: null
    signals:
      description: >-
        The figures used: current, configured, running, busy, useful_backlog; history (samples, interval_s,
        max_gap_s, recent); backlog_window and idle_window (required_s, sustained_s, source, samples, ended_by, met;
        peak_busy); cooldown (cooldown_s, since_last_change_s, remaining_s); limits (floor, ceiling, core_limit,
        steps); alerts (codes).
      type: dict
    last_change:
      description: The operations log record that starts the cooldown, or null.
      type: dict
      sample: {time: "2026-12-02T23:59:01Z", action: autoscale, before: 2, after: 4, result: changed}
    history_samples:
      description: Rows of the metrics log read (its recent part).
      type: int
      sample: 12
"""

import os
import stat
from datetime import datetime, timedelta

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _compose, _engine, _metrics_log, _oplog, _policy
from ansible_collections.qfieldcloud.ops.plugins.module_utils import _postgres, _queue

UNCHANGED = " The decision is read-only: no change was made."
FACTS_WINDOW_S = 3600  # the decision uses the last hour's counts; a short window keeps the query cheap
TAIL_CHUNK = _oplog.TAIL_CHUNK
TAIL_MAX_BYTES = 16 * 1024 * 1024  # months of 5-minute rows; a larger file is read from its end only this far
HISTORY_MARGIN_S = 3600  # read back this much beyond the longer window: the run may start before it


def last_recorded_change(path, warn):
    """The newest change in the end of the operations log or of its last rotation (``_oplog.last_recorded_change``).
    OSError when a file exists but cannot be read."""
    return _oplog.last_recorded_change(path, warn)


def regular_file(path):
    """True for a regular file, False when missing; OSError for anything else (a FIFO would block the read)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(mode):
        raise OSError("%s is not a regular file" % path)
    return True


def _stamp(line):
    """The row's time, None for a line that is not a row."""
    try:
        return _metrics_log.parse_line(line.decode("utf-8", "replace"))["ts"]
    except ValueError:
        return None


def read_tail(path, oldest, chunk=TAIL_CHUNK, max_bytes=TAIL_MAX_BYTES):
    """The end of the metrics log at ``path``: whole lines from the first row stamped before ``oldest`` (a naive
    local datetime) to the end, read backwards in ``chunk`` bytes (``_oplog.lines_from_end``), at most ``max_bytes``.
    Returns the text; a missing file is ``""``."""
    if not regular_file(path):
        return ""
    kept = []
    with open(path, "rb") as handle:
        for line in _oplog.lines_from_end(handle, max_bytes, chunk):
            kept.append(line)
            stamp = _stamp(line)
            if stamp is not None and stamp < oldest:
                break
    return b"\n".join(reversed(kept)).decode("utf-8", "replace")


def check_bounds(params):
    """The bounds options as _policy.autoscale takes them, checked (ValueError)."""
    return _policy.check_bounds({
        "min_replicas": params["min_replicas"], "max_replicas": params["max_replicas"],
        "up_after_s": params["up_after"], "down_after_s": params["down_after"], "cooldown_s": params["cooldown"],
        "max_step_up": params["max_step_up"], "max_step_down": params["max_step_down"]})


def read_history(module, now, bounds):
    """The metrics log's rows of the longer window (and a margin), from its end; unreadable: no history, a warning."""
    path = module.params["metrics_log"]
    oldest = now.replace(tzinfo=None) - timedelta(
        seconds=max(bounds["up_after_s"], bounds["down_after_s"]) + HISTORY_MARGIN_S)
    try:
        parsed = _metrics_log.parse(read_tail(path, oldest))
    except OSError as exc:
        module.warn("Cannot read the metrics log %s (%s): deciding without history, so no scale-down" % (path, exc))
        return []
    if parsed["garbled"]:
        module.warn("%d garbled line(s) in the metrics log %s were skipped (first: %s)"
                    % (parsed["garbled"], path, parsed["first_garbled"]))
    return [row for row in parsed["rows"] if row["ts"] >= oldest]


def main():
    spec = _postgres.argument_spec()
    spec.update(_queue.argument_spec())
    spec.update(
        metrics_log=dict(type="path", default="/var/log/qfieldcloud/queue_metrics.log"),
        operations_log=dict(type="path", default=_oplog.DEFAULT_PATH),
        min_replicas=dict(type="int", default=_policy.AUTOSCALE_DEFAULTS["min_replicas"]),
        max_replicas=dict(type="int", default=_policy.AUTOSCALE_DEFAULTS["max_replicas"]),
        up_after=dict(type="int", default=_policy.AUTOSCALE_DEFAULTS["up_after_s"]),
        down_after=dict(type="int", default=_policy.AUTOSCALE_DEFAULTS["down_after_s"]),
        cooldown=dict(type="int", default=_policy.AUTOSCALE_DEFAULTS["cooldown_s"]),
        max_step_up=dict(type="int"),
        max_step_down=dict(type="int", default=_policy.AUTOSCALE_DEFAULTS["max_step_down"]),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    _postgres.ensure_required_libs(module)
    p = module.params
    bounds, thresholds, statement_timeout = _queue.check_options(module, UNCHANGED, first=check_bounds)

    # The logs first: they are local and cheap, and an unreadable operations log is a reason not to decide at all.
    last_change = None
    if p["operations_log"]:
        try:
            last_change = last_recorded_change(p["operations_log"], module.warn)
        except (OSError, UnicodeError) as exc:
            module.fail_json(msg="Cannot read the operations log %s: %s. Without the last change the cooldown cannot "
                             "be honoured.%s" % (p["operations_log"], exc, UNCHANGED))
    now = datetime.now().astimezone()  # the host's clock and zone: the metrics log is stamped in local time
    history = read_history(module, now, bounds)

    facts, env = _queue.read(module, FACTS_WINDOW_S, thresholds["pending_after_s"], statement_timeout, UNCHANGED)
    workers = _engine.worker_counts(env, p["project_src"], p["env_var"], p["service"], module.warn,
                                    bool(p["project_src"]) and bool(_compose.compose_files(p["project_src"], env)))
    workers["busy"] = _queue.busy_workers(facts)
    alerts = _policy.alerts(facts, workers, thresholds)
    try:
        decision = _policy.autoscale(now, facts, workers, alerts, history, last_change, bounds, os.cpu_count() or 1,
                                     p["max_replicas_per_core"])
    except ValueError as exc:
        module.fail_json(msg="Cannot decide: %s%s" % (exc, UNCHANGED), workers=workers)
    decision.update(last_change=last_change, history_samples=len(history))
    module.exit_json(changed=False, qfc_autoscale=decision)


if __name__ == "__main__":
    main()
