"""playbooks/scale.yml across a fleet reached over real SSH: three QFieldCloud servers and one worker-only node, each
a container with its own filesystem, sshd on its own loopback port, its own compose project and .env, and its own
database (the worker node uses the first server's) in a real PostgreSQL (tests/support/fleet.py)."""

from __future__ import annotations

import json
import os
import re
import sys

import psycopg2
import pytest
from conftest import ROOT, assert_no_secrets, run_playbook

from tests.support.datagen import add_job, make_projects, make_users
from tests.support.fleet import Fleet, docker

sys.path.insert(0, str(ROOT / ".collections"))
from ansible_collections.qfieldcloud.ops.plugins.module_utils._replicas import (  # noqa: E402
    DEFAULT_MAX_REPLICAS_PER_CORE)

PLAYBOOK = ROOT / "playbooks" / "scale.yml"
HOSTS = ("qfc1", "qfc2", "qfc3", "worker1")


@pytest.fixture
def fleet(pg, tmp_path):
    created = Fleet(tmp_path / "fleet", {"host": pg.host, "port": pg.port, "user": pg.user, "password": pg.password},
                    servers=3, workers=1, replicas=1)
    created.up()
    yield created
    created.down()


def recap(output):
    rows = re.findall(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output, re.M)
    return {host: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, counts))) for host, *counts in rows}


def summaries(output):
    """Every rollout summary printed, each as {host: (layout, before, after, result)}, in order."""
    out = []
    for block in re.findall(r'"msg": \[\n\s+"host\s+layout\s+before\s+after\s+result",\n(.*?)\n\s+\]', output, re.S):
        rows = {}
        for line in json.loads("[%s]" % block)[:-1]:
            host, layout, before, after, result = re.match(
                r"(\S+)\s+(server|worker node|-)\s+(\S+)\s+(\S+)\s+(.+)$", line).groups()
            rows[host] = (layout, before, after, result)
        out.append(rows)
    return out


def test_fleet_scales_up_and_down_and_a_second_run_changes_nothing(fleet):
    inventory = fleet.write_inventory()
    up = run_playbook(PLAYBOOK, inventory, {"qfc_worker_replicas": 2}, diff=True)
    assert up.returncode == 0, up.stdout + up.stderr
    for node in fleet.nodes:
        assert node.env_value() == "2" and len(node.running()) == 2, node.name
        assert len(node.backups()) == 1
    assert fleet["worker1"].services_running() == ["worker_wrapper"]  # a worker node runs nothing else
    assert fleet["qfc1"].services_running() == ["app", "db", "memcached", "ofelia", "worker_wrapper"]
    assert {h: c["changed"] for h, c in recap(up.stdout).items()} == dict.fromkeys(HOSTS, 1)
    # canary, then 25% of 4 = 1 host, then the rest: three batches, one summary after each
    batches = summaries(up.stdout)
    assert len(batches) == 3
    assert [r[3] for r in batches[0].values()] == ["changed", "not reached", "not reached", "not reached"]
    assert batches[-1] == {"qfc1": ("server", "1", "2", "changed"), "qfc2": ("server", "1", "2", "changed"),
                           "qfc3": ("server", "1", "2", "changed"), "worker1": ("worker node", "1", "2", "changed")}
    # the gate read the queue before and after each change: twice per host (each host's steps are printed)
    assert up.stdout.count('"Health gate - read the queue before the change') == len(HOSTS)
    assert up.stdout.count('"Health gate - read the queue after the change') == len(HOSTS)
    assert_no_secrets(up.stdout + up.stderr, fleet.pg["password"])

    again = run_playbook(PLAYBOOK, inventory, {"qfc_worker_replicas": 2})
    assert again.returncode == 0, again.stdout
    assert {h: c["changed"] for h, c in recap(again.stdout).items()} == dict.fromkeys(HOSTS, 0)
    assert {r[3] for r in summaries(again.stdout)[-1].values()} == {"unchanged"}

    down = run_playbook(PLAYBOOK, inventory, {"qfc_worker_replicas": 1})
    assert down.returncode == 0, down.stdout
    for node in fleet.nodes:
        assert node.env_value() == "1" and len(node.running()) == 1, node.name
    assert summaries(down.stdout)[-1]["qfc2"] == ("server", "2", "1", "changed")


