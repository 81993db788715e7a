"""The scale role's per-host flow (plugins/plugin_utils/_scale_rollout.py): which steps run, in which order, with which
arguments, and the outcome; the steps that reach the host are a recording fake here (the real ones are exercised by
the integration suites: test_playbook_scale, test_fleet, test_faults_scale, test_role_inputs)."""

from __future__ import annotations

import pytest

from ansible_collections.qfieldcloud.ops.plugins.plugin_utils._scale_rollout import (
    DELAY, GATE_AFTER, GATE_BEFORE, INPUTS, ROLLBACK, SCALE, input_values, rollback_args, run_rollout, whole)

SCALE_ARGS = {"project_src": "/srv/qfc", "replicas": 4, "wait_timeout": 120, "settle_time": 0.5,
              "max_replicas_per_core": 2.5, "lock_timeout": 1800, "command_timeout": 1200, "backup_keep": 10,
              "auto_max": 10, "env_var": "QFIELDCLOUD_WORKER_REPLICAS", "service": "worker_wrapper",
              "backup": True, "force": False, "rollback": True, "operation": "scale"}
GATE_ARGS = {"project_src": "/srv/qfc", "login_password": "s3cret"}
ARGS = {"scale": SCALE_ARGS, "gate": GATE_ARGS, "gate_severities": ["critical"], "gate_timeout": 60, "gate_delay": 0,
        "poll": 10, "worker_node": False}
CHANGED = {"changed": True, "replicas": 4, "previous_replicas": 2, "previous_running": 2, "running": 4,
           "rollback_replicas": 2, "diff": {"before": "2", "after": "4"}}
UNCHANGED = {"changed": False, "replicas": 4, "previous_replicas": 4, "previous_running": 4, "running": 4}
ALERT = {"severity": "critical", "message": "5 of 5 jobs failed in the last hour"}
UNREACHABLE = {"unreachable": True, "changed": False, "msg": "Failed to connect to the host via ssh"}


def queue(running=2, alerts=()):
    return {"changed": False, "ansible_facts": {"qfc_queue": {"workers": {"running": running},
                                                              "alerts": list(alerts)}}}


class FakeSteps:
    """Records each call; answers from the lists given (one answer per call, in order)."""

    def __init__(self, reads=(), scales=()):
        self.reads, self.scales, self.calls = list(reads), list(scales), []

    def read_queue(self, gate_args, timeout):
        self.calls.append(("read_queue", gate_args, timeout))
        return self.reads.pop(0)

    def scale(self, scale_args):
        self.calls.append(("scale", scale_args))
        return self.scales.pop(0)

    def sleep(self, seconds):
        self.calls.append(("sleep", seconds))


def names(steps):
    return [c[0] for c in steps.calls]


def test_a_change_reads_the_queue_before_and_after():
    steps = FakeSteps(reads=[queue(2), queue(4)], scales=[CHANGED])
    flow = run_rollout(steps, ARGS, host="qfc1")
    assert flow["steps"] == [INPUTS, GATE_BEFORE, SCALE, GATE_AFTER]
    assert steps.calls == [("read_queue", GATE_ARGS, 60), ("scale", SCALE_ARGS), ("read_queue", GATE_ARGS, 60)]
    assert flow["changed"] is True
    outcome = flow["outcome"]
    assert (outcome["host"], outcome["before"], outcome["after"], outcome["result"]) == ("qfc1", 2, 4, "changed")
    assert outcome["report"] == "worker_wrapper: running 2 -> 4 (QFIELDCLOUD_WORKER_REPLICAS 2 -> 4)"
    assert flow["results"][SCALE] is CHANGED


def test_no_change_reads_the_queue_once():
    steps = FakeSteps(reads=[queue(4)], scales=[UNCHANGED])
    flow = run_rollout(steps, ARGS)
    assert names(steps) == ["read_queue", "scale"] and flow["changed"] is False
    assert flow["outcome"]["result"] == "unchanged"


def test_without_the_gate_only_qfc_scale_runs():
    steps = FakeSteps(scales=[CHANGED])
    flow = run_rollout(steps, dict(ARGS, gate=None))
    assert flow["steps"] == [INPUTS, SCALE] and names(steps) == ["scale"]
    assert flow["outcome"]["result"] == "changed"


def test_the_delay_waits_after_a_change_only():
    steps = FakeSteps(reads=[queue(2), queue(4)], scales=[CHANGED])
    flow = run_rollout(steps, dict(ARGS, gate_delay="3"))
    assert names(steps) == ["read_queue", "scale", "sleep", "read_queue"] and steps.calls[2] == ("sleep", 3)
    assert DELAY in flow["steps"]
    steps = FakeSteps(reads=[queue(4)], scales=[UNCHANGED])
    run_rollout(steps, dict(ARGS, gate_delay=3))
    assert "sleep" not in names(steps)


