"""Ansible runs as a user types them: ``ansible`` (one module, ad hoc) and ``ansible-playbook`` as subprocesses.

Module-level integration tests use pytest-ansible's ``ansible_module`` fixture (in-process, see
tests/integration/conftest.py). :func:`run_module` stays for what that fixture cannot do in pytest-ansible 26.x with
ansible-core 2.19:

- check mode and diff: its ``--check`` option is declared but never read, and the play it builds sets neither
  ``check_mode`` nor ``diff``, so a module cannot be run in check mode or with ``--diff``;
- verbosity per call: it copies ``-v``... from pytest's own command line, and the output is not captured, so a test
  cannot look for a secret in what ``-vvv`` prints;
- another interpreter on the target per call (``ansible_python_interpreter``);
- a deadline: it runs the play in the pytest process with no timeout, so a hung module would hang the whole session,
  while :func:`run_module` kills the run after ``timeout`` seconds (the fault tests hang databases on purpose);
- runs from other threads (the fault tests run a module in the background): each run sets Ansible's process-wide
  CLI arguments (``context.CLIARGS``) and plugin loader, so two runs at once in one process would race.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The .env secrets of the stack fixtures, then two that some tests add: a password of digits only (a digit-only value
# once counted as a count and was never masked) and one with $, #, both quotes and spaces.
DIGITS_SECRET = "8392014756"
SPECIAL_SECRET = "p$ss #w\"o'rd x-7731"
SECRETS = ("3shJDd2r7Twwkehb-demo", "demo-s3cret-key-9f1c2e7a4b", "demo-storage-secret-77ad", DIGITS_SECRET,
           SPECIAL_SECRET)
# SPECIAL_SECRET as a .env value (double-quoted, \\ " and $ escaped), which Compose and _envfile both read back as it
SPECIAL_SECRET_ENV = '"%s"' % SPECIAL_SECRET.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")


def ansible_env(extra=None):
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "PATH": "%s:%s" % (BIN, env.get("PATH", "")),
    })
    env.update(extra or {})
    return env


class Result:
    """One module's result. ``failed``, and pytest-ansible's ``is_failed``/``is_successful`` names, so that a test
    reads the same whichever way its module ran (:func:`run_module`, or pytest-ansible's ``ansible_module``, whose
    ModuleResult has these names)."""

    def __init__(self, proc, data):
        self.rc = proc.returncode
        self.output = proc.stdout + proc.stderr
        self.data = data

    @property
    def failed(self):
        return bool(self.data.get("failed")) or self.rc != 0

    @property
    def is_failed(self):
        return self.failed

    @property
    def is_successful(self):
        return not self.failed

    @property
    def is_changed(self):
        return bool(self.data.get("changed"))

    def __getitem__(self, key):
        return self.data[key]

    def __contains__(self, key):
        return key in self.data

    def get(self, key, default=None):
        return self.data.get(key, default)

    def __repr__(self):
        return "Result(rc=%s, data=%s)\n%s" % (self.rc, self.data, self.output[-3000:])


# The modules that append to the operations log: unless a test names a log, they write to this session's own file,
# not to the machine's /var/log/qfieldcloud/operations.jsonl.
OPLOG_WRITERS = ("qfieldcloud.ops.qfc_scale", "qfieldcloud.ops.qfc_job_cleanup")
_test_oplog_dir = []


def with_test_oplog(module_args, module):
    """``module_args`` with ``operations_log`` set to this session's file for the modules that write one."""
    if module not in OPLOG_WRITERS or "operations_log" in module_args:
        return module_args
    if not _test_oplog_dir:
        _test_oplog_dir.append(tempfile.mkdtemp(prefix="qfc-test-oplog-"))
    return dict(module_args, operations_log=os.path.join(_test_oplog_dir[0], "operations.jsonl"))


def run_module(module_args, check=False, diff=False, verbose=False, python=None, timeout=600,
               module="qfieldcloud.ops.qfc_scale"):
    """One real ad-hoc Ansible run of a module on localhost (arguments as JSON); returns its parsed result."""
    module_args = with_test_oplog(module_args, module)
    cmd = [str(BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=%s" % (python or sys.executable),
           "-m", module, "-a", json.dumps(module_args)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if verbose:
        cmd.append("-vvv")
    proc = subprocess.run(cmd, cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)
    match = re.search(r"^localhost \| [A-Z!]+ => ", proc.stdout, re.M)
    if match:
        data, _end = json.JSONDecoder().raw_decode(proc.stdout, match.end())
    else:
        data = {"failed": True, "msg": "no result line"}
    return Result(proc, data)


def run_playbook(playbook, inventory, extra_vars=None, check=False, diff=False, timeout=900, env=None):
    """ansible-playbook from the checkout; ``env``: more environment (for example ANSIBLE_SHOW_CUSTOM_STATS)."""
    cmd = [str(BIN / "ansible-playbook"), str(playbook), "-i", str(inventory)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    return subprocess.run(cmd, cwd=ROOT, env=ansible_env(env), capture_output=True, text=True, timeout=timeout,
                          check=False)


def custom_stats(output):
    """The custom stats (set_stats) of a run with ANSIBLE_SHOW_CUSTOM_STATS=1, as AWX and ansible-runner get them:
    the default callback's ``RUN: {...}`` line, aggregated over the batches."""
    match = re.search(r"^\s*RUN: (\{.*\})\s*$", output, re.M)
    assert match, output
    return json.loads(match.group(1))


def assert_no_secrets(text, *more):
    for secret in SECRETS + more:
        assert secret not in text, "a secret from .env leaked into the output"
