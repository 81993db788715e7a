"""playbooks/autoscale.yml across an SSH fleet (tests/support/fleet.py): three QFieldCloud servers, each a container
with its own sshd, compose project, .env and database in a real PostgreSQL, reached by Ansible over real SSH, in the
playbook's default batches (a canary, 25%, the rest). Each server decides on its own queue; a canary that cannot
decide stops the rollout before the servers behind it change."""

from __future__ import annotations

import json
import re

import psycopg2
import pytest
from conftest import ROOT, assert_no_secrets, custom_stats, run_playbook

from tests.support.datagen import add_job, make_projects, make_users
from tests.support.fleet import Fleet
from tests.support.pgcluster import free_port

PLAYBOOK = ROOT / "playbooks" / "autoscale.yml"
OPLOG = "/var/log/qfieldcloud/operations.jsonl"  # the default, on each server
# As in test_autoscale.py: the policy acts on the queue as it is now, no cooldown, the scale role settles quickly.
FAST = {"qfc_autoscale_up_after": 0, "qfc_autoscale_cooldown": 0, "qfc_settle_time": 0.2}
SERVERS = ("qfc1", "qfc2", "qfc3")


@pytest.fixture
def fleet(pg, tmp_path):
    created = Fleet(tmp_path / "fleet", {"host": pg.host, "port": pg.port, "user": pg.user, "password": pg.password},
                    servers=3, workers=0, replicas=1)
    created.up()
    yield created
    created.down()


def backlog(pg, database, waiting):
    """One job started 10 s ago (a busy worker) and one pending job in each of ``waiting`` other projects, created
    20 s ago (under the policy's idle grace, so the fleet's idle test workers do not read as a fault): a useful
    backlog of ``waiting``."""
    conn = psycopg2.connect(**dict(pg.params, dbname=database))
    try:
        (user,) = make_users(conn, 1)
        busy, *others = make_projects(conn, "project_project", waiting + 1, user)
        add_job(conn, busy, user, "started", created_ago_s=15, started_ago_s=10)
        for project in others:
            add_job(conn, project, user, "pending", created_ago_s=20)
    finally:
        conn.close()


def run(inventory):
    proc = run_playbook(PLAYBOOK, inventory, FAST, timeout=600, env={"ANSIBLE_SHOW_CUSTOM_STATS": "1"})
    assert_no_secrets(proc.stdout + proc.stderr)
    return proc


def artifact(output):
    """qfc_autoscale_decisions by host, as AWX and ansible-runner get it (set_stats, aggregated over the batches)."""
    return custom_stats(output)["qfc_autoscale_decisions"]


def recap(output):
    rows = re.findall(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output, re.M)
    return {host: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, counts))) for host, *counts in rows}


def oplog_records(node):
    proc = node.exec("sh", "-c", "cat %s 2>/dev/null || true" % OPLOG)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def state(node):
    return node.env_value(), len(node.running())


def test_each_server_decides_on_its_own_queue_in_the_default_batches(fleet, pg):
    backlog(pg, fleet["qfc2"].database, waiting=6)  # only the second server has work waiting
    proc = run(fleet.write_inventory())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the default batches, canary first: one decision summary per batch, each server in its own batch
    assert proc.stdout.count("TASK [qfieldcloud.ops.autoscale : Autoscale summary") == 3, proc.stdout
    decisions = artifact(proc.stdout)
    assert sorted(decisions) == list(SERVERS)
    assert {h: decisions[h]["action"] for h in SERVERS} == {"qfc1": "hold", "qfc2": "up", "qfc3": "hold"}, decisions
    # qfc2: 1 busy + 6 waiting, at most double per step: 2
    assert (decisions["qfc2"]["current"], decisions["qfc2"]["target"]) == (1, 2)
    assert state(fleet["qfc2"]) == ("2", 2)
    assert state(fleet["qfc1"]) == ("1", 1) and state(fleet["qfc3"]) == ("1", 1)
    assert {h: c["changed"] for h, c in recap(proc.stdout).items()} == {"qfc1": 0, "qfc2": 1, "qfc3": 0}
    # the change is recorded on the server that made it, and only there
    (record,) = oplog_records(fleet["qfc2"])
    assert (record["action"], record["before"], record["after"], record["result"]) == ("autoscale", 1, 2, "changed")
    assert record["reason"] == decisions["qfc2"]["reason"]
    assert oplog_records(fleet["qfc1"]) == [] and oplog_records(fleet["qfc3"]) == []


def test_a_canary_that_cannot_decide_stops_the_rollout(fleet, pg):
    backlog(pg, fleet["qfc2"].database, waiting=6)
    inventory = fleet.inventory()
    inventory["all"]["children"]["qfieldcloud"]["hosts"]["qfc1"]["qfc_db_port"] = free_port()  # nothing listens
    path = fleet.state / "inventory-canary-down.yml"
    path.write_text(json.dumps(inventory))
    before = {name: fleet[name].env_text() for name in SERVERS}
    proc = run(path)
    assert proc.returncode != 0
    # the canary failed with the reason, and max_fail_percentage 0 stopped the play before the next batch: qfc2's
    # backlog is not acted on, nothing changed anywhere
    counts = recap(proc.stdout)
    assert list(counts) == ["qfc1"], proc.stdout  # the later batches never ran
    assert (counts["qfc1"]["failed"], counts["qfc1"]["changed"]) == (1, 0)
    assert re.search(r"[Nn]o change|[Nn]othing was changed", proc.stdout), proc.stdout
    for name in SERVERS:
        assert fleet[name].env_text() == before[name] and len(fleet[name].running()) == 1, name
        assert oplog_records(fleet[name]) == [], name
