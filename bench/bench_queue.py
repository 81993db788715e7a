"""Benchmarks of the queue modules on 1,000,000 historical jobs with only upstream's indexes: the database holds the
newest recorded QFieldCloud schema (tests/fixtures/qfieldcloud-schema), indexes and constraints included.

1. qfc_queue_facts: the facts query's database time, and the wall time of one gathering in a fresh process, against
   the seed's approach of one `docker exec ... psql` call per metric (and, kinder to the seed, one host `psql` call per
   metric), same database, same run.
2. qfc_job_cleanup: 10,000 stale jobs among the million, failed through a real Ansible run; wall time and the longest
   batch transaction (how long any row lock was held).

    .venv/bin/python bench/bench_queue.py [--jobs 1000000] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / ".collections")]

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _queue  # noqa: E402

from bench._docs import write_section  # noqa: E402
from tests.support import datagen  # noqa: E402
from tests.support.pgcluster import NEWEST, PgCluster  # noqa: E402

BIN = Path(sys.executable).parent
CLIENT_IMAGE = "qfc-test/worker-sim:2"
MARK = ("<!-- bench_queue:begin -->", "<!-- bench_queue:end -->")

# The same information as the facts, one query (and so one psql call) per metric, as the seed's cron script did.
PER_METRIC = [
    "SELECT count(*) FROM core_job WHERE status = 'pending'",
    "SELECT count(*) FROM core_job WHERE status = 'queued'",
    "SELECT count(*) FROM core_job WHERE status = 'started'",
    "SELECT count(*) FROM core_job WHERE status = 'finished' AND finished_at >= now() - interval '24 hours'",
    "SELECT count(*) FROM core_job WHERE status = 'failed' AND finished_at >= now() - interval '24 hours'",
    "SELECT count(*) FROM core_job WHERE status = 'stopped' AND updated_at >= now() - interval '24 hours'",
    "SELECT extract(epoch FROM now() - min(created_at)) FROM core_job WHERE status = 'pending'",
    "SELECT count(*) FROM core_job j JOIN project_project p ON p.id = j.project_id WHERE j.status = 'pending'"
    " AND p.locked_at IS NULL AND j.project_id NOT IN"
    " (SELECT project_id FROM core_job WHERE status IN ('queued', 'started'))",
    "SELECT count(DISTINCT j.project_id) FROM core_job j JOIN project_project p ON p.id = j.project_id"
    " WHERE j.status = 'pending' AND p.locked_at IS NULL AND j.project_id NOT IN"
    " (SELECT project_id FROM core_job WHERE status IN ('queued', 'started'))",
    "SELECT count(DISTINCT project_id) FROM core_job WHERE status IN ('queued', 'started')",
    "SELECT count(*) FROM core_job WHERE status IN ('queued', 'started') AND started_at < now() - interval '610 s'",
    "SELECT count(*) FROM core_job WHERE status = 'queued' AND started_at IS NULL"
    " AND created_at < now() - interval '610 s'",
    "SELECT count(*) FROM core_job WHERE status = 'pending' AND created_at < now() - interval '24 hours'",
    "SELECT count(*) FROM core_job WHERE status = 'finished' AND finished_at >= now() - interval '1 hour'",
    "SELECT count(*) FROM core_job WHERE status = 'failed' AND finished_at >= now() - interval '1 hour'",
    "SELECT avg(extract(epoch FROM finished_at - started_at)) FROM core_job WHERE status = 'finished'"
    " AND finished_at >= now() - interval '24 hours'",
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)) FROM core_job"
    " WHERE status = 'finished' AND finished_at >= now() - interval '24 hours'",
    "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)) FROM core_job"
    " WHERE status = 'finished' AND finished_at >= now() - interval '24 hours'",
]

GATHER_ONCE = """
import json, sys
sys.path.insert(0, %r)
from ansible_collections.qfieldcloud.ops.plugins.module_utils import _queue
facts = _queue.gather(json.loads(sys.argv[1]), 600, 86400, 86400, 5000)
print(facts["queue_depth"])
"""


def verdict(ok):
    return "met" if ok else "MISSED"


def median_ms(fn, n):
    times = []
    for _run in range(n):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), times


def psql_loop(prefix, pg):
    def run():
        for query in PER_METRIC:
            subprocess.run(prefix + ["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user, "-d", pg.dbname,
                                     "-X", "-t", "-A", "-c", query], check=True, capture_output=True,
                           env=dict(os.environ, PGPASSWORD=pg.password))
    return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--stuck", type=int, default=10_000)
    parser.add_argument("--write", action="store_true")
    opts = parser.parse_args()
    with PgCluster() as pg:
        pg.load_schema()  # the newest recorded QFieldCloud schema, with upstream's indexes
        conn = pg.connect()
        start = time.perf_counter()
        counts = datagen.bulk_history(conn, "project_project", jobs=opts.jobs)
        load_s = time.perf_counter() - start
        params = pg.params
        with conn, conn.cursor() as cur:
            cur.execute("SELECT tablename, count(*) FROM pg_indexes WHERE tablename IN ('core_job', 'core_delta')"
                        " GROUP BY tablename")
            n_indexes = dict(cur.fetchall())

        db_runs = []
        for _run in range(7):
            db_runs.append(_queue.gather(params, 600, 86400, 86400, 5000)["query_ms"])
        db_ms = statistics.median(db_runs)
        gather_once = [sys.executable, "-c", GATHER_ONCE % str(ROOT / ".collections"), json.dumps(params)]
        ours_ms, _runs = median_ms(lambda: subprocess.run(gather_once, check=True, capture_output=True), 5)
        host_ms, _runs = median_ms(psql_loop([], pg), 3)
        name = "qfcbench-psql-%s" % uuid.uuid4().hex[:6]
        subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "--network", "host", CLIENT_IMAGE, "sleep",
                        "3600"], check=True, capture_output=True)
        try:
            exec_ms, _runs = median_ms(psql_loop(["docker", "exec", "-e", "PGPASSWORD=%s" % pg.password, name], pg), 3)
        finally:
            subprocess.run(["docker", "rm", "-f", name], check=False, capture_output=True)

        stuck = datagen.add_stuck(conn, "project_project", opts.stuck, "stale")
        env_file = Path(os.environ.get("TMPDIR", "/tmp")) / ("qfcbench-%s.env" % uuid.uuid4().hex[:6])
        env_file.write_text("POSTGRES_USER=%s\nPOSTGRES_PASSWORD=%s\nPOSTGRES_DB=%s\nPOSTGRES_HOST=127.0.0.1\n"
                            "POSTGRES_PORT=%d\nPOSTGRES_SSLMODE=disable\n"
                            % (pg.user, pg.password, pg.dbname, pg.port))
        start = time.perf_counter()
        proc = subprocess.run([str(BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-e",
                               "ansible_python_interpreter=%s" % sys.executable,
                               "-m", "qfieldcloud.ops.qfc_job_cleanup",
                               "-a", json.dumps({"env_file": str(env_file)})], cwd=ROOT, capture_output=True,
                              text=True, check=False,
                              env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
        cleanup_s = time.perf_counter() - start
        env_file.unlink()
        out = proc.stdout
        result = json.JSONDecoder().raw_decode(out, out.index("{"))[0] if "{" in out else {}
        if proc.returncode != 0 or result.get("count") != len(stuck):
            raise SystemExit("cleanup failed or incomplete:\n%s" % (out[-3000:] + proc.stderr[-2000:]))
        conn.close()

    lines = [
        MARK[0],
        "Measured %s, %d cores, PostgreSQL (throwaway cluster on loopback), %d jobs in core_job (%s) loaded in %.0f s."
        % (time.strftime("%Y-%m-%d"), os.cpu_count(), counts["jobs"], ", ".join(
            "%s %d" % (k, v) for k, v in counts.items() if k in ("finished", "failed", "pending", "queued", "started")),
           load_s),
        "Schema: QFieldCloud %s as upstream's migrations leave it (core_job %d indexes, core_delta %d)."
        % (NEWEST, n_indexes.get("core_job", 0), n_indexes.get("core_delta", 0)),
        "",
        "| measurement | value | target | verdict |",
        "|---|---|---|---|",
        "| facts query, database time (median of 7, client-side incl. loopback) | %.1f ms | <= 100 ms | %s |"
        % (db_ms, verdict(db_ms <= 100)),
        "| one gathering in a fresh Python process (start, import, connect, query) | %.0f ms | | |" % ours_ms,
        "| seed: `docker exec ... psql` per metric, %d metrics | %.0f ms | | |" % (len(PER_METRIC), exec_ms),
        "| ratio seed / ours | %.1fx | >= 10x | %s |" % (exec_ms / ours_ms, verdict(exec_ms / ours_ms >= 10)),
        "| kinder baseline: host `psql` per metric (no docker exec) | %.0f ms (%.1fx ours) | | |"
        % (host_ms, host_ms / ours_ms),
        "| cleanup of %d stale jobs among %d, whole Ansible run | %.2f s in %d batches | <= 5 s | %s |"
        % (len(stuck), counts["jobs"] + len(stuck), cleanup_s, result["batches"], verdict(cleanup_s <= 5)),
        "| longest batch transaction (longest any row lock was held) | %.0f ms | <= 1000 ms | %s |"
        % (result["max_batch_ms"], verdict(result["max_batch_ms"] <= 1000)),
        "",
        "Facts query runs (ms): %s" % ", ".join("%.1f" % x for x in db_runs),
        MARK[1],
    ]
    table = "\n".join(lines)
    print(table)
    if opts.write:
        write_section("bench_queue", table)


if __name__ == "__main__":
    main()
