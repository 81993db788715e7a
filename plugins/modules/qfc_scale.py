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
    Docker Engine through the Docker SDK (within min(O(command_timeout), 30) seconds), so an engine that the SDK
    cannot reach, or a hung engine, fails the task with nothing changed. With E(DOCKER_HOST) unset, the SDK connects
    to the endpoint of the docker CLI's current context (C(docker context inspect)), TLS material included.
extends_documentation_fragment:
  - qfieldcloud.ops._project
  - qfieldcloud.ops._attributes
attributes:
  check_mode:
    support: full
    details:
      - Check mode runs the read-only preflight (C(docker compose config)) and reads the running containers, then
        predicts C(changed). It never writes C(.env) and does not use Compose's C(--dry-run), which is not free of
        side effects.
  diff_mode:
    support: full
    details:
      - Shows the variable's C(.env) line before and after, and the running container count before and after.
  idempotent:
    support: full
    details:
      - A second run with the same O(replicas) reports no change, writes no backup and calls no C(docker compose up).
options:
  replicas:
    description:
      - The number of C(worker_wrapper) containers, an integer. V(0) stops every worker, so no job is processed.
      - At most 100, a hard ceiling per host that O(force=true) does not lift (Compose itself would accept
        9223372036854775807).
      - V(auto) sizes the host by the operations guideline, CPU cores x O(max_replicas_per_core) (2 cores - 5
        workers), capped at O(auto_max) and at least 1; the count used is returned as RV(replicas).
    type: raw
    required: true
  auto_max:
    description:
      - The cap for O(replicas=auto). Beyond 10 workers the guideline is a multi-server layout, not a bigger host.
      - From 1 to 100.
    type: int
    default: 10
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
      - A worker that fails later than this (for example after its own database retries) is not caught; raise it
        for such images.
      - A finite number from 0 to 3600, shorter than O(wait_timeout).
    type: float
    default: 1.0
  max_replicas_per_core:
    description:
      - The core-count guard. More than this many workers per CPU core of the target is refused unless O(force=true).
        The default follows the operations guideline (2 cores - 4 to 5 workers, 4 cores - 8 to 10 workers).
      - Above 10 workers on one host a warning recommends a multi-server layout.
      - A finite number greater than 0 and at most 100.
    type: float
    default: 2.5
  force:
    description: Accept a replica count above the core-count guard (never above the hard ceiling of 100).
    type: bool
    default: false
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
seealso:
  - name: QFieldCloud docker-compose.yml
    description: The C(worker_wrapper) service and its C(scale:) line.
    link: https://github.com/opengisch/QFieldCloud/blob/master/docker-compose.yml
  - name: docker compose up
    description: The C(--scale), C(--no-deps) and C(--no-recreate) options used to apply the count.
    link: https://docs.docker.com/reference/cli/docker/compose/up/
