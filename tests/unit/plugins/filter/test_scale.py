"""The scale role's filters (plugins/filter/scale.py): input rules, a host's outcome, the rollout summary table."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.qfieldcloud.ops.plugins.filter.scale import (
    FilterModule, qfc_fail_percentage, qfc_gate_failed, qfc_input_problems, qfc_rollout_table, qfc_scale_outcome,
    qfc_scale_outcomes, qfc_serial_batches)

DEFAULTS = {"qfc_wait_timeout": 120, "qfc_settle_time": 1.0, "qfc_max_replicas_per_core": 2.5,
            "qfc_lock_timeout": 1800, "qfc_command_timeout": 1200, "qfc_backup_keep": 10,
            "qfc_auto_max_replicas": 10, "qfc_health_gate_delay": 0, "qfc_health_gate_timeout": 60,
            "qfc_worker_timeout_s": None, "qfc_db_port": None,
            "qfc_env_var": "QFIELDCLOUD_WORKER_REPLICAS", "qfc_worker_service": "worker_wrapper"}
NAN, INF = float("nan"), float("inf")


def test_the_filters_are_exported():
    assert set(FilterModule().filters()) == {"qfc_input_problems", "qfc_gate_failed", "qfc_scale_outcome",
                                             "qfc_scale_outcomes", "qfc_rollout_table", "qfc_serial_batches",
                                             "qfc_fail_percentage"}


@pytest.mark.parametrize("value, expected", [
    ([1, "25%", "100%"], [1, "25%", "100%"]),
    ("1, 25% ,100%", ["1", "25%", "100%"]),  # an AWX survey's text
    ("100%", ["100%"]),
    (3, [3]),
    ("999999", ["999999"]),
    (("1%", 2), ["1%", 2]),
])
def test_serial_batches(value, expected):
    assert qfc_serial_batches(value) == expected


@pytest.mark.parametrize("value", [[], "", "0", 0, -1, "1,-1", "1,250%", "0%", "nan", NAN, INF, [1, INF], True,
                                   [1, False], "1.5", 1.0, "1,,2", "1000000", None, {"a": 1},
                                   # a list item with a final newline reaches Ansible unstripped: int() fails there
                                   ["50%\n"], [1, "2\n"], ["25%\r"]])
def test_serial_batches_refuses_what_ansible_would_misread(value):
    with pytest.raises(AnsibleFilterError, match=r"^qfc_serial must be batch sizes.*got .*Nothing was changed\.$"):
        qfc_serial_batches(value)


@pytest.mark.parametrize("value", [0, 30, "30", " 50 ", 99.5, "100", "100.0", 100])
def test_fail_percentage(value):
    assert qfc_fail_percentage(value) == value


@pytest.mark.parametrize("value, shown", [(-5, "-5"), ("nan", "nan"), (NAN, "nan"), (INF, "inf"), (1000, "1000"),
                                          (100.5, "100.5"), (True, "True"), ("", ""), (None, "None"), ("1e1", "1e1")])
def test_fail_percentage_refuses_what_ansible_would_misread(value, shown):
    with pytest.raises(AnsibleFilterError) as err:
        qfc_fail_percentage(value)
    expected = "qfc_max_fail_percentage must be a number from 0 to 100, got %s. Nothing was changed." % shown
    assert str(err.value) == expected


@pytest.mark.parametrize("changes", [
    {},
    # the ends of every range
    {"qfc_settle_time": 0, "qfc_lock_timeout": 0, "qfc_max_replicas_per_core": 100, "qfc_auto_max_replicas": 100,
     "qfc_wait_timeout": 86400, "qfc_health_gate_delay": 3600, "qfc_health_gate_timeout": 3600,
     "qfc_worker_timeout_s": 0, "qfc_db_port": 65535, "qfc_command_timeout": 10, "qfc_backup_keep": 1000},
    {"qfc_max_replicas_per_core": 0.01, "qfc_worker_timeout_s": 3153600000, "qfc_db_port": 0},
    # strings from an inventory or a survey, whole floats where an integer is wanted
    {"qfc_wait_timeout": " 30 ", "qfc_settle_time": "2.5", "qfc_lock_timeout": 60.0, "qfc_db_port": "5432"},
    {"qfc_settle_time": "1e0", "qfc_max_replicas_per_core": ".5"},
    {"qfc_env_var": "_X1", "qfc_worker_service": "w.rk-er_1"},
])
def test_good_inputs_have_no_problem(changes):
    assert qfc_input_problems(dict(DEFAULTS, **changes)) == []


@pytest.mark.parametrize("changes, expected", [
    ({"qfc_settle_time": NAN}, ["qfc_settle_time must be a finite number from 0 to 3600, got nan"]),
    ({"qfc_max_replicas_per_core": INF},
     ["qfc_max_replicas_per_core must be a finite number from 0.01 to 100, got inf"]),
    ({"qfc_max_replicas_per_core": "-inf"},
     ["qfc_max_replicas_per_core must be a finite number from 0.01 to 100, got -inf"]),
    ({"qfc_wait_timeout": -5}, ["qfc_wait_timeout must be a whole number from 1 to 86400, got -5"]),
    ({"qfc_wait_timeout": 0}, ["qfc_wait_timeout must be a whole number from 1 to 86400, got 0"]),
    ({"qfc_lock_timeout": 0.5}, ["qfc_lock_timeout must be a whole number from 0 to 86400, got 0.5"]),
    ({"qfc_backup_keep": True}, ["qfc_backup_keep must be a whole number from 1 to 1000, got True"]),
    ({"qfc_db_port": 70000}, ["qfc_db_port must be a whole number from 0 to 65535, got 70000"]),
    ({"qfc_worker_timeout_s": -1}, ["qfc_worker_timeout_s must be a whole number from 0 to 3153600000, got -1"]),
    ({"qfc_settle_time": 1e300}, ["qfc_settle_time must be a finite number from 0 to 3600, got 1e+300"]),
    ({"qfc_health_gate_timeout": "many"}, ["qfc_health_gate_timeout must be a whole number from 1 to 3600, got many"]),
    ({"qfc_poll": 0}, ["qfc_poll must be a whole number from 1 to 3600, got 0"]),
    ({"qfc_settle_time": 30, "qfc_wait_timeout": 30},
     ["qfc_wait_timeout (30 s) must be longer than qfc_settle_time (30 s), or no worker can ever count as settled"]),
    ({"qfc_env_var": "QFC_X\nPOSTGRES_PASSWORD"},
     ['qfc_env_var must be a .env variable name ([A-Za-z_][A-Za-z0-9_]*: no newline, no =, no space), got '
      '"QFC_X\\nPOSTGRES_PASSWORD"']),
    ({"qfc_env_var": "QFC_X\n"},
     ['qfc_env_var must be a .env variable name ([A-Za-z_][A-Za-z0-9_]*: no newline, no =, no space), got '
      '"QFC_X\\n"']),
    ({"qfc_env_var": ""},
     ['qfc_env_var must be a .env variable name ([A-Za-z_][A-Za-z0-9_]*: no newline, no =, no space), got ""']),
    ({"qfc_worker_service": "worker_wrapper=app"},
     ['qfc_worker_service must be a Compose service name ([a-zA-Z0-9][a-zA-Z0-9_.-]*: no newline, no =, no space), '
      'got "worker_wrapper=app"']),
    ({"qfc_worker_service": 5},
     ['qfc_worker_service must be a Compose service name ([a-zA-Z0-9][a-zA-Z0-9_.-]*: no newline, no =, no space), '
      'got "5"']),
])
def test_bad_inputs_are_named_with_their_range(changes, expected):
    assert qfc_input_problems(dict(DEFAULTS, **changes)) == expected


def test_every_bad_input_is_named_at_once_and_the_settle_rule_waits_for_valid_numbers():
    problems = qfc_input_problems(dict(DEFAULTS, qfc_wait_timeout=-5, qfc_settle_time=-1, qfc_db_port=-1))
    assert [p.split()[0] for p in problems] == ["qfc_wait_timeout", "qfc_settle_time", "qfc_db_port"]


def test_unset_values_are_not_checked():
    assert qfc_input_problems({"qfc_db_port": None, "qfc_worker_timeout_s": None}) == []
    with pytest.raises(AnsibleFilterError):
        qfc_input_problems(["qfc_wait_timeout"])


ALERT = {"severity": "critical", "message": "5 of 5 jobs failed in the last hour", "name": "failure_rate_high"}
IDLE = {"severity": "error", "message": "1 of 1 workers idle while 1 job(s) could start now"}


def gate(running=1, alerts=(), **more):
    queue = {"workers": {"running": running}, "alerts": list(alerts)}
    return dict({"changed": False, "ansible_facts": {"qfc_queue": queue}}, **more)


@pytest.mark.parametrize("result, severities, expected", [
    (gate(), ["critical"], False),
    (gate(alerts=[ALERT]), ["critical"], True),
    (gate(alerts=[IDLE]), ["critical"], False),
    (gate(alerts=[IDLE]), ["critical", "error"], True),
    ({"failed": True, "msg": "password authentication failed"}, ["critical"], True),
    ({"skipped": True}, ["critical"], False),
    ({}, [], False),
])
def test_gate_failed(result, severities, expected):
    assert qfc_gate_failed(result, severities) is expected


CHANGED = {"changed": True, "replicas": 4, "previous_replicas": 2, "previous_running": 2, "running": 4,
           "rollback_replicas": 2}
UNCHANGED = {"changed": False, "replicas": 4, "previous_replicas": 4, "previous_running": 4, "running": 4}
SKIPPED = {"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}
UNREACHABLE = {"unreachable": True, "changed": False, "msg": "Failed to connect to the host via ssh: refused"}
GATE_BEFORE = "Health gate - read the queue before the change (no blocking alert)"
GATE_AFTER = "Health gate - read the queue after the change (no blocking alert)"
SCALE = "Scale QFieldCloud workers (backup, edit .env, apply, verify)"
WRONG_PASSWORD = "password authentication failed for user qfc"
CONFLICT = ("docker-compose.override.prod.yml sets services.worker_wrapper.deploy.replicas. .env was not changed.")


# (case, scale result, keyword arguments, expected before, after, result, message)
OUTCOMES = [
    ("changed", CHANGED, {}, 2, 4, "changed", ""),
    ("unchanged", UNCHANGED, {}, 4, 4, "unchanged", ""),
    ("check mode", dict(CHANGED, running=4), {"check_mode": True}, 2, 4, "would change", ""),
    ("nothing running before, .env unset", dict(CHANGED, previous_replicas=None, previous_running=0), {}, 0, 4,
     "changed", ""),
    ("apply=false: no running counts, the .env value before", dict(CHANGED, previous_running=None, running=None), {},
     2, None, "changed", ""),
    ("unreachable at the gate", SKIPPED, {"gate": UNREACHABLE}, None, None, "unreachable", UNREACHABLE["msg"]),
    ("unreachable at qfc_scale (gate off)", UNREACHABLE, {}, None, None, "unreachable", UNREACHABLE["msg"]),
    ("a compose conflict: failed, nothing changed",
     {"failed": True, "changed": False, "replicas": 2, "previous_replicas": 1, "previous_running": 1,
      "running": 1, "msg": CONFLICT},
     {"failure": {"task": SCALE, "result": {"failed": True, "msg": CONFLICT}}, "gate": gate(running=1)},
     1, 1, "failed", CONFLICT),
    ("workers did not come up: qfc_scale rolled back itself",
     {"failed": True, "changed": True, "rolled_back": True, "replicas": 4, "previous_replicas": 2,
      "previous_running": 2, "running": 2, "msg": "Scaling worker_wrapper to 4 failed"},
     {"failure": {"task": SCALE, "result": {"failed": True, "msg": "Scaling worker_wrapper to 4 failed"}}},
     2, 2, "failed, rolled back", "Scaling worker_wrapper to 4 failed"),
    ("a blocking alert before the change", SKIPPED,
     {"gate": gate(running=1, alerts=[ALERT], failed=True),
      "failure": {"task": GATE_BEFORE, "result": gate(running=1, alerts=[ALERT], failed=True)}},
     1, 1, "failed at the health gate before the change",
     "health gate before the change: critical: 5 of 5 jobs failed in the last hour"),
    ("the gate's read timed out before the change", SKIPPED,
     {"gate": {"failed": True, "timedout": {"frame": ""}, "msg": "terminated"}, "gate_timeout": 4,
      "failure": {"task": GATE_BEFORE, "result": {"failed": True, "timedout": {"frame": ""}, "msg": "terminated"}}},
     None, None, "failed at the health gate before the change",
     "the health gate could not read the queue within qfc_health_gate_timeout=4s: the database (or the Docker Engine) "
     "does not answer"),
    ("a wrong password at the gate", SKIPPED,
     {"gate": {"failed": True, "msg": WRONG_PASSWORD},
      "failure": {"task": GATE_BEFORE, "result": {"failed": True, "msg": WRONG_PASSWORD}}},
     None, None, "failed at the health gate before the change", WRONG_PASSWORD),
    ("a new alert after the change, rolled back", dict(CHANGED, previous_running=0, running=1, replicas=1,
                                                       previous_replicas=0, rollback_replicas=0),
     {"gate": gate(running=0), "severities": ["critical", "error"],
      "failure": {"task": GATE_AFTER, "result": gate(running=1, alerts=[IDLE], failed=True)},
      "rollback": {"changed": True, "running": 0, "replicas": 0}},
     0, 0, "failed at the health gate after the change, rolled back",
     "health gate after the change: error: 1 of 1 workers idle while 1 job(s) could start now"),
    ("the rollback failed too", CHANGED,
     {"failure": {"task": GATE_AFTER, "result": gate(running=4, alerts=[ALERT], failed=True)},
      "rollback": {"failed": True, "msg": "compose up failed"}},
     2, 4, "failed at the health gate after the change, ROLLBACK FAILED",
     "health gate after the change: critical: 5 of 5 jobs failed in the last hour"),
    ("bad inputs: nothing ran", {}, {"failure": {"task": "Check the numbers and names (before anything changes)",
                                                 "result": {"failed": True, "msg": "qfc_db_port must be ... Nothing "
                                                                                   "was changed."}}},
     None, None, "failed", "qfc_db_port must be ... Nothing was changed."),
    ("qfc_scale refuses the count: the role's variable is named",
     {"failed": True, "changed": False, "msg": "replicas must be a whole number from 0 to 100, got 101. Nothing was "
                                               "changed."},
     {"failure": {"task": SCALE, "result": {"failed": True, "msg": "replicas must be a whole number from 0 to 100, "
                                                                   "got 101. Nothing was changed."}}},
     None, None, "failed", "qfc_worker_replicas must be a whole number from 0 to 100, got 101. Nothing was changed."),
    ("qfc_scale refuses replicas=N: the role's variable is named",
     {"failed": True, "msg": "replicas=101 is above the hard ceiling"},
     {"failure": {"task": SCALE, "result": {"failed": True, "msg": "replicas=101 is above the hard ceiling"}}},
     None, None, "failed", "qfc_worker_replicas=101 is above the hard ceiling"),
    ("a failure without a message", {}, {"failure": {"task": SCALE, "result": {"failed": True}}},
     None, None, "failed", "failed (no message)"),
]


@pytest.mark.parametrize("case, scale, kwargs, before, after, result, message", OUTCOMES,
                         ids=[c[0] for c in OUTCOMES])
def test_outcome(case, scale, kwargs, before, after, result, message):
    outcome = qfc_scale_outcome(scale, host="qfc1", **kwargs)
    got = (outcome["before"], outcome["after"], outcome["result"], outcome["message"])
    assert got == (before, after, result, message), case
    assert outcome["host"] == "qfc1" and outcome["layout"] == "server"


def test_outcome_is_a_fresh_dict_and_leaves_its_inputs_alone():
    scale = dict(CHANGED)
    first = qfc_scale_outcome(scale, gate=None, rollback=None, failure=None)
    assert scale == CHANGED and first is not qfc_scale_outcome(scale)
    assert qfc_scale_outcome(scale, worker_node=True)["layout"] == "worker node"
    assert first["replicas"] == 4


@pytest.mark.parametrize("scale, check_mode, expected", [
    (CHANGED, False, "worker_wrapper: running 2 -> 4 (QFIELDCLOUD_WORKER_REPLICAS 2 -> 4)"),
    (UNCHANGED, False, "worker_wrapper: running 4 -> 4 (QFIELDCLOUD_WORKER_REPLICAS 4 -> 4)"),
    (dict(CHANGED, replicas=3, running=3), True,
     "worker_wrapper: running 2 -> 3 (QFIELDCLOUD_WORKER_REPLICAS 2 -> 3) [check mode: predicted]"),
    (dict(CHANGED, previous_running=None, running=None, previous_replicas=None), False,
     "worker_wrapper: running n/a -> n/a (QFIELDCLOUD_WORKER_REPLICAS unset -> 4)"),
    (SKIPPED, False, None),
    ({}, False, None),
    (dict(CHANGED, failed=True), False, None),
])
def test_report_line(scale, check_mode, expected):
    assert qfc_scale_outcome(scale, check_mode=check_mode)["report"] == expected


def outcome(result, before=1, after=2, layout="server"):
    return {"host": "x", "layout": layout, "before": before, "after": after, "result": result}


# (case, hosts, outcomes, active hosts, expected lines)
TABLES = [
    ("a stopped rollout, the docs' example", ["qfc1", "qfc2", "qfc3", "worker1"],
     [outcome("changed"), outcome("failed", 1, 1), None, None], ["qfc1", "qfc3", "worker1"],
     ["host     layout       before   after  result",
      "qfc1     server            1       2  changed",
      "qfc2     server            1       1  failed",
      "qfc3     -                 -       -  not reached",
      "worker1  -                 -       -  not reached",
      "2 of 4 hosts reached, 1 failed. Batches stop at max_fail_percentage; hosts not reached keep their count."]),
    ("every host done, a worker node, unknown counts", ["a", "worker1"],
     [outcome("unchanged", None, None), outcome("would change", 1, 2, "worker node")], ["a", "worker1"],
     ["host     layout       before   after  result",
      "a        server            -       -  unchanged",
      "worker1  worker node       1       2  would change",
      "2 of 2 hosts reached, 0 failed."]),
    ("short names: the host column is at least 4 wide; unreachable counts as failed; no result", ["a", "b", "c"],
     [outcome("unreachable", None, None), outcome("failed at the health gate after the change, rolled back", 0, 0),
      {}], [],
     ["host  layout       before   after  result",
      "a     server            -       -  unreachable",
      "b     server            0       0  failed at the health gate after the change, rolled back",
      "c     -                 -       -  failed (no result)",
      "2 of 3 hosts reached, 2 failed. Batches stop at max_fail_percentage; hosts not reached keep their count."]),
]


@pytest.mark.parametrize("case, hosts, outcomes, active, expected", TABLES, ids=[t[0] for t in TABLES])
def test_rollout_table(case, hosts, outcomes, active, expected):
    by_host = {h: o for h, o in zip(hosts, outcomes) if o is not None}
    before = {h: dict(o) for h, o in by_host.items()}
    assert qfc_rollout_table(hosts, by_host, active) == expected, case
    assert by_host == before  # nothing is mutated


def test_rollout_table_refuses_what_is_not_a_list_and_a_dict():
    with pytest.raises(AnsibleFilterError):
        qfc_rollout_table(["a", "b"], [None, None])
    with pytest.raises(AnsibleFilterError):
        qfc_rollout_table("ab", {})


def test_outcomes_are_read_from_hostvars_registered_or_set():
    hostvars = {
        "a": {"qfc_scale_outcome": {"changed": True, "outcome": outcome("changed"), "steps": []}},  # registered
        "b": {"qfc_scale_outcome": outcome("unchanged")},  # an outcome as it is
        "c": {"qfc_scale_outcome": {}},  # reset at the start of a run that went no further
        "d": {},  # a later batch
        "e": {"qfc_scale_outcome": {"skipped": True, "changed": False}},
    }
    assert qfc_scale_outcomes(hostvars, ["a", "b", "c", "d", "e", "f"]) == {"a": outcome("changed"),
                                                                            "b": outcome("unchanged")}
    assert qfc_scale_outcomes(hostvars, ["a"], var="other") == {}
    with pytest.raises(AnsibleFilterError):
        qfc_scale_outcomes(hostvars, None)


def test_a_failed_input_check_names_every_problem():
    # the role's input check is a set_fact that fails: its result carries the problems, not a msg
    failure = {"task": "Check the numbers and names (before anything changes)",
               "result": {"failed": True, "failed_when_result": True, "ansible_facts": {
                   "qfc_scale_input_problems": ["qfc_settle_time must be a finite number from 0 to 3600, got nan",
                                                "qfc_poll must be a whole number from 1 to 3600, got 0"]}}}
    outcome = qfc_scale_outcome({}, failure=failure, host="h")
    assert outcome["result"] == "failed"
    assert outcome["message"] == ("qfc_settle_time must be a finite number from 0 to 3600, got nan; qfc_poll must be a "
                                  "whole number from 1 to 3600, got 0. Nothing was changed.")
    assert outcome["before"] is None and outcome["after"] is None
