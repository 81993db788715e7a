#!/usr/bin/python
# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: qfc_scale
short_description: Set and apply the number of QFieldCloud C(worker_wrapper) replicas
version_added: 0.1.0
description:
  - Sets C(QFIELDCLOUD_WORKER_REPLICAS) in QFieldCloud's C(.env), the only place upstream reads the worker count from
    (the service's C(scale) is C(${QFIELDCLOUD_WORKER_REPLICAS}) in C(docker-compose.yml)), then brings the running
    workers to that count with Docker Compose v2 and verifies them through the Docker Engine API.
  - Before anything changes, a preflight loads the Compose project with the new value. A C(deploy.replicas) that
    differs from C(scale:), a C(container_name) on the service, a missing service or a C(scale:) that does not follow
    the variable fails the task, names the file and leaves C(.env) untouched.
  - The C(.env) edit keeps every other byte (comments, blank lines, order, quoting, C(export) prefixes, CRLF line
    endings, mode and owner) and is written atomically. With duplicate keys the last one, which Compose uses, is
    edited and a warning is given. An absent variable is appended.
  - A symlinked C(.env) is edited through the link, like M(ansible.builtin.copy) with C(follow=true) - the target is
    replaced atomically (written beside it and renamed, with its mode, owner and SELinux context) and the link is
    kept. A C(.env) with other hard links, or one that is a bind mount, cannot be replaced atomically - the module
    refuses it before any change and says why.
  - Just before writing, and again before a rollback restores it, the module checks that C(.env) still holds what it
    read (or wrote). When another tool edited it meanwhile, that edit is kept - the write or the restore is refused
    and the task fails saying so.
  - Only the worker service is touched. There is no C(docker compose down); other services are neither restarted
    nor recreated, and existing workers are not recreated (C(--no-deps --no-recreate)).
  - When the C(.env) value is already right but the running count differs (a crashed or removed container, a manual
    C(--scale)), the module reconciles the running containers and reports a change.
  - Runs on the same project are serialised with a lock on the directory that holds the C(.env) file.
  - When applying or verifying fails and O(rollback=true), the original C(.env) is restored, the previous count is
    applied and verified again, and the task fails saying what went wrong and what was restored. When the rollback
    fails too (a full disk), the result keeps the first failure (RV(cmd), RV(rc), RV(stderr)), adds RV(rollback_error),
    the value now on disk (RV(env_value)) and the running count (RV(running)).
  - Every failure after the first change says what was changed (backup, C(.env) written, C(docker compose up) run or
    killed, C(.env) restored).
  - The preflight, before anything is written, also lists the service's containers with Compose and pings the
    Docker Engine (within min(O(command_timeout), 30) seconds), so an engine that the module cannot reach, or a hung
    engine, fails the task with nothing changed. With E(DOCKER_HOST) unset, the module connects to the endpoint of
    the docker CLI's current context (C(docker context inspect)). A local unix socket is reached with the standard
    library; tcp, ssh and TLS (its material included) through the Docker SDK.
extends_documentation_fragment:
  - qfieldcloud.ops._project
  - qfieldcloud.ops._replicas
  - qfieldcloud.ops._oplog
  - qfieldcloud.ops._attributes
  - qfieldcloud.ops._attributes.action_group
attributes:
  action_group:
    membership: [qfieldcloud.ops.qfc, qfieldcloud.ops.qfc_project]
  check_mode:
    support: full
    details:
      - Check mode runs the read-only preflight (C(docker compose config)) and reads the running containers, then
        predicts C(changed). It never writes C(.env) and does not use Compose's C(--dry-run), which is not free of
        side effects. Nothing is written to the operations log (O(operations_log)).
  diff_mode:
    support: full
    details:
      - Shows the variable's C(.env) line before and after, and the running container count before and after.
  idempotent:
    support: full
    details:
      - A second run with the same O(replicas) reports no change, writes no backup and calls no C(docker compose up).
options:
  env_var:
    description:
      - The C(.env) variable that the service's C(scale:) interpolates.
      - A variable name, C(^[A-Za-z_][A-Za-z0-9_]*$); anything else (a newline, C(=), a space) is refused before any
        change.
    type: str
    default: QFIELDCLOUD_WORKER_REPLICAS
  service:
    description:
      - The Compose service to scale.
      - A Compose service name, C(^[a-zA-Z0-9][a-zA-Z0-9_.-]*$); anything else is refused before any change.
    type: str
    default: worker_wrapper
  backup:
    description:
      - Before the first write, copy C(.env) to a timestamped file beside it (mode and owner kept), returned as
        RV(backup_file). No backup is made when nothing changes.
    type: bool
    default: true
  backup_keep:
    description:
      - How many backups of C(.env) to keep beside it (each is a full copy of its secrets). After a new backup is
        made, the oldest ones beyond this number are removed and returned as RV(backups_removed).
      - From 1 to 1000.
    type: int
    default: 10
  apply:
    description:
      - Bring the running containers to O(replicas) with C(docker compose up --detach --no-deps --no-recreate --scale)
        and verify them. With V(false) only C(.env) is edited (the next C(docker compose up) applies it).
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait, after Compose returns, for exactly O(replicas) containers of the service to be running
        and to have stayed up for O(settle_time) seconds.
      - A scale-down itself waits inside Compose for each removed worker's C(stop_grace_period) (15 minutes in
        QFieldCloud, so a running job can finish); that time is not part of this timeout but of O(command_timeout).
      - From 1 to 86400, and longer than O(settle_time).
    type: int
    default: 120
  command_timeout:
    description:
      - The deadline, in seconds, of each C(docker compose up). A call still running then is killed with its whole
        process group (SIGTERM, SIGKILL 5 seconds later) and the task fails with its RV(cmd) and output, and rolls
        back. The default leaves room for a scale-down, which waits for each stopped worker's C(stop_grace_period)
        (15 minutes in QFieldCloud); lower it together with C(stop_grace_period).
      - The read-only calls (C(docker compose config), C(ps), C(version), C(docker context inspect)) get
        min(60, O(command_timeout)) seconds and each Docker Engine API request min(30, O(command_timeout)), so a
        hung Docker Engine fails the preflight with nothing changed instead of holding the project lock.
      - From 10 to 86400.
    type: int
    default: 1200
  settle_time:
    description:
      - Seconds a container must have been running without a restart before it counts. Catches workers that
        crash on start and are restarted by the C(unless-stopped) policy.
      - The default catches a worker that exits at start (a bad image, command, mount or missing variable) many times
        over; such a worker was measured to exit 0.03 s after its start.
      - A worker that fails later than this (for example after its own database retries) is not caught; raise it
        for such images. The scale role's health gate reads the queue after the change as a second check.
      - A finite number from 0 to 3600, shorter than O(wait_timeout).
    type: float
    default: 0.5
  rollback:
    description:
      - When applying or verifying fails, restore the original C(.env), apply the previous count again and verify it.
    type: bool
    default: true
  lock_timeout:
    description:
      - Seconds to wait for another run on the same project to finish; then the task fails with nothing changed.
      - From 0 to 86400.
    type: int
    default: 1800
  expect_current:
    description:
      - A compare-and-set. The count the caller based its decision on, as configured in C(.env) (O(env_var)) when it
        decided. Under the project lock, before anything else, the module reads O(env_var); when it does not hold this
        count (another run changed it while this one waited for the lock, or it is unset), the run is refused - no
        backup, no C(.env) write, no Compose or Engine call - and returns RV(refused=true) with a message naming both
        counts.
      - A refusal is not a failure (the caller's premise is gone, so its change is dropped); the autoscale role reports
        it as a hold and decides again on its next run. Use C(failed_when) on RV(refused) to fail on it instead.
      - In check mode the same comparison predicts the refusal. A refusal writes nothing to the operations log, as
        any run that changes nothing.
      - Unset (the default) - no comparison. A whole number from 0 to 100.
    type: int
seealso:
  - name: QFieldCloud docker-compose.yml
    description: The C(worker_wrapper) service and its C(scale:) line.
    link: https://github.com/opengisch/QFieldCloud/blob/master/docker-compose.yml
  - name: docker compose up
    description: The C(--scale), C(--no-deps) and C(--no-recreate) options used to apply the count.
    link: https://docs.docker.com/reference/cli/docker/compose/up/
requirements:
  - The Docker SDK for Python (C(docker)) on the target when O(apply=true) and the Docker Engine is not a local unix
    socket (tcp, ssh or TLS, from C(DOCKER_HOST) or the docker CLI's current context). A local socket, the usual
    case, is reached with the standard library.
notes:
  - A scale-down stops the highest-numbered workers. Each gets SIGTERM and up to its C(stop_grace_period) to finish its
    current job, so a scale-down can take up to 15 minutes. Run long scale-downs with C(async) and C(poll) so that
    the connection does not time out; see the examples.
  - If the module is killed (C(kill -9), a lost connection) the project lock is released with it. Killed after the
    backup, C(.env) is unchanged; after the C(.env) write, C(.env) holds the new count; during C(docker compose up),
    Compose (in its own process group) runs to its end. In every case running the task again reconciles the
    containers with C(.env).
author:
  - qfieldcloud.ops contributors (@qfieldcloud-ops)
"""

EXAMPLES = r"""
- name: Run four QFieldCloud workers
  qfieldcloud.ops.qfc_scale:
    project_src: /opt/qfieldcloud
    replicas: 4
  register: scale

- name: A second run changes nothing
  qfieldcloud.ops.qfc_scale:
    project_src: /opt/qfieldcloud
    replicas: 4
  register: again

- name: Check it
  ansible.builtin.assert:
    that:
      - scale.running == 4
      - again is not changed

- name: Scale down; workers may take up to stop_grace_period (15m) to finish their jobs
  qfieldcloud.ops.qfc_scale:
    project_src: /opt/qfieldcloud
    replicas: 2
  async: 1200
  poll: 15

- name: Size the host by its CPU cores (2 cores - 5 workers), at most 8
  qfieldcloud.ops.qfc_scale:
    project_src: /opt/qfieldcloud
    replicas: auto
    auto_max: 8

- name: Only edit .env (applied by the next docker compose up), keeping a backup
  qfieldcloud.ops.qfc_scale:
    project_src: /opt/qfieldcloud
    replicas: 6
    apply: false
    force: true
"""

RETURN = r"""
replicas:
  description: The replica count asked for, O(replicas=auto) resolved (and, on success, set in C(.env) and running).
  returned: always
  type: int
  sample: 4
previous_replicas:
  description: The value of O(env_var) in C(.env) before the run; V(null) when it was absent or not an integer.
  returned: always
  type: int
  sample: 2
previous_running:
  description: Running containers of the service before the run. V(null) when O(apply=false).
  returned: always
  type: int
  sample: 2
running:
  description: Running containers of the service after the run (predicted in check mode). V(null) when O(apply=false).
  returned: always
  type: int
  sample: 4
containers:
  description:
    - The service's containers after the run, by container number; in check mode, the current ones.
    - Empty when O(apply=false).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Container name, C(<project>-<service>-<number>).
      type: str
      sample: qfieldcloud-worker_wrapper-3
    number:
      description: The C(com.docker.compose.container-number) label.
      type: int
      sample: 3
    state:
      description: C(running), C(restarting), C(exited), ...
      type: str
      sample: running
    id:
      description: Short container ID.
      type: str
      sample: 0b1f2c3d4e5f
project:
  description: The Compose project name, from C(COMPOSE_PROJECT_NAME) or the directory.
  returned: when the preflight ran
  type: str
  sample: qfieldcloud
env_file:
  description: The C(.env) file read and edited.
  returned: always
  type: str
  sample: /opt/qfieldcloud/.env
backup_file:
  description: The backup of C(.env) made before writing it.
  returned: when C(.env) was changed and O(backup=true)
  type: str
  sample: /opt/qfieldcloud/.env.12345.2026-11-29@18:16:17~
rolled_back:
  description:
    - Whether a failed apply or verification was rolled back - C(.env) restored and the previous count running
      again (verified). V(false) when re-applying the previous count failed too; the message says so.
  returned: always
  type: bool
  sample: false
refused:
  description:
    - V(true) when O(expect_current) was set and C(.env) held another count under the project lock - the run changed
      nothing (C(changed=false), no backup, no C(.env) write, no Compose call) and C(msg) names both counts
      (C(Refused - expect_current=3, but /opt/qfieldcloud/.env holds QFIELDCLOUD_WORKER_REPLICAS=1 under the project
      lock ...)). RV(previous_replicas) is the count found. Not a failure; also predicted in check mode.
  returned: always
  type: bool
  sample: false
expect_current:
  description: The O(expect_current) that C(.env) did not hold.
  returned: when RV(refused=true)
  type: int
  sample: 3
cpu_count:
  description: CPU cores of the target, as the core-count guard and O(replicas=auto) see them.
  returned: always
  type: int
  sample: 2
max_replicas_per_core:
  description: The O(max_replicas_per_core) the core-count guard used.
  returned: always
  type: float
  sample: 2.5
core_limit:
  description:
    - The core-count guard as a count, RV(cpu_count) x RV(max_replicas_per_core) rounded down, at most 100. More
      workers than this need O(force=true).
  returned: always
  type: int
  sample: 5
rollback_replicas:
  description:
    - The count to restore when a later check (a health gate after this task) fails - the previous value of
      O(env_var) in C(.env), else (absent or not an integer) the count that was running before, else V(null).
    - The same rule the module's own rollback follows.
  returned: always
  type: int
  sample: 2
cmd:
  description: The Compose command that failed.
  returned: when a Compose command failed
  type: str
  sample: docker compose --ansi never --project-directory /opt/qfieldcloud config --format json
rc:
  description: Exit code of the failed Compose command.
  returned: when a Compose command failed
  type: int
  sample: 15
backups_removed:
  description: Old backups of C(.env) removed to keep O(backup_keep) of them.
  returned: when backups were removed
  type: list
  elements: str
  sample: [/opt/qfieldcloud/.env.12345.2026-11-20@08:00:00~]
env_value:
  description: The value of O(env_var) in C(.env) on disk when the task failed after writing it (after any rollback).
  returned: when applying failed after C(.env) was written
  type: str
  sample: "4"
rollback_error:
  description:
    - Why the rollback did not complete - restoring C(.env) failed (a full disk), C(.env) was edited by another tool
      meanwhile (then it is not overwritten), or re-applying the previous count failed.
    - RV(cmd), RV(rc) and RV(stderr) stay those of the first failure.
  returned: when a rollback failed
  type: str
  sample: "restoring .env failed: [Errno 28] No space left on device"
stderr:
  description: Standard error of the failed Compose command, secrets masked.
  returned: when a Compose command failed
  type: str
  sample: "services.worker_wrapper: can't set distinct values on 'scale' and 'deploy.replicas': invalid compose project"
operation_record:
  description:
    - The record appended to O(operations_log) (secret values masked), V(null) in check mode, for a run that changed
      nothing, for a failure before the first change, with O(operations_log=""), or when the log could not be
      written.
    - C(result) is V(changed) for a change, V(rolled_back) for a failure after the first change whose previous count
      runs again (verified), V(failed) for a failure after a change without a full rollback. C(before) and C(after)
      are the O(env_var) values in C(.env) before and after; C(details) holds the running counts, the backup file and,
      on failure, the error and any RV(rollback_error).
  returned: always
  type: dict
  sample:
    time: "2026-12-02T23:59:01Z"
    host: qfc1
    action: scale
    before: 2
    after: 4
    reason: replicas 2 -> 4 requested
    actor: {kind: awx, awx_job_id: "42", user: alice}
    result: changed
    details: {running_before: 2, running_after: 4, env_changed: true, backup_file: /opt/qfieldcloud/.env.1.bak}
operations_log_error:
  description: Why the operations log could not be written (the scale itself stands; a warning says the same).
  returned: when the log could not be written
  type: str
  sample: >-
    The operations log /var/log/qfieldcloud/operations.jsonl was not written ([Errno 28] No space left on device);
    the scale itself stands.
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _compose, _oplog, _replicas
from ansible_collections.qfieldcloud.ops.plugins.module_utils._scaler import ScaleFailure, Scaler


def argument_spec():
    spec = _compose.project_argument_spec()
    spec.update(_replicas.argument_spec())
    spec.update(_oplog.argument_spec())
    spec.update(
        env_var=dict(type="str", default="QFIELDCLOUD_WORKER_REPLICAS"),
        service=dict(type="str", default="worker_wrapper"),
        backup=dict(type="bool", default=True),
        backup_keep=dict(type="int", default=10),
        apply=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=120),
        settle_time=dict(type="float", default=0.5),
        rollback=dict(type="bool", default=True),
        lock_timeout=dict(type="int", default=1800),
        command_timeout=dict(type="int", default=_compose.DEFAULT_TIMEOUT),
        expect_current=dict(type="int"),
    )
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        scaler = Scaler(module)
    except ValueError as exc:
        module.fail_json(msg="%s Nothing was changed." % exc, changed=False)
    try:
        result = scaler.run()
    except ScaleFailure as exc:
        result = dict(scaler.result)
        result.update(exc.result)
        result["changed"] = bool(scaler.done)  # a failure before the first write changed nothing
        result.update(scaler.log_operation(result, failed=True))
        module.fail_json(**result)
    except _compose.ComposeError as exc:
        result = dict(scaler.result)
        result.update(exc.result())
        result["msg"] = "%s. %s" % (exc.msg, scaler.changed_so_far())
        result.update(scaler.log_operation(result, failed=True))
        module.fail_json(**result)
    except (OSError, UnicodeError) as exc:
        result = dict(scaler.result, msg="qfc_scale failed: %s. %s" % (to_native(exc), scaler.changed_so_far()))
        result.update(scaler.log_operation(result, failed=True))
        module.fail_json(exception=traceback.format_exc(), **result)
    result.update(scaler.log_operation(result, failed=False))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