def test_per_host_counts_from_the_inventory_and_auto(fleet):
    inventory = fleet.inventory()
    hosts = inventory["all"]["children"]
    hosts["qfieldcloud"]["hosts"]["qfc1"]["qfc_worker_replicas"] = 2
    hosts["qfieldcloud"]["hosts"]["qfc2"]["qfc_worker_replicas"] = "auto"
    hosts["qfieldcloud"]["hosts"]["qfc3"]["qfc_worker_replicas"] = 0
    hosts["qfc_worker_nodes"]["vars"] = {"qfc_worker_replicas": "auto", "qfc_auto_max_replicas": 2}
    path = fleet.state / "per-host.yml"
    path.write_text(json.dumps(inventory))
    proc = run_playbook(PLAYBOOK, path, {"qfc_serial": "100%"})
    assert proc.returncode == 0, proc.stdout
    cores = os.cpu_count() or 1
    guideline = int(cores * DEFAULT_MAX_REPLICAS_PER_CORE)
    expected = {"qfc1": 2, "qfc2": min(guideline, 10), "qfc3": 0, "worker1": min(guideline, 2)}
    for name, count in expected.items():
        assert fleet[name].env_value() == str(count) and len(fleet[name].running()) == count, name
    assert len(summaries(proc.stdout)) == 1  # one batch


def test_a_compose_conflict_fails_that_server_alone_and_stops_the_rollout(fleet):
    conflicted = fleet["qfc2"]
    conflicted.write("/srv/qfieldcloud/docker-compose.override.prod.yml",
                     "services:\n  worker_wrapper:\n    deploy:\n      replicas: 7\n")
    before = {node.name: node.env_text() for node in fleet.nodes}
    # batches qfc1 | qfc2 qfc3 | worker1: qfc2 fails beside a server that succeeds, so what stops the rollout is
    # max_fail_percentage (default 0: 1 of 2 failed exceeds it), not a batch that failed as a whole
    proc = run_playbook(PLAYBOOK, fleet.write_inventory(), {"qfc_worker_replicas": 2, "qfc_serial": "1,2,100%"})
    assert proc.returncode != 0
    assert "docker-compose.override.prod.yml sets services.worker_wrapper.deploy.replicas" in proc.stdout
    # the conflicted server failed alone, with .env untouched and no backup
    assert conflicted.env_text() == before["qfc2"] and conflicted.backups() == []
    assert len(conflicted.running()) == 1
    for name in ("qfc1", "qfc3"):
        assert fleet[name].env_value() == "2" and len(fleet[name].running()) == 2, name
    # the rollout stopped before the last batch
    assert fleet["worker1"].env_text() == before["worker1"] and len(fleet["worker1"].running()) == 1
    counts = recap(proc.stdout)
    assert counts["qfc2"]["failed"] == 1 and counts["qfc1"]["failed"] == counts["qfc3"]["failed"] == 0
    assert "worker1" not in counts and "NO MORE HOSTS LEFT" in proc.stdout
    final = summaries(proc.stdout)[-1]
    assert final["qfc1"] == final["qfc3"] == ("server", "1", "2", "changed")
    assert final["qfc2"] == ("server", "1", "1", "failed")
    assert final["worker1"][3] == "not reached"
    assert_no_secrets(proc.stdout + proc.stderr, fleet.pg["password"])


def test_with_the_default_batches_a_failed_second_server_stops_the_rest(fleet):
    fleet["qfc2"].write("/srv/qfieldcloud/docker-compose.override.prod.yml",
                        "services:\n  worker_wrapper:\n    deploy:\n      replicas: 7\n")
    proc = run_playbook(PLAYBOOK, fleet.write_inventory(), {"qfc_worker_replicas": 2})
    assert proc.returncode != 0
    final = summaries(proc.stdout)[-1]  # canary, 25% (qfc2 alone), the rest never starts
    assert [final[h][3] for h in HOSTS] == ["changed", "failed", "not reached", "not reached"]
    assert fleet["qfc3"].env_value() == fleet["worker1"].env_value() == "1"


