"""playbooks/scale.yml and playbooks/queue_report.yml through ansible-runner, the engine AWX runs jobs with: a private
data dir (project, inventory, env), and the artifacts AWX shows (status, rc, per-host events, the stats artifact)."""

from __future__ import annotations

import json
import os
import shutil

import ansible_runner
import pytest
from conftest import BIN, ROOT, assert_no_secrets

COLLECTIONS = ROOT / ".collections"


def private_data_dir(tmp_path, stack, db, extra_vars):
    """The layout AWX hands ansible-runner: project/ with the playbooks, inventory/, env/extravars and env/envvars."""
    base = tmp_path / "runner"
    shutil.copytree(ROOT / "playbooks", base / "project" / "playbooks")
    (base / "inventory").mkdir(parents=True)
    (base / "inventory" / "hosts.json").write_text(json.dumps({"qfieldcloud": {"hosts": {"qfc1": {
        "ansible_connection": "local", "ansible_python_interpreter": str(BIN / "python"),
        "qfc_project_src": str(stack.path)}}}}))
    (base / "env").mkdir()
    (base / "env" / "extravars").write_text(json.dumps(extra_vars))
    # As an execution environment would have it: the collection installed on the collections path.
    (base / "env" / "envvars").write_text(json.dumps({"ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
                                                      "PATH": "%s:%s" % (BIN, os.environ["PATH"])}))
    return base


def run(base, playbook):
    return ansible_runner.run(private_data_dir=str(base), playbook="playbooks/%s" % playbook, quiet=True,
                              timeout=600)


def events(result):
    return list(result.events)  # a generator over the artifact files


def host_events(result, host):
    return [e for e in events(result) if (e.get("event_data") or {}).get("host") == host]


def stats_artifact(result):
    """What AWX stores as the job's artifacts: the set_stats data carried by the playbook_on_stats event."""
    stats = [e for e in events(result) if e["event"] == "playbook_on_stats"]
    assert len(stats) == 1
    return stats[0]["event_data"].get("artifact_data") or {}


def test_scale_through_ansible_runner_publishes_the_outcome_as_awx_shows_it(db_stack, tmp_path):
    stack, db = db_stack
    base = private_data_dir(tmp_path, stack, db, {"qfc_worker_replicas": 3})
    result = run(base, "scale.yml")
    assert (result.status, result.rc) == ("successful", 0), result.stdout.read()
    assert len(stack.running()) == 3
    outcome = stats_artifact(result)["qfc_scale_outcomes"]["qfc1"]
    assert (outcome["before"], outcome["after"], outcome["result"]) == (2, 3, "changed")
    ok = [e for e in host_events(result, "qfc1") if e["event"] == "runner_on_ok"]
    scale = [e for e in ok if e["event_data"]["task_action"] == "qfieldcloud.ops.qfc_scale_rollout"]
    assert len(scale) == 1 and scale[0]["event_data"]["res"]["changed"] is True
    assert scale[0]["event_data"]["res"]["outcome"]["result"] == "changed"  # each host's event carries its outcome
    assert result.stats["changed"] == {"qfc1": 1} and not result.stats["failures"]
    assert_no_secrets(json.dumps(events(result)), db.pg.password)


def test_a_failed_scale_is_a_failed_job_with_the_reason_in_the_artifact(db_stack, tmp_path):
    stack, db = db_stack
    base = private_data_dir(tmp_path, stack, db, {"qfc_worker_replicas": 101})
    result = run(base, "scale.yml")
    assert (result.status, result.rc) == ("failed", 2)
    outcome = stats_artifact(result)["qfc_scale_outcomes"]["qfc1"]
    assert outcome["result"].startswith("failed") and "100" in outcome["message"]
    assert len(stack.running()) == 2


def test_queue_report_through_ansible_runner_publishes_the_queue_as_a_stats_artifact(db_stack, tmp_path):
    """AWX's Fact Storage cannot hold qfc_queue with ansible-core 2.19 (see the next test); the report publishes it
    with set_stats, which AWX shows as the job's artifacts and passes on to later workflow nodes."""
    stack, db = db_stack
    base = private_data_dir(tmp_path, stack, db, {})
    result = run(base, "queue_report.yml")
    assert (result.status, result.rc) == ("successful", 0), result.stdout.read()
    queue = stats_artifact(result)["qfc_queue_reports"]["qfc1"]
    assert queue["workers"]["configured"] == 2 and "decision" in queue and "alerts" in queue
    assert_no_secrets(json.dumps(events(result)), db.pg.password)


def test_fact_cache_is_not_what_awx_reads_with_ansible_core_2_19(db_stack, tmp_path):
    """Why the docs no longer promise AWX Fact Storage: with ansible-core 2.19 the jsonfile cache that ansible-runner
    sets up is written as ``fact_cache/s1_<host>`` wrapped in ``{"__payload__": ...}``, while AWX (and
    ``Runner.get_fact_cache``) read ``fact_cache/<host>`` as plain JSON. If a later ansible-core or AWX fixes this, this
    test fails and the docs can promise it again."""
    stack, db = db_stack
    base = private_data_dir(tmp_path, stack, db, {})
    result = ansible_runner.run(private_data_dir=str(base), playbook="playbooks/queue_report.yml", quiet=True,
                                timeout=600, fact_cache_type="jsonfile")
    assert result.status == "successful"
    cache = base / "artifacts" / result.config.ident / "fact_cache"
    names = sorted(p.name for p in cache.iterdir())
    if result.get_fact_cache("qfc1"):
        pytest.fail("ansible-runner reads the fact cache again (%s): AWX Fact Storage may work, update docs/awx.md"
                    % names)
    assert "qfc1" not in names
    assert any(n.endswith("qfc1") for n in names), names
