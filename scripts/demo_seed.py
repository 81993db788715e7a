"""Seed the demo database (it already holds QFieldCloud's recorded schema, loaded by tests/support/pgcluster.py):
a queue with some history, 30 pending jobs over 12 projects,
one job left `started` by a killed worker (stale) and one `queued` that never started (orphaned).

    python scripts/demo_seed.py '<psycopg2 params as JSON>'
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import datagen  # noqa: E402

import psycopg2  # noqa: E402


def main():
    conn = psycopg2.connect(**json.loads(sys.argv[1]))
    users = datagen.make_users(conn, 3)
    projects = datagen.make_projects(conn, "project_project", 14, users)
    for i in range(40):  # the last hours' history
        datagen.add_job(conn, projects[i % 12], users[i % 3], "failed" if i % 10 == 0 else "finished",
                        created_ago_s=3000 - 60 * i, started_ago_s=2990 - 60 * i, finished_ago_s=2960 - 60 * i)
    for i in range(30):
        datagen.add_job(conn, projects[i % 12], users[i % 3], "pending", created_ago_s=60 - i)
    datagen.add_job(conn, projects[12], users[0], "started", created_ago_s=7300, started_ago_s=7200)
    datagen.add_job(conn, projects[13], users[1], "queued", created_ago_s=7200)
    conn.close()


if __name__ == "__main__":
    main()