requirements:
  - The Docker SDK for Python (C(docker)) on the target when O(apply=true), to verify containers by their Compose
    labels.
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
cpu_count:
  description: CPU cores of the target, as the core-count guard and O(replicas=auto) see them.
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
"""

import os
import re
import time
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _compose, _envfile, _files, _replicas, _engine

try:
    import yaml

    HAS_YAML = True
except ImportError:
    HAS_YAML = False

MULTI_SERVER_THRESHOLD = 10
ENGINE_TIMEOUT = 30  # seconds per Docker Engine API request, at most (and at most command_timeout)
BACKUP_RE = r"^%s\.\d+\.(\d{4}-\d\d-\d\d@\d\d:\d\d:\d\d)~$"  # AnsibleModule.backup_local's names


class ScaleFailure(Exception):
    """Ends the run with fail_json(**result)."""

    def __init__(self, message, **result):
        super().__init__(message)
        self.result = dict(result, msg=message)


def printable(text):
    """Bytes that are not UTF-8 (a Latin-1 comment) were read as surrogates; results must be valid UTF-8."""
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def as_int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def check_inputs(p):
    """Every number finite and in range, every name one Compose accepts; raises ValueError before anything runs."""
    num = _replicas.check_number
    num("auto_max", p["auto_max"], 1, _replicas.MAX_REPLICAS)
    num("max_replicas_per_core", p["max_replicas_per_core"], 0, _replicas.MAX_REPLICAS, low_open=True)
    num("settle_time", p["settle_time"], 0, 3600, unit=" s")
    num("wait_timeout", p["wait_timeout"], 1, 86400, unit=" s")
    if p["wait_timeout"] <= p["settle_time"]:
        raise ValueError("wait_timeout (%ss) must be longer than settle_time (%ss), or no container can ever count as "
                         "settled and every change would be rolled back." % (p["wait_timeout"], p["settle_time"]))
    num("lock_timeout", p["lock_timeout"], 0, 86400, unit=" s")
    num("command_timeout", p["command_timeout"], 10, 86400, unit=" s")
    num("backup_keep", p["backup_keep"], 1, 1000)
    _replicas.check_name("env_var", p["env_var"], _replicas.ENV_VAR_RE, "a .env variable name")
    _replicas.check_name("service", p["service"], _replicas.SERVICE_RE, "a Compose service name")


class Scaler:
    def __init__(self, module):
        self.module = module
        p = module.params
        check_inputs(p)
        self.cores = os.cpu_count() or 1
        self.replicas = _replicas.resolve(p["replicas"], self.cores, p["max_replicas_per_core"], p["auto_max"])
        self.service = p["service"]
        self.env_var = p["env_var"]
        self.project_src = os.path.abspath(p["project_src"])
        self.env_file = os.path.abspath(p["env_file"] or os.path.join(self.project_src, ".env"))
        self.result = {"changed": False, "replicas": self.replicas, "previous_replicas": None,
                       "previous_running": None, "running": None, "containers": [],
                       "env_file": self.env_file, "rolled_back": False,
                       "cpu_count": self.cores}
        self.compose = None
        self.client = None
        self.done = []  # what this run changed so far, in order, for every failure message after the first change

    # -- inputs -------------------------------------------------------------------------------
    def validate(self):
        if self.replicas < 0:
            raise ScaleFailure("replicas must be 0 or more, got %d. Nothing was changed." % self.replicas)
        if self.replicas > _replicas.MAX_REPLICAS:
            raise ScaleFailure("replicas=%d is above the hard ceiling of %d workers per host, which force=true does "
                               "not lift. Spread the workers over more servers. Nothing was changed."
                               % (self.replicas, _replicas.MAX_REPLICAS))
        if not os.path.isdir(self.project_src):
            raise ScaleFailure("project_src %s is not a directory. Point it at the QFieldCloud checkout that holds "
                               "docker-compose.yml and .env." % self.project_src)
        if not os.path.isfile(self.env_file):
            raise ScaleFailure("env_file %s does not exist. QFieldCloud reads %s from it; copy .env.example to .env "
                               "first." % (self.env_file, self.env_var))
        self.guard_cores()

    def guard_cores(self):
        cores = self.cores
        limit = _replicas.core_limit(cores, self.module.params["max_replicas_per_core"])
        per_core = self.module.params["max_replicas_per_core"]
        if self.replicas > limit and not self.module.params["force"]:
            raise ScaleFailure("replicas=%d exceeds the core-count guard: %d CPU cores x %s workers per core = at most "
                               "%d workers on this host. Add cores, spread workers over more servers, or set "
                               "force=true." % (self.replicas, cores, per_core, limit))
        if self.replicas > MULTI_SERVER_THRESHOLD:
            self.module.warn("%d workers on one host: beyond %d workers a multi-server layout (worker-only nodes "
                             "against the central database) is the next step."
                             % (self.replicas, MULTI_SERVER_THRESHOLD))
        if self.replicas == 0:
            self.module.warn("replicas=0 stops every %s: no QFieldCloud job will be processed." % self.service)

    def load_env(self):
        try:
            raw, text, entries = _envfile.read(self.env_file)
        except _envfile.EnvFileError as exc:
            raise ScaleFailure("%s is malformed, %s. Nothing was changed." % (self.env_file, exc)) from None
        self.module.no_log_values.update(_envfile.secret_values(entries))
        entry, count = _envfile.lookup(entries, self.env_var)
        if count > 1:
            self.module.warn("%s is set %d times in %s; Compose uses the last one (line %d), which is the one edited. "
                             "Remove the others." % (self.env_var, count, self.env_file, entry.line))
        return raw, text, entries, entry

    # -- compose --------------------------------------------------------------------------------
    def preflight(self, env):
        """Load the project as Compose would with the new value; fail before any write when it cannot."""
        self.compose = _compose.Compose(self.module, self.project_src, self.env_file, self.module.params["docker_cli"],
                                        timeout=self.module.params["command_timeout"])
        environ = {self.env_var: str(self.replicas)}
        try:
            config = self.compose.config(environ)
        except _compose.ComposeError as exc:
            if not exc.timed_out:
                self.compose.version()  # asked only on failure: a missing or too old Compose v2 gets its own message
            raise ScaleFailure(self.explain_config_error(exc, env), **self.failure_fields(exc)) from exc
        service = (config.get("services") or {}).get(self.service)
        files = ", ".join(self.files(env)) or self.project_src
        if service is None:
            raise ScaleFailure("Service %s is not defined in the compose project (%s). Nothing was changed."
                               % (self.service, files))
        problems = ["%s." % p for p in self.conflicts(env)]
        if service.get("container_name") is not None:
            raise ScaleFailure("Service %s sets container_name, so it cannot run more than one container. %s "
                               "Nothing was changed." % (self.service, " ".join(problems)))
        scale = _compose.effective_scale(service)
        if scale != self.replicas:
            raise ScaleFailure("Service %s does not take its scale from ${%s}: with %s=%d Compose would run %d. Set "
                               "'scale: ${%s}' on the service in %s. Nothing was changed."
                               % (self.service, self.env_var, self.env_var, self.replicas, scale, self.env_var, files))
        self.result["project"] = config.get("name") or os.path.basename(self.project_src)
        return self.result["project"]

    def files(self, env):
        merged = dict(env)
        merged.update({k: os.environ[k] for k in ("COMPOSE_FILE", "COMPOSE_PATH_SEPARATOR") if k in os.environ})
        return _compose.compose_files(self.project_src, merged)

    def conflicts(self, env):
        if not HAS_YAML:
            return []
        documents = []
        for path in self.files(env):
            try:
                with open(path) as handle:
                    documents.append((path, yaml.safe_load(handle)))
            except (OSError, yaml.YAMLError):
                continue
        return _compose.find_service_conflicts(documents, self.service, self.env_var)

    def explain_config_error(self, exc, env):
        stderr = exc.stderr or ""
        if exc.timed_out:
            return "%s. .env was not changed." % exc.msg
        problems = ["%s." % p for p in self.conflicts(env)]
        if "can't set distinct values on 'scale' and 'deploy.replicas'" in stderr:
            hint = " ".join(problems) or ("Remove deploy.replicas from %s in the override files." % self.service)
            return ("The compose project does not load with %s=%d: %s sets both scale and a different "
                    "deploy.replicas. %s .env was not changed." % (self.env_var, self.replicas, self.service, hint))
        if "container_name" in stderr:
            return ("The compose project does not load with %s=%d: %s. %s .env was not changed."
                    % (self.env_var, self.replicas, _compose.first_error_line(stderr), " ".join(problems)))
        return ("The compose project in %s does not load with %s=%d: %s. .env was not changed."
                % (self.project_src, self.env_var, self.replicas, _compose.first_error_line(stderr) or exc.msg))

    @staticmethod
    def failure_fields(exc):
        fields = exc.result()
        fields.pop("msg", None)
        return fields

    def current_containers(self):
        """``compose ps`` before any change; its failure (engine down or hung) changes nothing."""
        try:
            return self.compose.ps(self.service)
        except _compose.ComposeError as exc:
            raise ScaleFailure("%s. Nothing was changed." % exc.msg, **self.failure_fields(exc)) from exc

    # -- containers -----------------------------------------------------------------------------
    def engine(self):
        """The Docker SDK client, pinged: the SDK must reach the engine the CLI uses before anything is written.

        With DOCKER_HOST unset it connects where the CLI's current context points (``docker context inspect``).
        """
        if self.client is None:
            timeout = min(ENGINE_TIMEOUT, self.module.params["command_timeout"])
            where = "DOCKER_HOST=%s" % os.environ["DOCKER_HOST"] if os.environ.get("DOCKER_HOST") else None
            context = None
            if where is None:
                try:
                    context = self.compose.context()
                except _compose.ComposeError as exc:
                    raise ScaleFailure("Cannot read the docker CLI's current context: %s. Nothing was changed."
                                       % exc.msg, **self.failure_fields(exc)) from exc
                where = "%s (docker context %s)" % (context["host"], context["name"])
            started = time.time()
            try:
                client = _engine.engine_client(context, timeout=timeout)
                _engine.ping(client)
            except (_engine.DockerException, OSError) as exc:
                raise ScaleFailure("The Docker SDK cannot reach the Docker Engine at %s within %ss (%.1fs): %s. The "
                                   "docker CLI reaches it, but containers are verified through the SDK, so nothing "
                                   "was changed." % (where, timeout, time.time() - started, to_native(exc))) from exc
            self.client = client
        return self.client

    def apply(self, project, replicas):
        """compose up for the service only, then wait until the count is running and stable."""
        self.compose.scale(self.service, replicas, {self.env_var: str(replicas)})
        self.done.append("docker compose up ran with %s=%d" % (self.env_var, replicas))
        return _engine.wait_for_replicas(self.engine(), project, self.service, replicas,
                                          self.module.params["wait_timeout"], self.module.params["settle_time"])

    # -- .env -----------------------------------------------------------------------------------
    def write_env(self, data, raw):
        """Back up, check that nobody edited .env since it was read, then replace it (through a symlink)."""
        p = self.module.params
        if p["backup"]:
            try:
                self.result["backup_file"] = self.module.backup_local(self.env_file)
            except Exception as exc:  # backup_local raises a bare Exception (disk full, permissions)
                self.remove_partial_backup()
                raise ScaleFailure("Backing up %s failed: %s (%s). Nothing was changed."
                                   % (self.env_file, exc, exc.__cause__)) from exc
            self.done.append("backup %s written" % self.result["backup_file"])
            self.prune_backups(p["backup_keep"])
        if self.read_bytes() != raw:
            raise ScaleFailure("%s was changed by something else while this run checked the project; it was not "
                               "written, so that edit is kept. %s Run again." % (self.env_file, self.changed_so_far()))
        try:
            _files.write_atomically(self.env_file, data, module=self.module)
        except OSError as exc:
            raise ScaleFailure("Writing %s failed: %s. .env is unchanged. %s"
                               % (self.env_file, to_native(exc), self.changed_so_far())) from exc
        self.done.append(".env written (%s=%d)" % (self.env_var, self.replicas))

    def read_bytes(self):
        try:
            with open(self.env_file, "rb") as handle:
                return handle.read()
        except OSError:
            return None

    def remove_partial_backup(self):
        """A failed copy leaves a truncated backup named after this process; remove it."""
        directory, base = os.path.split(self.env_file)
        pattern = re.compile(BACKUP_RE.replace(r"\d+", str(os.getpid()), 1) % re.escape(base))
        for name in os.listdir(directory):
            if pattern.match(name):
                try:
                    os.unlink(os.path.join(directory, name))
                except OSError:
                    pass

    def prune_backups(self, keep):
        """Keep the ``keep`` newest backups of .env (each holds every secret); older ones are removed."""
        directory, base = os.path.split(self.env_file)
        pattern = re.compile(BACKUP_RE % re.escape(base))
        found = []
        for name in os.listdir(directory):
            match = pattern.match(name)
            if match:
                path = os.path.join(directory, name)
                try:
                    found.append((match.group(1), os.lstat(path).st_ctime_ns, path))
                except OSError:
                    continue
        removed = []
        for _stamp, _ctime, path in sorted(found, reverse=True)[keep:]:
            try:
                os.unlink(path)
                removed.append(path)
            except OSError as exc:
                self.module.warn("Could not remove the old backup %s: %s" % (path, to_native(exc)))
        if removed:
            self.result["backups_removed"] = removed

    def env_value_on_disk(self):
        """The value of env_var in .env now (None when absent or unreadable), for failure results."""
        try:
            _raw, _text, entries = _envfile.read(self.env_file)
        except (OSError, _envfile.EnvFileError):
            return None
        entry, _count = _envfile.lookup(entries, self.env_var)
        return entry.value if entry else None

    def changed_so_far(self):
        return "Changed so far: %s." % "; ".join(self.done) if self.done else "Nothing was changed."

    # -- the run --------------------------------------------------------------------------------
    def run(self):
        p = self.module.params
        self.validate()
        if p["apply"] and not _engine.HAS_DOCKER_SDK:
            self.module.fail_json(msg=missing_required_lib("docker"), exception=_engine.DOCKER_SDK_IMPORT_ERROR)
        try:
            with _files.ProjectLock(os.path.dirname(self.env_file), p["lock_timeout"]):
                self.run_locked()
        except _files.LockTimeout as exc:
            raise ScaleFailure("Another run holds the lock on %s for more than lock_timeout=%ss. Nothing was changed."
                               % (exc.path, exc.timeout)) from exc
        return self.result

    def run_locked(self):
        p = self.module.params
        if not self.module.check_mode:  # under the lock no other run writes: a temporary file is a killed run's
            for stale in _files.remove_stale_temporaries(self.env_file):
                self.module.warn("Removed %s, a temporary copy of .env left by a run that was killed while writing it."
                                 % stale)
        raw, text, entries, entry = self.load_env()
        env = {e.key: e.value for e in entries}
        previous_raw = entry.value if entry else None
        previous = as_int(previous_raw)
        self.result["previous_replicas"] = previous
        project = self.preflight(env)

        desired_text = _envfile.set_value(text, self.env_var, str(self.replicas))
        desired = desired_text.encode("utf-8", errors="surrogateescape")
        env_changes = desired_text != text
        before = []
        if p["apply"]:
            before = self.current_containers()
            self.engine()  # the SDK reaches the engine, before any write
            self.result["previous_running"] = self.result["running"] = _engine.count_running(before)
            needs_apply = env_changes or self.result["running"] != self.replicas or len(before) != self.replicas
        else:
            needs_apply = False
        if env_changes:
            try:
                _files.check_replaceable(self.env_file)
            except _files.FileWriteError as exc:
                raise ScaleFailure(exc.msg) from exc
        self.result["changed"] = env_changes or needs_apply
        if self.module._diff:
            self.result["diff"] = self.diff(text, entry, desired_text)
        if self.module.check_mode or not self.result["changed"]:
            self.result["containers"] = self.public(before)
            if needs_apply:  # check mode: predict the outcome
                self.result["running"] = self.replicas
            return

        if env_changes:
            self.write_env(desired, raw)
        if not needs_apply:
            return
        try:
            containers = self.apply(project, self.replicas)
        # After the write, whatever failed is rolled back: Compose, the wait, the Engine API (requests' errors are
        # OSErrors), an unreachable engine (ScaleFailure).
        except (_compose.ComposeError, _engine.VerifyError, _engine.DockerException, ScaleFailure, OSError) as exc:
            self.fail_and_roll_back(exc, raw, desired, env_changes, previous, project)
        self.result["containers"] = self.public(containers)
        self.result["running"] = _engine.count_running(containers)

    def fail_and_roll_back(self, exc, raw, desired, env_changes, previous, project):
        """Restore .env and the previous count; the result keeps the first failure (msg, cmd, rc, stderr) and says
        what the rollback did, what failed in it, the value on disk and the running count."""
        what = getattr(exc, "msg", None) or to_native(exc)
        if isinstance(exc, _compose.ComposeError) and exc.timed_out:
            self.done.append("docker compose up was killed at its deadline (containers it had already created or "
                             "stopped stay so)")
        elif isinstance(exc, _compose.ComposeError):
            self.done.append("docker compose up failed (rc=%s)" % exc.rc)
        fields = exc.result() if isinstance(exc, _compose.ComposeError) else {}
        fields.pop("msg", None)
        if isinstance(exc, _engine.VerifyError):
            fields["containers"] = self.public(exc.containers)
        if not self.module.params["rollback"]:
            fields.update(self.final_state())
            raise ScaleFailure("Scaling %s to %d failed: %s. rollback=false: .env keeps %s=%d. %s"
                               % (self.service, self.replicas, what, self.env_var, self.replicas,
                                  self.changed_so_far()), **fields)
        restored = []
        problem = None
        if env_changes:
            on_disk = self.read_bytes()
            if on_disk != desired:
                problem = (".env was changed by something else after this run wrote it, so it was not restored (that "
                           "edit is kept) and the previous count was not re-applied")
            else:
                try:
                    _files.write_atomically(self.env_file, raw, module=self.module)
                except OSError as again:
                    problem = ("restoring .env failed: %s; .env still holds %s=%d and the previous count was not "
                               "re-applied" % (to_native(again), self.env_var, self.replicas))
                else:
                    self.done.append(".env restored")
                    value = " (%s=%d)" % (self.env_var, previous) if previous is not None else ""
                    restored.append(".env restored%s" % value)
        # Without a previous value in .env (the variable was absent), bring back the count that was running.
        target = previous if previous is not None else self.result["previous_running"]
        if target is not None and env_changes and problem is None:
            try:
                containers = self.apply(project, target)
                fields["containers"] = self.public(containers)
                running = _engine.count_running(containers)
                restored.append("%d %s containers running again (verified)" % (running, self.service))
            except (_compose.ComposeError, _engine.VerifyError, _engine.DockerException, ScaleFailure,
                    OSError) as again:
                problem = "re-applying %d workers failed too: %s" % (target, getattr(again, "msg", again))
        # Only a rollback whose previous count runs again (verified) counts as one.
        self.result["rolled_back"] = bool(restored) and problem is None
        fields.update(self.result)
        fields.update(self.final_state())
        if problem:
            fields["rollback_error"] = problem
        outcome = "; ".join(restored) or ("nothing to restore, .env already held the value" if not problem else "")
        raise ScaleFailure("Scaling %s to %d failed: %s. Rolled back: %s.%s Now: .env holds %s=%s, %s %s containers "
                           "running. %s"
                           % (self.service, self.replicas, what, outcome or "no",
                              " Rollback failed: %s." % problem if problem else "",
                              self.env_var, fields["env_value"],
                              "unknown" if fields["running"] is None else fields["running"], self.service,
                              self.changed_so_far()), **fields)

    def final_state(self):
        state = {"env_value": self.env_value_on_disk()}
        try:
            state["running"] = _engine.count_running(self.compose.ps(self.service))
        except _compose.ComposeError:
            state["running"] = None
        return state

    def diff(self, text, entry, desired_text):
        new_entry, _count = _envfile.lookup(_envfile.parse(desired_text), self.env_var)
        diffs = [{
            "before_header": "%s (%s)" % (self.env_file, self.env_var),
            "after_header": "%s (%s)" % (self.env_file, self.env_var),
            "before": printable(_envfile.entry_text(text, entry)) if entry else "",
            "after": printable(_envfile.entry_text(desired_text, new_entry)),
        }]
        if self.result["running"] is not None:
            diffs.append({
                "before_header": "running %s containers" % self.service,
                "after_header": "running %s containers" % self.service,
                "before": "%d\n" % self.result["running"],
                "after": "%d\n" % self.replicas,
            })
        return diffs

    @staticmethod
    def public(containers):
        return [{k: c[k] for k in ("name", "number", "state", "id")} for c in containers]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            project_src=dict(type="path", required=True),
            replicas=dict(type="raw", required=True),
            auto_max=dict(type="int", default=10),
            env_file=dict(type="path"),
            env_var=dict(type="str", default="QFIELDCLOUD_WORKER_REPLICAS"),
            service=dict(type="str", default="worker_wrapper"),
            docker_cli=dict(type="path"),
            backup=dict(type="bool", default=True),
            backup_keep=dict(type="int", default=10),
            apply=dict(type="bool", default=True),
            wait_timeout=dict(type="int", default=120),
            settle_time=dict(type="float", default=1.0),
            max_replicas_per_core=dict(type="float", default=2.5),
            force=dict(type="bool", default=False),
            rollback=dict(type="bool", default=True),
            lock_timeout=dict(type="int", default=1800),
            command_timeout=dict(type="int", default=_compose.DEFAULT_TIMEOUT),
        ),
        supports_check_mode=True,
    )
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
        module.fail_json(**result)
    except _compose.ComposeError as exc:
        result = dict(scaler.result)
        result.update(exc.result())
        result["msg"] = "%s. %s" % (exc.msg, scaler.changed_so_far())
        module.fail_json(**result)
    except (OSError, UnicodeError) as exc:
        module.fail_json(msg="qfc_scale failed: %s. %s" % (to_native(exc), scaler.changed_so_far()),
                         exception=traceback.format_exc(), **scaler.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
