"""The operations log against what a file can hold and what a directory can hide (issue 21, defects 1, 6 and 11):
every line is a record or a counted bad line, never an exception; the cooldown's read is the end of the file only; an
append never goes through a symbolic link nor into a directory someone else could write."""

from __future__ import annotations

import errno
import json
import os
import pwd
import random
import sys

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _oplog
from ansible_collections.qfieldcloud.ops.plugins.modules import qfc_autoscale_decision as decision

# The record of issue 21: valid JSON, but its time is before year 1 once in UTC (astimezone raised OverflowError).
YEAR_ZERO = b'{"time": "0001-01-01T00:00:00+01:00", "action": "scale", "before": 1, "after": 2, "result": "changed"}'

BAD_LINES = [
    b"[" * 100_000,                                   # RecursionError in json
    b"{" + b'"a": [' * 100_000,                       # the same inside an object
    b'{"a": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}",  # parses, but deeper than any record
    b"\xff\xfe{}",                                    # not UTF-8
    b'{"reason": "caf\xe9"}',                         # Latin-1, not UTF-8
    b"\x00",
    b'{"a": 1}\x00',
    b'{"a": 1e400}',                                  # json would make it inf
    b'{"a": -1e400}',
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'{"a": -Infinity}',
    b'{"a": ' + b"9" * 5000 + b"}",                   # beyond int's digit limit (3.11, 3.10.7, 3.9.14 ...)
    b'{"a": 1} {"b": 2}',
    b'{"torn": ',
    b"[1, 2]",
    b'"a string"',
    b"null",
    b"12",
    b"true",
    b"}",
    b"\x1b[31m{}",
]
if not hasattr(sys, "get_int_max_str_digits"):
    BAD_LINES.remove(b'{"a": ' + b"9" * 5000 + b"}")  # an older Python reads it as a (big, valid) int

# Records that parse but whose fields are nonsense: kept by read (a JSON object is a record), ignored by last_change.
ODD_RECORDS = [
    YEAR_ZERO,
    b'{"time": "9999-12-31T23:59:59-01:00", "action": "scale", "result": "changed"}',
    b'{"time": 5, "action": ["scale"], "result": {"changed": 1}}',
    b'{"time": ["2026-12-02T10:00:00Z"], "action": "scale", "result": "changed"}',
    b'{"time": "2026-12-02T10:00:00Z", "action": {"scale": 1}, "result": "changed"}',
    b'{"time": "2026-12-02T10:00:00Z", "action": "scale", "result": null}',
    b'{"time": "2026-13-45T99:00:00Z", "action": "scale", "result": "changed"}',
    b'{"time": "' + b"9" * 10_000 + b'", "action": "scale", "result": "changed"}',
    b'{"reason": "\\ud800 lone surrogate", "time": "\\udc00"}',
    b"{}",
]


def rec(after, time="2026-12-02T10:00:00Z", action="scale", result="changed", **extra):
    out = {"time": time, "host": "h1", "action": action, "before": after - 1, "after": after, "reason": "",
           "actor": {"kind": "controller", "user": "u"}, "result": result}
    out.update(extra)
    return out


def line(record):
    return json.dumps(record).encode() + b"\n"


def assert_printable(record):
    """What a module returns must survive Ansible's JSON output and any renderer."""
    json.dumps(record, allow_nan=False).encode("utf-8")
    assert _depth(record) <= _oplog.MAX_DEPTH


def _depth(value):
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize("raw", BAD_LINES, ids=range(len(BAD_LINES)))
def test_every_bad_line_is_a_value_error(raw):
    with pytest.raises(ValueError):
        _oplog.parse_line(raw)


@pytest.mark.parametrize("raw", ODD_RECORDS, ids=range(len(ODD_RECORDS)))
def test_odd_records_parse_print_and_are_no_change(raw):
    record = _oplog.parse_line(raw)
    assert isinstance(record, dict)
    assert_printable(record)
    assert _oplog.last_change([record]) is None


def test_the_year_zero_time_is_a_value_error():
    with pytest.raises(ValueError, match="out of range"):
        _oplog.parse_time("0001-01-01T00:00:00+01:00")
    with pytest.raises(ValueError, match="out of range"):
        _oplog.parse_time("9999-12-31T23:59:59-01:00")


