"""The pieces qfc_scale is made of, as pure functions: the count's guards and the rollback target (_replicas), the
compose explanations (_compose), backups (_files), the .env value on disk (_envfile), the input checks (_scaler),
and each argument spec against the doc fragment it pairs with."""

from __future__ import annotations

import importlib
import os
import re

import pytest
import yaml

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _compose, _envfile, _files, _replicas
from ansible_collections.qfieldcloud.ops.plugins.module_utils._compose import ComposeError
from ansible_collections.qfieldcloud.ops.plugins.module_utils._scaler import check_inputs


def fragment(name):
    module = importlib.import_module("ansible_collections.qfieldcloud.ops.plugins.doc_fragments.%s" % name)
    return yaml.safe_load(module.ModuleDocFragment.DOCUMENTATION)


@pytest.mark.parametrize("name, spec", [("_project", _compose.project_argument_spec),
                                        ("_replicas", _replicas.argument_spec)])
def test_each_argument_spec_matches_its_doc_fragment(name, spec):
    options = fragment(name)["options"]
    spec = spec()
    assert sorted(options) == sorted(spec)
    for option, doc in options.items():
        assert doc["type"] == spec[option]["type"], option
        assert doc.get("default") == spec[option].get("default"), option
        assert bool(doc.get("required")) == bool(spec[option].get("required")), option


def test_the_guideline_default_is_the_one_constant():
    assert _replicas.argument_spec()["max_replicas_per_core"]["default"] is _replicas.DEFAULT_MAX_REPLICAS_PER_CORE


def test_the_project_fragment_states_the_minimum_compose_version():
    wanted = ".".join(map(str, _compose.MINIMUM_COMPOSE_VERSION))
    assert any("Compose v2 plugin %s or newer" % wanted in r for r in fragment("_project")["requirements"])


@pytest.mark.parametrize("replicas", [0, 1, 100])
def test_check_count_accepts_zero_to_the_ceiling(replicas):
    assert _replicas.check_count(replicas) == replicas


@pytest.mark.parametrize("replicas, message", [
    (-1, "replicas must be 0 or more, got -1."),
    (101, "replicas=101 is above the hard ceiling of 100 workers per host, which force=true does not lift. Spread "
          "the workers over more servers."),
    (2 ** 63 - 1, "replicas=9223372036854775807 is above the hard ceiling of 100"),
])
def test_check_count_refuses(replicas, message):
    with pytest.raises(ValueError) as caught:
        _replicas.check_count(replicas)
    assert str(caught.value).startswith(message)


def test_guard_problem():
    assert _replicas.guard_problem(5, 2, 2.5, force=False) is None
    assert _replicas.guard_problem(6, 2, 2.5, force=True) is None
    assert _replicas.guard_problem(6, 2, 2.5, force=False) == (
        "replicas=6 exceeds the core-count guard: 2 CPU cores x 2.5 workers per core = at most 5 workers on this "
        "host. Add cores, spread workers over more servers, or set force=true.")


@pytest.mark.parametrize("previous, running, expected", [(2, 4, 2), (0, 4, 0), (None, 3, 3), (None, 0, 0),
                                                         (None, None, None), (5, None, 5)])
def test_rollback_target_prefers_the_previous_env_value(previous, running, expected):
    assert _replicas.rollback_target(previous, running) == expected


def test_check_inputs_accepts_the_defaults():
    spec = {k: v.get("default") for k, v in _replicas.argument_spec().items()}
    spec.update(settle_time=1.0, wait_timeout=120, lock_timeout=1800, command_timeout=1200, backup_keep=10,
                env_var="QFIELDCLOUD_WORKER_REPLICAS", service="worker_wrapper")
    check_inputs(spec)
    with pytest.raises(ValueError, match=r"wait_timeout \(1s\) must be longer than settle_time \(1.0s\)"):
        check_inputs(dict(spec, wait_timeout=1))


def failed_config(stderr, timed_out=False):
    return ComposeError("docker compose config failed", cmd="docker compose config", rc=15, stderr=stderr,
                        timed_out=timed_out)


