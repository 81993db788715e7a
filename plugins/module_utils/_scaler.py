# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qfc_scale's run: the order of its steps, what each failure says and the rollback.

The steps themselves live in their homes: the count and its guards in ``_replicas``, the ``.env`` edit in
``_envfile`` and :class:`EnvStore`, files and the project lock in ``_files``, Compose in ``_compose`` and
:class:`Workers`, the Engine in ``_engine``. :class:`Scaler` only sequences them: validate, lock, read, preflight,
write, apply, verify, roll back.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from collections.abc import Callable, Iterable, Mapping
    from concurrent.futures import Future
    from typing import NoReturn

    from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.qfieldcloud.ops.plugins.module_utils import (_compose, _engine, _envfile, _files, _oplog,
                                                                      _replicas)

ENGINE_TIMEOUT = 30  # seconds per Docker Engine API request, at most (and at most command_timeout)


class ScaleFailure(Exception):
    """Ends the run with fail_json(**result)."""

    def __init__(self, message: str, **result: Any) -> None:
        super().__init__(message)
        self.result = dict(result, msg=message)


def failure_fields(exc: _compose.ComposeError) -> dict[str, Any]:
    """A ComposeError's cmd, rc, stdout and stderr, for a result (its msg is the caller's to write)."""
    fields = exc.result()
    fields.pop("msg", None)
    return fields


def as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def check_inputs(p: Mapping[str, Any]) -> None:
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
    if p.get("expect_current") is not None:
        num("expect_current", p["expect_current"], 0, _replicas.MAX_REPLICAS)
    _replicas.check_name("env_var", p["env_var"], _replicas.ENV_VAR_RE, "a .env variable name")
    _replicas.check_name("service", p["service"], _replicas.SERVICE_RE, "a Compose service name")
    _oplog.check_options(p)


class EnvStore:
    """The ``.env`` file: read it, back it up, write it, restore it, say what it holds now."""

    def __init__(self, module: AnsibleModule, path: str, env_var: str, done: list[str]) -> None:
        self.module = module
        self.path = path
        self.env_var = env_var
        self.done = done  # the run's list of what it changed so far, shared with the Scaler
        self.secrets: list[str] = []  # the .env's secret values, masked in the operations log

    def load(self) -> tuple[bytes, str, list[_envfile.Entry], _envfile.Entry | None]:
        """(raw bytes, text, entries, the entry Compose uses); secret values registered as no_log."""
        try:
            raw, text, entries = _envfile.read(self.path)
        except _envfile.EnvFileError as exc:
            raise ScaleFailure("%s is malformed, %s. Nothing was changed." % (self.path, exc)) from None
        self.secrets = _envfile.secret_values(entries)
        self.module.no_log_values.update(self.secrets)
        entry, count = _envfile.lookup(entries, self.env_var)
        if count > 1 and entry is not None:  # count > 1: an entry was found
            self.module.warn("%s is set %d times in %s; Compose uses the last one (line %d), which is the one edited. "
                             "Remove the others." % (self.env_var, count, self.path, entry.line))
        return raw, text, entries, entry

    def read_bytes(self) -> bytes | None:
        try:
            with open(self.path, "rb") as handle:
                return handle.read()
        except OSError:
            return None

    def backup(self, keep: int, result: dict[str, Any]) -> None:
        """Copy .env beside itself (AnsibleModule.backup_local), then keep only the ``keep`` newest copies."""
        try:
            result["backup_file"] = self.module.backup_local(self.path)
        except Exception as exc:  # backup_local raises a bare Exception (disk full, permissions)
            _files.remove_partial_backups(self.path, os.getpid())
            raise ScaleFailure("Backing up %s failed: %s (%s). Nothing was changed."
                               % (self.path, exc, exc.__cause__)) from exc
        self.done.append("backup %s written" % result["backup_file"])
        removed, failures = _files.prune_backups(self.path, keep)
        for path, err in failures:
            self.module.warn("Could not remove the old backup %s: %s" % (path, to_native(err)))
        if removed:
            result["backups_removed"] = removed

    def write(self, data: bytes, raw: bytes, changed_so_far: Callable[[], str]) -> None:
        """Check that nobody edited .env since it was read (``raw``), then replace it (through a symlink)."""
        if self.read_bytes() != raw:
            raise ScaleFailure("%s was changed by something else while this run checked the project; it was not "
                               "written, so that edit is kept. %s Run again." % (self.path, changed_so_far()))
        try:
            _files.write_atomically(self.path, data, module=self.module)
        except OSError as exc:
            raise ScaleFailure("Writing %s failed: %s. .env is unchanged. %s"
                               % (self.path, to_native(exc), changed_so_far())) from exc

    def restore(self, raw: bytes, written: bytes, replicas: int) -> str | None:
        """Put ``raw`` back unless .env no longer holds what this run ``written``; returns the problem or None."""
        if self.read_bytes() != written:
            return (".env was changed by something else after this run wrote it, so it was not restored (that "
                    "edit is kept) and the previous count was not re-applied")
        try:
            _files.write_atomically(self.path, raw, module=self.module)
        except OSError as exc:
            return ("restoring .env failed: %s; .env still holds %s=%d and the previous count was not re-applied"
                    % (to_native(exc), self.env_var, replicas))
        self.done.append(".env restored")
        return None

    def diff(self, text: str, entry: _envfile.Entry | None, desired_text: str) -> dict[str, str]:
        new_entry, _count = _envfile.lookup(_envfile.parse(desired_text), self.env_var)
        header = "%s (%s)" % (self.path, self.env_var)
        return {"before_header": header, "after_header": header,
                "before": _envfile.printable(_envfile.entry_text(text, entry)) if entry else "",
                "after": _envfile.printable(_envfile.entry_text(desired_text, new_entry)) if new_entry else ""}