def test_a_lone_surrogate_becomes_the_replacement_character():
    assert _oplog.parse_line(b'{"r": "a\\ud800b", "ok": "\\ud83d\\ude00"}') == {"r": "a\ufffdb", "ok": "\U0001F600"}


def mutations(seed, count):
    """Lines a broken disk, a bad edit or a hostile user could leave: a real line with bytes flipped, cut, repeated or
    inserted, and random bytes."""
    rnd = random.Random(seed)
    base = [line(rec(3, reason="x", details={"jobs": [{"id": "j1", "s": [1, 2.5, None, True]}]}))[:-1], YEAR_ZERO]
    specials = [b"[", b"{", b"]", b"}", b'"', b"\\", b"\\u", b"\\ud800", b"\x00", b"\xff", b"\xc3", b"1e999",
                b"NaN", b"-Infinity", b",", b":", b"\r", b" ", b"\t", b"9" * 50]
    for _line in range(count):
        data = bytearray(rnd.choice(base))
        for _edit in range(rnd.randint(1, 6)):
            op, at = rnd.randrange(5), rnd.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(at, len(data) - 1)] = rnd.randrange(256)
            elif op == 1:
                data[at:at] = rnd.choice(specials) * rnd.choice((1, 1, 2, 50))
            elif op == 2:
                del data[at:at + rnd.randint(1, 20)]
            elif op == 3:
                data = data[:at]
            else:
                data[at:at] = bytes(rnd.randrange(256) for _byte in range(rnd.randint(1, 8)))
        yield bytes(data).replace(b"\n", b" ")
    for _line in range(count // 4):
        yield bytes(rnd.randrange(256) for _byte in range(rnd.randint(0, 64))).replace(b"\n", b"")


def test_fuzzed_lines_parse_or_raise_value_error_only():
    seen = {"records": 0, "bad": 0}
    for raw in mutations(21, 3000):
        try:
            record = _oplog.parse_line(raw)
        except ValueError:
            seen["bad"] += 1
            continue
        if record is not None:
            seen["records"] += 1
            assert isinstance(record, dict)
            assert_printable(record)
            _oplog.last_change([record])
    assert seen["records"] > 50 and seen["bad"] > 1000, seen  # both paths were exercised


def test_read_and_the_cooldown_read_skip_and_count_every_bad_line(tmp_path):
    path = tmp_path / "operations.jsonl"
    fuzz = list(mutations(7, 300))
    with open(path, "wb") as handle:
        handle.write(line(rec(1, time="2026-12-02T09:00:00Z")))
        for raw in BAD_LINES + ODD_RECORDS + fuzz:
            handle.write(raw + b"\n")
        handle.write(line(rec(2, time="2026-12-02T10:00:00Z")))
        handle.write(b"\n   \n")
        handle.write(YEAR_ZERO + b"\n" + b"[" * 100_000 + b"\n")
        handle.write(json.dumps(rec(3, action="job_cleanup")).encode())  # the last line, no newline
    expected_bad = len(BAD_LINES) + 1
    for raw in fuzz:
        try:
            _oplog.parse_line(raw)
        except ValueError:
            expected_bad += 1

    records, bad = _oplog.read(str(path))
    assert bad == expected_bad
    assert records[0]["after"] == 1 and records[-1]["after"] == 3
    for record in records:
        assert_printable(record)
    assert _oplog.last_change(records)["after"] == 2

    warnings = []
    assert _oplog.last_recorded_change(str(path), warnings.append)["after"] == 2
    assert warnings == ["%d unreadable line(s) in the operations log %s were skipped" % (expected_bad, path)]


def test_a_huge_limit_is_no_overflow(tmp_path):
    path = tmp_path / "operations.jsonl"
    path.write_bytes(line(rec(1)) + line(rec(2)))
    assert [r["after"] for r in _oplog.read(str(path), limit=10 ** 20)[0]] == [1, 2]


# --- reading from the end (defect 11)

class Counting:
    """A file object that counts the bytes read through it."""

    def __init__(self, handle, tally):
        self.handle, self.tally = handle, tally

    def read(self, size=-1):
        data = self.handle.read(size)
        self.tally.append(len(data))
        return data

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


@pytest.fixture
def tally(monkeypatch):
    counts = []
    real = _oplog._open_regular

    def counting(path):
        handle = real(path)
        return None if handle is None else Counting(handle, counts)
    monkeypatch.setattr(_oplog, "_open_regular", counting)
    return counts


@pytest.mark.parametrize("content", [
    b"", b"\n", b"a", b"a\n", b"a\nb", b"a\nb\n", b"\n\n\n", b"one\ntwo\nthree\n" * 50,
    b"x" * 1000 + b"\n" + b"y" * 3 + b"\n" + b"z" * 777,
])
@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 100_000])
def test_lines_from_end_gives_every_line_newest_first(tmp_path, content, chunk):
    path = tmp_path / "f"
    path.write_bytes(content)
    with open(path, "rb") as handle:
        got = list(_oplog.lines_from_end(handle, chunk=chunk))
    assert got[::-1] == content.split(b"\n")


