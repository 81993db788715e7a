#!/usr/bin/python
# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Documentation only: the action plugin of the same name (plugins/action/qfc_scale_rollout.py) runs on the controller
# and runs qfc_queue_facts and qfc_scale on the host.

from __future__ import annotations

DOCUMENTATION = r"""
module: qfc_scale_rollout
short_description: One host's scale rollout - health gate, scale, health gate, roll back on failure
version_added: 0.1.0
description:
  - The scale role's per-host flow (M(qfieldcloud.ops.qfc_scale) with a health gate around it) in one task, so that a
    fleet rollout costs the controller one forked worker per host instead of one per step.
  - "In order, each step only when the one before succeeded: (1) it checks the numbers and names (NaN, fractions,
    out-of-range values, booleans, text, and null - the defaults below apply only to an option left out) and refuses
    them before anything runs, each named with the scale role's variable."
  - (2) The health gate, when O(gate) is set, reads the queue with M(qfieldcloud.ops.qfc_queue_facts) within
    O(gate_timeout) seconds; a failed read or an alert of a severity in O(gate_severities) stops the rollout here.
  - (3) It runs M(qfieldcloud.ops.qfc_scale) with O(scale), in the background with O(background), polled every
    O(poll) seconds. When qfc_scale refuses the change because C(.env) did not hold its C(expect_current) (a
    compare-and-set), the outcome is C(refused) - not a failure, nothing changed, no second read of the queue.
  - (4) When something changed and O(gate) is set, it waits O(gate_delay) seconds and reads the queue again; a failed
    read (a timeout or an unreachable host included) or a blocking alert rolls the host back to its count before
    (C(rollback_replicas) of qfc_scale's result), with C(operation=rollback) in the operations log.
  - The play's C(module_defaults) for M(qfieldcloud.ops.qfc_scale) and M(qfieldcloud.ops.qfc_queue_facts) (or their
    groups) apply to each run of them; the options given here win.
  - Never fails for what the host does. The result's RV(outcome) says what happened (C(changed), C(unchanged),
    C(would change), C(failed ...), C(unreachable)) and why, so that a play can print its rollout summary before it
    fails the host; the scale role fails the host after the summary.
  - Input errors name the scale role's variables (C(qfc_wait_timeout), C(qfc_health_gate_timeout)...), as this is
    that role's flow.
  - Deadlines - each of the gate's reads O(gate_timeout); M(qfieldcloud.ops.qfc_scale) its own (lock, Compose,
    settle wait) and the site's task timeout (C(TASK_TIMEOUT)), with O(background) only on its start, as a task with
    C(async); removing a temporary directory on the host 30 s. Set the task keyword
    C(timeout) to V(0), as the role does, so that no timeout over the whole flow cuts a rollback short.
extends_documentation_fragment:
  - qfieldcloud.ops._attributes
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the
      controller.
    support: full
  async:
    description: Supports being used with the C(async) keyword.
    support: none
    details: [Use O(background) - it runs qfc_scale in the background and keeps the health gate in the flow.]
  check_mode:
    support: full
    details: [Both modules run in check mode; qfc_scale predicts the change and the gate reads the queue; no rollback.]
  diff_mode:
    support: full
    details: [The C(.env) diff of qfc_scale, and of the rollback when one ran.]
  idempotent:
    support: full
    details: [A second run with the same arguments finds the count in place and changes nothing.]
options:
  scale:
    description:
      - The options of M(qfieldcloud.ops.qfc_scale) (C(project_src) and C(replicas) at least), passed as they are; the
        rollback passes the same with the count before, C(backup=false), C(force=true) and C(rollback=false).
    type: dict
    required: true
  gate:
    description:
      - The options of M(qfieldcloud.ops.qfc_queue_facts) for the health gate's reads; unset (or null) - no health gate.
    type: dict
  gate_severities:
    description: Queue alert severities that fail the gate.
    type: list
    elements: str
    choices: [critical, error, warning]
    default: [critical]
  gate_timeout:
    description: Seconds each read of the queue may take (a whole number from 1 to 3600; null is refused).
    type: raw
    default: 60
  gate_delay:
    description: Seconds to wait after a change before the second read (a whole number from 0 to 3600; null is
      refused); the hosts of a batch wait in parallel, up to C(forks) at a time.
    type: raw
    default: 0
  background:
    description:
      - Run M(qfieldcloud.ops.qfc_scale) in the background on the host (C(async_wrapper)) and poll it, so a long
        scale-down holds no connection open. Its limit is C(lock_timeout) + 3 x C(command_timeout) + 2 x C(wait_timeout)
        + 60 s (the lock wait, the preflight, C(compose up), the settle wait and a restore), so the module's own
        deadlines fire first. The rollback runs in the background too. Not in check mode.
    type: bool
    default: false
  poll:
    description: With O(background), seconds between two checks of the background job (a whole number from 1 to 3600;
      null is refused, also without O(background)).
    type: raw
    default: 10
  worker_node:
    description: The host is a worker-only node (its outcome's C(layout)).
    type: bool
    default: false
seealso:
  - module: qfieldcloud.ops.qfc_scale
  - module: qfieldcloud.ops.qfc_queue_facts
author:
  - qfieldcloud.ops contributors (@qfieldcloud-ops)
"""

EXAMPLES = r"""
- name: Scale to 4 workers with the health gate
  qfieldcloud.ops.qfc_scale_rollout:
    scale:
      project_src: /opt/qfieldcloud
      replicas: 4
    gate:
      project_src: /opt/qfieldcloud
  timeout: 0
  register: rollout

- name: Fail the host when the rollout failed
  ansible.builtin.fail:
    msg: "{{ rollout.outcome.result }}: {{ rollout.outcome.message }}"
  when: rollout.outcome.result is match('failed|unreachable')
"""

RETURN = r"""
outcome:
  description: What happened on the host, as the filter C(qfieldcloud.ops.qfc_scale_outcome) gives it.
  returned: always
  type: dict
  contains:
    host:
      description: The inventory host name.
      type: str
    layout:
      description: C(server) or C(worker node).
      type: str
    before:
      description: Workers running before (else the gate's count, else the C(.env) value); for C(refused) the count
        C(.env) held under the lock.
      type: int
    after:
      description: Workers running after (after the rollback when one ran).
      type: int
    replicas:
      description: The count asked for, C(auto) resolved.
      type: int
    result:
      description: C(changed), C(unchanged), C(would change), C(failed) with where and whether it was rolled back,
        C(unreachable), or C(refused) (qfc_scale's C(expect_current) did not match C(.env) under the project lock;
        nothing changed, not a failure; also predicted in check mode).
      type: str
      sample: failed at the health gate after the change, rolled back
    message:
      description: Why it failed or was refused; empty otherwise.
      type: str
    refused:
      description: For C(refused), C(expected) (the C(expect_current) given) and C(configured) (the count C(.env) held).
      type: dict
      sample: {expected: 3, configured: 1}
    report:
      description: The before/after line of a qfc_scale run that succeeded; null otherwise.
      type: str
      sample: "worker_wrapper: running 2 -> 4 (QFIELDCLOUD_WORKER_REPLICAS 2 -> 4)"
steps:
  description: The steps that ran, in order.
  returned: always
  type: list
  elements: str
  sample:
    - Check the numbers and names (before anything changes)
    - Health gate - read the queue before the change (no blocking alert)
    - Scale QFieldCloud workers (backup, edit .env, apply, verify)
    - Health gate - read the queue after the change (no blocking alert)
results:
  description: Each step's own result by step, without its diff. Only with C(-v) or more.
  returned: when verbosity is 1 or more
  type: dict
"""
