"""Issue 21, defect 10: qfc_scale's compare-and-set (expect_current) refused a change - the scale role's outcome
(plugins/filter/scale.py, qfc_scale_outcome and the rollout table) and the autoscale role's hold
(plugins/filter/autoscale.py, qfc_autoscale_applied and the batch summary)."""

from __future__ import annotations

from ansible_collections.qfieldcloud.ops.plugins.filter.autoscale import (
    FilterModule, qfc_autoscale_applied, qfc_autoscale_table)
from ansible_collections.qfieldcloud.ops.plugins.filter.scale import qfc_rollout_table, qfc_scale_outcome

MSG = ("Refused - expect_current=3, but /srv/qfc/.env holds QFIELDCLOUD_WORKER_REPLICAS=1 under the project lock: "
       "the configured count changed from 3 to 1 since the caller read it. Nothing was changed (no backup, no .env "
       "write, no docker compose call); decide again from 1.")
REFUSED = {"changed": False, "refused": True, "expect_current": 3, "replicas": 2, "previous_replicas": 1,
           "previous_running": None, "running": None, "rollback_replicas": 1, "msg": MSG}
# the gate read the queue before the other run that held the lock changed the count: its 3 is older than .env's 1
GATE = {"ansible_facts": {"qfc_queue": {"workers": {"running": 3}, "alerts": []}}}
DECISION = {"changed": False, "qfc_autoscale": {"action": "down", "current": 3, "target": 2, "reason": "idle for 900s",
                                                "alert": None, "signals": {"configured": 3, "running": 3}}}


def test_a_refusal_is_its_own_result_not_a_failure_and_not_a_change():
    for check_mode in (False, True):
        outcome = qfc_scale_outcome(REFUSED, gate=GATE, check_mode=check_mode, host="qfc1")
        assert outcome["result"] == "refused" and outcome["message"] == MSG
        assert (outcome["before"], outcome["after"], outcome["replicas"]) == (1, 1, 2)
        assert outcome["report"] is None  # no "1 -> 2" line for a change that was not made
        assert outcome["refused"] == {"expected": 3, "configured": 1}
    lines = qfc_rollout_table(["qfc1"], {"qfc1": qfc_scale_outcome(REFUSED, gate=GATE, host="qfc1")})
    assert lines[1].split()[-1] == "refused" and lines[-1] == "1 of 1 hosts reached, 0 failed."


def test_other_outcomes_carry_no_refusal():
    changed = {"changed": True, "refused": False, "replicas": 2, "previous_replicas": 1, "previous_running": 1,
               "running": 2}
    outcome = qfc_scale_outcome(changed, gate=GATE)
    assert outcome["result"] == "changed" and "refused" not in outcome and outcome["message"] == ""


def test_a_refused_change_becomes_a_hold_with_both_counts():
    rollout = {"changed": False, "outcome": qfc_scale_outcome(REFUSED, gate=GATE, host="qfc1")}
    applied = qfc_autoscale_applied(DECISION, rollout)
    held = applied["qfc_autoscale"]
    assert (held["action"], held["current"], held["target"]) == ("hold", 1, 1)
    assert held["reason"] == ("the configured count changed from 3 to 1 since the decision; nothing was changed; "
                              "the next run decides again")
    assert held["decided"] == {"action": "down", "current": 3, "target": 2, "reason": "idle for 900s"}
    assert held["signals"] == DECISION["qfc_autoscale"]["signals"]
    assert DECISION["qfc_autoscale"]["action"] == "down"  # not changed in place
    assert qfc_autoscale_applied(DECISION, rollout["outcome"]) == applied  # the outcome itself works too
    line = qfc_autoscale_table(["qfc1"], {"qfc1": {"qfc_autoscale_result": applied}})[1]
    assert line.split()[:5] == ["qfc1", "hold", "1", "->", "1"] and line.endswith("the next run decides again")


def test_anything_but_a_refusal_leaves_the_decision_alone():
    for rollout in (None, {}, {"outcome": {"result": "changed"}}, {"outcome": {"result": "failed"}}, "x"):
        assert qfc_autoscale_applied(DECISION, rollout) is DECISION
    failed = {"failed": True, "msg": "Cannot connect"}
    assert qfc_autoscale_applied(failed, {"outcome": {"result": "refused"}}) is failed
    refused_unset = {"result": "refused", "refused": {"expected": 3, "configured": None}}
    unset = qfc_autoscale_applied(DECISION, {"outcome": refused_unset})
    assert "changed from 3 to unset" in unset["qfc_autoscale"]["reason"]


def test_the_filter_is_registered():
    assert FilterModule().filters()["qfc_autoscale_applied"] is qfc_autoscale_applied
