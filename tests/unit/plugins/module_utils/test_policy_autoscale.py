"""_policy.autoscale: the autoscaling decision on tables of cases (every rule and its boundary), the bounds' checks,
and repeated decisions over recorded oscillating load with a simulated operations log."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _metrics_log, _oplog, _policy, _queue

from tests.support.queue_answer import raw

ZONE = timezone(timedelta(hours=1))  # the host's local zone: the history's naive stamps are in it
NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=ZONE)
FAST = {"up_after_s": 600, "down_after_s": 1800, "cooldown_s": 900}


def facts(backlog=0, busy=0, oldest=None, failed=0, finished=20, stale=0):
    """Queue facts as qfc_queue_facts shapes them: ``busy`` started jobs, ``backlog`` startable projects."""
    answer = raw(by_status={"pending": backlog, "queued": 0, "started": busy}, useful_backlog=backlog,
                 eligible_projects=backlog, oldest_eligible_age_s=oldest if backlog else None,
                 last_hour_failed=failed, last_hour_finished=finished, stuck_stale=stale)
    return dict(_queue.shape(answer, 3600), worker_timeout_source="env")


def row(age, backlog=0, configured=2, busy=0, status="ok", now=NOW):
    """One collector row ``age`` seconds before ``now``, written and parsed as the metrics log does."""
    stamp = (now - timedelta(seconds=age)).astimezone(now.tzinfo).replace(tzinfo=None)
    if status != "ok":
        return _metrics_log.parse_line(_metrics_log.format_row(stamp, error="database down"))
    line = _metrics_log.format_row(stamp, facts(backlog, busy), {"configured": configured, "running": configured,
                                                                 "busy": busy})
    return _metrics_log.parse_line(line)


def every(step, until, **kwargs):
    """Rows every ``step`` seconds from age 0 to ``until`` (inclusive)."""
    return [row(age, **kwargs) for age in range(0, until + 1, step)]


def change(ago_s, before=2, after=3, action="autoscale", now=NOW):
    actor = _oplog.make_actor(user="tester")
    return _oplog.make_record(action, before, after, "test", "changed", actor, host="h",
                              now=now - timedelta(seconds=ago_s))


def decide(now=NOW, queue=None, workers=None, alerts=(), history=(), last=None, bounds=None, cores=8, **kw):
    queue = queue if queue is not None else facts()
    workers = workers if workers is not None else {"configured": 2, "running": 2, "busy": queue["by_status"]["started"]}
    return _policy.autoscale(now, queue, workers, list(alerts), list(history), last, dict(FAST, **(bounds or {})),
                             cores, **kw)


def alert(code, message="m"):
    return {"severity": "warning", "code": code, "message": message}


BURST = facts(backlog=18, busy=2, oldest=700.0)
IDLE = facts()
# (id, decide() arguments, action, target, words in the reason, alert)
CASES = [
    # --- up: jobs that free workers could start have waited for up_after
    ("up from history", dict(queue=BURST, history=every(300, 900, backlog=18, busy=2)), "up", 4,
     ["18 job(s) could start now", "from the history", "2 -> 4", "limited by step 2"], None),
    ("up exactly at up_after", dict(queue=BURST, history=every(300, 600, backlog=18, busy=2)), "up", 4,
     ["waited 600s"], None),
    ("history 1 s short of up_after", dict(queue=BURST, history=[
        row(0, 18, busy=2), row(300, 18, busy=2), row(599, 18, busy=2)]), "hold", 2,
     ["waiting 599s of the 600s up_after (history, ended by the start of the history)"], None),
    ("a sample without backlog ends the window", dict(queue=BURST, history=[
        row(0, 18, busy=2), row(300, 0, busy=2), row(600, 18, busy=2)]), "hold", 2, ["the sample at -300s"], None),
    ("a failed collector run is a gap", dict(queue=BURST, history=[
        row(0, 18, busy=2), row(300, status="error"), row(600, 18, busy=2)]), "hold", 2,
     ["a failed collector run at -300s"], None),
    ("a missing collector run is a gap", dict(queue=BURST, history=[
        row(0, 18, busy=2), row(300, 18, busy=2), row(900, 18, busy=2), row(1200, 18, busy=2)]), "hold", 2,
     ["a gap of 600s"], None),
    ("no history: the oldest job's age", dict(queue=BURST), "up", 4, ["waited 700s", "from the snapshot"], None),
    ("no history, exactly up_after", dict(queue=facts(18, 2, oldest=600.0)), "up", 4, ["waited 600s"], None),
    ("no history, younger than up_after", dict(queue=facts(18, 2, oldest=599.0)), "hold", 2,
     ["waiting 599s of the 600s up_after (no recent history: the oldest such job's age)"], None),
    ("stale history falls back to the snapshot", dict(queue=BURST, history=every(300, 900, backlog=18, busy=2)[2:]),
     "up", 4, ["from the snapshot"], None),
    ("history wins over an old job", dict(queue=BURST, history=[row(0, 18, busy=2), row(300, 0, busy=2)]), "hold",
     2, ["the sample at -300s"], None),
    ("the snapshot has no backlog now", dict(queue=facts(0, 2), history=every(300, 900, backlog=18, busy=2)), "hold",
     2, ["all 2 workers busy"], None),
    ("up_after 0: the snapshot alone", dict(queue=facts(3, 2, oldest=1.0), bounds={"up_after_s": 0}), "up", 4,
     ["waited 0s"], None),
    # --- up: the target (towards busy + backlog, step, bounds, core guard, hard ceiling)
    ("demand below a doubling", dict(queue=facts(1, 2, oldest=900.0)), "up", 3, ["2 busy + 1 waiting = 3 wanted"],
     None),
    ("doubling from 3", dict(queue=facts(20, 3, oldest=900.0), workers={"configured": 3, "running": 3, "busy": 3}),
     "up", 6, ["limited by step 3"], None),
    ("from 0 workers the step is 1", dict(queue=facts(5, 0, oldest=900.0), bounds={"min_replicas": 0},
                                          workers={"configured": 0, "running": 0, "busy": 0}), "up", 1, ["0 -> 1"],
     None),
    ("max_step_up 2", dict(queue=facts(20, 3, oldest=900.0), bounds={"max_step_up": 2},
                           workers={"configured": 3, "running": 3, "busy": 3}), "up", 5, ["limited by step 2"], None),
    ("max_replicas caps", dict(queue=facts(30, 8, oldest=900.0), bounds={"max_replicas": 10},
                               workers={"configured": 8, "running": 8, "busy": 8}), "up", 10,
     ["limited by ceiling 10, max_replicas 10"], None),
    ("at max_replicas", dict(queue=facts(30, 10, oldest=900.0), bounds={"max_replicas": 10},
                             workers={"configured": 10, "running": 10, "busy": 10}), "hold", 10,
     ["10 workers is the ceiling (max_replicas 10)"], None),
    ("core guard caps", dict(queue=facts(20, 4, oldest=900.0), cores=2,
                             workers={"configured": 4, "running": 4, "busy": 4}), "up", 5,
     ["the core guard (2 cores x 2.5 = 5)"], None),
    ("core guard with another per_core", dict(queue=facts(20, 4, oldest=900.0), cores=2, per_core=4,
                                              workers={"configured": 4, "running": 4, "busy": 4}), "up", 8,
     ["limited by step 4"], None),
    ("the hard ceiling of 100", dict(queue=facts(90, 80, oldest=900.0), cores=64,
                                     workers={"configured": 80, "running": 80, "busy": 80}), "up", 100,
     ["ceiling 100"], None),
    ("more workers would start nothing", dict(queue=facts(1, 1, oldest=900.0),
                                              workers={"configured": 3, "running": None, "busy": 1}), "hold", 3,
     ["1 busy + 1 waiting = 2 is no more than the 3 workers"], None),
    # --- investigate: a critical alert holds everything, others explain the waiting
    ("critical failure rate", dict(queue=BURST, alerts=[alert("failure_rate_high", "9 of 10 jobs failed")]),
     "investigate", 2, ["critical alert failure_rate_high: 9 of 10 jobs failed", "no change"], "failure_rate_high"),
    ("critical failure rate while idle", dict(queue=IDLE, history=every(300, 1800),
                                              alerts=[alert("failure_rate_high")]), "investigate", 2,
     ["failure_rate_high"], "failure_rate_high"),
    ("stale jobs explain the wait", dict(queue=BURST, alerts=[alert("stuck_stale")]), "investigate", 2,
     ["alert stuck_stale explains it"], "stuck_stale"),
    ("orphaned jobs explain the wait", dict(queue=BURST, alerts=[alert("stuck_orphaned_queued")]), "investigate",
     2, ["stuck_orphaned_queued"], "stuck_orphaned_queued"),
    ("idle workers explain the wait", dict(queue=BURST, alerts=[alert("workers_idle_with_jobs_waiting")]),
     "investigate", 2, ["workers_idle_with_jobs_waiting"], "workers_idle_with_jobs_waiting"),
    ("a warning does not stop an up", dict(queue=BURST, alerts=[alert("queue_depth_high")]), "up", 4, [], None),
    ("stuck jobs do not matter without a sustained wait", dict(queue=facts(18, 2, oldest=10.0),
                                                               alerts=[alert("stuck_stale")]), "hold", 2, [], None),
    # --- down: idle for down_after by the history
    ("down by one", dict(queue=IDLE, history=every(300, 1800), workers={"configured": 3, "running": 3, "busy": 0}),
     "down", 2, ["idle for 1800s (down_after 1800s", "3 -> 2"], None),
    ("down by max_step_down", dict(queue=IDLE, history=every(300, 1800, configured=5), bounds={"max_step_down": 3},
                                   workers={"configured": 5, "running": 5, "busy": 0}), "down", 2, ["5 -> 2"], None),
    ("never below the window's peak busy", dict(
        queue=IDLE, bounds={"max_step_down": 3}, workers={"configured": 5, "running": 5, "busy": 0},
        history=every(300, 1800, configured=5)[:3] + [row(900, configured=5, busy=3)]
        + every(300, 1800, configured=5)[4:]), "down", 3, ["busy at most 3 of 5", "5 -> 3"], None),
    ("never below min", dict(queue=IDLE, history=every(300, 1800, configured=3), bounds={"min_replicas": 3},
                             workers={"configured": 3, "running": 3, "busy": 0}), "hold", 3,
     ["3 workers is the floor (min_replicas 3)"], None),
    ("the peak leaves none to remove", dict(
        queue=IDLE, workers={"configured": 3, "running": 3, "busy": 0},
        history=[row(0, configured=3)] + every(300, 1800, configured=6, busy=4)[1:]), "hold", 3,
     ["the peak of 4 busy leaves none"], None),
    ("idle 1 s short of down_after", dict(queue=IDLE, history=every(300, 1500) + [row(1799)]), "hold", 2,
     ["idle for 1799s of the 1800s down_after"], None),
    ("a busy sample resets the idle window", dict(queue=IDLE, history=every(300, 1800)[:4] + [row(1200, busy=2)]
                                                  + every(300, 1800)[5:]), "hold", 2,
     ["idle for 900s", "the sample at -1200s"], None),
    ("an error row in the idle window", dict(queue=IDLE, history=every(300, 1800)[:2] + [row(600, status="error")]
                                             + every(300, 1800)[3:]), "hold", 2, ["a failed collector run at -600s"],
     None),
    ("no history: never down", dict(queue=IDLE), "hold", 2, ["needs the collector's history", "no recent history"],
     None),
    ("all busy now", dict(queue=facts(0, 2), history=every(300, 1800)), "hold", 2, ["all 2 workers busy"], None),
    ("down_after 0: the snapshot alone", dict(queue=IDLE, bounds={"down_after_s": 0}), "down", 1, ["2 -> 1"], None),
    # --- bounds: outside them now -> into them, whatever the cooldown
    ("below min", dict(queue=IDLE, bounds={"min_replicas": 3}, last=change(10)), "up", 3,
     ["2 workers is below min_replicas 3"], None),
    ("above max", dict(queue=IDLE, bounds={"max_replicas": 4}, last=change(10),
                       workers={"configured": 6, "running": 6, "busy": 0}), "down", 4, ["above max_replicas 4"],
     None),
    ("above the core guard", dict(queue=IDLE, cores=1, workers={"configured": 6, "running": 6, "busy": 0}),
     "down", 2, ["above the core guard (1 cores x 2.5 = 2)"], None),
    ("the core guard under min lowers the floor", dict(queue=IDLE, cores=2, bounds={"min_replicas": 8}), "up", 5,
     ["below min_replicas 5"], None),
    ("no configured count: the running one", dict(queue=BURST, workers={"configured": None, "running": 2, "busy": 2}),
     "up", 4, [], None),
    # --- cooldown
    ("within the cooldown", dict(queue=BURST, last=change(300)), "hold", 2,
     ["the last change (autoscale 2 -> 3, 300s ago) is within the cooldown of 900s", "another 600s"], None),
    ("a rollback starts the cooldown too", dict(queue=BURST, last=change(100, 3, 2, action="rollback")), "hold", 2,
     ["rollback 3 -> 2", "another 800s"], None),
    ("exactly at the cooldown's end", dict(queue=BURST, last=change(900)), "up", 4, [], None),
    ("a change stamped in the future", dict(queue=BURST, last=change(-60)), "hold", 2,
     ["stamped 60s in the future", "another 900s"], None),
    ("cooldown 0", dict(queue=BURST, last=change(1), bounds={"cooldown_s": 0}), "up", 4, [], None),
    ("the critical alert wins over the cooldown", dict(queue=BURST, last=change(1),
                                                       alerts=[alert("failure_rate_high")]), "investigate", 2, [],
     "failure_rate_high"),
]


@pytest.mark.parametrize("args, action, target, words, alert_code", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_decision_table(args, action, target, words, alert_code):
    got = decide(**args)
    assert (got["action"], got["target"], got["alert"]) == (action, target, alert_code), got["reason"]
    for word in words:
        assert word in got["reason"], (word, got["reason"])
    workers = args.get("workers") or {"configured": 2}
    assert got["current"] == (workers["configured"] if workers["configured"] is not None else workers["running"])
    if action in ("hold", "investigate"):
        assert got["target"] == got["current"]


def test_signals_name_the_figures():
    got = decide(queue=BURST, history=every(300, 900, backlog=18, busy=2), last=change(2000), cores=2)
    s = got["signals"]
    assert s["backlog_window"] == {"required_s": 600, "source": "history", "sustained_s": 900.0, "samples": 4,
                                   "ended_by": "the start of the history", "met": True}
    assert s["idle_window"]["met"] is False and s["idle_window"]["ended_by"] == "the current snapshot"
    assert s["cooldown"] == {"cooldown_s": 900, "since_last_change_s": 2000.0, "remaining_s": 0}
    assert s["limits"] == {"min_replicas": 1, "max_replicas": 100, "floor": 1, "ceiling": 5, "core_limit": 5,
                           "cores": 2, "per_core": 2.5, "hard_ceiling": 100, "max_step_up": None, "max_step_down": 1}
    assert s["history"] == {"samples": 4, "future_samples": 0, "interval_s": 300.0, "max_gap_s": 450.0,
                            "recent": True, "newest_age_s": 0.0}
    assert (s["current"], s["busy"], s["useful_backlog"]) == (2, 2, 18)


def test_history_stamps_are_read_in_the_zone_of_now():
    """The same instant in another zone with rows stamped in that zone's local time: the same decision."""
    for zone in (timezone.utc, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30))):
        now = NOW.astimezone(zone)
        history = [row(age, 18, busy=2, now=now) for age in (0, 300, 600)]
        got = decide(now=now, queue=BURST, history=history, last=change(1000))
        assert (got["action"], got["target"], got["signals"]["backlog_window"]["sustained_s"]) == ("up", 4, 600.0)
    # Rows stamped after now (a clock step) prove nothing and are counted
    got = decide(queue=BURST, history=[row(-600, 18, busy=2), row(0, 18, busy=2)], bounds={"up_after_s": 300})
    assert got["action"] == "hold" and got["signals"]["history"]["future_samples"] == 1


