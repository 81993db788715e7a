"""The fleet inventories shown in README.md and docs/fleet.md are valid, and playbooks/scale.yml targets all their
servers and worker nodes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def inventory_block(doc, first_line):
    blocks = re.findall(r"```yaml\n(%s\n.*?)```" % re.escape(first_line), (ROOT / doc).read_text(), re.S)
    assert len(blocks) == 1, "%s: no single block starting with %r" % (doc, first_line)
    return blocks[0]


def ansible(tool, *args):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(BIN / tool), *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.parametrize("doc, first_line", [("README.md", "# fleet.yml"), ("docs/fleet.md", "# inventory.yml")])
def test_fleet_inventory_example(tmp_path, doc, first_line):
    path = tmp_path / "fleet.yml"
    path.write_text(inventory_block(doc, first_line))
    listed = json.loads(ansible("ansible-inventory", "-i", str(path), "--list").stdout)
    servers, workers = listed["qfieldcloud"]["hosts"], listed["qfc_worker_nodes"]["hosts"]
    assert servers and workers
    for host in servers + workers:
        hostvars = listed["_meta"]["hostvars"][host]
        assert hostvars["qfc_project_src"].startswith("/")
        replicas = hostvars["qfc_worker_replicas"]
        assert replicas == "auto" or (isinstance(replicas, int) and replicas >= 0), (host, replicas)
    out = ansible("ansible-playbook", "playbooks/scale.yml", "-i", str(path), "--list-hosts").stdout
    targeted = re.findall(r"^\s{6}(\S+)$", out, re.M)
    # --list-hosts prints a set; the run order (inventory order, canary first) is checked in test_fleet.py
    assert sorted(targeted) == sorted(servers + workers)
