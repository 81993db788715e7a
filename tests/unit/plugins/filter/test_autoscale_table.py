"""The autoscale role's batch summary (plugins/filter/autoscale.py)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.qfieldcloud.ops.plugins.filter.autoscale import FilterModule, qfc_autoscale_table


def decided(action, current, target, reason):
    return {"qfc_autoscale_result": {"qfc_autoscale": {"action": action, "current": current, "target": target,
                                                       "reason": reason, "signals": {}}}}


def test_one_aligned_line_per_host_in_batch_order():
    hostvars = {"qfc2.example.org": decided("up", 2, 4, "5 jobs could\nstart now"),
                "a": decided("hold", 3, 3, "within cooldown (600 s left)")}
    lines = qfc_autoscale_table(["qfc2.example.org", "a"], hostvars)
    assert lines[0].split() == ["host", "action", "current", "->", "target", "reason"]
    assert lines[1].split()[:5] == ["qfc2.example.org", "up", "2", "->", "4"]
    assert lines[1].endswith("5 jobs could start now")  # newlines of a reason never break the table
    assert lines[2].startswith("a" + " " * len("qfc2.example.org") + " hold")
    assert lines[2].endswith("within cooldown (600 s left)")
    assert len({line.index("->") for line in lines[1:]}) == 1  # aligned


def test_a_host_without_a_decision_says_why():
    hostvars = {"down": {"qfc_autoscale_result": {"failed": True, "msg": "Cannot connect ... no change was made"}},
                "unreached": {}}
    lines = qfc_autoscale_table(["down", "unreached"], hostvars)
    assert lines[1].split()[:3] == ["down", "none", "-"] and lines[1].endswith("no change was made")
    assert lines[2].split()[:3] == ["unreached", "none", "-"] and lines[2].endswith("(nothing was changed)")


def test_another_result_variable_and_bad_input():
    hostvars = {"h": {"mine": decided("down", 3, 2, "idle")["qfc_autoscale_result"]}}
    assert qfc_autoscale_table(["h"], hostvars, result_var="mine")[1].split()[:5] == ["h", "down", "3", "->", "2"]
    with pytest.raises(AnsibleFilterError, match="list of host names"):
        qfc_autoscale_table("h", hostvars)


def test_the_filter_is_registered():
    assert FilterModule().filters()["qfc_autoscale_table"] is qfc_autoscale_table
