"""playbooks/scale.yml, run the way users run it: by path and as the collection playbook qfieldcloud.ops.scale."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import BIN, ROOT, ansible_env, assert_no_secrets, run_playbook


def inventory_for(stack, tmp_path):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("qfieldcloud:\n  hosts:\n    qfc1:\n      ansible_connection: local\n"
                         "      ansible_python_interpreter: %s\n      qfc_project_src: %s\n"
                         # this stack has no database to read the queue from (the fleet tests cover the gate)
                         "      qfc_health_gate: false\n"
                         % (BIN / "python", stack.path))
    return inventory


def recap(output):
    match = re.search(r"^qfc1\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output, re.M)
    assert match, output
    return {k: int(v) for k, v in zip(("ok", "changed", "unreachable", "failed"), match.groups())}


@pytest.mark.parametrize("playbook", [str(ROOT / "playbooks" / "scale.yml"), "qfieldcloud.ops.scale"])
def test_playbook_prints_before_and_after_and_is_idempotent(stack, tmp_path, playbook):
    inventory = inventory_for(stack, tmp_path)
    first = run_playbook(playbook, inventory, {"qfc_worker_replicas": 4}, diff=True)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "worker_wrapper: running 2 -> 4 (QFIELDCLOUD_WORKER_REPLICAS 2 -> 4)" in first.stdout
    assert recap(first.stdout)["changed"] == 1
    assert len(stack.running()) == 4
    assert_no_secrets(first.stdout + first.stderr)
    second = run_playbook(playbook, inventory, {"qfc_worker_replicas": 4})
    assert second.returncode == 0
    assert "running 4 -> 4" in second.stdout
    assert recap(second.stdout)["changed"] == 0


def test_playbook_check_mode_predicts_without_changing(stack, tmp_path):
    inventory = inventory_for(stack, tmp_path)
    before = stack.env_text()
    proc = run_playbook(ROOT / "playbooks" / "scale.yml", inventory, {"qfc_worker_replicas": 3}, check=True, diff=True)
    assert proc.returncode == 0, proc.stdout
    assert recap(proc.stdout)["changed"] == 1
    assert "running 2 -> 3" in proc.stdout and "[check mode: predicted]" in proc.stdout
    assert stack.env_text() == before and len(stack.running()) == 2


def test_qfc_scale_refuses_a_non_integer_count_and_names_the_role_variable(stack, tmp_path):
    """qfc_worker_replicas is `type: raw` in the role's argument spec (an integer or auto): qfc_scale checks it."""
    inventory = inventory_for(stack, tmp_path)
    before = stack.env_text()
    proc = run_playbook(ROOT / "playbooks" / "scale.yml", inventory, {"qfc_worker_replicas": "many"})
    assert proc.returncode != 0
    assert "qfc_worker_replicas" in proc.stdout and "int" in proc.stdout
    assert stack.env_text() == before


def test_playbook_failure_reports_the_host(stack, tmp_path):
    (stack.path / "docker-compose.override.prod.yml").write_text(
        "services:\n  worker_wrapper:\n    deploy:\n      replicas: 7\n")
    inventory = inventory_for(stack, tmp_path)
    before = stack.env_text()
    proc = run_playbook(ROOT / "playbooks" / "scale.yml", inventory, {"qfc_worker_replicas": 3})
    assert proc.returncode != 0
    assert recap(proc.stdout)["failed"] == 1
    assert "docker-compose.override.prod.yml sets services.worker_wrapper.deploy.replicas" in proc.stdout
    assert stack.env_text() == before


