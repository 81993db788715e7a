"""qfc_scale on upstream QFieldCloud's own compose files (tag v26.25), through real Ansible runs.

The fixture (tests/fixtures/qfieldcloud-compose/v26.25) holds upstream's docker-compose.yml, its two override files
and .env.example, unchanged. Each test works on a copy whose .env is made from .env.example, so COMPOSE_FILE lists
the three files. Nothing here needs an image: only the read-only Compose calls (config, ps) run, and no test may
create a container, network, volume or image from these files - that is asserted through the Docker Engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import docker
import pytest

# check mode, diff and -vvv output go through run_module; the other runs through pytest-ansible (run_qfc_module)
from conftest import run_module

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = ROOT / "tests" / "fixtures" / "qfieldcloud-compose" / "v26.25"
# sha256 of the files at upstream's tag v26.25 (commit c32bc110f8291b2a32e318528ee46689771630d6)
UPSTREAM_SHA256 = {
    "docker-compose.yml": "ff343549bbc230d3b8bd710bf52ed6741a835fdae6ed326e6744f375e3cf46a6",
    "docker-compose.override.local.yml": "2dfb95935a19e7469e8b1d465d86db6f593db15a451dbbafb36dbe71c8015fe8",
    "docker-compose.override.standalone.yml": "e1070c495c807e9760b8bbc71436ae282ec7b0691dcc01f565bf076b7030254f",
    ".env.example": "2d75ad67e002cf2f74a0bbe4cd7993549b7949c1c8bc7316e0323d20447be289",
    "LICENSE": "912044215e8f8c353c645e43fb6af8c18b5fdb1e17eec9c79b05961fb5b097b2",
}
THREE_FILES = (b"COMPOSE_FILE=docker-compose.yml:docker-compose.override.local.yml:"
               b"docker-compose.override.standalone.yml\n")
REPLICAS_LINE = b"\nQFIELDCLOUD_WORKER_REPLICAS=1\n"
# Values of the secret-looking keys of upstream's .env.example (and a member of its STORAGES JSON).
SECRETS = ("3shJDd2r7Twwkehb", "change_me", "0123456789abcdefghijklmnopqrstuvwxyz", "qfc_webdav_pwd", "rustfsadmin")
# The write-up's override, verbatim ("QFieldCloud Scaling & Monitoring - Key Learnings", 2025-12-19).
WRITEUP_OVERRIDE = """# docker-compose.override.yml
services:
  worker_wrapper:
    deploy:
      replicas: 4  # CONFLICTS with .env variable
