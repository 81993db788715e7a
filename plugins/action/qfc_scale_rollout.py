# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""qfieldcloud.ops.qfc_scale_rollout: the scale role's per-host flow in one task (documented in
plugins/modules/qfc_scale_rollout.py). The flow is plugin_utils/_scale_rollout.run_rollout; this file only carries its
steps to the host: each step is a module run over this task's connection, under its own deadline, with an
unreachable host recorded instead of raised.

Why one task: every task costs the controller a forked worker per host that templates and compiles the task afresh
(30-45 ms per host, measured in docs/performance.md); seven tasks per host were most of a fleet rollout's CPU."""

from __future__ import annotations

import contextlib
import signal
import time

from ansible import constants as C
from ansible.errors import AnsibleConnectionFailure
from ansible.executor.module_common import _apply_action_arg_defaults  # as core's package and service
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.qfieldcloud.ops.plugins.plugin_utils._scale_rollout import run_rollout, whole

display = Display()

QUEUE_MODULE = "qfieldcloud.ops.qfc_queue_facts"
SCALE_MODULE = "qfieldcloud.ops.qfc_scale"
ARGUMENT_SPEC = {
    "scale": {"type": "dict", "required": True},
    "gate": {"type": "dict"},
    "gate_severities": {"type": "list", "elements": "str", "default": ["critical"],
                        "choices": ["critical", "error", "warning"]},
    # numbers as given: the flow's input check refuses NaN, fractions and out-of-range values with the role's names
    "gate_timeout": {"type": "raw", "default": 60},
    "gate_delay": {"type": "raw", "default": 0},
    "background": {"type": "bool", "default": False},
    "poll": {"type": "raw", "default": 10},
    "worker_node": {"type": "bool", "default": False},
}
# what a step's result shown with -v leaves out: the diff is shown once as the task's, invocation is noise
HIDDEN_KEYS = ("diff", "invocation")
CLEANUP_TIMEOUT = 30  # seconds for a temporary directory's removal or the async directory's lookup on the host


class DeadlineExceeded(BaseException):
    """A step ran past its deadline. A BaseException, as Ansible's own task timeout, so that no ``except Exception``
    on the way (connection plugins have them) swallows it."""


@contextlib.contextmanager
def deadline(seconds):
    """Raise DeadlineExceeded in this (forked worker's main) thread after ``seconds``; 0 or None: no deadline.

    An outer alarm (a ``timeout`` on the task, when the plugin is used without the role) is kept: when it comes first
    it is left to fire, else it is re-armed with the time it has left afterwards."""
    if not seconds:
        yield
        return
    outer = signal.alarm(0)  # seconds left of an outer alarm, 0 when there is none
    if outer and outer <= seconds:
        signal.alarm(outer)
        yield
        return

    def fire(_signum, _frame):
        raise DeadlineExceeded(seconds)

    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(int(seconds))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.alarm(max(1, round(outer - (time.monotonic() - started))))