def test_qfc_expect_current_refuses_a_changed_count_without_failing_the_host(stack, tmp_path):
    """The scale role's compare-and-set (issue 21 defect 10; the autoscale role sets it): .env holds 2, not the 3 the
    change was decided from, so nothing changes, in check mode too, and the host's result is refused, not failed."""
    inventory = inventory_for(stack, tmp_path)
    oplog = tmp_path / "operations.jsonl"
    before = stack.env_text()
    for check in (True, False):
        proc = run_playbook(ROOT / "playbooks" / "scale.yml", inventory,
                            {"qfc_worker_replicas": 4, "qfc_expect_current": 3, "qfc_operations_log": str(oplog)},
                            check=check, diff=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert recap(proc.stdout)["changed"] == 0 and recap(proc.stdout)["failed"] == 0
        assert re.search(r'"qfc1\s+server\s+2\s+2\s+refused"', proc.stdout), proc.stdout  # the rollout summary
        assert "expect_current=3, but %s holds QFIELDCLOUD_WORKER_REPLICAS=2" % stack.env_file in proc.stdout
        assert "the configured count changed from 3 to 2" in proc.stdout
        assert stack.env_text() == before and len(stack.running()) == 2 and stack.backups() == []
        assert not oplog.exists()
    matched = run_playbook(ROOT / "playbooks" / "scale.yml", inventory,
                           {"qfc_worker_replicas": 3, "qfc_expect_current": 2, "qfc_operations_log": str(oplog)})
    assert matched.returncode == 0 and recap(matched.stdout)["changed"] == 1, matched.stdout
    assert "running 2 -> 3 (QFIELDCLOUD_WORKER_REPLICAS 2 -> 3)" in matched.stdout and stack.env_value() == "3"
    bad = run_playbook(ROOT / "playbooks" / "scale.yml", inventory,
                       {"qfc_worker_replicas": 2, "qfc_expect_current": "x"})
    assert bad.returncode != 0 and "qfc_expect_current" in bad.stdout and stack.env_value() == "3", bad.stdout


@pytest.mark.parametrize("module, fragments", [
    ("qfc_scale", ("replicas", "wait_timeout", "rollback", "project_src", "backup_file", "Secret-looking values")),
    ("qfc_queue_facts", ("login_password", "statement_timeout", "useful_backlog", "recommended_replicas")),
    ("qfc_job_cleanup", ("orphaned_queued", "allow_pending", "batch_size", "SKIP LOCKED", "max_batch_ms")),
    ("qfc_capacity_report", ("logs", "window", "dest", "decisions")),
])
def test_ansible_doc_renders(module, fragments):
    proc = subprocess.run([str(BIN / "ansible-doc"), "qfieldcloud.ops." + module], cwd=ROOT, env=ansible_env(),
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    for fragment in fragments + ("check_mode", "diff_mode", "idempotent"):
        assert fragment in proc.stdout, fragment


def test_qfc_async_carries_a_scale_down_longer_than_the_task_timeout(stack, tmp_path):
    """A worker that needs 9 s to finish its job after SIGTERM (within stop_grace_period) and a site-wide task timeout
    of 5 s (ANSIBLE_TASK_TIMEOUT, as AWX admins set one): with qfc_async the module runs in the background and is
    polled (the timeout only covers starting it), so the scale-down completes gracefully; check mode still works."""
    stack.set_env("QFC_SIM_SHUTDOWN_S", "9")
    stack.up()  # recreates the workers with the new setting
    victim = [c for c in stack.containers() if c.name.endswith("-2")][0]
    inventory = inventory_for(stack, tmp_path)
    cmd = [str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / "scale.yml"), "-i", str(inventory), "-e",
           '{"qfc_worker_replicas": 1, "qfc_async": true, "qfc_poll": 1}']
    env = ansible_env({"ANSIBLE_TASK_TIMEOUT": "5"})
    check = subprocess.run(cmd + ["--check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "running 2 -> 1" in check.stdout and len(stack.running()) == 2
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ASYNC POLL" in proc.stdout  # polled in the background, not one long call
    assert "worker_wrapper: running 2 -> 1" in proc.stdout
    assert stack.running() == [c.name for c in stack.containers() if c.name.endswith("-1")]
    assert (stack.out / ("graceful-%s" % victim.id[:12])).exists()


def test_the_plays_module_defaults_reach_qfc_scale_inside_the_rollout_task(stack, tmp_path):
    """The role runs qfc_scale inside qfc_scale_rollout (an action plugin), where Ansible does not apply module_defaults
    by itself: a play's `module_defaults` for qfc_scale (here its Docker CLI, a wrapper that logs each call) must still
    reach it, as it reached the role's qfc_scale task before."""
    log = tmp_path / "docker-calls.log"
    wrapper = tmp_path / "docker-wrapper"
    wrapper.write_text('#!/bin/sh\necho "$*" >> %s\nexec %s "$@"\n' % (log, shutil.which("docker")))
    wrapper.chmod(0o755)
    playbook = tmp_path / "defaults.yml"
    playbook.write_text(
        "- hosts: qfieldcloud\n  gather_facts: false\n"
        "  module_defaults:\n    qfieldcloud.ops.qfc_scale:\n      docker_cli: %s\n"
        "  roles:\n    - role: qfieldcloud.ops.scale\n" % wrapper)
    proc = run_playbook(str(playbook), inventory_for(stack, tmp_path), {"qfc_worker_replicas": 3})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(stack.running()) == 3
    calls = log.read_text().splitlines()
    assert any(" up " in " %s " % call and "--scale" in call for call in calls), calls