"""
DISTINCT = ("services.worker_wrapper: can't set distinct values on 'scale' and 'deploy.replicas': "
            "invalid compose project\n")


def sha(data):
    return hashlib.sha256(data).hexdigest()


def project_copy(tmp_path, project_name=None, drop_replicas=False):
    """A copy of upstream's files with .env = .env.example, byte for byte; optionally with a unique
    COMPOSE_PROJECT_NAME (for runs that ask the Engine about the project) or without the replicas line."""
    path = tmp_path / "qfieldcloud"
    shutil.copytree(UPSTREAM, path)
    env = (path / ".env.example").read_bytes()
    if project_name:
        assert env.count(b"\nCOMPOSE_PROJECT_NAME=qfieldcloud\n") == 1
        env = env.replace(b"\nCOMPOSE_PROJECT_NAME=qfieldcloud\n",
                          b"\nCOMPOSE_PROJECT_NAME=%s\n" % project_name.encode())
    if drop_replicas:
        env = env.replace(REPLICAS_LINE, b"\n")
    (path / ".env").write_bytes(env)
    return path


def unique_name():
    return "qfcup%s" % uuid.uuid4().hex[:8]


def snapshot(path):
    """Every file in the project directory: name -> (bytes, mode, mtime_ns)."""
    return {p.name: (p.read_bytes(), p.stat().st_mode, p.stat().st_mtime_ns) for p in sorted(path.iterdir())}


def compose_config(path):
    """Upstream's project as Compose itself loads it from ``path`` (read-only), with nothing from our environment."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("COMPOSE_") and k != "QFIELDCLOUD_WORKER_REPLICAS"}
    return subprocess.run(["docker", "compose", "--ansi", "never", "--project-directory", str(path), "config",
                           "--format", "json"], cwd=path, env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def engine_objects(project):
    """Everything in the Docker Engine that carries the project's Compose label."""
    client = docker.from_env(version="auto")
    label = {"label": "com.docker.compose.project=%s" % project}
    try:
        return {"containers": [c.name for c in client.containers.list(all=True, filters=label)],
                "networks": [n.name for n in client.networks.list(filters=label)],
                "volumes": [v.name for v in client.volumes.list(filters=label)],
                "images": [i.id for i in client.images.list(all=True, filters=label)]}
    finally:
        client.close()


NOTHING = {"containers": [], "networks": [], "volumes": [], "images": []}


def assert_no_secrets(text):
    for secret in SECRETS:
        assert secret not in text, "a secret of .env.example leaked: %s" % secret


def test_fixture_is_upstream_v26_25_unchanged():
    for name, digest in UPSTREAM_SHA256.items():
        assert sha((UPSTREAM / name).read_bytes()) == digest, "%s is not upstream's v26.25 file" % name
    env = (UPSTREAM / ".env.example").read_bytes()
    assert env.count(b"\n" + THREE_FILES) == 1
    assert env.count(REPLICAS_LINE) == 1
    assert env.count(b"\nCOMPOSE_PATH_SEPARATOR=:\n") == 1


def test_upstream_files_load_in_compose_as_they_are(tmp_path):
    """Compose itself loads upstream's three files with .env = .env.example: no env var missing, and neither the
    absent build contexts (./docker-app, ./docker-qgis, ...) nor the bind-mounted volume stop `config`."""
    path = project_copy(tmp_path)
    proc = compose_config(path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # not even a warning about an unset variable
    config = json.loads(proc.stdout)
    assert config["name"] == "qfieldcloud"
    assert sorted(config["services"]) == [
        "app", "certbot", "createbuckets", "db", "memcached", "mirror_transformation_grids", "mkcert", "nginx",
        "ofelia", "qgis3", "qgis4", "rustfs", "smtp4dev", "webdav", "worker_wrapper"]
    worker = config["services"]["worker_wrapper"]
    assert worker["scale"] == 1 and "deploy" not in worker and "container_name" not in worker
    assert "image" not in worker and worker["build"]["context"] == str(path / "docker-app")
    assert not (path / "docker-app").exists()


def test_check_mode_predicts_without_writing(tmp_path):
    project = unique_name()
    path = project_copy(tmp_path, project)
    before = snapshot(path)
    result = run_module({"project_src": str(path), "replicas": 2}, check=True, diff=True, verbose=True)
    assert not result.failed, result
    assert {k: result[k] for k in ("changed", "replicas", "previous_replicas", "previous_running", "running",
                                   "containers", "project", "rolled_back")} == {
        "changed": True, "replicas": 2, "previous_replicas": 1, "previous_running": 0, "running": 2,
        "containers": [], "project": project, "rolled_back": False}
    assert "backup_file" not in result.data
    assert "-QFIELDCLOUD_WORKER_REPLICAS=1\n+QFIELDCLOUD_WORKER_REPLICAS=2" in result.output
    assert snapshot(path) == before  # .env byte-identical, same mtime, no backup or temporary file
    assert engine_objects(project) == NOTHING
    assert_no_secrets(result.output)


def test_check_mode_on_the_pristine_env_example_without_apply(tmp_path):
    path = project_copy(tmp_path)
    assert (path / ".env").read_bytes() == (path / ".env.example").read_bytes()
    before = snapshot(path)
    result = run_module({"project_src": str(path), "replicas": 2, "apply": False}, check=True)
    assert not result.failed, result
    assert (result["changed"], result["replicas"], result["previous_replicas"], result["running"],
            result["project"]) == (True, 2, 1, None, "qfieldcloud")
    assert snapshot(path) == before
    again = run_module({"project_src": str(path), "replicas": 1, "apply": False}, check=True)
    assert not again.failed and again["changed"] is False, again


def test_apply_false_edits_only_the_replicas_line(tmp_path, run_qfc_module):
    path = project_copy(tmp_path)
    env = path / ".env"
    original = env.read_bytes()
    mode = env.stat().st_mode
    others = {k: v for k, v in snapshot(path).items() if k != ".env"}
    result = run_module({"project_src": str(path), "replicas": 2, "apply": False}, diff=True, verbose=True)
    assert not result.failed, result
    assert (result["changed"], result["replicas"], result["previous_replicas"], result["previous_running"],
            result["running"], result["containers"], result["project"]) == (True, 2, 1, None, None, [], "qfieldcloud")
    expected = original.replace(REPLICAS_LINE, b"\nQFIELDCLOUD_WORKER_REPLICAS=2\n")
    assert env.read_bytes() == expected and len(expected) == len(original)
    assert [i for i, (a, b) in enumerate(zip(original, expected)) if a != b] == [original.index(REPLICAS_LINE) + 29]
    assert env.stat().st_mode == mode
    backup = Path(result["backup_file"])
    assert backup.parent == path and backup.name.startswith(".env.") and backup.name.endswith("~")
    assert backup.read_bytes() == original
    now = snapshot(path)
    assert sorted(now) == sorted([".env", backup.name] + list(others))
    assert {k: v for k, v in now.items() if k in others} == others  # compose files and .env.example untouched
    assert "-QFIELDCLOUD_WORKER_REPLICAS=1\n+QFIELDCLOUD_WORKER_REPLICAS=2" in result.output
    assert_no_secrets(result.output)
    # Upstream's Compose reads the new count from the edited .env.
    proc = compose_config(path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["services"]["worker_wrapper"]["scale"] == 2
    # A second run changes nothing: no write, no backup.
    settled = snapshot(path)
    again = run_qfc_module({"project_src": str(path), "replicas": 2, "apply": False})
    assert not again.is_failed, again
    assert again["changed"] is False and "backup_file" not in again.data
    assert snapshot(path) == settled


def test_env_without_the_variable_gets_it_appended(tmp_path, run_qfc_module):
    """An .env without QFIELDCLOUD_WORKER_REPLICAS (written before upstream's PR #437) breaks every Compose command of
    upstream's files (`scale: ${QFIELDCLOUD_WORKER_REPLICAS}` is blank); the module's preflight passes the new value
    and appends the line, and nothing else changes."""
    path = project_copy(tmp_path, drop_replicas=True)
    env = path / ".env"
    original = env.read_bytes()
    broken = compose_config(path)
    assert broken.returncode != 0
    assert 'The \\"QFIELDCLOUD_WORKER_REPLICAS\\" variable is not set' in broken.stderr
    assert "services.worker_wrapper.scale" in broken.stderr
    result = run_qfc_module({"project_src": str(path), "replicas": 2, "apply": False})
    assert not result.is_failed, result
    assert (result["changed"], result["previous_replicas"]) == (True, None)
    assert env.read_bytes() == original + b"QFIELDCLOUD_WORKER_REPLICAS=2\n"
    assert Path(result["backup_file"]).read_bytes() == original
    fixed = compose_config(path)
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads(fixed.stdout)["services"]["worker_wrapper"]["scale"] == 2


def test_preflight_accepts_the_base_file_alone(tmp_path):
    path = project_copy(tmp_path)
    env = path / ".env"
    env.write_bytes(env.read_bytes().replace(THREE_FILES, b"COMPOSE_FILE=docker-compose.yml\n"))
    before = snapshot(path)
    result = run_module({"project_src": str(path), "replicas": 2, "apply": False}, check=True)
    assert not result.failed, result
    assert (result["changed"], result["previous_replicas"], result["project"]) == (True, 1, "qfieldcloud")
    assert snapshot(path) == before


def test_documented_default_compose_file_does_not_load_and_is_refused(tmp_path, run_qfc_module):
    """Upstream finding: .env.example's `# DEFAULT: docker-compose.yml:docker-compose.override.local.yml` does not
    load at v26.25 - the local override makes `app` depend on `db`, which only the standalone override defines.
    The preflight refuses it with Compose's reason and writes nothing."""
    path = project_copy(tmp_path)
    assert b"# DEFAULT: docker-compose.yml:docker-compose.override.local.yml\n" + THREE_FILES in (
        path / ".env").read_bytes()
    env = path / ".env"
    env.write_bytes(env.read_bytes().replace(
        THREE_FILES, b"COMPOSE_FILE=docker-compose.yml:docker-compose.override.local.yml\n"))
    before = snapshot(path)
    result = run_qfc_module({"project_src": str(path), "replicas": 2, "apply": False})
    assert result.is_failed
    assert result["msg"] == (
        'The compose project in %s does not load with QFIELDCLOUD_WORKER_REPLICAS=2: service "app" depends on '
        'undefined service "db": invalid compose project. .env was not changed.' % path)
    assert result["stderr"] == 'service "app" depends on undefined service "db": invalid compose project\n'
    assert result["changed"] is False and "backup_file" not in result.data
    assert snapshot(path) == before


def add_writeup_override(path):
    (path / "docker-compose.override.yml").write_text(WRITEUP_OVERRIDE)
    env = path / ".env"
    text = env.read_bytes()
    assert text.count(THREE_FILES) == 1
    env.write_bytes(text.replace(THREE_FILES, THREE_FILES[:-1] + b":docker-compose.override.yml\n"))
    return path / "docker-compose.override.yml"


@pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
def test_writeup_deploy_replicas_override_is_refused_before_any_change(tmp_path, check):
    project = unique_name()
    path = project_copy(tmp_path, project)
    override = add_writeup_override(path)
    # The write-up's failure, reproduced on upstream's files: with .env at 1 every Compose command breaks.
    proc = compose_config(path)
    assert (proc.returncode != 0, proc.stderr) == (True, DISTINCT)
    before = snapshot(path)
    result = run_module({"project_src": str(path), "replicas": 2}, check=check, diff=True, verbose=True)
    assert result.failed
    assert result["msg"] == (
        "The compose project does not load with QFIELDCLOUD_WORKER_REPLICAS=2: worker_wrapper sets both scale and a "
        "different deploy.replicas. %s sets services.worker_wrapper.deploy.replicas; remove it, the count lives in "
        "${QFIELDCLOUD_WORKER_REPLICAS} (scale:). .env was not changed." % override)
    assert result["stderr"] == DISTINCT
    assert result["rc"] != 0 and result["cmd"].endswith(" config --format json")
    assert (result["changed"], result["previous_replicas"], result["previous_running"], result["running"]) == (
        False, 1, None, None)
    assert "backup_file" not in result.data and "project" not in result.data
    assert snapshot(path) == before  # .env byte-identical, no backup
    assert engine_objects(project) == NOTHING
    assert_no_secrets(result.output)


def test_writeup_override_with_the_same_count_is_accepted(tmp_path):
    """Documented behaviour, not a refusal: Compose accepts deploy.replicas equal to scale, and so does the module
    (its documentation refuses only a deploy.replicas that differs). The override stays a trap for the next count."""
    project = unique_name()
    path = project_copy(tmp_path, project)
    add_writeup_override(path)
    before = snapshot(path)
    result = run_module({"project_src": str(path), "replicas": 4, "force": True}, check=True)
    assert not result.failed, result
    assert (result["changed"], result["replicas"], result["previous_running"], result["running"]) == (True, 4, 0, 4)
    assert snapshot(path) == before
    assert engine_objects(project) == NOTHING
