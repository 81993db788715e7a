"""Benchmark: playbooks/scale.yml against a naive playbook of built-ins, same machine, same run.

Both scale a QFieldCloud-shaped stack from 2 to 4 workers (the change run) and then run again with 4 (the no-op
rerun). Rounds alternate between the two so that drift on the machine hits both alike. Reports medians and the
ratios ours/naive; `--write` replaces the qfc_scale section of docs/performance.md.

    .venv/bin/python bench/bench_scale.py [--rounds 7] [--settle-time S] [--write]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench._docs import ensure_collection_link, write_section  # noqa: E402

BIN = Path(sys.executable).parent
FIXTURE = ROOT / "tests" / "fixtures" / "stack"
PROJECT = "qfcbench"
MARK_BEGIN = "<!-- bench_scale:begin -->"
MARK_END = "<!-- bench_scale:end -->"


def sh(cmd, cwd, check=True):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=check)


def set_replicas(env_file, n):
    lines = env_file.read_text().splitlines(keepends=True)
    key = "QFIELDCLOUD_WORKER_REPLICAS="
    env_file.write_text("".join("%s%d\n" % (key, n) if line.startswith(key) else line for line in lines))


def machine_state():
    """(1-minute load average, containers on the Docker Engine, images): what else competes with the runs."""
    containers = sh(["docker", "ps", "-aq"], ROOT, check=False).stdout.split()
    images = sh(["docker", "images", "-q"], ROOT, check=False).stdout.split()
    return os.getloadavg()[0], len(containers), len(images)


def timed_playbook(playbook, inventory, replicas):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), PATH="%s:%s" % (BIN, os.environ["PATH"]))
    start = time.perf_counter()
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(playbook), "-i", str(inventory),
                           "-e", "qfc_worker_replicas=%d" % replicas], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit("%s failed:\n%s" % (playbook, proc.stdout[-3000:] + proc.stderr[-2000:]))
    return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--write", action="store_true", help="update docs/performance.md")
    parser.add_argument("--settle-time", type=float, default=None,
                        help="qfc_settle_time for ours (default: the role's default)")
    opts = parser.parse_args()
    ensure_collection_link()

    work = Path(tempfile.mkdtemp(prefix="qfc-bench-"))
    project = work / "qfieldcloud"
    shutil.copytree(FIXTURE, project)
    env = (project / "env.example").read_text().replace("COMPOSE_PROJECT_NAME=qfieldcloud",
                                                        "COMPOSE_PROJECT_NAME=%s" % PROJECT)
    (project / ".env").write_text(env)
    inventory = work / "inventory.yml"
    inventory.write_text("qfieldcloud:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                         "      ansible_python_interpreter: %s\n      qfc_project_src: %s\n"
                         "      qfc_bench_project: %s\n"
                         # like for like: the naive playbook has no health gate (and this stack no database)
                         "      qfc_health_gate: false\n"
                         # the record is written as on a server, but not into this machine's own log
                         "      qfc_operations_log: %s\n"
                         % (sys.executable, project, PROJECT, work / "operations.jsonl")
                         + ("      qfc_settle_time: %s\n" % opts.settle_time if opts.settle_time is not None else ""))
    runs = {"ours_change": [], "ours_noop": [], "naive_change": [], "naive_noop": []}
    loads = []  # the 1-minute load average after each round: a loaded machine flatters ours (see docs/performance.md)
    state_before = machine_state()
    try:
        for _round in range(opts.rounds):
            for name, playbook in (("ours", ROOT / "playbooks" / "scale.yml"),
                                   ("naive", ROOT / "bench" / "naive_scale.yml")):
                set_replicas(project / ".env", 2)
                sh(["docker", "compose", "up", "-d"], project)  # reset: 2 workers, not timed
                runs[name + "_change"].append(timed_playbook(playbook, inventory, 4))
                runs[name + "_noop"].append(timed_playbook(playbook, inventory, 4))
            loads.append(os.getloadavg()[0])
    finally:
        sh(["docker", "compose", "down", "--timeout", "1"], project, check=False)
        shutil.rmtree(work, ignore_errors=True)

    state_after = machine_state()
    med = {k: statistics.median(v) for k, v in runs.items()}
    change_ratio = med["ours_change"] / med["naive_change"]
    noop_ratio = med["ours_noop"] / med["naive_noop"]
    compose = sh(["docker", "compose", "version", "--short"], ROOT).stdout.strip()
    table = "\n".join([
        MARK_BEGIN,
        "Measured %s on %s, %d cores, Python %s, Compose %s; median of %d alternating rounds; settle time %s. Load "
        "average (1 min) %.2f before, %.2f after; %d containers on the engine before (%d images)."
        % (time.strftime("%Y-%m-%d"), platform.machine(), os.cpu_count(), platform.python_version(), compose,
           opts.rounds, "%s s" % opts.settle_time if opts.settle_time is not None else "the role's default",
           state_before[0], state_after[0], state_before[1], state_before[2]),
        "",
        "| run | playbooks/scale.yml | naive built-ins | ratio | target | verdict |",
        "|---|---|---|---|---|---|",
        "| change 2 -> 4 | %.2f s | %.2f s | %.2fx | <= 1.2x | %s |"
        % (med["ours_change"], med["naive_change"], change_ratio, "met" if change_ratio <= 1.2 else "MISSED"),
        "| no-op rerun | %.2f s | %.2f s | %.2fx | <= 1.0x | %s |"
        % (med["ours_noop"], med["naive_noop"], noop_ratio, "met" if noop_ratio <= 1.0 else "MISSED"),
        "",
        "Raw seconds: " + "; ".join("%s %s" % (k, ", ".join("%.2f" % x for x in v)) for k, v in runs.items())
        + "; load average after each round " + ", ".join("%.2f" % x for x in loads),
        MARK_END,
    ])
    print(table)
    if opts.write:
        write_section("bench_scale", table)
    return 0 if change_ratio <= 1.2 and noop_ratio <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