class HostSteps:
    """run_rollout's steps on one host, over the action's connection."""

    def __init__(self, action, task_vars, background, poll):
        self._action = action
        self._task_vars = task_vars
        self._background = background and not action._task.check_mode  # Ansible refuses async in check mode
        self._poll = poll  # as given; whole() once the flow's input check has passed it (1 to 3600)
        # The site's task timeout (ANSIBLE_TASK_TIMEOUT) covered the role's qfc_scale task, and with qfc_async only
        # starting it; the role turns the keyword off for this task (timeout: 0) and it applies here the same way.
        self._site_timeout = int(C.config.get_config_value("TASK_TIMEOUT") or 0)
        self.facts = {}

    def read_queue(self, gate_args, timeout):
        return self._module(QUEUE_MODULE, gate_args, whole(timeout))

    def scale(self, scale_args):
        if self._background:
            return self._scale_in_background(scale_args)
        return self._module(SCALE_MODULE, scale_args, self._site_timeout)

    @staticmethod
    def sleep(seconds):
        time.sleep(seconds)
        return {"changed": False, "slept": seconds}

    @staticmethod
    def _guarded(what, timeout, call):
        """call() under a deadline of ``timeout`` s; what goes wrong on the host becomes a result, as a task's would:
        a timeout (``timedout``), an unreachable host, any other error (no interpreter, a become failure...)."""
        try:
            with deadline(timeout):
                return call()
        except DeadlineExceeded:
            return {"failed": True, "changed": False, "timedout": {"period": timeout},
                    "msg": "%s did not finish within %s s" % (what, timeout)}
        except AnsibleConnectionFailure as exc:
            return {"unreachable": True, "changed": False, "msg": str(exc)}
        except Exception as exc:  # noqa: BLE001
            return {"failed": True, "changed": False, "msg": "%s: %s" % (what, exc)}

    def _module(self, name, args, timeout, wrap_async=False):
        action = self._action

        def execute():
            # module_defaults of the play (group/qfieldcloud.ops.qfc_db, qfc_project...) apply to each module run as
            # they did to the role's tasks; the arguments given win, as in any task
            module_args = _apply_action_arg_defaults(name, action._task, dict(args), action._templar)
            return action._execute_module(module_name=name, module_args=module_args, task_vars=self._task_vars,
                                          wrap_async=wrap_async)

        try:
            result = self._guarded(name, timeout, execute)
        finally:
            if not wrap_async:
                self._remove_tmp_path()
        for key, value in (result.get("ansible_facts") or {}).items():
            if key.startswith("discovered_interpreter_"):  # cached for the host, as any module task's would be
                self.facts[key] = value
        return result

    def _remove_tmp_path(self):
        """Remove the step's temporary directory on the host (none with pipelining), within CLEANUP_TIMEOUT; a host
        that fails it keeps a directory, which must not replace the step's result."""
        action = self._action
        try:
            with deadline(CLEANUP_TIMEOUT):
                action._remove_tmp_path(action._connection._shell.tmpdir)
        except (DeadlineExceeded, Exception):  # noqa: BLE001
            action._connection._shell.tmpdir = None

    def _scale_in_background(self, scale_args):
        """qfc_scale under async_wrapper, polled every ``poll`` s with async_status, as a task with async/poll:
        a long scale-down (stop_grace_period, 15 min upstream) holds no connection open and survives idle-connection
        timeouts. The job's limit (background_limit) outlasts the module's own deadlines, so the module always gets
        to roll back itself."""
        action = self._action
        # looked up on the host before the job starts: a failure here leaves nothing running
        async_dir = self._guarded("looking up async_dir on the host", CLEANUP_TIMEOUT,
                                  lambda: action._remote_expand_user(
                                      action.get_shell_option("async_dir", default="~/.ansible_async")))
        if isinstance(async_dir, dict):
            return dict(async_dir, msg="%s; nothing was started" % async_dir["msg"])
        limit = background_limit(scale_args)
        saved, action._task.async_val = action._task.async_val, limit  # _execute_module reads the limit from here
        try:
            started = self._module(SCALE_MODULE, scale_args, self._site_timeout, wrap_async=True)
        finally:
            action._task.async_val = saved
        jid = started.get("ansible_job_id")
        if started.get("failed") or started.get("unreachable") or not jid:
            return started
        host, poll = self._task_vars.get("inventory_hostname"), whole(self._poll)
        give_up = time.monotonic() + limit + poll
        status = {}
        while time.monotonic() < give_up:
            time.sleep(poll)
            status = self._module("ansible.legacy.async_status", {"jid": jid, "_async_dir": async_dir}, 60)
            if status.get("unreachable") or status.get("timedout"):  # a network bounce: keep polling until the limit
                with contextlib.suppress(Exception):
                    action._connection.reset()
                continue
            display.display("ASYNC POLL on %s: jid=%s started=%s finished=%s"
                            % (host, jid, status.get("started"), status.get("finished")))
            # Only a finished job ends the polling (async_status says finished also for a job file it cannot read);
            # a reply that could not be parsed is polled again, as Ansible's own poll loop does.
            if status.get("finished"):
                break
        else:
            return {"failed": True, "changed": False, "ansible_job_id": jid,
                    "msg": "qfc_scale in the background (job %s) did not finish within %s s; it may still be running "
                           "on the host, its result in %s/%s" % (jid, limit, async_dir, jid)}
        self._module("ansible.legacy.async_status", {"jid": jid, "mode": "cleanup", "_async_dir": async_dir}, 60)
        for key in ("started", "finished", "results_file", "stdout", "stderr", "stdout_lines", "stderr_lines"):
            status.pop(key, None)
        return status


def background_limit(scale_args):
    """Seconds the background job may run: the module's own deadlines one after the other (the lock wait, the
    preflight's Compose calls, compose up, the settle wait, and a restore's compose up and wait) and a margin, so
    async_wrapper never kills qfc_scale before it has rolled back itself."""
    command, wait = whole(scale_args.get("command_timeout", 1200)), whole(scale_args.get("wait_timeout", 120))
    return whole(scale_args.get("lock_timeout", 1800)) + 3 * command + 2 * wait + 60


class ActionModule(ActionBase):
    """Runs the scale role's per-host flow; see the module documentation."""

    _supports_check_mode = True
    _supports_async = False  # the flow polls qfc_scale itself (background=true); the task keyword would hide the gate

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        del validation
        steps = HostSteps(self, task_vars, args["background"], args["poll"])
        flow = run_rollout(steps, args, check_mode=bool(self._task.check_mode),
                           host=task_vars.get("inventory_hostname"))
        results = flow["results"]
        diffs = collect_diffs(results)
        result.update(changed=flow["changed"], outcome=flow["outcome"], steps=flow["steps"])
        if diffs:
            result["diff"] = diffs if len(diffs) > 1 else diffs[0]
        if steps.facts:
            result["ansible_facts"] = steps.facts
        warnings = [w for r in results.values() for w in (r.get("warnings") or [])]
        if warnings:
            result["warnings"] = warnings
        if display.verbosity >= 1:  # each step's own result, for an operator who asks
            result["results"] = {name: {k: v for k, v in r.items() if k not in HIDDEN_KEYS}
                                 for name, r in results.items()}
        result["_ansible_verbose_always"] = True  # the outcome is what an operator reads, as the role always showed
        return result


def collect_diffs(results):
    """Every step's diff in order, as one flat list: qfc_scale's diff is a list (one entry per file), and the
    callback shows nothing for a list of lists (the change and its rollback)."""
    diffs = []
    for step_result in results.values():
        diff = step_result.get("diff") if isinstance(step_result, dict) else None
        diffs.extend(diff if isinstance(diff, list) else [diff] if diff else [])
    return diffs
