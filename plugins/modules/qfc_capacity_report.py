#!/usr/bin/python
# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: qfc_capacity_report
short_description: Write a capacity report (Markdown and HTML) from QFieldCloud queue metrics logs
version_added: 0.1.0
description:
  - Reads the queue metrics logs written every 5 minutes by the collector (C(/var/log/qfieldcloud/queue_metrics.log)
    on each QFieldCloud host, fetched to the controller first) and writes C(capacity_report.md) and
    C(capacity_report.html) in O(dest).
  - Figures per host and for the fleet over O(window) - average and peak queue depth, jobs finished and failed,
    success rate, p50 and p95 job duration, worker use (busy over running workers), collector availability (rows that
    could read the queue) - and the capacity decision matrix of the operations guideline applied to the average queue
    depth and the success rate (C(stop), C(consider), C(investigate) or C(monitor)).
  - The HTML page is self-contained (inline CSS and inline SVG charts, no external resource), with charts per host
    over time of the queue depth, the running, busy and configured workers, and the failed share of the last hour's
    jobs.
  - The window ends at the newest row of any log, not at the current time, so the same logs always give the same
    report. Timestamps are the hosts' local time and are compared as written.
  - Success rate and p95 cannot be summed from the rows, whose last-hour counts overlap. Rows an hour apart are
    summed, so each job counts once, and the success rate is finished / (finished + failed) of those sums. The p95
    is that of a job-weighted mixture of log-normal fits through the p50 and p95 of rows one O(duration_window) apart;
    it lies between the smallest and the largest of those p95s, and the largest is returned as C(p95_max_s).
  - Blank and unreadable lines are skipped and counted. Rows whose status is C(error) (the database could not be read)
    count against availability and are left out of the averages.
  - With O(operations), each change recorded in the hosts' operations logs (M(qfieldcloud.ops.qfc_scale),
    M(qfieldcloud.ops.qfc_job_cleanup), the autoscaler) inside the report's period is drawn as a marker on the
    host's charts (a vertical line labelled with the worker counts, for example C(2->4); dashed and in another colour
    when the change was rolled back or failed) and listed in a "Changes in this period" table (time, host, action,
    before -> after, result, actor, reason). Without it the report is exactly as before.
  - The operations log's times are UTC and the metrics log's the host's local time. Each change's time is converted
    to the host's time zone (O(timezones)) before it is compared with the period and placed on the charts.
  - Runs where the logs are, normally on the controller, in a task delegated to C(localhost) with C(run_once).
extends_documentation_fragment:
  - qfieldcloud.ops._attributes
  - qfieldcloud.ops._attributes.action_group
attributes:
  action_group:
    membership: [qfieldcloud.ops.qfc]
  check_mode:
    support: full
    details:
      - Reads the logs and the existing report, computes everything and reports C(changed) when a file would differ;
        writes nothing and creates no directory.
  diff_mode:
    support: full
    details:
      - Shows the Markdown report before and after. The HTML page holds the same figures and is not diffed.
  idempotent:
    support: full
    details:
      - A file is rewritten only when its content differs. The report embeds no clock time, only the data's own
        timestamps, so unchanged logs write nothing.
options:
  logs:
    description:
      - Host name to the path of its queue metrics log on the machine the module runs on (used as given, without
        C(~) expansion).
      - A null or empty path means the host has no log (not fetched, or missing on the host); it is reported as
        having no data. A path that does not exist fails the task.
    type: dict
    required: true
  window:
    description:
      - How far back from the newest row the report looks (C(7d), C(24h), C(90m), or seconds), or C(all) for every
        row.
    type: str
    default: 7d
  dest:
    description:
      - Directory for C(capacity_report.md) and C(capacity_report.html); created when missing (not in check mode).
    type: path
    required: true
  title:
    description: Title of both reports.
    type: str
    default: QFieldCloud capacity report
  duration_window:
    description:
      - The window the log's C(duration_p50_s) and C(duration_p95_s) columns describe, as set in the collector
        (24 h, the default window of M(qfieldcloud.ops.qfc_queue_facts)).
    type: str
    default: 24h
  operations:
    description:
      - Host name to the path of its operations log (JSON Lines, C(/var/log/qfieldcloud/operations.jsonl) on the
        host, fetched to the controller first).
      - A null or empty path, or a file that does not exist, means no change was recorded on that host. Unreadable
        lines are skipped and counted (C(operations.skipped) per host in RV(hosts)).
      - When omitted, the report has no changes table and no markers, byte for byte the report without it.
    type: dict
  timezones:
    description:
      - Host name to the time zone its metrics log is written in, for converting the operations log's UTC times.
      - A path (starting with C(/)) to a TZif file, such as a copy of the host's C(/etc/localtime); an IANA name
        (C(Europe/Zurich), from the controller's zoneinfo database); C(UTC); or a fixed offset (C(+01:00)).
      - A host not named, or named with a null or empty value, is taken as UTC (a host without
        C(/etc/localtime) runs in UTC).
    type: dict
seealso:
  - module: qfieldcloud.ops.qfc_queue_facts
  - module: qfieldcloud.ops.qfc_operations_log_info
author:
  - qfieldcloud.ops contributors (@qfieldcloud-ops)
"""

EXAMPLES = r"""
- name: Fetch the metrics log of every host
  ansible.builtin.fetch:
    src: /var/log/qfieldcloud/queue_metrics.log
    dest: "{{ playbook_dir }}/capacity-report/logs/{{ inventory_hostname }}.log"
    flat: true
    fail_on_missing: false
  register: qfc_fetched

- name: Write the report for the last two weeks
  qfieldcloud.ops.qfc_capacity_report:
    logs: >-
      {{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all | map('extract', hostvars)
              | map(attribute='qfc_fetched.dest', default=''))) }}
    window: 14d
    dest: "{{ playbook_dir }}/capacity-report"
  delegate_to: localhost
  run_once: true
  register: qfc_report

