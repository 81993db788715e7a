"""The collection installed the way users and AWX execution environments have it: the tarball installed into an empty
collections path owned by root, used by a non-root user from a directory of their own. Every module, filter and
role documents itself, every playbook passes --syntax-check by its FQCN, and the capacity report runs for real."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest
from test_capacity_report import metrics_log

from tests.support.package import ROOT, VENV_BIN, build, checkout_copy

USER = "qfcops-test"
# The test venv's Python may live where other users cannot reach it (pyenv under /root): the user gets a venv of its
# own from the system Python, with the ansible-core range the collection is tested with.
USER_VENV = ROOT / ".state" / "venv-user"
USER_BIN = USER_VENV / "bin"
MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("qfc_*.py"))
FILTERS = sorted(p.stem for p in (ROOT / "plugins" / "filter").glob("*.yml"))
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file())
PLAYBOOKS = sorted(p.stem for p in (ROOT / "playbooks").glob("*.yml"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates a user and a root-owned collections path")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(collections path owned by root, a non-root user's home); the user exists afterwards (idempotent)."""
    if not (USER_BIN / "ansible-doc").exists():
        core = next(line.split("#")[0].strip() for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
                    if line.startswith("ansible-core"))
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(USER_VENV)], check=True, timeout=300)
        subprocess.run([str(USER_BIN / "pip"), "install", "-q", core, "PyYAML"], check=True, timeout=600)
    base = tmp_path_factory.mktemp("installed")
    os.chmod(base, 0o755)
    tarball = build(checkout_copy(base / "src"), base / "dist")
    collections = base / "collections"
    collections.mkdir(mode=0o755)
    subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--force", str(tarball), "-p",
                    str(collections)],
                   check=True, capture_output=True, timeout=120)
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", USER], check=True)
    home = base / "home"
    home.mkdir()
    os.chown(home, pwd.getpwnam(USER).pw_uid, pwd.getpwnam(USER).pw_gid)
    # tmp_path's parents are 0700 root directories: the user must be able to reach these two
    for parent in [base, *base.parents, *USER_VENV.parents]:
        if parent == Path("/") or parent == Path("/root"):
            continue
        os.chmod(parent, os.stat(parent).st_mode | 0o005)
    return collections, home


def as_user(installed, *cmd, cwd=None):
    collections, home = installed
    env = {"HOME": str(home), "PATH": "%s:/usr/bin:/bin" % USER_BIN, "ANSIBLE_COLLECTIONS_PATH": str(collections),
           "ANSIBLE_CONFIG": "", "LANG": "C.UTF-8", "ANSIBLE_REMOTE_TMP": str(home / ".ansible" / "tmp")}
    return subprocess.run(["runuser", "-u", USER, "--", "env", "-i", *("%s=%s" % kv for kv in env.items()), *cmd],
                          cwd=cwd or home, capture_output=True, text=True, timeout=300, check=False)


def test_the_installed_collection_is_read_only_to_the_user(installed):
    collections, _home = installed
    root = collections / "ansible_collections" / "qfieldcloud" / "ops"
    assert (root / "MANIFEST.json").is_file() and root.stat().st_uid == 0
    probe = as_user(installed, "touch", str(root / "probe"))
    assert probe.returncode != 0 and "Permission denied" in probe.stderr


@pytest.mark.parametrize("plugin_type, names", [("module", MODULES), ("filter", FILTERS), ("role", ROLES)])
def test_ansible_doc_documents_every_plugin_and_role(installed, plugin_type, names):
    assert names, plugin_type
    for name in names:
        proc = as_user(installed, "ansible-doc", "-t", plugin_type, "qfieldcloud.ops.%s" % name)
        assert proc.returncode == 0, proc.stderr
        assert "qfieldcloud.ops.%s" % name in proc.stdout, name


def test_every_playbook_passes_syntax_check_by_its_fqcn(installed):
    for name in PLAYBOOKS:
        proc = as_user(installed, "ansible-playbook", "--syntax-check", "-i", "localhost,",
                       "qfieldcloud.ops.%s" % name)
        assert proc.returncode == 0, name + ": " + proc.stdout + proc.stderr


def test_the_capacity_report_runs_from_the_users_directory(installed):
    """Issue: it wrote into the installed collection (Permission denied as a non-root user)."""
    _collections, home = installed
    work = home / "reports"
    log = home / "a.log"
    inventory = home / "inventory.yml"
    hosts = ("qfieldcloud:\n  hosts:\n    qfc-a:\n      ansible_connection: local\n"
             "      ansible_python_interpreter: %s\n      qfc_metrics_log: %s\n" % (USER_BIN / "python", log))
    for path, text in ((log, metrics_log(24)), (inventory, hosts)):
        path.write_text(text)
        os.chown(path, pwd.getpwnam(USER).pw_uid, -1)
    proc = as_user(installed, "mkdir", "-p", str(work))
    assert proc.returncode == 0, proc.stderr
    proc = as_user(installed, "ansible-playbook", "-i", str(inventory), "qfieldcloud.ops.capacity_report", cwd=work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = work / "capacity-report" / "capacity_report.html"
    assert report.is_file() and report.stat().st_uid == pwd.getpwnam(USER).pw_uid
    assert "qfc-a" in report.read_text()
