# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the operations log's playbooks: the readable table of operations_report.yml and the per-host inputs
capacity_report.yml passes to qfc_capacity_report, in Python with unit tests (tests/unit/plugins/filter/
test_operations.py) instead of Jinja. Documented in the YAML files beside this one."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.collections import is_sequence

from ansible_collections.qfieldcloud.ops.plugins.module_utils._capacity_changes import actor_text, span

HEADER = ("time (UTC)", "action", "before -> after", "result", "actor", "reason")
CELL_MAX = 60  # a cleanup's counts or a long actor stay on one screen line; the reason, last, is never cut


def _cut(text, size=CELL_MAX):
    return text if len(text) <= size else text[:size - 3] + "..."


def _cells(record):
    time = str(record.get("time") or "-").replace("T", " ").rstrip("Z")
    return [time, str(record.get("action") or "-"), _cut(span(record.get("before"), record.get("after"))),
            str(record.get("result") or "-").replace("_", " "), _cut(actor_text(record.get("actor"))),
            " ".join(str(record.get("reason") or "-").split())]


def qfc_operations_table(records, skipped=0):
    """Operations log records (oldest first) as aligned lines: a header, one line per record, and a last line that
    counts them (and the skipped lines). No record: one line that says so."""
    if not is_sequence(records) or any(not isinstance(r, dict) for r in records):
        raise AnsibleFilterError("qfc_operations_table expects a list of records (dicts), got %r" % (records,))
    skipped_text = "; %d unreadable line(s) skipped" % skipped if skipped else ""
    if not records:
        return ["No change recorded%s." % skipped_text]
    rows = [list(HEADER)] + [_cells(r) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    lines = ["  ".join([cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]).rstrip()
             for row in rows]
    lines.append("%d record(s), oldest first%s." % (len(records), skipped_text))
    return lines


def _hostvars(hostvars, host):
    try:
        return hostvars[host]
    except KeyError:
        return {}


def qfc_fetched_paths(hosts, hostvars, register):
    """host -> the controller path ``ansible.builtin.fetch`` wrote for it (``register`` names the result), or ""
    when it fetched nothing (missing or unreadable on the host, task skipped, host failed): a copy an earlier run
    left is not used."""
    paths = {}
    for host in hosts:
        fetched = _hostvars(hostvars, host).get(register) or {}
        dest = fetched.get("dest") if isinstance(fetched, dict) and not fetched.get("skipped") else None
        paths[str(host)] = str(dest) if dest else ""
    return paths


def qfc_report_timezones(hosts, hostvars, register):
    """host -> its time zone for the capacity report: ``qfc_timezone`` when set (a name or an offset), else the copy
    of its /etc/localtime that ``register`` fetched, else "" (UTC, as a host without /etc/localtime runs)."""
    fetched = qfc_fetched_paths(hosts, hostvars, register)
    zones = {}
    for host in hosts:
        own = _hostvars(hostvars, host).get("qfc_timezone")
        zones[str(host)] = str(own).strip() if own is not None and str(own).strip() else fetched[str(host)]
    return zones


class FilterModule:
    """qfieldcloud.ops filters of the operations log's playbooks."""

    def filters(self):
        return {
            "qfc_operations_table": qfc_operations_table,
            "qfc_fetched_paths": qfc_fetched_paths,
            "qfc_report_timezones": qfc_report_timezones,
        }