def test_the_metrics_log_parse_result_is_accepted():
    text = "".join(_metrics_log.format_row((NOW - timedelta(seconds=a)).replace(tzinfo=None), facts(0, 0),
                                           {"configured": 3, "running": 3, "busy": 0}) for a in range(0, 1801, 300))
    got = decide(queue=IDLE, history=[], workers={"configured": 3, "running": 3, "busy": 0})
    assert got["action"] == "hold"
    parsed = _metrics_log.parse(text)
    got = _policy.autoscale(NOW, IDLE, {"configured": 3, "running": 3, "busy": 0}, [], parsed, None, FAST, 8)
    assert (got["action"], got["target"]) == ("down", 2)


@pytest.mark.parametrize("bounds, words", [
    ({"min_replicas": 5, "max_replicas": 4}, "min_replicas (5) is above max_replicas (4)"),
    ({"min_replicas": -1}, "min_replicas must be 0 to 100, got -1"),
    ({"max_replicas": 0}, "max_replicas must be 1 to 100, got 0"),
    ({"max_replicas": 101}, "max_replicas must be 1 to 100, got 101"),
    ({"min_replicas": 1.5}, "min_replicas must be a whole number, got 1.5"),
    ({"max_replicas": "10"}, "max_replicas must be a whole number, got '10'"),
    ({"max_step_down": True}, "max_step_down must be a whole number, got True"),
    ({"max_step_down": 0}, "max_step_down must be 1 to 100, got 0"),
    ({"max_step_up": 0}, "max_step_up must be 1 to 100, got 0"),
    ({"up_after_s": -1}, "up_after_s must be at least 0 s"),
    ({"cooldown_s": "15m"}, "cooldown_s must be a number, got '15m'"),
    ({"down_after_s": float("nan")}, "down_after_s must be a finite number"),
    ({"down_after_s": 8 * 86400}, "down_after_s must be at least 0 s and at most 604800 s"),
    ({"cooldown": 900}, "unknown autoscale bounds: cooldown (known: "),
])
def test_bad_bounds_are_refused_clearly(bounds, words):
    with pytest.raises(ValueError) as info:
        _policy.check_bounds(bounds)
    assert words in str(info.value)
    with pytest.raises(ValueError):
        decide(queue=BURST, bounds=bounds)


