"""The operations log (_oplog): record shape, actor, masking, atomic appends under concurrency, reading back."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _cleanup, _oplog
from tests.support.argspecs import assert_fragment_matches_spec

NOW = datetime(2026, 12, 2, 23, 59, 1, 654321, tzinfo=timezone.utc)


@pytest.mark.parametrize("kwargs, expected", [
    (dict(awx_job_id=123, awx_user_name="alice", user="bob"), {"kind": "awx", "awx_job_id": "123", "user": "alice"}),
    (dict(awx_job_id="42", user="bob"), {"kind": "awx", "awx_job_id": "42", "user": "bob"}),
    (dict(awx_job_id=" 7 ", awx_user_name=" ", user="bob"), {"kind": "awx", "awx_job_id": "7", "user": "bob"}),
    (dict(awx_job_id=None, awx_user_name="alice", user="bob"), {"kind": "controller", "user": "bob"}),
    (dict(awx_job_id="", user="bob"), {"kind": "controller", "user": "bob"}),
    (dict(user="bob", kind="schedule"), {"kind": "schedule", "user": "bob"}),
    (dict(awx_job_id=9, awx_user_name="eve", kind="schedule"), {"kind": "schedule", "awx_job_id": "9", "user": "eve"}),
])
def test_make_actor(kwargs, expected):
    assert _oplog.make_actor(**kwargs) == expected


def test_make_actor_without_any_user_names_this_process(monkeypatch):
    monkeypatch.setattr(_oplog.getpass, "getuser", lambda: "svc")
    assert _oplog.make_actor() == {"kind": "controller", "user": "svc"}

    def no_user():
        raise KeyError("uid 12345 not in passwd")
    monkeypatch.setattr(_oplog.getpass, "getuser", no_user)
    assert _oplog.make_actor() == {"kind": "controller", "user": "unknown"}


def test_make_actor_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="actor kind"):
        _oplog.make_actor(user="bob", kind="robot")


def test_make_record_shape():
    actor = _oplog.make_actor(awx_job_id=1, awx_user_name="alice")
    record = _oplog.make_record("scale", 2, 4, "replicas 2 -> 4 requested", "changed", actor, host="h1", now=NOW)
    assert record == {"time": "2026-12-02T23:59:01Z", "host": "h1", "action": "scale", "before": 2, "after": 4,
                      "reason": "replicas 2 -> 4 requested", "actor": actor, "result": "changed"}
    with_details = _oplog.make_record("job_cleanup", {"queued": 3}, {"failed": 3}, "", "failed", actor, host="h1",
                                      now=NOW, details={"committed": 2})
    assert with_details["details"] == {"committed": 2}


@pytest.mark.parametrize("now, expected", [
    (datetime(2026, 12, 2, 23, 59, 1, tzinfo=timezone(timedelta(hours=2))), "2026-12-02T21:59:01Z"),
    (datetime(2026, 12, 2, 23, 59, 1), "2026-12-02T23:59:01Z"),  # naive = UTC
    (datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc), "2026-12-31T23:59:59Z"),
])
def test_record_time_is_utc_to_the_second(now, expected):
    assert _oplog.make_record("scale", 1, 2, "", "changed", {}, host="h", now=now)["time"] == expected


def test_make_record_defaults_host_and_time():
    record = _oplog.make_record("scale", 1, 2, None, "changed", {"kind": "controller", "user": "u"})
    assert record["host"] == _oplog.socket.gethostname()
    assert record["reason"] == ""
    assert abs(_oplog.parse_time(record["time"]) - datetime.now(timezone.utc)) < timedelta(seconds=5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(result="ok"), "result must be one of"),
    (dict(result=None), "result must be one of"),
    (dict(action=""), "action must be"),
    (dict(action=None), "action must be"),
    (dict(actor="alice"), "actor must be a dict"),
])
def test_make_record_refuses_bad_input(kwargs, message):
    args = dict(action="scale", before=1, after=2, reason="", result="changed", actor={})
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        _oplog.make_record(**args)


@pytest.mark.parametrize("text, expected", [
    ("2026-12-02T23:59:01Z", datetime(2026, 12, 2, 23, 59, 1, tzinfo=timezone.utc)),
    ("2026-12-02T23:59:01z", datetime(2026, 12, 2, 23, 59, 1, tzinfo=timezone.utc)),
    ("2026-12-03T01:59:01+02:00", datetime(2026, 12, 2, 23, 59, 1, tzinfo=timezone.utc)),
    ("2026-12-02T23:59:01.500000Z", datetime(2026, 12, 2, 23, 59, 1, 500000, tzinfo=timezone.utc)),
    ("2026-12-02T23:59:01", datetime(2026, 12, 2, 23, 59, 1, tzinfo=timezone.utc)),
    (" 2026-12-02 23:59:01Z ", datetime(2026, 12, 2, 23, 59, 1, tzinfo=timezone.utc)),
])
def test_parse_time(text, expected):
    parsed = _oplog.parse_time(text)
    assert parsed == expected and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["", "  ", None, 1700000000, "yesterday", "2026-13-02T00:00:00Z", "Z"])
def test_parse_time_refuses(text):
    with pytest.raises(ValueError):
        _oplog.parse_time(text)


def test_time_round_trips():
    record = _oplog.make_record("scale", 1, 2, "", "changed", {}, host="h", now=NOW)
    assert _oplog.parse_time(record["time"]) == NOW.replace(microsecond=0)


@pytest.mark.parametrize("secrets, reason, expected", [
    (("s3cret",), "password s3cret leaked", "password ******** leaked"),
    (("abc", "abcdef"), "x abcdef y abc", "x ******** y ********"),  # longest first: no "********def"
    (("", None, 5), "nothing to mask", "nothing to mask"),  # empty and non-string secrets are ignored
    (('q"uo\\te',), 'val q"uo\\te end', "val ******** end"),  # masked before JSON escapes it
])
def test_to_line_masks_secrets(secrets, reason, expected):
    record = _oplog.make_record("scale", 1, 2, reason, "changed", {"kind": "controller", "user": "u"}, host="h",
                                now=NOW)
    line = _oplog.to_line(record, secrets)
    assert json.loads(line)["reason"] == expected
    for secret in secrets:
        if isinstance(secret, str) and secret:
            assert secret not in line


def test_to_line_masks_nested_values_and_keys():
    details = {"cmd": ["docker", "--pw=topsecret"], "topsecret": {"deep": "a topsecret b"}, "n": 3, "ok": True,
               "when": NOW}
    record = _oplog.make_record("scale", 1, 2, "", "failed", {}, host="h", now=NOW, details=details)
    line = _oplog.to_line(record, ["topsecret"])
    assert "topsecret" not in line
    parsed = json.loads(line)
    assert parsed["details"] == {"cmd": ["docker", "--pw=********"], "********": {"deep": "a ******** b"}, "n": 3,
                                 "ok": True, "when": str(NOW)}


def test_to_line_is_one_sorted_line():
    record = _oplog.make_record("scale", 1, 2, "two\nlines\u2028é", "changed", {}, host="h", now=NOW)
    line = _oplog.to_line(record)
    assert line.endswith("\n") and line.count("\n") == 1 and line.isascii()
    assert list(json.loads(line)) == sorted(record)
    assert json.loads(line)["reason"] == "two\nlines\u2028é"


def test_to_line_refuses_nan():
    record = _oplog.make_record("scale", 1, 2, "", "changed", {}, host="h", now=NOW, details={"x": float("nan")})
    with pytest.raises(ValueError):
        _oplog.to_line(record)


def rec(host="h1", action="scale", result="changed", before=1, after=2, time="2026-12-02T10:00:00Z", **extra):
    out = {"time": time, "host": host, "action": action, "before": before, "after": after, "reason": "",
           "actor": {"kind": "controller", "user": "u"}, "result": result}
    out.update(extra)
    return out


def test_append_creates_parents_and_file_with_modes(tmp_path):
    path = tmp_path / "log" / "qfieldcloud" / "operations.jsonl"
    old = os.umask(0o077)
    try:
        _oplog.append(str(path), rec())
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.read_text().count("\n") == 1
    assert _oplog.read(str(path)) == ([rec()], 0)


def test_append_keeps_an_existing_files_mode_and_content(tmp_path):
    path = tmp_path / "operations.jsonl"
    path.write_text(json.dumps(rec(after=9)) + "\n")
    path.chmod(0o600)
    _oplog.append(str(path), rec(after=3), secrets=["nothing"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [r["after"] for r in _oplog.read(str(path))[0]] == [9, 3]


def test_append_refuses_a_directory_and_a_fifo(tmp_path):
    with pytest.raises(OSError):
        _oplog.append(str(tmp_path), rec())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError):  # must not hang on the open
        _oplog.append(str(fifo), rec())


def test_append_to_an_unwritable_directory_raises(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError):
            _oplog.append(str(locked / "operations.jsonl"), rec())
    finally:
        locked.chmod(0o700)


def test_append_under_a_file_raises_even_for_root(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        _oplog.append(str(blocker / "operations.jsonl"), rec())
    assert blocker.read_text() == ""


def test_append_gives_up_on_a_held_lock(tmp_path):
    path = tmp_path / "operations.jsonl"
    path.write_text("")
    holder = os.open(str(path), os.O_RDONLY)
    try:
        _oplog.fcntl.flock(holder, _oplog.fcntl.LOCK_EX)
        with pytest.raises(OSError, match="lock"):
            _oplog.append(str(path), rec(), lock_timeout=0.2)
    finally:
        os.close(holder)
    assert path.read_text() == ""
    _oplog.append(str(path), rec())  # the lock released, the next append works
    assert _oplog.read(str(path))[0] == [rec()]


def test_a_short_write_leaves_no_half_line(tmp_path, monkeypatch):
    path = tmp_path / "operations.jsonl"
    _oplog.append(str(path), rec(after=1))
    real_write = os.write

    def short(fd, data):
        return real_write(fd, data[:10])
    monkeypatch.setattr(_oplog.os, "write", short)
    with pytest.raises(OSError, match="only 10 of"):
        _oplog.append(str(path), rec(after=2))
    monkeypatch.setattr(_oplog.os, "write", real_write)
    _oplog.append(str(path), rec(after=3))
    assert _oplog.read(str(path)) == ([rec(after=1), rec(after=3)], 0)


def _writer(path, worker, count):
    for n in range(count):
        # a long reason, so each line is well beyond a pipe buffer's atomic size
        _oplog.append(path, rec(host="w%d" % worker, after=n, reason="x" * 5000))


def test_concurrent_appends_lose_nothing_and_never_interleave(tmp_path):
    path = str(tmp_path / "operations.jsonl")
    workers, count = 8, 40
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, w, count)) for w in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    records, bad = _oplog.read(path)
    assert bad == 0
    assert len(records) == workers * count
    for w in range(workers):  # each writer's records, all of them, in its own order
        assert [r["after"] for r in records if r["host"] == "w%d" % w] == list(range(count))


def test_read_missing_file(tmp_path):
    assert _oplog.read(str(tmp_path / "nope.jsonl")) == ([], 0)


def test_read_skips_and_counts_malformed_lines(tmp_path):
    path = tmp_path / "operations.jsonl"
    lines = [json.dumps(rec(after=1)), "", "not json", "[1, 2]", '{"torn": ', json.dumps(rec(after=2)), "   ",
             "\"a string\""]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe\n" + json.dumps(rec(after=3)).encode())
    records, bad = _oplog.read(str(path))
    assert [r["after"] for r in records] == [1, 2, 3]  # the last line has no newline and still counts
    assert bad == 5


@pytest.mark.parametrize("host, limit, expected", [
    (None, None, [1, 2, 3, 4, 5]),
    ("h1", None, [1, 3, 5]),
    ("h2", None, [2, 4]),
    ("h3", None, []),
    (None, 2, [4, 5]),
    ("h1", 2, [3, 5]),
    ("h2", 10, [2, 4]),
    (None, 0, []),
])
def test_read_filters_host_and_limit(tmp_path, host, limit, expected):
    path = tmp_path / "operations.jsonl"
    path.write_text("".join(json.dumps(rec(host="h%d" % (2 - n % 2), after=n)) + "\n" for n in range(1, 6)))
    records, bad = _oplog.read(str(path), host=host, limit=limit)
    assert [r["after"] for r in records] == expected and bad == 0


def test_read_refuses_a_negative_limit(tmp_path):
    with pytest.raises(ValueError, match="limit"):
        _oplog.read(str(tmp_path / "x"), limit=-1)


def test_read_raises_other_errors(tmp_path):
    with pytest.raises(OSError):
        _oplog.read(str(tmp_path))  # a directory


@pytest.mark.parametrize("records, expected_after", [
    ([], None),
    ([rec(result="failed")], None),
    ([rec(action="job_cleanup")], None),
    ([rec(after=1, time="2026-12-02T10:00:00Z"), rec(after=2, time="2026-12-02T11:00:00Z")], 2),
    # the newest by time, not by line (a host whose clock was behind wrote later)
    ([rec(after=1, time="2026-12-02T12:00:00Z"), rec(after=2, time="2026-12-02T11:00:00Z")], 1),
    ([rec(after=1, time="2026-12-02T10:00:00Z"), rec(after=2, action="rollback", result="rolled_back",
                                                     time="2026-12-02T10:05:00Z")], 2),
    ([rec(after=1, action="autoscale"), rec(after=2, result="failed", time="2026-12-02T13:00:00Z")], 1),
    ([rec(after=1), rec(after=2, time="garbage"), rec(after=3, time=None)], 1),
    ([rec(after=1), rec(after=2)], 2),  # equal times: the later line
    ([rec(after=1, time="2026-12-02T10:00:00+00:00"), rec(after=2, time="2026-12-02T11:00:00+02:00")], 1),
])
def test_last_change(records, expected_after):
    found = _oplog.last_change(records)
    assert (found and found["after"]) == expected_after or (found is None and expected_after is None)


def test_last_change_with_other_actions():
    records = [rec(action="job_cleanup", after=7), rec(action="scale", after=1, time="2026-12-01T00:00:00Z")]
    assert _oplog.last_change(records, actions=("job_cleanup",))["after"] == 7


def test_the_fragment_documents_exactly_the_spec_options():
    spec = _oplog.argument_spec()
    assert_fragment_matches_spec("_oplog", spec)
    assert spec["operations_log"]["default"] == _oplog.DEFAULT_PATH


@pytest.mark.parametrize("operation, ok", [
    (None, True), ("scale", True), ("autoscale", True), ("job_cleanup", True), ("roll-back2", True),
    ("", False), (" ", False), ("scale now", False), ("a" * 65, False), ("x\n", False),
])
def test_check_options(operation, ok):
    if ok:
        _oplog.check_options({"operation": operation})
    else:
        with pytest.raises(ValueError, match="operation must be"):
            _oplog.check_options({"operation": operation})


def params(tmp_path, **over):
    out = {"operations_log": str(tmp_path / "ops.jsonl"), "operation": None, "operation_reason": "",
           "operation_actor": None}
    out.update(over)
    return out


def test_record_change_writes_the_masked_record_and_returns_it(tmp_path):
    p = params(tmp_path, operation_actor={"awx_job_id": "42", "awx_user_name": "alice", "user": None})
    record, error = _oplog.record_change(p, "scale", 2, 4, "replicas 2 -> 4 with pw hunter2", "changed",
                                         secrets={"hunter2"}, details={"x": 1}, host="h")
    assert error is None
    assert record["reason"] == "replicas 2 -> 4 with pw ********"
    assert record["actor"] == {"kind": "awx", "awx_job_id": "42", "user": "alice"}
    assert record["action"] == "scale" and record["details"] == {"x": 1}
    assert _oplog.read(p["operations_log"]) == ([record], 0)
    assert "hunter2" not in (tmp_path / "ops.jsonl").read_text()


def test_record_change_options_override(tmp_path):
    p = params(tmp_path, operation="autoscale", operation_reason="queue 40 deep for 10 min",
               operation_actor={"user": "bob"})
    record, _error = _oplog.record_change(p, "scale", 2, 4, "replicas 2 -> 4 requested", "changed", host="h")
    assert (record["action"], record["reason"], record["actor"]) == (
        "autoscale", "queue 40 deep for 10 min", {"kind": "controller", "user": "bob"})


def test_record_change_off_and_unwritable(tmp_path):
    assert _oplog.record_change(params(tmp_path, operations_log=""), "scale", 1, 2, "", "changed") == (None, None)
    blocker = tmp_path / "file"
    blocker.write_text("")
    warnings = []
    record, error = _oplog.record_change(params(tmp_path, operations_log=str(blocker / "ops.jsonl")), "scale", 1, 2,
                                         "", "changed", warn=warnings.append)
    assert record is None and "was not written" in error and "the scale itself stands" in error
    assert warnings == [error]


class FakeModule:
    def __init__(self, params, check_mode=False):
        self.params = params
        self.check_mode = check_mode
        self.no_log_values = {"pw-secret-1"}
        self.warnings = []
        self.actor_kind = "schedule"

    def warn(self, message):
        self.warnings.append(message)


class FakePlan:
    mode = "age"
    threshold_s = 86400


class FakeCleanup:
    plan = FakePlan()

    def __init__(self, done, candidates):
        self.done = done
        self.candidates = candidates


def test_cleanup_records_a_partial_failure_as_failed(tmp_path):
    module = FakeModule(params(tmp_path, max_jobs_listed=1))
    statuses = ((1, "queued"), (2, "started"), (3, "started"))
    cleanup = FakeCleanup([1, 2], [{"id": i, "previous_status": s} for i, s in statuses])
    out = {"failed": True, "msg": "batch 2 of 2 failed; password pw-secret-1", "failed_batch_outcome": "rolled back",
           "failed_batch_jobs": [3]}
    result = _cleanup.log_operation(module, out, cleanup)
    record = result["operation_record"]
    assert (record["result"], record["before"], record["after"]) == ("failed", {"queued": 1, "started": 1},
                                                                     {"failed": 2})
    assert record["actor"]["kind"] == "schedule"
    assert record["details"]["committed"] == 2 and record["details"]["job_ids"] == [1]
    assert record["details"]["jobs_truncated"] is True and record["details"]["failed_batch_jobs"] == [3]
    assert "pw-secret-1" not in (tmp_path / "ops.jsonl").read_text()
    # nothing committed and not uncertain: no record; check mode: no record
    assert _cleanup.log_operation(module, dict(out), FakeCleanup([], []))["operation_record"] is None
    check = FakeModule(params(tmp_path), check_mode=True)
    assert _cleanup.log_operation(check, {}, cleanup) == {"operation_record": None}
    assert len(_oplog.read(str(tmp_path / "ops.jsonl"))[0]) == 1


def test_cleanup_records_a_commit_of_unknown_outcome(tmp_path):
    module = FakeModule(params(tmp_path))
    out = {"failed": True, "msg": "lost during COMMIT", "failed_batch_outcome": "unknown", "failed_batch_jobs": [1]}
    record = _cleanup.log_operation(module, out, FakeCleanup([], [{"id": 1, "previous_status": "queued"}]))[
        "operation_record"]
    assert record["result"] == "failed" and record["details"]["failed_batch_outcome"] == "unknown"