def test_explain_config_error_names_the_conflicting_file():
    exc = failed_config("services.worker_wrapper: can't set distinct values on 'scale' and 'deploy.replicas'")
    text = _compose.explain_config_error(exc, ["/p/x.yml sets services.worker_wrapper.deploy.replicas; remove it"],
                                         "QFC_N", 4, "worker_wrapper", "/p")
    assert text == ("The compose project does not load with QFC_N=4: worker_wrapper sets both scale and a different "
                    "deploy.replicas. /p/x.yml sets services.worker_wrapper.deploy.replicas; remove it. .env was not "
                    "changed.")
    text = _compose.explain_config_error(exc, [], "QFC_N", 4, "worker_wrapper", "/p")
    assert "Remove deploy.replicas from worker_wrapper in the override files." in text


def test_explain_config_error_other_cases():
    assert _compose.explain_config_error(failed_config("", timed_out=True), [], "V", 1, "w", "/p") == \
        "docker compose config failed. .env was not changed."
    text = _compose.explain_config_error(failed_config("WARN[0000] x is obsolete\nyaml: line 3: bad"), [], "V", 1,
                                         "w", "/p")
    assert text == "The compose project in /p does not load with V=1: yaml: line 3: bad. .env was not changed."
    assert "container_name" in _compose.explain_config_error(failed_config("container_name conflicts"), [], "V", 2,
                                                             "w", "/p")


def test_service_problem():
    def no_problems():
        return []

    ok = {"services": {"w": {"scale": 3}}}
    assert _compose.service_problem(ok, "w", "V", 3, "a.yml", no_problems) is None
    assert "Service x is not defined in the compose project (a.yml)" in _compose.service_problem(
        ok, "x", "V", 3, "a.yml", no_problems)
    assert "with V=2 Compose would run 3" in _compose.service_problem(ok, "w", "V", 2, "a.yml", no_problems)
    named = {"services": {"w": {"scale": 1, "container_name": "c"}}}
    text = _compose.service_problem(named, "w", "V", 1, "a.yml", lambda: ["a.yml sets container_name"])
    assert text == ("Service w sets container_name, so it cannot run more than one container. a.yml sets "
                    "container_name. Nothing was changed.")


def test_read_conflicts_reads_the_files_and_skips_broken_ones(tmp_path):
    good = tmp_path / "a.yml"
    good.write_text("services:\n  w:\n    container_name: c\n    deploy: {replicas: 2}\n")
    broken = tmp_path / "b.yml"
    broken.write_text("services: [\n")
    found = _compose.read_conflicts([str(good), str(broken), str(tmp_path / "absent.yml")], "w", "V")
    assert len(found) == 2 and all(str(good) in p for p in found)


def test_prune_backups_keeps_the_newest(tmp_path):
    env = tmp_path / ".env"
    env.write_text("A=1\n")
    names = [".env.%d.2026-11-%02d@08:00:00~" % (100 + day, day) for day in range(1, 6)]
    for name in names:
        (tmp_path / name).write_text("A=0\n")
    (tmp_path / ".env.bak").write_text("mine\n")
    removed, failures = _files.prune_backups(str(env), 2)
    assert sorted(removed) == sorted(str(tmp_path / n) for n in names[:3]) and failures == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".env", ".env.bak"] + names[3:])


def test_remove_partial_backups_only_removes_this_process_copies(tmp_path):
    env = tmp_path / ".env"
    env.write_text("A=1\n")
    mine = tmp_path / (".env.%d.2026-11-29@18:16:17~" % os.getpid())
    other = tmp_path / ".env.1.2026-11-29@18:16:17~"
    mine.write_text("A")
    other.write_text("A=1\n")
    _files.remove_partial_backups(str(env), os.getpid())
    assert not mine.exists() and other.exists()


def test_the_backup_pattern_is_what_backup_local_writes():
    assert re.match(_files.BACKUP_RE % re.escape(".env"), ".env.4242.2026-11-29@18:16:17~")


def test_value_in_and_printable(tmp_path):
    env = tmp_path / ".env"
    env.write_bytes(b"N=1\nN=3 # f\xfcr\n")
    assert _envfile.value_in(str(env), "N") == "3" and _envfile.value_in(str(env), "M") is None
    assert _envfile.value_in(str(tmp_path / "absent"), "N") is None
    env.write_text('N="unterminated\n')
    assert _envfile.value_in(str(env), "N") is None
    assert _envfile.printable(b"f\xfcr".decode("utf-8", errors="surrogateescape")) == "f\ufffdr"