def test_bounds_defaults_and_none():
    assert _policy.check_bounds(None) == _policy.AUTOSCALE_DEFAULTS
    merged = _policy.check_bounds({"max_step_up": None, "min_replicas": None, "max_replicas": 7, "cooldown_s": 0})
    assert merged == dict(_policy.AUTOSCALE_DEFAULTS, max_replicas=7, cooldown_s=0)


def test_now_and_the_worker_count_must_be_known():
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        decide(now=NOW.replace(tzinfo=None), queue=BURST)
    with pytest.raises(ValueError, match="the worker count is unknown"):
        decide(queue=BURST, workers={"configured": None, "running": None, "busy": 0})


def test_record_time_reads_the_operations_log():
    record = change(0)
    assert _policy.record_time(record) == _oplog.parse_time(record["time"]) == NOW.astimezone(timezone.utc)
    assert _policy.record_time({"time": NOW}) == NOW
    with pytest.raises(ValueError):
        _policy.record_time({"time": "yesterday"})


def simulate(pattern, bounds, ticks, step_s=300, projects=20):
    """Collector every ``step_s`` and a decision right after each sample, over ``ticks`` samples; ``pattern(i)``
    is the number of jobs wanted at sample i. Changes are applied at once and recorded in a simulated operations
    log (the last change feeds the next decisions). Returns (changes, counts seen)."""
    start = NOW - timedelta(seconds=step_s * ticks)
    configured, history, oplog, counts = 2, [], [], []
    for i in range(ticks):
        now = start + timedelta(seconds=step_s * i)
        wanted = pattern(i)
        busy = min(configured, wanted)
        queue = facts(min(wanted - busy, projects), busy, oldest=float(step_s))
        workers = {"configured": configured, "running": configured, "busy": busy}
        history.append(_metrics_log.parse_line(_metrics_log.format_row(now.replace(tzinfo=None), queue, workers)))
        got = _policy.autoscale(now, queue, workers, [], history, _oplog.last_change(oplog), bounds, 8)
        if got["action"] in ("up", "down"):
            oplog.append(_oplog.make_record("autoscale", configured, got["target"], got["reason"], "changed",
                                            _oplog.make_actor(user="sim"), host="h", now=now))
            configured = got["target"]
        counts.append(configured)
    return len(oplog), counts


