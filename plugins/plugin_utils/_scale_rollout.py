# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scale role's per-host flow, as the action plugin qfieldcloud.ops.qfc_scale_rollout runs it in one forked worker:
check the inputs, read the queue (health gate), scale, wait, read the queue again, roll back when that read fails.

Pure: the three things that reach the host (read the queue, run qfc_scale, sleep) come in as ``steps``, so the order,
the skips and the rollback rule are unit-tested (tests/unit/plugins/plugin_utils/test_scale_rollout.py) and the
action plugin only carries them to the host. The outcome and the input rules are the scale filters' (one home)."""

from __future__ import annotations

from ansible_collections.qfieldcloud.ops.plugins.filter.scale import (
    NAME_RULES, NUMBER_RULES, qfc_gate_failed, qfc_input_problems, qfc_scale_outcome)

# The step names: the old role's task names, which the outcome's messages, the rollback's operations-log reason and
# the operators' runbooks name.
INPUTS = "Check the numbers and names (before anything changes)"
GATE_BEFORE = "Health gate - read the queue before the change (no blocking alert)"
SCALE = "Scale QFieldCloud workers (backup, edit .env, apply, verify)"
DELAY = "Health gate - give the new workers time to show in the queue"
GATE_AFTER = "Health gate - read the queue after the change (no blocking alert)"
ROLLBACK = "Roll back to the previous worker count (the health gate failed after a change)"

# the role's variable for each option, so that an input error names what the operator set
SCALE_VARS = {
    "wait_timeout": "qfc_wait_timeout", "settle_time": "qfc_settle_time",
    "max_replicas_per_core": "qfc_max_replicas_per_core", "lock_timeout": "qfc_lock_timeout",
    "command_timeout": "qfc_command_timeout", "backup_keep": "qfc_backup_keep", "auto_max": "qfc_auto_max_replicas",
    "env_var": "qfc_env_var", "service": "qfc_worker_service",
}
GATE_VARS = {"worker_timeout_s": "qfc_worker_timeout_s", "login_port": "qfc_db_port"}
OWN_VARS = {"gate_delay": "qfc_health_gate_delay", "gate_timeout": "qfc_health_gate_timeout", "poll": "qfc_poll"}
# what each of those must be, for a null's message: the input rules' ranges and names (one home, the scale filters)
WHAT = dict(
    [(var, "a %s from %s to %s" % ("whole number" if whole else "finite number", low, high))
     for var, low, high, whole in NUMBER_RULES]
    + [(var, "a %s" % what) for var, _pattern, what in NAME_RULES])


def whole(value):
    """A number the input check accepted as whole (60, "60", 60.0, "6e1") as an int."""
    return int(float(value))


def input_values(args):
    """{role variable: value} of the numbers and names the role checks before anything changes."""
    scale, gate = args.get("scale") or {}, args.get("gate") or {}
    values = {var: scale[opt] for opt, var in SCALE_VARS.items() if opt in scale}
    values.update((var, gate[opt]) for opt, var in GATE_VARS.items() if gate.get(opt) not in (None, ""))
    values.update((var, args[opt]) for opt, var in OWN_VARS.items() if args.get(opt) is not None)
    if scale.get("expect_current") is not None:  # null: no compare-and-set
        values["qfc_expect_current"] = scale["expect_current"]
    return values


def null_problems(args):
    """One sentence for each number or name of the flow given as null (YAML's ``~``, JSON's ``null``).

    The action's defaults apply only to an option left out, and qfc_input_problems reads a null as unset, so without
    this a null ``gate_timeout`` or ``poll`` reached ``whole()`` as a TypeError (a null ``gate_delay`` silently became
    0, a null ``scale.command_timeout`` broke the background job's limit after the health gate). Direct use of the
    action only: the scale role's argument spec refuses null."""
    scale = args.get("scale") if isinstance(args.get("scale"), dict) else {}
    nulls = [(opt, var) for opt, var in OWN_VARS.items() if opt in args and args[opt] is None]
    nulls += [("scale." + opt, var) for opt, var in SCALE_VARS.items() if opt in scale and scale[opt] is None]
    return ["%s (%s) is null: it must be %s; leave it out for its default" % (name, var, WHAT[var])
            for name, var in nulls]