class Workers:
    """The service's containers: the Compose preflight, ``compose ps``, ``compose up`` and the Engine (SDK) that
    verifies them."""

    def __init__(self, module: AnsibleModule, project_src: str, env_file: str, service: str, env_var: str,
                 done: list[str]) -> None:
        self.module = module
        self.project_src = project_src
        self.env_file = env_file
        self.service = service
        self.env_var = env_var
        self.done = done
        # made by preflight(), which every other method follows (so they do not check for None)
        self.compose: _compose.Compose = None  # type: ignore[assignment]
        self.client: Any = None
        # a future of ``docker context inspect``, asked during the preflight
        self.context: Future[dict[str, Any]] | None = None

    def preflight(self, env: Mapping[str, str], replicas: int,
                  apply: bool) -> tuple[str, Callable[[], list[dict[str, Any]]]]:
        """Load the project as Compose would with the new value; fail before any write when it cannot. Returns
        (project name, a function returning the service's containers now: [] without ``apply``).

        ``config``, ``ps`` and ``context inspect`` are independent reads, so they run at once, while the Docker SDK
        is imported if the engine needs it (tcp, ssh, TLS; a local unix socket does not); their failures are reported
        in that order."""
        p = self.module.params
        self.compose = _compose.Compose(self.module, self.project_src, self.env_file, p["docker_cli"],
                                        timeout=p["command_timeout"])
        with ThreadPoolExecutor(max_workers=3) as pool:
            config = pool.submit(self.compose.config, {self.env_var: str(replicas)})
            ps = pool.submit(self.compose.ps, self.service) if apply else None
            if apply and not os.environ.get("DOCKER_HOST"):
                self.context = pool.submit(self.compose.context)
            if apply:
                self.load_sdk_if_needed()
        try:
            config = config.result()
        except _compose.ComposeError as exc:
            if not exc.timed_out:
                self.compose.version()  # asked only on failure: a missing or too old Compose v2 gets its own message
            problems = _compose.read_conflicts(self.files(env), self.service, self.env_var)
            raise ScaleFailure(_compose.explain_config_error(exc, problems, self.env_var, replicas, self.service,
                                                             self.project_src), **failure_fields(exc)) from exc
        problem = _compose.service_problem(
            config, self.service, self.env_var, replicas, ", ".join(self.files(env)) or self.project_src,
            lambda: _compose.read_conflicts(self.files(env), self.service, self.env_var))
        if problem:
            raise ScaleFailure(problem)
        return config.get("name") or os.path.basename(self.project_src), lambda: self.containers(ps)

    def load_sdk_if_needed(self) -> None:
        """Import the Docker SDK now (overlapping the Compose calls) unless the engine is a local unix socket, which
        the standard library's client serves: about 0.1 s of CPU saved, and no SDK needed on the host. A failed
        ``context inspect`` is reported later, by :meth:`engine`."""
        context = None
        if self.context is not None:
            try:
                context = self.context.result()
            except _compose.ComposeError:
                return
        if _engine.unix_socket_path(context) is None:
            _engine.load_sdk()

    @staticmethod
    def containers(ps: Future[list[dict[str, Any]]] | None) -> list[dict[str, Any]]:
        """The result of the preflight's ``compose ps`` ([] when it was not asked); its failure (engine down or
        hung) changes nothing."""
        try:
            return ps.result() if ps is not None else []
        except _compose.ComposeError as exc:
            raise ScaleFailure("%s. Nothing was changed." % exc.msg, **failure_fields(exc)) from exc

    def files(self, env: Mapping[str, str]) -> list[str]:
        merged = dict(env)
        merged.update({k: os.environ[k] for k in ("COMPOSE_FILE", "COMPOSE_PATH_SEPARATOR") if k in os.environ})
        return _compose.compose_files(self.project_src, merged)

    def engine(self) -> Any:
        """The Docker SDK client, pinged: the SDK must reach the engine the CLI uses before anything is written.

        With DOCKER_HOST unset it connects where the CLI's current context points (``docker context inspect``).
        """
        if self.client is None:
            timeout = min(ENGINE_TIMEOUT, self.module.params["command_timeout"])
            where = "DOCKER_HOST=%s" % os.environ["DOCKER_HOST"] if os.environ.get("DOCKER_HOST") else None
            context = None
            if where is None:
                try:
                    context = self.context.result() if self.context else self.compose.context()
                except _compose.ComposeError as exc:
                    raise ScaleFailure("Cannot read the docker CLI's current context: %s. Nothing was changed."
                                       % exc.msg, **failure_fields(exc)) from exc
                where = "%s (docker context %s)" % (context["host"], context["name"])
            local = _engine.unix_socket_path(context) is not None  # else tcp, ssh or TLS: the SDK's client
            if not local and not _engine.load_sdk():
                self.module.fail_json(msg="%s The Docker Engine at %s is not a local unix socket, so qfc_scale reaches "
                                      "it through the Docker SDK. Nothing was changed."
                                      % (missing_required_lib("docker"), where),
                                      exception=_engine.DOCKER_SDK_IMPORT_ERROR)
            started = time.time()
            try:
                client = _engine.engine_client(context, timeout=timeout)
                _engine.ping(client)
            except (_engine.DockerException, OSError) as exc:
                how = "a unix socket connection" if local else "the Docker SDK"
                raise ScaleFailure("qfc_scale's Engine API client (%s) cannot reach the Docker Engine at %s within %ss "
                                   "(%.1fs): %s. The docker CLI reaches it, but containers are verified through the "
                                   "Engine API, so nothing was changed."
                                   % (how, where, timeout, time.time() - started, to_native(exc))) from exc
            self.client = client
        return self.client

    def apply(self, project: str, replicas: int) -> list[dict[str, Any]]:
        """compose up for the service only, then wait until the count is running and stable."""
        self.compose.scale(self.service, replicas, {self.env_var: str(replicas)})
        self.done.append("docker compose up ran with %s=%d" % (self.env_var, replicas))
        p = self.module.params
        return _engine.wait_for_replicas(self.engine(), project, self.service, replicas, p["wait_timeout"],
                                         p["settle_time"])

    def running_now(self) -> int | None:
        """Running containers of the service now, as Compose sees them; None when Compose cannot say."""
        try:
            return _engine.count_running(self.compose.ps(self.service))
        except _compose.ComposeError:
            return None


