"""Does scaling with qfc_scale raise throughput? Simulated workers (tests/fixtures/worker_sim, dequeuing like upstream)
drain the same queue with 2 workers and then, after `qfc_scale replicas=4`, with 4.

    .venv/bin/python bench/bench_throughput.py [--jobs 40] [--projects 20] [--job-seconds 1] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
MARK = ("<!-- bench_throughput:begin -->", "<!-- bench_throughput:end -->")


def scale(project_src, replicas):
    proc = subprocess.run([str(BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-e",
                           "ansible_python_interpreter=%s" % sys.executable, "-m", "qfieldcloud.ops.qfc_scale",
                           "-a", json.dumps({"project_src": str(project_src), "replicas": replicas})],
                          cwd=ROOT, capture_output=True, text=True, check=False,
                          env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:])


def drain(conn, projects, user, jobs):
    """Queue `jobs` jobs round-robin over the projects and time until none is pending, queued or started."""
    for i in range(jobs):
        datagen.add_job(conn, projects[i % len(projects)], user, "pending")
    start = time.perf_counter()
    while True:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM core_job WHERE status IN ('pending', 'queued', 'started')")
            if cur.fetchone()[0] == 0:
                return time.perf_counter() - start
        time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--projects", type=int, default=20)
    parser.add_argument("--job-seconds", type=float, default=1.0)
    parser.add_argument("--write", action="store_true")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qfc-throughput-"))
    project_src = work / "qfieldcloud"
    with PgCluster() as pg:
        pg.load_schema()  # the newest recorded QFieldCloud schema, with upstream's indexes
        conn = pg.connect()
        (user,) = datagen.make_users(conn, 1)
        projects = datagen.make_projects(conn, "project_project", opts.projects, user)
        settings = {"COMPOSE_PROJECT_NAME": "qfctp%s" % uuid.uuid4().hex[:6], "POSTGRES_PORT": pg.port,
                    "POSTGRES_PASSWORD": pg.password, "POSTGRES_SSLMODE": "disable",
                    "QFC_SIM_DIR": ROOT / "tests" / "fixtures" / "worker_sim", "QFC_SIM_POLL_S": "0.2",
                    "QFC_SIM_JOB_S": opts.job_seconds, "QFIELDCLOUD_WORKER_REPLICAS": 2}
        copy_project(ROOT / "tests" / "fixtures" / "stack-db", project_src, settings)
        try:
            subprocess.run(["docker", "compose", "up", "-d"], cwd=project_src, check=True, capture_output=True)
            two = drain(conn, projects, user, opts.jobs)
            scale(project_src, 4)
            four = drain(conn, projects, user, opts.jobs)
        finally:
            subprocess.run(["docker", "compose", "down", "--timeout", "5"], cwd=project_src, check=False,
                           capture_output=True)
            conn.close()
            shutil.rmtree(work, ignore_errors=True)
    table = "\n".join([
        MARK[0],
        "Measured %s, %d cores: %d jobs of %.1f s over %d projects, simulated workers on a throwaway PostgreSQL."
        % (time.strftime("%Y-%m-%d"), os.cpu_count(), opts.jobs, opts.job_seconds, opts.projects),
        "",
        "| workers | drain time | jobs/s |",
        "|---|---|---|",
        "| 2 | %.1f s | %.2f |" % (two, opts.jobs / two),
        "| 4 (after `qfc_scale replicas=4`) | %.1f s | %.2f |" % (four, opts.jobs / four),
        "",
        "Throughput ratio 4 / 2 workers: %.2fx (ideal 2x; the gap is dequeue polling and one job per project)."
        % (two / four),
        MARK[1],
    ])
    print(table)
    if opts.write:
        write_section("bench_throughput", table)
    return 0 if two / four > 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