def assert_refused_before_anything_runs(change, fragment):
    steps = FakeSteps()
    flow = run_rollout(steps, dict(ARGS, **change))
    assert steps.calls == [] and flow["steps"] == [INPUTS] and flow["changed"] is False
    outcome = flow["outcome"]
    assert outcome["result"] == "failed" and fragment in outcome["message"], outcome["message"]
    assert outcome["message"].endswith("Nothing was changed.")


@pytest.mark.parametrize("change, fragment", [
    ({"gate_timeout": "nan"}, "qfc_health_gate_timeout must be a whole number from 1 to 3600, got nan"),
    ({"poll": 0}, "qfc_poll must be a whole number from 1 to 3600, got 0"),
    ({"gate_delay": 1.5}, "qfc_health_gate_delay must be a whole number"),
    ({"scale": dict(SCALE_ARGS, settle_time=200)}, "qfc_wait_timeout (120 s) must be longer than qfc_settle_time"),
    ({"scale": dict(SCALE_ARGS, service="worker wrapper")}, "qfc_worker_service must be a Compose service name"),
    ({"gate": dict(GATE_ARGS, login_port=70000)}, "qfc_db_port must be a whole number from 0 to 65535"),
    # the compare-and-set's count is refused before the gate reads anything, not by qfc_scale after it
    ({"scale": dict(SCALE_ARGS, expect_current=101)}, "qfc_expect_current must be a whole number from 0 to 100"),
    ({"scale": dict(SCALE_ARGS, expect_current=-1)}, "qfc_expect_current must be a whole number from 0 to 100"),
])
def test_bad_inputs_stop_before_anything_runs(change, fragment):
    assert_refused_before_anything_runs(change, fragment)


def test_a_blocking_alert_before_the_change_stops_the_rollout():
    steps = FakeSteps(reads=[queue(2, [ALERT])])
    flow = run_rollout(steps, ARGS)
    assert names(steps) == ["read_queue"] and flow["steps"] == [INPUTS, GATE_BEFORE]
    assert flow["outcome"]["result"] == "failed at the health gate before the change"
    assert flow["outcome"]["message"] == "health gate before the change: critical: 5 of 5 jobs failed in the last hour"


def test_an_alert_of_a_severity_not_asked_for_does_not_stop_it():
    steps = FakeSteps(reads=[queue(2, [dict(ALERT, severity="warning")]), queue(4)], scales=[CHANGED])
    assert run_rollout(steps, ARGS)["outcome"]["result"] == "changed"


def test_a_gate_read_that_timed_out_names_the_timeout():
    timed_out = {"failed": True, "timedout": {"period": 7}, "msg": "did not finish within 7 s"}
    steps = FakeSteps(reads=[timed_out])
    outcome = run_rollout(steps, dict(ARGS, gate_timeout=7))["outcome"]
    assert names(steps) == ["read_queue"]
    assert outcome["message"].startswith("the health gate could not read the queue within qfc_health_gate_timeout=7s")


def test_an_unreachable_host_is_recorded_not_scaled():
    steps = FakeSteps(reads=[UNREACHABLE])
    outcome = run_rollout(steps, ARGS)["outcome"]
    assert names(steps) == ["read_queue"]
    assert (outcome["result"], outcome["message"]) == ("unreachable", UNREACHABLE["msg"])
    steps = FakeSteps(scales=[UNREACHABLE])  # the gate off: qfc_scale is the first to reach the host
    assert run_rollout(steps, dict(ARGS, gate=None))["outcome"]["result"] == "unreachable"


def test_a_failed_qfc_scale_is_not_gated_again():
    failed = {"failed": True, "changed": False, "msg": "replicas must be a whole number from 0 to 100, got 101"}
    steps = FakeSteps(reads=[queue(2)], scales=[failed])
    outcome = run_rollout(steps, ARGS)["outcome"]
    assert names(steps) == ["read_queue", "scale"]
    assert (outcome["result"], outcome["message"]) == (
        "failed", "qfc_worker_replicas must be a whole number from 0 to 100, got 101")


def test_a_failed_read_after_the_change_rolls_back_to_the_count_before():
    back = {"changed": True, "replicas": 2, "running": 2, "diff": {"before": "4", "after": "2"}}
    steps = FakeSteps(reads=[queue(2), queue(4, [ALERT])], scales=[CHANGED, back])
    flow = run_rollout(steps, ARGS)
    assert flow["steps"] == [INPUTS, GATE_BEFORE, SCALE, GATE_AFTER, ROLLBACK]
    rollback = steps.calls[-1][1]
    assert rollback == dict(SCALE_ARGS, replicas=2, backup=False, force=True, rollback=False, operation="rollback",
                            operation_reason="%s failed after 2 -> 4; back to 2" % GATE_AFTER)
    outcome = flow["outcome"]
    assert (outcome["before"], outcome["after"], outcome["result"]) == (
        2, 2, "failed at the health gate after the change, rolled back")
    assert flow["changed"] is True