def test_max_fail_percentage_lets_the_rollout_go_on(fleet):
    fleet["qfc2"].write("/srv/qfieldcloud/docker-compose.override.prod.yml",
                        "services:\n  worker_wrapper:\n    container_name: qfc-worker\n")
    # batches qfc1 | qfc2 qfc3 | worker1; one failure in a batch of two is 50%, not more than 50
    proc = run_playbook(PLAYBOOK, fleet.write_inventory(),
                        {"qfc_worker_replicas": 2, "qfc_serial": "1, 2, 100%", "qfc_max_fail_percentage": 50})
    assert proc.returncode != 0  # a failed host still fails the run
    for name in ("qfc1", "qfc3", "worker1"):
        assert fleet[name].env_value() == "2" and len(fleet[name].running()) == 2, name
    assert fleet["qfc2"].env_value() == "1"
    final = summaries(proc.stdout)[-1]
    assert [final[h][3] for h in HOSTS] == ["changed", "failed", "changed", "changed"]


def add_jobs(pg, database, n, **job):
    conn = psycopg2.connect(**dict(pg.params, dbname=database))
    try:
        user = make_users(conn, 1)[0]
        project = make_projects(conn, "project_project", 1, user)[0]
        for minutes in range(n):
            ago = 60 * (minutes + 5)
            timed = {k: (v(ago) if callable(v) else v) for k, v in job.items()}
            add_job(conn, project, user, created_ago_s=ago, **timed)
    finally:
        conn.close()


def test_an_unhealthy_queue_stops_the_rollout_before_anything_changes(fleet, pg):
    # qfc2's queue: every job of the last hour failed, a critical alert (failure_rate_high) before any change
    add_jobs(pg, fleet["qfc2"].database, 5, status="failed", started_ago_s=lambda ago: ago - 10,
             finished_ago_s=lambda ago: ago - 20)
    before = fleet["qfc2"].env_text()
    proc = run_playbook(PLAYBOOK, fleet.write_inventory(), {"qfc_worker_replicas": 2})
    assert proc.returncode != 0
    assert "health gate before the change: critical: 5 of 5 jobs failed in the last hour" in proc.stdout
    assert fleet["qfc2"].env_text() == before and fleet["qfc2"].backups() == []  # nothing changed, nothing to undo
    assert fleet["qfc1"].env_value() == "2"
    final = summaries(proc.stdout)[-1]
    assert final["qfc2"] == ("server", "1", "1", "failed at the health gate before the change")
    assert final["qfc3"][3] == "not reached"