def test_lines_from_end_stops_at_the_cap_and_drops_the_cut_line(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"".join(b"line %04d\n" % n for n in range(1000)))  # 10 bytes a line
    with open(path, "rb") as handle:
        got = list(_oplog.lines_from_end(handle, max_bytes=95, chunk=7))
    assert got == [b""] + [b"line %04d" % n for n in range(999, 990, -1)]  # 9 whole lines; the cut one left out


def write_log(path, count, change_at=None, action="job_cleanup"):
    """``count`` records a minute apart, ~330 bytes each; the one at ``change_at`` a scale change."""
    with open(path, "wb") as handle:
        for n in range(count):
            stamp = "2026-12-%02dT%02d:%02d:00Z" % (1 + n // 1440, n // 60 % 24, n % 60)
            kind = "scale" if n == change_at else action
            handle.write(line(rec(n, time=stamp, action=kind, details={"job_ids": ["%032d" % n] * 3})))


def test_the_cooldown_read_reads_the_end_only(tmp_path, tally):
    path = tmp_path / "operations.jsonl"
    write_log(path, 30_000, change_at=29_990)  # ~10 MB
    size = path.stat().st_size
    assert _oplog.last_recorded_change(str(path), max_bytes=256 * 1024)["after"] == 29_990
    assert 0 < sum(tally) <= 256 * 1024 < size / 30


def test_a_change_older_than_the_window_is_no_recent_change(tmp_path):
    path = tmp_path / "operations.jsonl"
    write_log(path, 3000, change_at=10)  # ~1 MB, the change near its start
    assert _oplog.last_recorded_change(str(path), max_bytes=64 * 1024) is None
    assert _oplog.last_recorded_change(str(path), max_bytes=None)["after"] == 10
    # then the rotation is read too: whatever change it holds is older still, so it can only lengthen a hold
    rotated = tmp_path / "operations.jsonl.1"
    write_log(rotated, 5, change_at=4)
    assert _oplog.last_recorded_change(str(path), max_bytes=64 * 1024)["after"] == 4


def test_the_default_window_is_16_mib_and_holds_tens_of_thousands_of_records(tmp_path, tally):
    path = tmp_path / "operations.jsonl"
    write_log(path, 60_000, change_at=0)  # ~20 MB after the change
    size = path.stat().st_size
    per_record = size // 60_000
    assert size > _oplog.TAIL_MAX_BYTES + 1_000_000 and _oplog.TAIL_MAX_BYTES // per_record > 40_000
    assert _oplog.last_recorded_change(str(path)) is None  # older than the window: no recent change
    assert sum(tally) <= _oplog.TAIL_MAX_BYTES
    assert decision.last_recorded_change(str(path), print) is None  # the module's read is this one
    write_log(path, 60_000, change_at=15_000)  # 45,000 records before the end: inside the window
    assert _oplog.last_recorded_change(str(path))["after"] == 15_000


def test_a_short_limit_reads_only_the_end(tmp_path, tally):
    path = tmp_path / "operations.jsonl"
    write_log(path, 10_000)
    records, bad = _oplog.read(str(path), limit=3)
    assert [r["after"] for r in records] == [9997, 9998, 9999] and bad == 0
    assert sum(tally) <= _oplog.TAIL_CHUNK
    tally.clear()
    assert len(_oplog.read(str(path))[0]) == 10_000 and sum(tally) == path.stat().st_size


def test_ties_go_to_the_later_line_in_the_cooldown_read_too(tmp_path):
    path = tmp_path / "operations.jsonl"
    path.write_bytes(line(rec(1)) + line(rec(2)) + line(rec(3, time="2026-12-01T00:00:00Z")))
    assert _oplog.last_recorded_change(str(path))["after"] == 2
    assert _oplog.last_change(_oplog.read(str(path))[0])["after"] == 2


def test_the_cooldown_read_refuses_what_is_not_a_file(tmp_path):
    fifo = tmp_path / "operations.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):  # and no hang on the FIFO
        _oplog.last_recorded_change(str(fifo))
    with pytest.raises(OSError, match="not a regular file"):
        _oplog.read(str(fifo))


# --- appends never follow a link nor trust someone else's directory (defect 6)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def nobody():
    return pwd.getpwnam("nobody")


@pytest.fixture
def secret(tmp_path):
    """A root-owned 0600 file outside the log's directory, as /etc/shadow would be."""
    target = tmp_path / "secret"
    target.write_bytes(b"root only\n")
    target.chmod(0o600)
    return target


@needs_root
def test_a_symlink_in_a_directory_owned_by_nobody_is_never_written_through(tmp_path, secret):
    # issue 21's repro: a root append wrote into the link's root-owned 0600 target
    logdir = tmp_path / "log"
    logdir.mkdir()
    os.chown(logdir, nobody().pw_uid, nobody().pw_gid)
    (logdir / "operations.jsonl").symlink_to(secret)
    with pytest.raises(OSError):
        _oplog.append(str(logdir / "operations.jsonl"), rec(1))
    assert secret.read_bytes() == b"root only\n"


def test_a_symlink_is_refused_even_in_a_safe_directory(tmp_path, secret):
    link = tmp_path / "operations.jsonl"
    link.symlink_to(secret)
    with pytest.raises(OSError, match="symbolic link") as caught:
        _oplog.append(str(link), rec(1))
    assert caught.value.errno == errno.ELOOP
    assert secret.read_bytes() == b"root only\n" and link.is_symlink()


def test_a_dangling_symlink_creates_nothing(tmp_path):
    link = tmp_path / "operations.jsonl"
    link.symlink_to(tmp_path / "elsewhere" / "created.jsonl")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(OSError, match="symbolic link"):
        _oplog.append(str(link), rec(1))
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_hard_linked_log_is_refused(tmp_path, secret):
    log = tmp_path / "operations.jsonl"
    os.link(secret, log)
    with pytest.raises(OSError, match="2 hard links"):
        _oplog.append(str(log), rec(1))
    assert secret.read_bytes() == b"root only\n"


@needs_root
@pytest.mark.parametrize("how, message", [
    ("owned by nobody", "is owned by uid"),
    ("mode 0777", "writable by every user"),
    ("mode 1777", "writable by every user"),
    ("group nobody's, 0775", "writable by group"),
])
def test_a_directory_someone_else_can_write_is_refused(tmp_path, how, message):
    logdir = tmp_path / "log"
    logdir.mkdir()
    log = logdir / "operations.jsonl"
    for existing in (False, True):
        if existing:
            log.write_bytes(line(rec(1)))
        if how == "owned by nobody":
            os.chown(logdir, nobody().pw_uid, nobody().pw_gid)
        elif how.startswith("mode"):
            logdir.chmod(int(how.split()[1], 8))
        else:
            os.chown(logdir, 0, nobody().pw_gid)
            logdir.chmod(0o775)
        with pytest.raises(OSError, match=message):
            _oplog.append(str(log), rec(2))
        assert log.exists() is existing and (not existing or log.read_bytes() == line(rec(1)))


@needs_root
def test_the_owners_own_directory_is_written(tmp_path):
    # a log that belongs to its directory's owner (a non-root writer's own log) is that owner's to keep
    logdir = tmp_path / "log"
    logdir.mkdir()
    log = logdir / "operations.jsonl"
    log.write_bytes(line(rec(1)))
    for path in (logdir, log):
        os.chown(path, nobody().pw_uid, nobody().pw_gid)
    _oplog.append(str(log), rec(2))
    assert [r["after"] for r in _oplog.read(str(log))[0]] == [1, 2]


def test_record_change_through_a_symlink_warns_and_the_change_stands(tmp_path, secret):
    link = tmp_path / "operations.jsonl"
    link.symlink_to(secret)
    warnings = []
    params = {"operations_log": str(link), "operation": None, "operation_reason": "", "operation_actor": None}
    record, error = _oplog.record_change(params, "scale", 1, 2, "", "changed", warn=warnings.append)
    assert record is None and warnings == [error]
    assert "was not written" in error and "symbolic link" in error and "the scale itself stands" in error
    assert secret.read_bytes() == b"root only\n"