@pytest.mark.parametrize("after", [UNREACHABLE, {"failed": True, "timedout": {"period": 60}, "msg": "timed out"}])
@pytest.mark.parametrize("rollback", [{"failed": True, "msg": "compose up failed"}, UNREACHABLE])
def test_a_read_after_the_change_that_never_answers_rolls_back_too(after, rollback):
    steps = FakeSteps(reads=[queue(2), after], scales=[CHANGED, rollback])
    outcome = run_rollout(steps, ARGS)["outcome"]
    assert names(steps) == ["read_queue", "scale", "read_queue", "scale"]
    # a rollback that could not reach the host is a failed one: the new count is still in place
    assert outcome["result"] == "failed at the health gate after the change, ROLLBACK FAILED"
    assert outcome["after"] == 4


@pytest.mark.parametrize("case, kwargs, scale", [
    ("check mode: nothing was changed", {"check_mode": True}, CHANGED),
    ("no count to go back to", {}, dict(CHANGED, rollback_replicas=None)),
])
def test_no_rollback(case, kwargs, scale):
    steps = FakeSteps(reads=[queue(2), queue(4, [ALERT])], scales=[scale])
    flow = run_rollout(steps, ARGS, **kwargs)
    assert names(steps) == ["read_queue", "scale", "read_queue"], case
    assert flow["outcome"]["result"] == "failed at the health gate after the change"


def test_a_worker_node_and_a_custom_service_show_in_the_outcome():
    steps = FakeSteps(scales=[CHANGED])
    args = dict(ARGS, gate=None, worker_node=True, scale=dict(SCALE_ARGS, service="w", env_var="W_N"))
    outcome = run_rollout(steps, args)["outcome"]
    assert outcome["layout"] == "worker node" and outcome["report"].startswith("w: running 2 -> 4 (W_N 2 -> 4)")


def test_input_values_name_the_role_variables_and_skip_unset_options():
    values = input_values(dict(ARGS, gate=dict(GATE_ARGS, login_port="", worker_timeout_s=900)))
    assert values["qfc_wait_timeout"] == 120 and values["qfc_worker_timeout_s"] == 900
    assert "qfc_db_port" not in values and values["qfc_health_gate_timeout"] == 60
    assert input_values({"scale": {}, "gate": None}) == {}


def test_rollback_args_keep_everything_else():
    args = rollback_args(SCALE_ARGS, CHANGED, "the gate")
    assert args["project_src"] == "/srv/qfc" and args["replicas"] == 2
    assert args["operation_reason"] == "the gate failed after 2 -> 4; back to 2"
    assert SCALE_ARGS["replicas"] == 4  # not changed in place


def test_whole_numbers_given_as_text_or_floats_reach_the_steps_as_ints():
    steps = FakeSteps(reads=[queue(2), queue(4)], scales=[CHANGED])
    run_rollout(steps, dict(ARGS, gate_timeout="60.0", gate_delay=2.0))
    assert [c for c in steps.calls if c[0] == "sleep"] == [("sleep", 2)]
    assert {c[2] for c in steps.calls if c[0] == "read_queue"} == {60}
    assert whole("6e1") == 60


