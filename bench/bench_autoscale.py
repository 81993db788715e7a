"""Does the autoscaler drain a burst faster than the fixed starting count, and what does a run that changes nothing
cost? On the worker simulator (tests/fixtures/worker_sim, dequeuing like upstream) against a throwaway PostgreSQL:

1. a burst of ``--jobs`` one-second jobs over ``--projects`` projects, drained by the fixed starting count
   (``--start`` workers, nothing runs);
2. the same burst with ``playbooks/autoscale.yml`` run on a one-minute schedule (at t = 0, 60, 120 ... s after the
   burst lands, while the queue drains), with the parameters a one-minute schedule calls for (printed);
3. the cost of one no-op autoscale run (the decision holds) against ``playbooks/scale.yml``'s no-op (the same count
   again), alternating rounds on the same stack, both with their health gate.

    .venv/bin/python bench/bench_autoscale.py [--repeat 3] [--rounds 5] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench._docs import ensure_collection_link, write_section  # noqa: E402
from tests.support import datagen  # noqa: E402
from tests.support.pgcluster import PgCluster  # noqa: E402
from tests.support.project import copy_project  # noqa: E402

BIN = Path(sys.executable).parent
MARK = ("<!-- bench_autoscale:begin -->", "<!-- bench_autoscale:end -->")
DECISION = re.compile(r"autoscale (UP|DOWN|HOLD|INVESTIGATE): \S+ (\d+) -> (\d+)")
TARGET = 1.8


def env():
    return dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                PATH="%s:%s" % (BIN, os.environ["PATH"]))


def playbook_cmd(name, inventory, extra):
    return [str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / name), "-i", str(inventory),
            "-e", json.dumps(extra)]


def timed(name, inventory, extra):
    start = time.perf_counter()
    proc = subprocess.run(playbook_cmd(name, inventory, extra), cwd=ROOT, env=env(), capture_output=True, text=True,
                          check=False, timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit("%s failed:\n%s" % (name, proc.stdout[-3000:] + proc.stderr[-2000:]))
    return elapsed, proc.stdout


def live(conn):
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM core_job WHERE status IN ('pending', 'queued', 'started')")
        return cur.fetchone()[0]


def set_workers(project_src, n):
    env_file = project_src / ".env"
    key = "QFIELDCLOUD_WORKER_REPLICAS="
    lines = env_file.read_text().splitlines(keepends=True)
    env_file.write_text("".join("%s%d\n" % (key, n) if line.startswith(key) else line for line in lines))
    subprocess.run(["docker", "compose", "up", "-d", "--wait"], cwd=project_src, check=True, capture_output=True)


def queue_burst(conn, projects, user, jobs):
    for i in range(jobs):
        datagen.add_job(conn, projects[i % len(projects)], user, "pending")


def drain(conn, projects, user, jobs, inventory=None, extra=None, every=60.0):
    """Seconds until the burst is drained; with ``inventory``, autoscale.yml runs at t = 0, every, 2 every ... while
    the queue drains (one at a time: a run still going when the next is due delays it). Returns (seconds, runs) with
    runs = [(start s, end s, decision)]."""
    queue_burst(conn, projects, user, jobs)
    start = time.perf_counter()
    runs, proc, began, due = [], None, 0.0, 0.0
    drained = None
    while True:
        now = time.perf_counter() - start
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read()
            if proc.returncode != 0:
                raise SystemExit("autoscale.yml failed:\n%s" % out[-3000:])
            match = DECISION.search(out)
            runs.append((began, now, "%s %s -> %s" % match.groups() if match else "?"))
            proc = None
        if drained is None and live(conn) == 0:
            drained = now
        if drained is not None:
            if proc is None:
                return drained, runs
        elif inventory is not None and proc is None and now >= due:
            began, due = now, due + every
            proc = subprocess.Popen(playbook_cmd("autoscale.yml", inventory, extra), cwd=ROOT, env=env(),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--projects", type=int, default=20)
    parser.add_argument("--job-seconds", type=float, default=1.0)
    parser.add_argument("--start", type=int, default=1, help="the fixed starting worker count")
    parser.add_argument("--max", type=int, default=5, help="qfc_autoscale_max_replicas")
    parser.add_argument("--step-up", type=int, default=4, help="qfc_autoscale_max_step_up (0: double)")
    parser.add_argument("--every", type=float, default=60.0, help="seconds between two autoscale runs")
    parser.add_argument("--repeat", type=int, default=3, help="fixed/autoscaled drain pairs")
    parser.add_argument("--rounds", type=int, default=5, help="no-op rounds (each: autoscale.yml, scale.yml)")
    parser.add_argument("--write", action="store_true")
    opts = parser.parse_args()
    ensure_collection_link()
    work = Path(tempfile.mkdtemp(prefix="qfc-autoscale-"))
    project_src = work / "qfieldcloud"
    oplog = work / "operations.jsonl"
    inventory = work / "inventory.yml"
    # A one-minute schedule: act on the queue as it is (up_after 0: there is no recorded history to wait for),
    # no cooldown between two runs a minute apart, up to --max workers (the core guard: 2.5 per core), up to
    # --step-up at a time.
    autoscale = {"qfc_autoscale_up_after": 0, "qfc_autoscale_cooldown": 0, "qfc_autoscale_min_replicas": opts.start,
                 "qfc_autoscale_max_replicas": opts.max, "qfc_autoscale_max_step_up": opts.step_up or None}
    inventory.write_text("qfieldcloud:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                         "      ansible_python_interpreter: %s\n      qfc_project_src: %s\n"
                         "      qfc_operations_log: %s\n      qfc_autoscale_metrics_log: %s\n"
                         % (sys.executable, project_src, oplog, work / "queue_metrics.log"))
    fixed, scaled, runs_seen, doubled, runs_doubled = [], [], [], [], []
    # The policy's own default step (double) for contrast: from 1 worker the first run reaches 2.
    doubling = dict(autoscale, qfc_autoscale_max_step_up=None)
    noop = {"autoscale.yml": [], "scale.yml": []}
    with PgCluster() as pg:
        pg.load_schema()
        conn = pg.connect()
        (user,) = datagen.make_users(conn, 1)
        projects = datagen.make_projects(conn, "project_project", opts.projects, user)
        settings = {"COMPOSE_PROJECT_NAME": "qfcas%s" % uuid.uuid4().hex[:6], "POSTGRES_PORT": pg.port,
                    "POSTGRES_PASSWORD": pg.password, "POSTGRES_SSLMODE": "disable",
                    "QFC_SIM_DIR": ROOT / "tests" / "fixtures" / "worker_sim", "QFC_SIM_POLL_S": "0.2",
                    "QFC_SIM_JOB_S": opts.job_seconds, "QFIELDCLOUD_WORKER_REPLICAS": opts.start}
        copy_project(ROOT / "tests" / "fixtures" / "stack-db", project_src, settings)
        try:
            subprocess.run(["docker", "compose", "up", "-d", "--wait"], cwd=project_src, check=True,
                           capture_output=True)
            for _round in range(opts.repeat):
                set_workers(project_src, opts.start)
                fixed.append(drain(conn, projects, user, opts.jobs)[0])
                seconds, runs = drain(conn, projects, user, opts.jobs, inventory, autoscale, opts.every)
                scaled.append(seconds)
                runs_seen.append(runs)
                if opts.step_up:
                    set_workers(project_src, opts.start)
                    seconds, runs = drain(conn, projects, user, opts.jobs, inventory, doubling, opts.every)
                    doubled.append(seconds)
                    runs_doubled.append(runs)
            # No-op runs: the queue is empty, nothing in the cooldown; both keep the current count.
            count = int(re.search(r"^QFIELDCLOUD_WORKER_REPLICAS=(\d+)", (project_src / ".env").read_text(),
                                  re.M).group(1))
            for _round in range(opts.rounds):
                seconds, out = timed("autoscale.yml", inventory, autoscale)
                assert "autoscale HOLD" in out, out[-2000:]
                noop["autoscale.yml"].append(seconds)
                noop["scale.yml"].append(timed("scale.yml", inventory, {"qfc_worker_replicas": count})[0])
        finally:
            subprocess.run(["docker", "compose", "down", "--timeout", "5"], cwd=project_src, check=False,
                           capture_output=True)
            conn.close()
            shutil.rmtree(work, ignore_errors=True)
    med_fixed, med_scaled = statistics.median(fixed), statistics.median(scaled)
    ratio = med_fixed / med_scaled
    med_noop = {k: statistics.median(v) for k, v in noop.items()}
    noop_ratio = med_noop["autoscale.yml"] / med_noop["scale.yml"]
    table = "\n".join([
        MARK[0],
        "## Autoscaling a burst",
        "",
        "`bench/bench_autoscale.py` (see [autoscale.md](autoscale.md)).",
        "",
        "Measured %s, %d cores: a burst of %d jobs of %.1f s over %d projects, simulated workers on a throwaway "
        "PostgreSQL; median of %d pairs. Fixed count: %d worker(s). Autoscaled: `playbooks/autoscale.yml` at t = 0, "
        "%g, %g ... s after the burst lands, with `qfc_autoscale_up_after: 0` (a one-minute schedule has no "
        "recorded history to wait for), `qfc_autoscale_cooldown: 0`, `qfc_autoscale_min_replicas: %d`, "
        "`qfc_autoscale_max_replicas: %d` (the core guard, 2.5 per core), `qfc_autoscale_max_step_up: %s`; the "
        "scale role's defaults (health gates, 1 s settle). The first run starting as the burst lands is the best "
        "case: on a real schedule it starts up to a minute later."
        % (time.strftime("%Y-%m-%d"), os.cpu_count(), opts.jobs, opts.job_seconds, opts.projects, opts.repeat,
           opts.start, opts.every, 2 * opts.every, opts.start, opts.max, opts.step_up or "null (double)"),
        "",
        "| drain | median | runs |",
        "|---|---|---|",
        "| fixed %d worker(s) | %.1f s | %s |" % (opts.start, med_fixed, ", ".join("%.1f" % s for s in fixed)),
        "| autoscaled (max_step_up %s) | %.1f s | %s |"
        % (opts.step_up or "null", med_scaled, ", ".join("%.1f" % s for s in scaled)),
    ] + ([
        "| autoscaled (max_step_up null: double, the default) | %.1f s (%.2fx) | %s |"
        % (statistics.median(doubled), med_fixed / statistics.median(doubled), ", ".join("%.1f" % s for s in doubled)),
    ] if doubled else []) + [
        "",
        "Speed-up: %.2fx (target >= %.1fx: %s). Autoscale runs during each burst (start-end s, decision): %s."
        % (ratio, TARGET, "met" if ratio >= TARGET else "MISSED",
           " | ".join("; ".join("%.1f-%.1f %s" % r for r in runs) for runs in runs_seen)),
        "" if not doubled else "With the default step (double) the first run takes 1 worker to 2 and the burst is "
        "gone before the next run a minute later (%s): %.2fx, %s the target; a larger step (as set above) clears "
        "it with a margin." % (" | ".join("; ".join("%.1f-%.1f %s" % r for r in runs) for runs in runs_doubled),
                               med_fixed / statistics.median(doubled),
                               "at" if med_fixed / statistics.median(doubled) >= TARGET else "below"),
        "",
        "| no-op run (median of %d alternating rounds) | seconds |" % opts.rounds,
        "|---|---|",
        "| `playbooks/autoscale.yml` (decision: hold) | %.2f |" % med_noop["autoscale.yml"],
        "| `playbooks/scale.yml` (same count again) | %.2f |" % med_noop["scale.yml"],
        "",
        "No-op cost ratio autoscale / scale: %.2fx. Raw seconds: %s."
        % (noop_ratio, "; ".join("%s %s" % (k, ", ".join("%.2f" % x for x in v)) for k, v in noop.items())),
        MARK[1],
    ])
    print(table)
    if opts.write:
        write_section("bench_autoscale", table)
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