class Scaler:
    """One qfc_scale run: ``Scaler(module).run()`` returns the result or raises ScaleFailure (its ``result``)."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        p = module.params
        check_inputs(p)
        self.cores = os.cpu_count() or 1
        self.replicas = _replicas.resolve(p["replicas"], self.cores, p["max_replicas_per_core"], p["auto_max"])
        self.service = p["service"]
        self.env_var = p["env_var"]
        self.project_src = os.path.abspath(p["project_src"])
        self.env_file = os.path.abspath(p["env_file"] or os.path.join(self.project_src, ".env"))
        self.result: dict[str, Any] = {
            "changed": False, "replicas": self.replicas, "previous_replicas": None, "previous_running": None,
            "running": None, "containers": [], "rollback_replicas": None, "env_file": self.env_file,
            "rolled_back": False, "refused": False, "cpu_count": self.cores,
            "max_replicas_per_core": p["max_replicas_per_core"],
            "core_limit": _replicas.core_limit(self.cores, p["max_replicas_per_core"])}
        # what this run changed so far, in order, for every failure message after the first change
        self.done: list[str] = []
        self.touched = False  # .env written or compose up started: from here on a run is recorded, even a failed one
        self.env_changes = False
        self.env = EnvStore(module, self.env_file, self.env_var, self.done)
        self.workers = Workers(module, self.project_src, self.env_file, self.service, self.env_var, self.done)

    def validate(self) -> None:
        """The count (hard ceiling, core-count guard) and the project's files; ScaleFailure before any change."""
        p = self.module.params
        try:
            _replicas.check_count(self.replicas)
        except ValueError as exc:
            raise ScaleFailure("%s Nothing was changed." % exc) from None
        if not os.path.isdir(self.project_src):
            raise ScaleFailure("project_src %s is not a directory. Point it at the QFieldCloud checkout that holds "
                               "docker-compose.yml and .env." % self.project_src)
        if not os.path.isfile(self.env_file):
            raise ScaleFailure("env_file %s does not exist. QFieldCloud reads %s from it; copy .env.example to .env "
                               "first." % (self.env_file, self.env_var))
        problem = _replicas.guard_problem(self.replicas, self.cores, p["max_replicas_per_core"], p["force"])
        if problem:
            raise ScaleFailure(problem)
        if self.replicas > _replicas.MULTI_SERVER_THRESHOLD:
            self.module.warn("%d workers on one host: beyond %d workers a multi-server layout (worker-only nodes "
                             "against the central database) is the next step."
                             % (self.replicas, _replicas.MULTI_SERVER_THRESHOLD))
        if self.replicas == 0:
            self.module.warn("replicas=0 stops every %s: no QFieldCloud job will be processed." % self.service)

    def changed_so_far(self) -> str:
        return "Changed so far: %s." % "; ".join(self.done) if self.done else "Nothing was changed."

    def run(self) -> dict[str, Any]:
        p = self.module.params
        self.validate()
        try:
            with _files.ProjectLock(os.path.dirname(self.env_file), p["lock_timeout"]):
                self.run_locked()
        except _files.LockTimeout as exc:
            raise ScaleFailure("Another run holds the lock on %s for more than lock_timeout=%ss. Nothing was changed."
                               % (exc.path, exc.timeout)) from exc
        return self.result

    def run_locked(self) -> None:
        p = self.module.params
        if not self.module.check_mode:  # under the lock no other run writes: a temporary file is a killed run's
            for stale in _files.remove_stale_temporaries(self.env_file):
                self.module.warn("Removed %s, a temporary copy of .env left by a run that was killed while writing it."
                                 % stale)
        raw, text, entries, entry = self.env.load()
        previous = as_int(entry.value if entry else None)
        self.result["previous_replicas"] = self.result["rollback_replicas"] = previous
        if p.get("expect_current") is not None and previous != p["expect_current"]:
            self.refuse(p["expect_current"], previous)
            return
        project, containers_now = self.workers.preflight({e.key: e.value for e in entries}, self.replicas, p["apply"])
        self.result["project"] = project
        before = containers_now()

        desired_text = _envfile.set_value(text, self.env_var, str(self.replicas))
        desired = desired_text.encode("utf-8", errors="surrogateescape")
        env_changes = self.env_changes = desired_text != text
        if p["apply"]:
            self.workers.engine()  # the SDK reaches the engine, before any write
            self.result["previous_running"] = self.result["running"] = _engine.count_running(before)
            self.result["rollback_replicas"] = _replicas.rollback_target(previous, self.result["previous_running"])
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
            self.result["containers"] = public(before)
            if needs_apply:  # check mode: predict the outcome
                self.result["running"] = self.replicas
            return

        if env_changes:
            if p["backup"]:
                self.env.backup(p["backup_keep"], self.result)
            self.env.write(desired, raw, self.changed_so_far)
            self.touched = True
            self.done.append(".env written (%s=%d)" % (self.env_var, self.replicas))
        if not needs_apply:
            return
        self.touched = True  # a failed or killed compose up may already have created or stopped containers
        try:
            containers = self.workers.apply(project, self.replicas)
        # After the write, whatever failed is rolled back: Compose, the wait, the Engine API (requests' errors are
        # OSErrors), an unreachable engine (ScaleFailure).
        except (_compose.ComposeError, _engine.VerifyError, _engine.DockerException, ScaleFailure, OSError) as exc:
            self.fail_and_roll_back(exc, raw, desired, env_changes, previous, project)
        self.result["containers"] = public(containers)
        self.result["running"] = _engine.count_running(containers)

    def refuse(self, expected: int, configured: int | None) -> None:
        """The compare-and-set failed: the configured count under the lock is not the one the caller decided on
        (another run changed it while this one waited for the lock). Nothing is written or called: no backup, no
        .env write, no Compose or Engine call; in check mode this is the prediction. Not a failure: the caller's
        premise is gone, so its change is dropped and it decides again (the autoscaler reports a hold)."""
        shown = "unset" if configured is None else configured
        self.result.update(refused=True, expect_current=expected, msg=(
            "Refused - expect_current=%d, but %s holds %s=%s under the project lock: the configured count changed "
            "from %d to %s since the caller read it. Nothing was changed (no backup, no .env write, no docker "
            "compose call); decide again from %s." % (expected, self.env_file, self.env_var, shown, expected, shown,
                                                      shown)))

    def fail_and_roll_back(self, exc: Exception, raw: bytes, desired: bytes, env_changes: bool, previous: int | None,
                           project: str) -> NoReturn:
        """Restore .env and the previous count; the result keeps the first failure (msg, cmd, rc, stderr) and says
        what the rollback did, what failed in it, the value on disk and the running count."""
        what = getattr(exc, "msg", None) or to_native(exc)
        if isinstance(exc, _compose.ComposeError) and exc.timed_out:
            self.done.append("docker compose up was killed at its deadline (containers it had already created or "
                             "stopped stay so)")
        elif isinstance(exc, _compose.ComposeError):
            self.done.append("docker compose up failed (rc=%s)" % exc.rc)
        fields = failure_fields(exc) if isinstance(exc, _compose.ComposeError) else {}
        if isinstance(exc, _engine.VerifyError):
            fields["containers"] = public(exc.containers)
        if not self.module.params["rollback"]:
            fields.update(self.final_state())
            raise ScaleFailure("Scaling %s to %d failed: %s. rollback=false: .env keeps %s=%d. %s"
                               % (self.service, self.replicas, what, self.env_var, self.replicas,
                                  self.changed_so_far()), **fields)
        restored: list[str] = []
        problem: str | None = None
        if env_changes:
            problem = self.env.restore(raw, desired, self.replicas)
            if problem is None:
                value = " (%s=%d)" % (self.env_var, previous) if previous is not None else ""
                restored.append(".env restored%s" % value)
        # Without a previous value in .env (the variable was absent), bring back the count that was running.
        target = self.result["rollback_replicas"]
        if target is not None and env_changes and problem is None:
            try:
                containers = self.workers.apply(project, target)
                fields["containers"] = public(containers)
                running = _engine.count_running(containers)
                restored.append("%d %s containers running again (verified)" % (running, self.service))
            except (_compose.ComposeError, _engine.VerifyError, _engine.DockerException, ScaleFailure,
                    OSError) as again:
                problem = "re-applying %s workers failed too: %s" % (target, getattr(again, "msg", again))
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

    def reason(self) -> str:
        """The record's reason when operation_reason is empty."""
        previous = self.result["previous_replicas"]
        if self.env_changes:
            return "replicas %s -> %d requested" % ("unset" if previous is None else previous, self.replicas)
        running = self.result["previous_running"]
        return "running %s -> %d reconciled (.env already %d)" % (running, self.replicas, self.replicas)

    def log_operation(self, result: Mapping[str, Any], failed: bool) -> dict[str, Any]:
        """Append the run's record to the operations log; returns the result keys to add (operation_record and,
        when the log could not be written, operations_log_error).

        Nothing is recorded in check mode, for a run that changed nothing, or for a failure before the first change.
        A failure after it is ``rolled_back`` when the previous count runs again (verified), else ``failed``.
        """
        out: dict[str, Any] = {"operation_record": None}
        if self.module.check_mode or not (self.touched if failed else result.get("changed")):
            return out
        details: dict[str, Any] = {"running_before": self.result["previous_running"],
                                   "running_after": result.get("running"), "env_changed": self.env_changes}
        if failed:
            outcome = "rolled_back" if result.get("rolled_back") else "failed"
            on_disk = result["env_value"] if "env_value" in result else _envfile.value_in(self.env_file, self.env_var)
            after = as_int(on_disk)
            details.update(requested=self.replicas, error=result.get("msg"))
            if result.get("rollback_error"):
                details["rollback_error"] = result["rollback_error"]
        else:
            outcome, after = "changed", self.replicas
        if result.get("backup_file"):
            details["backup_file"] = result["backup_file"]
        record, error = _oplog.record_change(self.module.params, "scale", self.result["previous_replicas"], after,
                                             self.reason(), outcome, secrets=self.env.secrets, details=details,
                                             warn=self.module.warn)
        out["operation_record"] = record
        if error:
            out["operations_log_error"] = error
        return out

    def final_state(self) -> dict[str, Any]:
        return {"env_value": _envfile.value_in(self.env_file, self.env_var), "running": self.workers.running_now()}

    def diff(self, text: str, entry: _envfile.Entry | None, desired_text: str) -> list[dict[str, str]]:
        diffs = [self.env.diff(text, entry, desired_text)]
        if self.result["running"] is not None:
            header = "running %s containers" % self.service
            diffs.append({"before_header": header, "after_header": header,
                          "before": "%d\n" % self.result["running"], "after": "%d\n" % self.replicas})
        return diffs


def public(containers: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: c[k] for k in ("name", "number", "state", "id")} for c in containers]