- name: The same, with each host's scaling changes as markers and a table (times converted from UTC)
  qfieldcloud.ops.qfc_capacity_report:
    logs: {qfc1.example.org: /srv/reports/logs/qfc1.example.org.log}
    operations: {qfc1.example.org: /srv/reports/logs/qfc1.example.org.operations.jsonl}
    timezones: {qfc1.example.org: Europe/Zurich}
    dest: /srv/reports
  delegate_to: localhost
  run_once: true

- name: Show the fleet's decision
  ansible.builtin.debug:
    msg: "{{ qfc_report.fleet.decision.action }}: {{ qfc_report.fleet.decision.reason }}"
  run_once: true
"""

RETURN = r"""
files:
  description: Paths of the Markdown and HTML reports (written, or that would be written in check mode).
  returned: always
  type: dict
  sample: {markdown: /srv/reports/capacity_report.md, html: /srv/reports/capacity_report.html}
window_s:
  description: The window in seconds; null for O(window=all).
  returned: always
  type: int
  sample: 604800
until:
  description: End of the window, the newest row of any log (host local time); null without any row.
  returned: always
  type: str
  sample: "2025-12-18 23:55:03"
hosts:
  description:
    - Figures per host, with the keys of RV(fleet), plus C(log) (V(ok), V(empty), V(missing), or V(outside_window)
      when every row is older than the window), C(rows_in_window) and C(garbled_lines).
    - With O(operations), also C(operations) - C(log) (a log was given), C(records), C(skipped) (unreadable lines or
      records without a time), C(outside) (records outside the period) and C(in_period).
  returned: always
  type: dict
  sample:
    qfc1.example.org:
      log: ok
      operations: {log: true, records: 14, skipped: 0, outside: 12, in_period: 2}
      rows_in_window: 2016
      garbled_lines: 0
      samples: 2016
      decision: {action: stop, summary: configuration is sufficient}
fleet:
  description:
    - Figures over every host. Queue depth and backlog are per-server averages (the matrix's thresholds are per
      server); C(workers) sums the hosts' averages, and C(busy_peak) is only given per host.
  returned: always
  type: dict
  sample:
    samples: 4032
    ok_samples: 4026
    error_samples: 6
    availability: 0.9985
    first: "2025-12-12 00:00:03"
    last: "2025-12-18 23:55:03"
    largest_gap_s: 300
    queue_depth: {avg: 4.39, peak: 28, peak_at: "2025-12-15 11:55:03"}
    useful_backlog: {avg: 2.92, peak: 26}
    workers: {configured: 6, running_avg: 5.03, busy_avg: 2.58, busy_peak: null, utilisation: 0.5125}
    jobs: {finished: 23128, failed: 894, success_rate: 0.9628, hours_covered: 336}
    duration: {p50_s: 35.2, p95_s: 110.7, p95_max_s: 116.8, periods: 14}
    stuck: {stale: 0, orphaned_queued: 0, old_pending: 0}
    last_error: {at: "2025-12-16 14:25:03", message: "connection to server at 127.0.0.1; port 5433 failed"}
    decision:
      action: stop
      summary: configuration is sufficient
      basis: average queue depth 4.39 < 5 and success 96.3% > 90%
      reason: "average queue depth 4.39 < 5 and success 96.3% > 90%: configuration is sufficient"
changes:
  description:
    - The operations log's records inside the report's period, oldest first, every host's. C(local_time) is the
      host's local time (as the metrics log), C(time) the record's UTC time; C(actor) is written out (C(AWX job 123
      (alice)), or the user).
  returned: when O(operations) is given
  type: list
  elements: dict
  sample:
    - {local_time: "2025-12-15 10:05:00", time: "2025-12-15T09:05:00Z", host: qfc1.example.org, action: autoscale,
       before: 2, after: 4, result: changed, actor: AWX job 4711 (alice), reason: "queue depth 12 > 10 for 600 s"}