def rollback_args(scale_args, scale, failed_step):
    """qfc_scale's arguments for the rollback after a failed read of the queue: back to the count before."""
    args = dict(
        scale_args,
        replicas=scale["rollback_replicas"],  # the .env value before, else the running count
        backup=False,  # the first change kept the backup of the original .env
        force=True,  # the count ran before this rollout, the guard must not keep it from coming back
        rollback=False,
        operation="rollback",
        operation_reason="%s failed after %s -> %s; back to %s" % (
            failed_step, scale.get("previous_replicas"), scale.get("replicas"), scale["rollback_replicas"]),
    )
    # the compare-and-set was the change's: .env now holds the new count, which the rollback restores from
    args.pop("expect_current", None)
    return args


def run_rollout(steps, args, check_mode=False, host=None):
    """One host's rollout. ``steps`` has ``read_queue(gate_args, timeout)``, ``scale(scale_args)`` and
    ``sleep(seconds)``; each returns (or is) a module result, an unreachable host's result included.

    ``args``: ``scale`` (qfc_scale's options), ``gate`` (qfc_queue_facts' options; None: no health gate),
    ``gate_severities``, ``gate_timeout``, ``gate_delay``, ``poll``, ``worker_node``.

    Returns {"outcome": qfc_scale_outcome, "steps": names of the steps run, "results": {step: result},
    "changed": bool}. Never raises for what the host does: a failure is in the outcome."""
    scale_args, gate_args = args["scale"], args.get("gate")
    severities = args.get("gate_severities") or ["critical"]
    ran, results = [], {}
    failure = None
    gate = scale = rollback = {}

    def step(name, result):
        ran.append(name)
        results[name] = result
        return result

    problems = null_problems(args) + qfc_input_problems(input_values(args))
    if problems:
        failure = {"task": INPUTS, "result": {"failed": True,
                                              "ansible_facts": {"qfc_scale_input_problems": problems}}}
        step(INPUTS, failure["result"])
    else:
        ran.append(INPUTS)
        gate_timeout, delay = whole(args["gate_timeout"]), whole(args.get("gate_delay") or 0)
    if failure is None and gate_args is not None:
        gate = step(GATE_BEFORE, steps.read_queue(gate_args, gate_timeout))
        if not gate.get("unreachable") and qfc_gate_failed(gate, severities):
            failure = {"task": GATE_BEFORE, "result": gate}
    if failure is None and not gate.get("unreachable"):
        scale = step(SCALE, steps.scale(scale_args))
        if scale.get("failed") and not scale.get("unreachable"):
            failure = {"task": SCALE, "result": scale}
    if failure is None and gate_args is not None and scale.get("changed") and not scale.get("unreachable"):
        if delay > 0:
            step(DELAY, steps.sleep(delay) or {"changed": False})
        after = step(GATE_AFTER, steps.read_queue(gate_args, gate_timeout))
        if after.get("unreachable") or qfc_gate_failed(after, severities):
            failure = {"task": GATE_AFTER, "result": after}
            if scale.get("rollback_replicas") is not None and not check_mode:
                rollback = step(ROLLBACK, steps.scale(rollback_args(scale_args, scale, GATE_AFTER)))
    outcome = qfc_scale_outcome(
        scale, gate=gate, rollback=rollback, failure=failure, check_mode=check_mode, severities=severities,
        gate_timeout=args.get("gate_timeout"), host=host, worker_node=bool(args.get("worker_node")),
        service=scale_args.get("service", "worker_wrapper"),
        env_var=scale_args.get("env_var", "QFIELDCLOUD_WORKER_REPLICAS"))
    return {"outcome": outcome, "steps": ran, "results": results,
            "changed": bool(scale.get("changed") or rollback.get("changed"))}
