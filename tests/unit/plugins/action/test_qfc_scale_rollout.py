"""The action plugin's own parts (plugins/action/qfc_scale_rollout.py): the per-step deadline, a real SIGALRM."""

from __future__ import annotations

import signal
import time

import pytest

from ansible_collections.qfieldcloud.ops.plugins.action.qfc_scale_rollout import (
    ARGUMENT_SPEC, DeadlineExceeded, _whole, deadline)


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


@pytest.mark.parametrize("value, expected", [(10, 10), ("3", 3), ("2.0", 2), (0, 1), ("nan", 7), (None, 7)])
def test_poll_seconds(value, expected):
    assert _whole(value, 7) == expected


def test_the_numbers_are_taken_as_given_for_the_input_check():
    # NaN and fractions must reach the flow's input check (which names the role's variable), not Ansible's int type
    assert {ARGUMENT_SPEC[k]["type"] for k in ("gate_timeout", "gate_delay", "poll")} == {"raw"}