decisions:
  description: The decision's action per host, and for the fleet under the key C(_fleet).
  returned: always
  type: dict
  sample: {qfc1.example.org: stop, qfc2.example.org: consider, _fleet: stop}
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _capacity_model, _capacity_render, _files, _jobs
from ansible_collections.qfieldcloud.ops.plugins.module_utils import _capacity_changes, _metrics_log, _oplog

FILES = {"markdown": "capacity_report.md", "html": "capacity_report.html"}


def read_text(path):
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8", errors="replace")


def current(path):
    try:
        return read_text(path)
    except FileNotFoundError:
        return None


def load_logs(module, logs):
    parsed = {}
    for host, value in logs.items():
        if value is None or value == "":
            parsed[str(host)] = None
            continue
        if not isinstance(value, str):
            module.fail_json(msg="logs.%s must be a path or null, got %r" % (host, value))
        path = value
        if not os.path.isfile(path):
            module.fail_json(msg="Log of %s not found: %s (use null for a host without log)" % (host, path))
        try:
            parsed[str(host)] = _metrics_log.parse(read_text(path))
        except OSError as exc:
            module.fail_json(msg="Cannot read the log of %s: %s" % (host, to_native(exc)))
    return parsed


def _by_host(module, option):
    value = module.params[option]
    if value is None:
        return None
    for host, item in value.items():
        if item is not None and not isinstance(item, str):
            module.fail_json(msg="%s.%s must be a string or null, got %r" % (option, host, item))
    return {str(host): item or None for host, item in value.items()}


def load_operations(module):
    """host -> (records, skipped) from _oplog.read; a missing file is no records."""
    paths = _by_host(module, "operations")
    if paths is None:
        return None
    loaded = {}
    for host, path in paths.items():
        if not path or not os.path.lexists(path):
            loaded[host] = None
            continue
        if os.path.isdir(path):
            module.fail_json(msg="Operations log of %s is a directory: %s" % (host, path))
        try:
            loaded[host] = _oplog.read(path)
        except (OSError, ValueError) as exc:
            module.fail_json(msg="Cannot read the operations log of %s: %s" % (host, to_native(exc)))
    return loaded


def load_timezones(module):
    """host -> tzinfo: a TZif file (absolute path), or a name/offset (_capacity_changes.timezone_of)."""
    specs = _by_host(module, "timezones") or {}
    zones = {}
    for host, spec in specs.items():
        try:
            if spec and spec.startswith("/"):
                with open(spec, "rb") as handle:
                    zones[host] = _capacity_changes.timezone_from_tzif(handle.read(1 << 20), key=None)
            else:
                zones[host] = _capacity_changes.timezone_of(spec)
        except (OSError, ValueError) as exc:
            module.fail_json(msg="Time zone of %s (%s): %s" % (host, spec, to_native(exc)))
    return zones


def main():
    module = AnsibleModule(
        argument_spec=dict(
            logs=dict(type="dict", required=True),
            window=dict(type="str", default="7d"),
            dest=dict(type="path", required=True),
            title=dict(type="str", default="QFieldCloud capacity report"),
            duration_window=dict(type="str", default="24h"),
            operations=dict(type="dict"),
            timezones=dict(type="dict"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        window_s = None if p["window"].strip().lower() == "all" else _jobs.parse_duration(p["window"])
        duration_window_s = _jobs.parse_duration(p["duration_window"])
    except ValueError as exc:
        module.fail_json(msg="Invalid option: %s" % exc)
    dest = os.path.abspath(p["dest"])
    if os.path.exists(dest) and not os.path.isdir(dest):
        module.fail_json(msg="dest %s exists and is not a directory" % dest)

    model = _capacity_model.build(load_logs(module, p["logs"]), window_s, p["title"], duration_window_s,
                                  operations=load_operations(module), timezones=load_timezones(module))
    rendered = {"markdown": _capacity_render.markdown(model), "html": _capacity_render.html_page(model)}
    paths = {kind: os.path.join(dest, name) for kind, name in FILES.items()}
    before = {kind: current(path) for kind, path in paths.items()}
    stale = [kind for kind in FILES if before[kind] != rendered[kind]]

    if stale and not module.check_mode:
        try:
            if not os.path.isdir(dest):
                os.makedirs(dest)
            for kind in stale:
                _files.write_atomically(paths[kind], rendered[kind], module=module)
        except OSError as exc:
            module.fail_json(msg="Cannot write the report in %s: %s" % (dest, to_native(exc)))

    figures = _capacity_model.result(model)
    decisions = {host: f["decision"]["action"] for host, f in figures["hosts"].items()}
    decisions["_fleet"] = figures["fleet"]["decision"]["action"]
    result = dict(changed=bool(stale), files=paths, decisions=decisions, **figures)
    if module._diff:
        result["diff"] = {"before": before["markdown"] or "", "after": rendered["markdown"],
                          "before_header": paths["markdown"] if before["markdown"] is not None else "/dev/null",
                          "after_header": paths["markdown"]}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