def test_oscillating_load_changes_a_bounded_number_of_times():
    """8 hours of load that swings every 10 minutes between 20 jobs and none. Acting on the snapshot (up_after 0,
    a short down_after), the count would follow every swing; the cooldown bounds the changes by duration/cooldown."""
    ticks, step = 96, 300  # 8 h of 5-minute samples

    def swing(i):
        return 20 if (i // 2) % 2 == 0 else 0

    eager = dict(up_after_s=0, down_after_s=300, cooldown_s=0, max_step_down=10, min_replicas=1, max_replicas=10)
    unbounded, _counts = simulate(swing, eager, ticks)
    bounded, counts = simulate(swing, dict(eager, cooldown_s=900), ticks)
    limit = ticks * step // 900 + 1
    assert unbounded > limit, "without a cooldown the swing must make more changes than the bound (test's premise)"
    assert 0 < bounded <= limit
    assert all(1 <= c <= 10 for c in counts)


def test_load_that_flips_every_sample_never_changes_with_the_defaults():
    changes, counts = simulate(lambda i: 20 if i % 2 else 0, dict(_policy.AUTOSCALE_DEFAULTS, max_replicas=10), 96)
    assert changes == 0 and set(counts) == {2}


def test_sustained_load_rises_step_by_step_and_drains_one_at_a_time():
    """Two hours of 20 jobs, then two idle hours: up in doublings no closer than the cooldown, down one worker per
    cooldown after down_after, never below min."""
    changes, counts = simulate(lambda i: 20 if i < 24 else 0, dict(_policy.AUTOSCALE_DEFAULTS, max_replicas=10),
                               48)
    rises = [b for a, b in zip(counts, counts[1:]) if b > a]
    falls = [(a, b) for a, b in zip(counts, counts[1:]) if b < a]
    assert rises == [4, 8, 10]
    assert all(a - b == 1 for a, b in falls) and min(counts) >= 1
    assert counts[24 + 5] == 10  # idle for less than down_after (1800 s = 6 samples): no change yet
    assert changes == len(rises) + len(falls)
