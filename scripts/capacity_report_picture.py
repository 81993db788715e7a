# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Regenerate docs/monitoring/capacity-report.png, the README's picture of the capacity report: a week of made-up
metrics for two production servers and an empty staging one, with their operations logs (scaling changes, one rolled
back, one failed), rendered by the collection's own code and photographed with headless Chromium.

    .venv/bin/python scripts/capacity_report_picture.py [OUT.png]     # needs chromium-headless-shell (Debian)

Deterministic data (a fixed seed); the hosts run in Europe/Zurich, so the operations log's UTC times are shifted by
one hour on the charts, as the report does for a real fleet."""

from __future__ import annotations

import math
import random
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.qfieldcloud.ops.plugins.module_utils import (  # noqa: E402
    _capacity_changes, _capacity_model, _capacity_render, _metrics_log, _oplog)

START = datetime(2025, 12, 12, 0, 0, 3)
ZONE = "Europe/Zurich"
WIDTH, HEIGHT = 1200, 2150


def local(text):
    return datetime.strptime(text, "%Y-%m-%d %H:%M")


# (host-local time, action, before, after, result, AWX job or None, reason)
CHANGES = {
    "qfc-prod-1": [
        ("2025-12-13 11:00", "scale", 2, 3, "changed", None, "replicas 2 -> 3 requested"),
        ("2025-12-14 16:20", "autoscale", 3, 2, "changed", "8812", "queue drained for 1800 s: one step down"),
        ("2025-12-15 10:05", "autoscale", 2, 4, "changed", "8847", "queue depth 12 > 10 for 600 s"),
        ("2025-12-16 14:30", "autoscale", 4, 6, "rolled_back", "8901",
         "health gate after the change: database unreachable"),
    ],
    "qfc-prod-2": [
        ("2025-12-14 10:40", "autoscale", 4, 5, "failed", "8830", "5 workers did not settle in 120 s"),
        ("2025-12-16 10:10", "autoscale", 4, 6, "changed", "8893", "queue depth 14 > 10 for 600 s"),
    ],
}


def workers_at(host, first, moment):
    count = first
    for when, _action, _before, after, result, _job, _reason in CHANGES[host]:
        if result == "changed" and local(when) <= moment:
            count = after
    return count


def metrics(host, first, load, seed, outage=None):
    rnd = random.Random(seed)
    rows, failed_share = [], 0.04
    for i in range(12 * 24 * 7):
        stamp = START + timedelta(minutes=5 * i)
        if outage and outage <= stamp < outage + timedelta(minutes=30):
            rows.append(stamp.strftime(_metrics_log.TIMESTAMP_FORMAT) + "," * 16 + ",error,connection to server at "
                        "127.0.0.1; port 5433 failed: Connection refused")
            continue
        workers = workers_at(host, first, stamp)
        hour = stamp.hour + stamp.minute / 60.0
        wave = max(0.0, math.sin((hour - 7) / 12 * math.pi)) ** 3 * load * (1.4 if stamp.day == 15 else 1.0)
        depth = max(0, int(rnd.gauss(wave * 3 / workers, 0.8)))
        busy = min(workers, max(0, int(round(rnd.gauss(min(workers, wave), 0.6)))))
        finished = int(60 * workers * (0.3 + busy / workers)) + rnd.randint(0, 9)
        if rnd.random() < 0.02:
            failed_share = rnd.uniform(0.08, 0.3)
        failed_share = max(0.02, failed_share * 0.9)
        failed = int(finished * failed_share)
        values = [depth, depth, min(depth, 1), busy, max(depth - 1, 0), workers, workers, busy, finished, failed,
                  round(finished / float(finished + failed), 4), 35.0 + rnd.random() * 3, 110.0 + rnd.random() * 8,
                  0, 0, 0]
        rows.append(",".join([stamp.strftime(_metrics_log.TIMESTAMP_FORMAT)]
                             + [_metrics_log.fmt(v) for v in values] + ["ok", ""]))
    return "\n".join(rows) + "\n"


def oplog(host, tz):
    records = []
    for when, action, before, after, result, job, reason in CHANGES[host]:
        moment = local(when).replace(tzinfo=tz).astimezone(timezone.utc)
        actor = _oplog.make_actor(job, "alice" if job else None, "ops")
        records.append(_oplog.make_record(action, before, after, reason, result, actor, host=host, now=moment))
    return records, 0


def main(out):
    tz = _capacity_changes.timezone_of(ZONE)
    logs = {"qfc-prod-1": _metrics_log.parse(metrics("qfc-prod-1", 2, 4.0, 1, outage=local("2025-12-16 14:25"))),
            "qfc-prod-2": _metrics_log.parse(metrics("qfc-prod-2", 4, 11.0, 2)),
            "qfc-staging": _metrics_log.parse("")}
    operations = {"qfc-prod-1": oplog("qfc-prod-1", tz), "qfc-prod-2": oplog("qfc-prod-2", tz), "qfc-staging": None}
    model = _capacity_model.build(logs, 7 * 86400, operations=operations, timezones=dict.fromkeys(logs, tz))
    browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if not browser:
        sys.exit("needs headless Chromium: apt-get install chromium-headless-shell")
    with tempfile.TemporaryDirectory() as work:
        page = Path(work) / "capacity_report.html"
        page.write_text(_capacity_render.html_page(model))
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=%d,%d" % (WIDTH, HEIGHT), "--screenshot=%s" % Path(out).resolve(),
                        page.as_uri()], check=True, timeout=120, capture_output=True)
    print("wrote %s (%dx%d)" % (out, WIDTH, HEIGHT))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "docs" / "monitoring" / "capacity-report.png"))
