"""The queue modules' shared body (issue 22): ``_queue.argument_spec()`` and its doc fragment say the same thing,
both modules take exactly those options, and the option check and the read fail the task in one place, with the
messages the modules have always given."""

from __future__ import annotations

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _jobs, _policy, _postgres, _queue
from tests.support.argspecs import argument_spec, assert_fragment_matches_spec

QUEUE_MODULES = ("qfc_queue_facts", "qfc_autoscale_decision")
FACTS_NOTE = " The facts are read-only: nothing was changed."
DECISION_NOTE = " The decision is read-only: no change was made."


def test_the_fragment_documents_exactly_the_spec_options():
    spec = _queue.argument_spec()
    docs = assert_fragment_matches_spec("_queue", spec)
    assert spec["max_replicas_per_core"]["default"] is _policy.DEFAULT_MAX_REPLICAS_PER_CORE
    assert str(_queue.MAX_REPLICAS_PER_CORE) in " ".join(docs["max_replicas_per_core"]["description"])


@pytest.mark.parametrize("name", QUEUE_MODULES)
def test_each_queue_module_takes_the_shared_options_and_no_docker_cli(name):
    spec = argument_spec(name)
    for option, definition in dict(_postgres.argument_spec(), **_queue.argument_spec()).items():
        assert spec[option] == definition, (name, option)
    assert "docker_cli" not in spec


class Failed(Exception):
    pass


class FakeModule:
    def __init__(self, **params):
        base = {name: option.get("default") for name, option in
                dict(_postgres.argument_spec(), **_queue.argument_spec()).items()}
        self.params = dict(base, **params)
        self.no_log_values = set()

    def fail_json(self, **kwargs):
        raise Failed(kwargs["msg"])


@pytest.mark.parametrize("params, message", [
    ({"thresholds": {"bogus": 1}}, "Unknown thresholds: bogus. Known: failed_ratio_critical, idle_grace_s, "
                                   "pending_after_s, queue_depth_warning."),
    ({"max_replicas_per_core": 65.0}, "Invalid option: max_replicas_per_core must be above 0 and at most 64, got 65.0"),
    ({"max_replicas_per_core": float("nan")}, "Invalid option: max_replicas_per_core must be above 0 and at most 64"),
    ({"statement_timeout": 0}, "Invalid option: statement_timeout must be 1 to 2147483647 milliseconds, got 0"),
    ({"worker_timeout_s": 0}, "Invalid option: worker_timeout_s must be positive"),
])
def test_bad_options_fail_with_the_modules_messages(params, message):
    for note in ("", DECISION_NOTE):
        with pytest.raises(Failed) as failed:
            _queue.check_options(FakeModule(**params), note)
        assert str(failed.value).startswith(message) and str(failed.value).endswith(note)


def test_the_module_s_own_check_runs_first_and_its_result_is_returned():
    own, thresholds, timeout = _queue.check_options(FakeModule(), first=lambda p: _jobs.parse_duration("2h"))
    assert (own, thresholds, timeout) == (7200, _policy.DEFAULT_THRESHOLDS, 5000)
    with pytest.raises(Failed, match="^Invalid option: a duration must be"):
        _queue.check_options(FakeModule(thresholds={"bogus": 1}), first=lambda p: _jobs.parse_duration("soon"))


def fake_gather(exc):
    def gather(*args, **kwargs):
        raise exc
    return gather


psycopg2 = pytest.importorskip("psycopg2")
WHERE = "u@h:5432/d"


@pytest.mark.parametrize("exc, message", [
    (_postgres.ConnectionFailed("Cannot connect to PostgreSQL at %s: refused" % WHERE),
     "Cannot connect to PostgreSQL at %s: refused" % WHERE),
    (_jobs.SchemaError("not QFieldCloud's schema."), "not QFieldCloud's schema."),
    (_postgres.NoAnswer("no answer within 7.0 s "),
     "PostgreSQL at %s stopped answering: no answer within 7.0 s." % WHERE),
    (psycopg2.errors.QueryCanceled("canceling statement due to statement timeout\n"),
     "Query failed on %s: canceling statement due to statement timeout." % WHERE),
    (ValueError("connect_timeout must be 1 to 3600 s"), "Invalid option: connect_timeout must be 1 to 3600 s"),
])
def test_every_read_failure_fails_the_task_in_one_place(monkeypatch, exc, message):
    monkeypatch.setattr(_queue, "gather", fake_gather(exc))
    module = FakeModule(login_host="h", login_port=5432, login_user="u", login_db="d", login_password="secret")
    with pytest.raises(Failed) as failed:
        _queue.read(module, 3600, 86400, 5000, DECISION_NOTE)
    assert str(failed.value) == message + DECISION_NOTE
    with pytest.raises(Failed) as failed:
        _queue.read(module, 3600, 86400, 5000, FACTS_NOTE, option_note="")
    assert str(failed.value) == message + ("" if isinstance(exc, ValueError) else FACTS_NOTE)
    assert "secret" not in str(failed.value)


def test_a_missing_psycopg2_fails_with_ansible_s_message(monkeypatch):
    monkeypatch.setattr(_postgres, "HAS_PSYCOPG2", False)
    with pytest.raises(Failed, match="Failed to import the required Python library \\(psycopg2\\)"):
        _postgres.ensure_required_libs(FakeModule())
    monkeypatch.setattr(_postgres, "HAS_PSYCOPG2", True)
    _postgres.ensure_required_libs(FakeModule())
