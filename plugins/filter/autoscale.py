# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The autoscale role's batch summary in Python (unit tests: tests/unit/plugins/filter/test_autoscale_table.py)
instead of Jinja. Documented in qfc_autoscale_table.yml beside this file."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.collections import is_sequence

HEADER = ("host", "action", "current -> target", "reason")
# the reason of a decision that qfc_scale's compare-and-set refused (the scale role's qfc_expect_current)
HELD = ("the configured count changed from %s to %s since the decision; nothing was changed; the next run decides "
        "again")


def _row(host, result):
    decision = result.get("qfc_autoscale") if isinstance(result, dict) else None
    if not isinstance(decision, dict):
        # the decision task failed (database down, timeout) or the host was not reached: its message says why
        why = result.get("msg") if isinstance(result, dict) else None
        return [host, "none", "-", " ".join(str(why or "no decision (nothing was changed)").split())]
    return [host, str(decision.get("action", "-")), "%s -> %s" % (decision.get("current"), decision.get("target")),
            " ".join(str(decision.get("reason") or "-").split())]


def qfc_autoscale_table(hosts, hostvars, result_var="qfc_autoscale_result"):
    """Aligned lines: a header and one line per host of ``hosts`` (the batch) with its decision, read from
    ``hostvars[host][result_var]`` (the registered result of qfc_autoscale_decision)."""
    if not is_sequence(hosts) or isinstance(hosts, str):
        raise AnsibleFilterError("qfc_autoscale_table expects a list of host names, got %s" % type(hosts).__name__)
    rows = [list(HEADER)] + [_row(str(host), (hostvars.get(host) or {}).get(result_var)) for host in hosts]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    return [("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]).rstrip()
            for row in rows]


def qfc_autoscale_applied(result, rollout):
    """The decision as applied: ``result`` (the registered result of qfc_autoscale_decision) as it is, unless the
    scale role's rollout (``rollout``: its registered qfc_scale_rollout result, or the outcome itself) was
    ``refused``: qfc_scale's compare-and-set found another count in .env under the project lock (a manual scale that
    held the lock changed it after the decision). Then the decision becomes a hold at the count found, with the reason
    naming both counts, and the decision made is kept under ``decided``."""
    if not isinstance(result, dict) or not isinstance(result.get("qfc_autoscale"), dict):
        return result
    outcome = rollout.get("outcome", rollout) if isinstance(rollout, dict) else None
    if not isinstance(outcome, dict) or outcome.get("result") != "refused":
        return result
    decision = result["qfc_autoscale"]
    refused = outcome.get("refused") if isinstance(outcome.get("refused"), dict) else {}
    expected = _first(refused.get("expected"), decision.get("current"))
    configured = refused.get("configured")
    held = dict(decision, action="hold", current=configured, target=configured,
                reason=HELD % (expected, "unset" if configured is None else configured),
                decided={key: decision.get(key) for key in ("action", "current", "target", "reason")})
    return dict(result, qfc_autoscale=held)


def _first(*values):
    return next((v for v in values if v is not None), None)


class FilterModule:
    """qfieldcloud.ops filters of the autoscale role."""

    def filters(self):
        return {"qfc_autoscale_table": qfc_autoscale_table, "qfc_autoscale_applied": qfc_autoscale_applied}