# Issue 21, defect 9: the action's defaults apply only to an option left out; a null (or a boolean, a string, NaN)
# given for a number or a name must be an input error naming the option, with nothing run, not a TypeError.
@pytest.mark.parametrize("change, fragment", [
    ({"gate_timeout": None},
     "gate_timeout (qfc_health_gate_timeout) is null: it must be a whole number from 1 to 3600"),
    ({"poll": None}, "poll (qfc_poll) is null: it must be a whole number from 1 to 3600"),
    ({"poll": None, "background": True}, "poll (qfc_poll) is null"),
    ({"gate_delay": None}, "gate_delay (qfc_health_gate_delay) is null: it must be a whole number from 0 to 3600"),
    ({"gate_timeout": None, "gate": None}, "gate_timeout (qfc_health_gate_timeout) is null"),
    ({"scale": dict(SCALE_ARGS, command_timeout=None)},
     "scale.command_timeout (qfc_command_timeout) is null: it must be a whole number from 10 to 86400"),
    ({"scale": dict(SCALE_ARGS, lock_timeout=None)}, "scale.lock_timeout (qfc_lock_timeout) is null"),
    ({"scale": dict(SCALE_ARGS, wait_timeout=None)}, "scale.wait_timeout (qfc_wait_timeout) is null"),
    ({"scale": dict(SCALE_ARGS, settle_time=None)},
     "scale.settle_time (qfc_settle_time) is null: it must be a finite number from 0 to 3600"),
    ({"scale": dict(SCALE_ARGS, service=None)},
     "scale.service (qfc_worker_service) is null: it must be a Compose service name"),
    ({"gate_timeout": True}, "qfc_health_gate_timeout must be a whole number from 1 to 3600, got True"),
    ({"poll": False}, "qfc_poll must be a whole number from 1 to 3600, got False"),
    ({"gate_delay": True}, "qfc_health_gate_delay must be a whole number from 0 to 3600, got True"),
    ({"gate_timeout": "soon"}, "qfc_health_gate_timeout must be a whole number from 1 to 3600, got soon"),
    ({"gate_timeout": ""}, "qfc_health_gate_timeout must be a whole number from 1 to 3600, got "),
    ({"poll": float("nan")}, "qfc_poll must be a whole number from 1 to 3600, got nan"),
    ({"poll": [10]}, "qfc_poll must be a whole number from 1 to 3600, got [10]"),
    ({"gate_timeout": {"s": 60}}, "qfc_health_gate_timeout must be a whole number"),
    ({"scale": dict(SCALE_ARGS, command_timeout=True)}, "qfc_command_timeout must be a whole number"),
    ({"scale": dict(SCALE_ARGS, wait_timeout="inf")}, "qfc_wait_timeout must be a whole number"),
])
def test_null_and_wrong_types_are_input_errors_before_anything_runs(change, fragment):
    assert_refused_before_anything_runs(change, fragment)


def test_every_null_is_named_at_once():
    steps = FakeSteps()
    message = run_rollout(steps, dict(ARGS, gate_timeout=None, poll=None, gate_delay=None))["outcome"]["message"]
    assert all(name in message for name in ("gate_timeout (", "poll (", "gate_delay ("))


def test_null_options_that_mean_unset_stay_unset():
    # qfc_queue_facts' optional connection and worker timeout, qfc_scale's env_file/docker_cli: null is "not set"
    steps = FakeSteps(reads=[queue(2), queue(4)], scales=[CHANGED])
    args = dict(ARGS, gate=dict(GATE_ARGS, login_port=None, worker_timeout_s=None),
                scale=dict(SCALE_ARGS, env_file=None, docker_cli=None))
    assert run_rollout(steps, args)["outcome"]["result"] == "changed"


# Issue 21, defect 10: qfc_scale's compare-and-set (expect_current) refused the change.
REFUSED = {"changed": False, "refused": True, "expect_current": 3, "replicas": 2, "previous_replicas": 1,
           "previous_running": None, "running": None, "rollback_replicas": 1,
           "msg": "Refused - expect_current=3, but /srv/qfc/.env holds QFIELDCLOUD_WORKER_REPLICAS=1 under the "
                  "project lock: the configured count changed from 3 to 1 since the caller read it. Nothing was "
                  "changed (no backup, no .env write, no docker compose call); decide again from 1."}


@pytest.mark.parametrize("check_mode", [False, True])
def test_a_refused_change_is_not_a_failure_and_is_not_gated_again(check_mode):
    steps = FakeSteps(reads=[queue(1)], scales=[REFUSED])
    flow = run_rollout(steps, dict(ARGS, scale=dict(SCALE_ARGS, replicas=2, expect_current=3)),
                       check_mode=check_mode, host="qfc1")
    assert names(steps) == ["read_queue", "scale"] and flow["steps"] == [INPUTS, GATE_BEFORE, SCALE]
    assert steps.calls[1] == ("scale", dict(SCALE_ARGS, replicas=2, expect_current=3))  # passed through as given
    outcome = flow["outcome"]
    assert (outcome["result"], outcome["before"], outcome["after"], outcome["report"]) == ("refused", 1, 1, None)
    assert outcome["message"] == REFUSED["msg"] and outcome["refused"] == {"expected": 3, "configured": 1}
    assert flow["changed"] is False


def test_the_rollback_after_a_gate_failure_does_not_compare_against_the_count_decided_from():
    back = {"changed": True, "replicas": 2, "running": 2}
    steps = FakeSteps(reads=[queue(2), queue(4, [ALERT])], scales=[CHANGED, back])
    run_rollout(steps, dict(ARGS, scale=dict(SCALE_ARGS, expect_current=2)))
    first, rollback = steps.calls[1][1], steps.calls[-1][1]
    assert first["expect_current"] == 2 and "expect_current" not in rollback and rollback["replicas"] == 2