def test_a_health_gate_failing_after_the_change_scales_the_host_back(fleet, pg):
    # qfc2 runs no worker and has jobs waiting for 5+ minutes. Its new worker (a busybox that never dequeues, like a
    # worker that cannot reach the database) leaves them waiting: workers_idle_with_jobs_waiting, an error, appears
    # only after the change.
    inventory = fleet.write_inventory()
    stopped = run_playbook(PLAYBOOK, inventory, {"qfc_worker_replicas": 0, "qfc_health_gate": False,
                                                 "qfc_target_hosts": "qfc2"})
    assert stopped.returncode == 0, stopped.stdout
    add_jobs(pg, fleet["qfc2"].database, 3, status="pending")
    proc = run_playbook(PLAYBOOK, inventory, {"qfc_worker_replicas": 1,
                                              "qfc_health_gate_severities": ["critical", "error"]}, diff=True)
    assert proc.returncode != 0
    # --diff shows both edits of .env on qfc2, the change and the rollback (one task, two diffs)
    assert "-QFIELDCLOUD_WORKER_REPLICAS=0\n+QFIELDCLOUD_WORKER_REPLICAS=1" in proc.stdout.replace("\r", "")
    assert "-QFIELDCLOUD_WORKER_REPLICAS=1\n+QFIELDCLOUD_WORKER_REPLICAS=0" in proc.stdout.replace("\r", "")
    # three pending jobs of one free project: upstream's dequeue starts one of them (useful_backlog counts 1)
    assert "health gate after the change: error: 1 of 1 workers idle while 1 job(s) could start now" in proc.stdout
    gated = fleet["qfc2"]
    assert gated.env_value() == "0" and gated.running() == []  # scaled to 1, gate failed, back to 0
    assert len(gated.backups()) == 2  # the first run's and the rollout's; the rollback itself keeps none
    final = summaries(proc.stdout)[-1]
    assert final["qfc1"] == ("server", "1", "1", "unchanged")
    assert final["qfc2"] == ("server", "0", "0", "failed at the health gate after the change, rolled back")
    assert final["qfc3"][3] == "not reached"
    # the operations log on qfc2: the change, then the role's rollback naming the gate that failed
    log = gated.exec("cat", "/var/log/qfieldcloud/operations.jsonl").stdout.splitlines()
    change, rollback = [json.loads(line) for line in log][-2:]
    assert (change["action"], change["before"], change["after"], change["result"]) == ("scale", 0, 1, "changed")
    assert (rollback["action"], rollback["before"], rollback["after"]) == ("rollback", 1, 0)
    assert rollback["reason"].startswith("Health gate - read the queue after the change") and "back to 0" in \
        rollback["reason"]
    assert change["actor"]["kind"] == rollback["actor"]["kind"] == "controller"


def test_a_wrong_database_password_fails_the_gate_without_showing_it(fleet):
    wrong = "Wr0ng-db-pass-77"
    text = fleet["qfc1"].env_text().replace("POSTGRES_PASSWORD=%s" % fleet.pg["password"],
                                            "POSTGRES_PASSWORD=%s" % wrong)
    fleet["qfc1"].write("/srv/qfieldcloud/.env", text)
    proc = run_playbook(PLAYBOOK, fleet.write_inventory(), {"qfc_worker_replicas": 2}, diff=True)
    assert proc.returncode != 0
    assert "password authentication failed" in proc.stdout
    assert wrong not in proc.stdout + proc.stderr
    assert fleet["qfc1"].env_text() == text  # the canary failed before its change; the rollout stopped there
    final = summaries(proc.stdout)[-1]
    assert final["qfc1"][3] == "failed at the health gate before the change"
    assert {final[h][3] for h in HOSTS[1:]} == {"not reached"}


def test_check_mode_predicts_the_whole_fleet_and_changes_nothing(fleet):
    before = {node.name: node.env_text() for node in fleet.nodes}
    proc = run_playbook(PLAYBOOK, fleet.write_inventory(), {"qfc_worker_replicas": 2}, check=True, diff=True)
    assert proc.returncode == 0, proc.stdout
    assert {h: c["changed"] for h, c in recap(proc.stdout).items()} == dict.fromkeys(HOSTS, 1)
    assert {r[3] for r in summaries(proc.stdout)[-1].values()} == {"would change"}
    for node in fleet.nodes:
        assert node.env_text() == before[node.name] and len(node.running()) == 1
    assert "+QFIELDCLOUD_WORKER_REPLICAS=2" in proc.stdout


def test_an_unreachable_server_counts_as_failed_and_stops_the_rollout(fleet):
    docker("stop", fleet["qfc2"].container)  # the server is down: no sshd
    # qfc2 and qfc3 share a batch: Ansible alone would not count an unreachable host towards max_fail_percentage
    proc = run_playbook(PLAYBOOK, fleet.write_inventory(), {"qfc_worker_replicas": 2, "qfc_serial": "1,2,100%"})
    assert proc.returncode != 0
    assert recap(proc.stdout)["qfc2"]["failed"] == 1
    final = summaries(proc.stdout)[-1]
    assert final["qfc2"][3] == "unreachable" and final["qfc3"][3] == "changed"
    assert final["worker1"][3] == "not reached"
    assert fleet["worker1"].env_value() == "1"
