"""What does reading a large operations log cost the autoscaler and qfc_operations_log_info? Issue 21, defect 11: a
299 MB log took 11.3 s and 1.3 GB per decision, because the whole file was read.

Generates one log of ``--mb`` MB (default 300) of realistic records in a temporary directory, its last change a few
records before the end, then runs each read in its own fresh interpreter, timing the call and taking the process's
peak memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``):

- before: ``_oplog`` as of ``--baseline`` (default 10cb676, the reviewed commit; read from git, nothing checked out):
  ``last_change(read(path))``, the decision's read then, and ``read(path, limit=20)``, qfc_operations_log_info's;
- after: this checkout's ``last_recorded_change(path)`` (the last 16 MiB, backwards) and ``read(path, limit=20)``.

    .venv/bin/python bench/bench_oplog.py [--mb 300] [--baseline 10cb676]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPLOG = ROOT / "plugins" / "module_utils" / "_oplog.py"

# Run in a fresh interpreter: load _oplog from a file, time one call, report the peak memory of the whole process.
CHILD = r"""
import importlib.util, json, resource, sys, time
spec = importlib.util.spec_from_file_location("oplog_under_test", sys.argv[1])
oplog = importlib.util.module_from_spec(spec)
spec.loader.exec_module(oplog)
path, call = sys.argv[2], sys.argv[3]
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
start, start_cpu = time.perf_counter(), cpu()
if call == "decision-before":
    found = oplog.last_change(oplog.read(path)[0])
elif call == "decision-after":
    found = oplog.last_recorded_change(path)
else:
    found = oplog.read(path, limit=20)[0][-1]
took, took_cpu = time.perf_counter() - start, cpu() - start_cpu
print(json.dumps({"s": took, "cpu_s": took_cpu, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "after": found["after"], "time": found["time"]}))
"""


def generate(path, megabytes):
    """About ``megabytes`` MB of records, scales and cleanups a minute apart; the last change is 3 records before the
    end (two cleanups follow it), so both reads must find the same one."""
    scale = ('{"action": "%s", "actor": {"awx_job_id": "%d", "kind": "awx", "user": "alice"}, "after": %d, '
             '"before": %d, "details": {"env_changed": true, "running_after": %d, "running_before": %d}, '
             '"host": "qfc1", "reason": "queue depth 12 > 10 for 600 s", "result": "changed", '
             '"time": "%s"}\n')
    cleanup = ('{"action": "job_cleanup", "actor": {"kind": "schedule", "user": "root"}, "after": {"failed": 2}, '
               '"before": {"started": 2}, "details": {"job_ids": ["%08d-aaaa-bbbb-cccc-000000000001", '
               '"%08d-aaaa-bbbb-cccc-000000000002"]}, "host": "qfc1", "reason": "mode stale: 2 jobs stuck", '
               '"result": "changed", "time": "%s"}\n')
    target = megabytes * 1000 * 1000
    written, n, base = 0, 0, 1_600_000_000
    with open(path, "w") as handle:
        while written < target:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + 60 * n))
            after = 2 + n % 5
            line = (scale % ("autoscale", n, after, after - 1, after, after - 1, stamp) if n % 3 == 0
                    else cleanup % (n, n, stamp))
            handle.write(line)
            written += len(line)
            n += 1
        for k in range(3):  # the last change, then two cleanups
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + 60 * (n + k)))
            handle.write(scale % ("scale", 0, 7, 6, 7, 6, stamp) if k == 0 else cleanup % (n + k, n + k, stamp))
    return n + 3


def measure(module, path, call):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(module), str(path), call], capture_output=True,
                          text=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise SystemExit("%s failed:\n%s" % (call, proc.stderr[-3000:]))
    return json.loads(proc.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--mb", type=int, default=300, help="size of the generated log in MB")
    parser.add_argument("--baseline", default="10cb676", help="the git revision whose _oplog is 'before'")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-oplog-") as tmp:
        before = Path(tmp) / "oplog_before.py"
        before.write_bytes(subprocess.run(["git", "show", "%s:plugins/module_utils/_oplog.py" % args.baseline],
                                          cwd=ROOT, capture_output=True, check=True).stdout)
        log = Path(tmp) / "operations.jsonl"
        started = time.perf_counter()
        records = generate(log, args.mb)
        print("generated %s: %.0f MB, %d records, in %.1f s" % (log.name, log.stat().st_size / 1e6, records,
                                                                time.perf_counter() - started))
        rows = []
        for what, call_before, call_after in (("decision (last change)", "decision-before", "decision-after"),
                                              ("qfc_operations_log_info limit=20", "limit", "limit")):
            old, new = measure(before, log, call_before), measure(OPLOG, log, call_after)
            if (old["after"], old["time"]) != (new["after"], new["time"]):
                raise SystemExit("%s: before and after found different records: %s / %s" % (what, old, new))
            rows.append((what, old, new))
    print("\n| read | before (%s, whole file): wall, CPU, peak RSS | after (from the end): wall, CPU, peak RSS "
          "| ratio wall | ratio CPU | ratio peak RSS |" % args.baseline)
    print("|---|---|---|---|---|---|")
    for what, old, new in rows:
        print("| %s | %.2f s, %.2f s, %.0f MiB | %.3f s, %.3f s, %.0f MiB | %.0fx | %.0fx | %.0fx |" % (
            what, old["s"], old["cpu_s"], old["maxrss_kib"] / 1024, new["s"], new["cpu_s"],
            new["maxrss_kib"] / 1024, old["s"] / new["s"], old["cpu_s"] / max(new["cpu_s"], 1e-3),
            old["maxrss_kib"] / new["maxrss_kib"]))
    print("\n(peak RSS is the whole interpreter's, about 10 MiB of it Python itself; wall time depends on the "
          "machine's load, CPU time less so)")


if __name__ == "__main__":
    main()
