"""The action plugin's own parts (plugins/action/qfc_scale_rollout.py): the per-step deadline, a real SIGALRM."""

from __future__ import annotations

import signal
import time

import pytest
from ansible.errors import AnsibleConnectionFailure

from ansible_collections.qfieldcloud.ops.plugins.action.qfc_scale_rollout import (
    ARGUMENT_SPEC, DeadlineExceeded, HostSteps, background_limit, collect_diffs, deadline)


def test_a_deadline_interrupts_a_call_that_hangs_and_restores_the_handler():
    before = signal.getsignal(signal.SIGALRM)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        with deadline(1):
            time.sleep(10)
    assert 0.9 < time.monotonic() - start < 3
    assert signal.getsignal(signal.SIGALRM) == before and signal.alarm(0) == 0  # no alarm left behind


def test_no_deadline_and_a_call_in_time():
    with deadline(0):
        time.sleep(0.01)
    with deadline(5):
        time.sleep(0.01)
    assert signal.alarm(0) == 0


def test_a_deadline_is_not_swallowed_by_except_exception():
    with pytest.raises(DeadlineExceeded):
        with deadline(1):
            try:
                time.sleep(10)
            except Exception:  # noqa: BLE001 - what connection plugins do; the deadline must get through
                pytest.fail("swallowed")


def test_what_goes_wrong_in_a_step_becomes_its_result():
    def hang():
        time.sleep(10)

    def lost():
        raise AnsibleConnectionFailure("ssh: connect to host qfc1 port 22: Connection refused")

    def broken():
        raise ValueError("no interpreter")

    timed_out = HostSteps._guarded("qfc_queue_facts", 1, hang)
    assert timed_out == {"failed": True, "changed": False, "timedout": {"period": 1},
                         "msg": "qfc_queue_facts did not finish within 1 s"}
    assert HostSteps._guarded("qfc_scale", 5, lost) == {
        "unreachable": True, "changed": False, "msg": "ssh: connect to host qfc1 port 22: Connection refused"}
    failed = HostSteps._guarded("qfc_scale", 5, broken)
    assert failed == {"failed": True, "changed": False, "msg": "qfc_scale: no interpreter"}
    assert HostSteps._guarded("qfc_scale", 5, lambda: {"changed": True}) == {"changed": True}
    assert signal.alarm(0) == 0


def test_the_numbers_are_taken_as_given_for_the_input_check():
    # NaN and fractions must reach the flow's input check (which names the role's variable), not Ansible's int type
    assert {ARGUMENT_SPEC[k]["type"] for k in ("gate_timeout", "gate_delay", "poll")} == {"raw"}


def test_an_outer_alarm_that_comes_later_is_re_armed_with_the_time_it_has_left():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(time.monotonic()))
    try:
        signal.alarm(3)  # a task timeout around the step
        with deadline(1):
            time.sleep(0.2)
        left = signal.alarm(0)
        assert 2 <= left <= 3 and not fired
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_an_outer_alarm_that_comes_first_is_left_to_fire():
    class Outer(BaseException):
        pass

    def outer_fires(*_):
        raise Outer()

    previous = signal.signal(signal.SIGALRM, outer_fires)
    try:
        signal.alarm(1)
        with pytest.raises(Outer):
            with deadline(5):
                time.sleep(3)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_the_background_job_outlasts_every_deadline_of_the_module():
    # lock wait 1800 + preflight, up and restore (3 x 1200) + settle wait and the restore's wait (2 x 120) + 60
    assert background_limit({}) == 1800 + 3 * 1200 + 2 * 120 + 60
    assert background_limit({"lock_timeout": 0, "command_timeout": "10", "wait_timeout": 5.0}) == 30 + 10 + 60


def test_diffs_of_the_change_and_the_rollback_are_one_flat_list():
    change, back = {"before": "N=2\n", "after": "N=4\n"}, {"before": "N=4\n", "after": "N=2\n"}
    results = {"gate": {"changed": False}, "scale": {"diff": [change]}, "rollback": {"diff": back}, "x": "text"}
    assert collect_diffs(results) == [change, back]
    assert collect_diffs({"gate": {}}) == []
