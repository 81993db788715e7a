"""The collection as users get it: the tarball `ansible-galaxy collection build` makes from a tested checkout, and the
execution environment's build context that `make ee` (scripts/ee.sh) makes from that tarball."""

import json
import os
import subprocess
import tarfile

import pytest
import yaml

from tests.support.package import ROOT, VENV_BIN, build, checkout_copy, galaxy_version

# Development files and caches that a tested checkout holds and that must never ship (issue: a 902 KB tarball
# with a second copy of the collection under .ansible/ left by ansible-lint).
NEVER_SHIPPED = (".ansible/", ".pytest_cache/", ".ruff_cache/", "capacity-report/", "molecule/", "tests/", "bench/",
                 ".venv/", ".state/", ".collections/", "dist/", "context/", "scripts/", "collections/")
MAX_TARBALL_BYTES = 300_000


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    """Built from a copy of the checkout with the caches a test run leaves behind planted in it."""
    src = checkout_copy(tmp_path_factory.mktemp("checkout") / "ops")
    for junk in (".ansible/collections/ansible_collections/qfieldcloud/ops/README.md", ".pytest_cache/v/x",
                 ".ruff_cache/0/x", "capacity-report/logs/x.log", "molecule/default/.cache/x", "dist/old.tar.gz"):
        (src / junk).parent.mkdir(parents=True, exist_ok=True)
        (src / junk).write_text("junk\n")
    return build(src, src.parent / "out")


def test_the_tarball_ships_the_collection_and_no_development_files(tarball):
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    shipped = [n for n in names if any(n.startswith(p) or n + "/" == p for p in NEVER_SHIPPED)]
    assert shipped == [], shipped
    for needed in ("COPYING", "README.md", "meta/runtime.yml", "plugins/modules/qfc_scale.py",
                   "roles/scale/meta/argument_specs.yml", "playbooks/scale.yml", "awx/surveys/scale.json",
                   "changelogs/changelog.yaml", "meta/execution-environment.yml"):
        assert needed in names, needed
    assert manifest["collection_info"]["license"] == ["GPL-3.0-or-later"]
    size = tarball.stat().st_size
    print("tarball: %d bytes, %d entries" % (size, len(names)))
    assert size < MAX_TARBALL_BYTES, size


def test_the_licence_is_the_gpl_v3_that_galaxy_yml_names():
    text = (ROOT / "COPYING").read_text(encoding="utf-8")
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text
    assert yaml.safe_load((ROOT / "galaxy.yml").read_text(encoding="utf-8"))["license"] == ["GPL-3.0-or-later"]


def test_make_ee_builds_a_context_that_installs_the_local_tarball(tmp_path):
    """`make ee` runs scripts/ee.sh: tarball, `ansible-builder create`, then an offline install the way the image's
    galaxy stage does it (from _build/, requirements.yml). The old requirements (a git tag) could not resolve."""
    context = tmp_path / "context"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "ee.sh"), str(context)], check=False, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "qfieldcloud.ops %s" % galaxy_version() in proc.stdout
    build = context / "_build"
    assert (build / "collections" / "qfieldcloud-ops.tar.gz").is_file()
    requirements = yaml.safe_load((build / "requirements.yml").read_text(encoding="utf-8"))
    assert requirements["collections"] == [{"name": "collections/qfieldcloud-ops.tar.gz", "type": "file"}]
    containerfile = next(p for p in (context / "Containerfile", context / "Dockerfile") if p.exists()).read_text()
    assert "COPY _build /build" in containerfile and "WORKDIR /build" in containerfile
    assert "-r requirements.yml" in containerfile


def test_ee_check_fails_for_requirements_that_do_not_resolve(tmp_path):
    """The check in scripts/ee.sh is real: a requirements file naming a missing tarball fails the build."""
    build = tmp_path / "_build"
    build.mkdir()
    (build / "requirements.yml").write_text("collections:\n  - name: collections/missing.tar.gz\n    type: file\n")
    proc = subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--offline", "-r",
                           "requirements.yml", "--collections-path", str(tmp_path / "c")], cwd=build,
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0


def test_make_release_writes_the_changelog_with_new_modules_and_roles_and_no_breaking_changes(tmp_path):
    repo = checkout_copy(tmp_path / "ops")
    env = dict(os.environ, QFC_VENV=str(ROOT / ".venv"))
    proc = subprocess.run(["bash", "scripts/release.sh", "0.1.0"], check=False, cwd=repo, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    changes = yaml.safe_load((repo / "changelogs" / "changelog.yaml").read_text(encoding="utf-8"))
    release = changes["releases"]["0.1.0"]
    modules = {"qfc_scale", "qfc_queue_facts", "qfc_job_cleanup", "qfc_capacity_report", "qfc_autoscale_decision",
               "qfc_operations_log_info", "qfc_scale_rollout"}
    assert {m["name"] for m in release["modules"]} == modules
    roles = {r["name"] for r in release.get("objects", {}).get("role", [])}
    assert roles == {role.name for role in (ROOT / "roles").iterdir() if role.is_dir()}, roles
    # The first release: nothing can break against an earlier version.
    assert "breaking_changes" not in release["changes"]
    markdown = (repo / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "### New Modules" in markdown and "### New Roles" in markdown
    assert not list((repo / "changelogs" / "fragments").glob("*.yml"))
    assert (repo / "dist" / "qfieldcloud-ops-0.1.0.tar.gz").is_file()


def test_make_release_refuses_a_version_that_is_not_semantic(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "release.sh"), "1.0"], check=False, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "semantic version" in proc.stderr
