"""The monitoring collector's cost per run on the DB-backed test stack: wall and CPU time of the exact cron command,
and how many programs it executes (strace, when installed: the target is one, itself; no docker exec).

    .venv/bin/python bench/bench_collector.py [--jobs 100000] [--runs 10] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
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

from bench._docs import write_section  # noqa: E402
from tests.support import datagen  # noqa: E402
from tests.support.pgcluster import PgCluster  # noqa: E402
from tests.support.project import copy_project  # noqa: E402

BIN = Path(sys.executable).parent
MARK = ("<!-- bench_collector:begin -->", "<!-- bench_collector:end -->")


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--write", action="store_true")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qfc-collector-"))
    project_src = work / "qfieldcloud"
    with PgCluster() as pg:
        pg.load_schema()  # the newest recorded QFieldCloud schema, with upstream's indexes
        conn = pg.connect()
        datagen.bulk_history(conn, "project_project", jobs=opts.jobs)
        conn.close()
        settings = {"COMPOSE_PROJECT_NAME": "qfccb%s" % uuid.uuid4().hex[:6], "POSTGRES_PORT": pg.port,
                    "POSTGRES_PASSWORD": pg.password, "POSTGRES_SSLMODE": "disable",
                    "QFC_SIM_DIR": ROOT / "tests" / "fixtures" / "worker_sim"}
        copy_project(ROOT / "tests" / "fixtures" / "stack-db", project_src, settings)
        host_vars = {"qfc_project_src": str(project_src), "qfc_monitoring_dir": str(work / "mon"),
                     "qfc_monitoring_python": str(BIN / "python"), "qfc_monitoring_install_packages": False,
                     "qfc_monitoring_cron_file": str(work / "cron"), "qfc_monitoring_log": str(work / "metrics.log"),
                     "qfc_monitoring_logrotate_file": str(work / "logrotate"),
                     "qfc_monitoring_textfile": str(work / "textfile" / "q.prom")}
        inventory = work / "inventory.yml"
        inventory.write_text(json.dumps({"qfieldcloud": {"hosts": {"bench": dict(
            host_vars, ansible_connection="local", ansible_python_interpreter=str(BIN / "python"))}}}))
        try:
            subprocess.run(["docker", "compose", "up", "-d"], cwd=project_src, check=True, capture_output=True)
            subprocess.run([str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / "monitoring.yml"), "-i",
                            str(inventory)], check=True, capture_output=True, cwd=ROOT,
                           env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
            line = [ln for ln in (work / "cron").read_text().splitlines() if ln and not ln.startswith("#")][0]
            command = line.split(None, 6)[6].replace(">/dev/null 2>&1", "")
            walls, cpus = [], []
            for _run in range(opts.runs):
                cpu = children_cpu()
                start = time.perf_counter()
                subprocess.run(["sh", "-c", "exec " + command], check=True, capture_output=True)
                walls.append(time.perf_counter() - start)
                cpus.append(children_cpu() - cpu)
            execs = None
            if shutil.which("strace"):
                trace = work / "strace.txt"
                subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve", "-o", str(trace), "sh", "-c",
                                "exec " + command], check=True, capture_output=True)
                execs = [ln for ln in trace.read_text().splitlines() if "execve(" in ln and "= 0" in ln]
        finally:
            subprocess.run(["docker", "compose", "down", "--timeout", "5"], cwd=project_src, check=False,
                           capture_output=True)
            shutil.rmtree(work, ignore_errors=True)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    exec_text = "not measured (strace not installed)" if execs is None else "%d (%s)" % (
        len(execs), ", ".join(sorted({re.search(r'execve\("([^"]+)"', ln).group(1) for ln in execs})))
    table = "\n".join([
        MARK[0],
        "Measured %s, %d cores: the exact cron command, %d runs, %d jobs in core_job, 2 simulated workers running."
        % (time.strftime("%Y-%m-%d"), os.cpu_count(), opts.runs, opts.jobs),
        "",
        "| measurement | median | max | target | verdict |",
        "|---|---|---|---|---|",
        "| wall time per collection | %.3f s | %.3f s | <= 0.5 s | %s |"
        % (wall, max(walls), "met" if wall <= 0.5 else "MISSED"),
        "| CPU time per collection (user + system) | %.3f s | %.3f s | <= 0.2 s | %s |"
        % (cpu, max(cpus), "met" if cpu <= 0.2 else "MISSED"),
        "| programs executed (the shell cron uses, then the collector) | %s | | no docker exec | |" % exec_text,
        MARK[1],
    ])
    print(table)
    if opts.write:
        write_section("bench_collector", table)


if __name__ == "__main__":
    main()
