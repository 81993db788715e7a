# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The one place where the collection calls the Docker Compose v2 CLI, plus pure parsers of its output and the
explanation of a project that does not load or cannot scale a service (:func:`explain_config_error`,
:func:`service_problem`, :func:`read_conflicts`).

``project_argument_spec()`` pairs with the ``qfieldcloud.ops._project`` doc fragment (project_src, env_file,
docker_cli)."""

from __future__ import annotations

import collections
import json
import os
import re
import selectors
import shlex
import signal
import subprocess
import time
from typing import IO, TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from ansible.module_utils.basic import AnsibleModule

try:
    import yaml

    HAS_YAML = True
except ImportError:
    HAS_YAML = False

# Keep in sync with the requirement in the qfieldcloud.ops._project doc fragment (a unit test compares them).
MINIMUM_COMPOSE_VERSION = (2, 20, 0)
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
DEFAULT_COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
DEFAULT_OVERRIDE_FILES = ("compose.override.yaml", "compose.override.yml",
                          "docker-compose.override.yaml", "docker-compose.override.yml")
# Deadlines of the CLI calls, in seconds. `up` may wait for stop_grace_period (15m in QFieldCloud) per stopped
# worker, so its default is generous; the read-only calls (config, ps, version, context inspect) never need long.
DEFAULT_TIMEOUT = 1200
READ_TIMEOUT = 60
KILL_GRACE = 5
# After the SIGKILL (or the command's own exit), how long the output pipes may stay open before reading stops: a
# process outside the group (an ssh ControlPersist master) may hold them for as long as it lives.
PIPE_GRACE = 2
POLL_INTERVAL = 0.1
HELD_NOTE = ("a process outside its process group (for example an ssh ControlPersist master behind an ssh:// "
             "DOCKER_HOST) still held its output, so reading stopped %ss after %s; the output shown may be "
             "incomplete")


def project_argument_spec() -> dict[str, dict[str, Any]]:
    """The options documented by the ``qfieldcloud.ops._project`` doc fragment."""
    return dict(
        project_src=dict(type="path", required=True),
        env_file=dict(type="path"),
        docker_cli=dict(type="path"),
    )


class ComposeError(Exception):
    """A failed Compose call; carries what Ansible failures must carry. ``timed_out``: killed at its deadline."""

    def __init__(self, msg: str, cmd: str | None = None, rc: int | None = None, stdout: str = "", stderr: str = "",
                 timed_out: bool = False) -> None:
        super().__init__(msg)
        self.msg = msg
        self.cmd = cmd
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"msg": self.msg}
        if self.cmd is not None:
            out.update(cmd=self.cmd, rc=self.rc, stdout=self.stdout, stderr=self.stderr)
        return out


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """``2.26.1-4`` or ``v2.29.2-desktop.1`` -> (2, 26, 1); None when there is no version."""
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(x) for x in match.groups()) if match else None


def parse_ps_json(text: str | None) -> list[dict[str, Any]]:
    """Parse ``docker compose ps --format json``: a JSON array before Compose 2.21, JSON Lines since."""
    text = (text or "").strip()
    if not text:
        return []
    if text.startswith("["):
        containers = json.loads(text)
    else:
        containers = [json.loads(line) for line in text.splitlines() if line.strip()]
    for container in containers:
        labels = container.get("Labels")
        if isinstance(labels, str):
            container["Labels"] = parse_labels(labels)
    return containers


def parse_labels(text: str | None) -> dict[str, str]:
    """Compose joins labels as ``k=v,k=v``. A value may itself hold commas (``config_files`` lists paths), so a
    piece that does not start with a label key continues the previous value."""
    labels: dict[str, str] = {}
    last = None
    for piece in text.split(",") if text else []:
        key, sep, value = piece.partition("=")
        if sep and LABEL_KEY_RE.match(key):
            labels[key] = value
            last = key
        elif last is not None:
            labels[last] += "," + piece
    return labels


def service_containers(containers: Iterable[dict[str, Any]], service: str,
                       include_oneoff: bool = False) -> list[dict[str, Any]]:
    """Containers of one service from parsed ``ps`` output; one-off ``compose run`` containers are left out."""
    selected = []
    for container in containers:
        labels = container.get("Labels") or {}
        if container.get("Service", labels.get("com.docker.compose.service")) != service:
            continue
        if not include_oneoff and labels.get("com.docker.compose.oneoff", "False") == "True":
            continue
        selected.append(container)
    return selected


def summarize_ps(container: dict[str, Any]) -> dict[str, Any]:
    """The fields the collection reports for a container, from one parsed ``ps`` object."""
    labels = container.get("Labels") or {}
    return {
        "name": container.get("Name", ""),
        "number": int(labels.get("com.docker.compose.container-number", 0) or 0),
        "state": container.get("State", "unknown"),
        "id": (container.get("ID") or "")[:12],
    }


def compose_files(project_src: str, env: Mapping[str, str]) -> list[str]:
    """The compose files Compose loads: ``COMPOSE_FILE`` from the environment or ``.env``, else the defaults."""
    listed = env.get("COMPOSE_FILE")
    if listed:
        sep = env.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
        return [os.path.join(project_src, f) for f in listed.split(sep) if f]
    files = []
    for group in (DEFAULT_COMPOSE_FILES, DEFAULT_OVERRIDE_FILES):
        for name in group:
            path = os.path.join(project_src, name)
            if os.path.isfile(path):
                files.append(path)
                break
    return files


def find_service_conflicts(documents: Iterable[tuple[str, Any]], service: str, variable: str) -> list[str]:
    """Problems that stop Compose from scaling ``service``, per file, from already-parsed YAML documents.

    ``documents`` is a list of (path, parsed YAML). Returns a list of human-readable problems, each naming its file.
    """
    problems = []
    for path, doc in documents:
        services = (doc or {}).get("services") or {} if isinstance(doc, dict) else {}
        svc = services.get(service)
        if not isinstance(svc, dict):
            continue
        deploy = svc.get("deploy")
        if not isinstance(deploy, dict):
            deploy = {}
        if "replicas" in deploy:
            problems.append("%s sets services.%s.deploy.replicas; remove it, the count lives in ${%s} (scale:)"
                            % (path, service, variable))
        if "container_name" in svc:
            problems.append("%s sets services.%s.container_name; remove it, scaled containers need unique names"
                            % (path, service))
    return problems


def read_conflicts(files: Iterable[str], service: str, variable: str) -> list[str]:
    """:func:`find_service_conflicts` over the compose files on disk (unreadable or invalid ones, or no PyYAML:
    nothing to say about them)."""
    if not HAS_YAML:
        return []
    documents = []
    for path in files:
        try:
            with open(path) as handle:
                documents.append((path, yaml.safe_load(handle)))
        except (OSError, yaml.YAMLError):
            continue
    return find_service_conflicts(documents, service, variable)


def explain_config_error(exc: ComposeError, problems: Iterable[str], variable: str, replicas: int, service: str,
                         project_src: str) -> str:
    """The message for a ``docker compose config`` that failed with ``variable=replicas``; ``problems``: from
    :func:`read_conflicts`, to name the file at fault."""
    stderr = exc.stderr or ""
    if exc.timed_out:
        return "%s. .env was not changed." % exc.msg
    problems = ["%s." % p for p in problems]
    if "can't set distinct values on 'scale' and 'deploy.replicas'" in stderr:
        hint = " ".join(problems) or ("Remove deploy.replicas from %s in the override files." % service)
        return ("The compose project does not load with %s=%d: %s sets both scale and a different "
                "deploy.replicas. %s .env was not changed." % (variable, replicas, service, hint))
    if "container_name" in stderr:
        return ("The compose project does not load with %s=%d: %s. %s .env was not changed."
                % (variable, replicas, first_error_line(stderr), " ".join(problems)))
    return ("The compose project in %s does not load with %s=%d: %s. .env was not changed."
            % (project_src, variable, replicas, first_error_line(stderr) or exc.msg))


def service_problem(config: dict[str, Any], service: str, variable: str, replicas: int, files: Sequence[str],
                    problems: Callable[[], Iterable[str]]) -> str | None:
    """Why the loaded project (``docker compose config`` with ``variable=replicas``) cannot run ``replicas``
    containers of ``service``, or None. ``files``: the compose files, for the message; ``problems``: from
    :func:`read_conflicts` (only read when the service sets container_name)."""
    svc = (config.get("services") or {}).get(service)
    if svc is None:
        return "Service %s is not defined in the compose project (%s). Nothing was changed." % (service, files)
    if svc.get("container_name") is not None:
        return ("Service %s sets container_name, so it cannot run more than one container. %s Nothing was changed."
                % (service, " ".join("%s." % p for p in problems())))
    scale = effective_scale(svc)
    if scale != replicas:
        return ("Service %s does not take its scale from ${%s}: with %s=%d Compose would run %d. Set 'scale: ${%s}' "
                "on the service in %s. Nothing was changed."
                % (service, variable, variable, replicas, scale, variable, files))
    return None


def effective_scale(service_config: dict[str, Any]) -> int:
    """The replica count Compose will use for a service in ``docker compose config --format json`` output."""
    if service_config.get("scale") is not None:
        return int(service_config["scale"])
    replicas = (service_config.get("deploy") or {}).get("replicas")
    return int(replicas) if replicas is not None else 1


# What :func:`run_command` returns. ``held``: the output pipes were still open when reading stopped (a process
# outside the command's process group held them), so the output may be incomplete.
Outcome = collections.namedtuple("Outcome", "rc stdout stderr timed_out held")


def run_with_deadline(cmd: Sequence[str], cwd: str | None, env: Mapping[str, str] | None, timeout: float,
                      kill_grace: float = KILL_GRACE, pipe_grace: float = PIPE_GRACE) -> tuple[Any, ...]:
    """:func:`run_command` as (rc, stdout, stderr, timed_out)."""
    return tuple(run_command(cmd, cwd, env, timeout, kill_grace, pipe_grace))[:4]


def run_command(cmd: Sequence[str], cwd: str | None, env: Mapping[str, str] | None, timeout: float,
                kill_grace: float = KILL_GRACE, pipe_grace: float = PIPE_GRACE) -> Outcome:
    """Run ``cmd`` (a list, no shell) in its own process group; at ``timeout`` seconds SIGTERM the whole group, then
    SIGKILL it ``kill_grace`` seconds later. Returns an :class:`Outcome`; output is decoded with ``surrogateescape``
    (a Latin-1 byte survives), and what was printed before a kill is kept.

    The pipes are read until they close, but never past the deadline: a process outside the group can hold them
    open (``setsid``, an ssh ControlPersist master forked behind an ``ssh://`` DOCKER_HOST), and neither the kill
    nor the command's own exit closes them. So reading stops ``pipe_grace`` seconds after the SIGKILL (a command
    killed at its deadline), or ``pipe_grace`` seconds after the command exited by itself (it keeps its exit status;
    it is not a timeout, and what it left behind is not killed); our ends are closed and ``held`` is set. The
    longest call is therefore ``timeout + kill_grace + pipe_grace``."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    stdout, stderr = cast(IO[bytes], proc.stdout), cast(IO[bytes], proc.stderr)  # both are PIPE: never None
    out_fd, err_fd = stdout.fileno(), stderr.fileno()
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    selector = selectors.DefaultSelector()
    for pipe in (stdout, stderr):
        selector.register(pipe, selectors.EVENT_READ)
    timed_out = held = False
    deadline = time.monotonic() + timeout
    escalation = [(signal.SIGTERM, kill_grace), (signal.SIGKILL, pipe_grace)]
    exited_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            open_pipes = selector.get_map()
            if exited_at is not None and not open_pipes:
                break
            if open_pipes and exited_at is not None and not timed_out and now >= exited_at + pipe_grace:
                held = True  # the command exited by itself, and something it left behind still holds its output
                break
            if now >= deadline:
                if not escalation:  # SIGKILLed pipe_grace ago: stop reading (and waiting), whatever is left
                    held = bool(open_pipes)
                    break
                sig, grace = escalation.pop(0)
                timed_out = True
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):  # the group is gone already
                    pass
                deadline = now + grace
                continue
            wait = deadline - now
            if exited_at is not None and not timed_out:
                wait = min(wait, exited_at + pipe_grace - now)
            else:
                wait = min(wait, POLL_INTERVAL)  # to notice the command's own exit while a stray holds the pipes
            if not open_pipes:
                try:
                    proc.wait(wait)
                except subprocess.TimeoutExpired:
                    pass
                continue
            for key, _events in selector.select(wait):
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd].append(data)
                else:
                    selector.unregister(key.fileobj)
    finally:
        selector.close()
        stdout.close()
        stderr.close()
    return Outcome(proc.poll(), _decode(b"".join(chunks[out_fd])), _decode(b"".join(chunks[err_fd])), timed_out,
                   held)


def _decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="surrogateescape")


class Compose:
    """Runs ``docker compose`` for one project directory. Every call goes through :meth:`run` (and the one CLI call
    that is not a Compose call, ``docker context inspect``, through :meth:`cli`)."""

    def __init__(self, module: AnsibleModule, project_src: str, env_file: str | None = None,
                 docker_cli: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.module = module
        self.project_src = project_src
        self.timeout = timeout
        self.docker_cli = docker_cli or module.get_bin_path("docker")
        if not self.docker_cli:
            raise ComposeError("The docker CLI was not found on PATH. Install the Docker CLI and the Compose v2 "
                               "plugin (docker-compose-plugin), or set docker_cli.")
        self.base = [self.docker_cli, "compose", "--ansi", "never", "--project-directory", project_src]
        if env_file and os.path.abspath(env_file) != os.path.join(os.path.abspath(project_src), ".env"):
            self.base += ["--env-file", env_file]

    def run(self, args: Sequence[str], environ_update: Mapping[str, str] | None = None, check: bool = True,
            timeout: float | None = None) -> tuple[int, str, str]:
        """The single choke point: list arguments, no shell, ``project_src`` as working directory, a deadline.

        ``timeout`` defaults to the object's; read-only calls pass a shorter one. A call still running at its
        deadline is killed (its whole process group) and raises ComposeError with ``timed_out`` set, whatever
        ``check`` says.
        """
        return self.cli(self.base[1:] + list(args), environ_update, check, timeout, label="docker compose %s" % args[0])

    def cli(self, args: Sequence[str], environ_update: Mapping[str, str] | None = None, check: bool = True,
            timeout: float | None = None, label: str | None = None) -> tuple[int, str, str]:
        """Run the docker CLI with ``args`` (the Compose calls come through :meth:`run`)."""
        cmd = [self.docker_cli] + list(args)
        label = label or "docker %s" % " ".join(args[:2])
        timeout = min(self.timeout, timeout) if timeout else self.timeout
        env = os.environ.copy()
        env.update(getattr(self.module, "run_command_environ_update", None) or {})
        env.update(environ_update or {})
        started = time.time()
        try:
            rc, out, err, timed_out, held = run_command(cmd, self.project_src, env, timeout)
        except OSError as exc:
            raise ComposeError("%s could not be started: %s" % (label, exc), cmd=quote(cmd), rc=None) from exc
        if timed_out:
            raise ComposeError("%s did not finish within its deadline of %ss (took %.1fs, killed with its process "
                               "group; %s)"
                               % (label, timeout, time.time() - started,
                                  HELD_NOTE % (PIPE_GRACE, "the SIGKILL") if held else
                                  "the Docker Engine may be hung or overloaded"),
                               cmd=quote(cmd), rc=rc, stdout=out, stderr=err, timed_out=True)
        if held and hasattr(self.module, "warn"):
            self.module.warn("%s exited (rc=%s), but a process it left behind (for example an ssh ControlPersist "
                             "master behind an ssh:// DOCKER_HOST) still held its output, so reading stopped %ss "
                             "after it exited; the output read may be incomplete" % (label, rc, PIPE_GRACE))
        if check and rc != 0:
            raise ComposeError("%s failed: %s" % (label, first_error_line(err) or "rc=%d" % rc),
                               cmd=quote(cmd), rc=rc, stdout=out, stderr=err)
        return rc, out, err

    def context(self) -> dict[str, Any]:
        """The CLI's current context endpoint, from ``docker context inspect``: {"name", "host", "skip_tls_verify",
        "tls_path"}; ``tls_path`` is the directory of the context's TLS material, None when it has none."""
        _rc, out, _err = self.cli(["context", "inspect"], timeout=READ_TIMEOUT)
        try:
            return parse_context(out)
        except (ValueError, LookupError, TypeError) as exc:
            raise ComposeError("Cannot parse `docker context inspect` output: %s" % exc,
                               cmd=quote([self.docker_cli, "context", "inspect"]), rc=0, stdout=out) from exc

    def version(self) -> tuple[int, ...]:
        """The Compose v2 version tuple; fails clearly when the plugin is missing or too old."""
        rc, out, err = self.run(["version", "--format", "json"], check=False, timeout=READ_TIMEOUT)
        if rc != 0:
            raise ComposeError("Docker Compose v2 is not available (`docker compose version` failed). Install the "
                               "Compose v2 CLI plugin (package docker-compose-plugin); Compose v1 (docker-compose) "
                               "names containers differently and is not supported.",
                               cmd=quote(self.base + ["version", "--format", "json"]), rc=rc, stdout=out, stderr=err)
        try:
            version = parse_version(json.loads(out).get("version"))
        except (ValueError, AttributeError):
            version = parse_version(out)
        if version is None or version < MINIMUM_COMPOSE_VERSION:
            raise ComposeError("Docker Compose %s is too old; %s or newer is required."
                               % (".".join(map(str, version or ())) or "(unknown)",
                                  ".".join(map(str, MINIMUM_COMPOSE_VERSION))))
        return version

    def config(self, environ_update: Mapping[str, str] | None = None) -> Any:
        """The fully merged and interpolated project, as Compose itself loads it."""
        _rc, out, _err = self.run(["config", "--format", "json"], environ_update=environ_update,
                                  timeout=READ_TIMEOUT)
        return json.loads(out)

    def ps(self, service: str) -> list[dict[str, Any]]:
        """The service's containers as Compose sees them (one-offs excluded), sorted by container number."""
        _rc, out, _err = self.run(["ps", "--all", "--format", "json", "--", service], timeout=READ_TIMEOUT)
        try:
            containers = parse_ps_json(out)
        except ValueError as exc:
            raise ComposeError("Cannot parse `docker compose ps --format json` output: %s" % exc,
                               cmd=quote(self.base + ["ps", "--all", "--format", "json", "--", service]), rc=0,
                               stdout=out, stderr=_err) from exc
        return sorted((summarize_ps(c) for c in service_containers(containers, service)), key=lambda c: c["number"])

    def scale(self, service: str, replicas: int,
              environ_update: Mapping[str, str] | None = None) -> tuple[int, str, str]:
        """Bring ``service`` to ``replicas`` containers, touching nothing else: no dependencies are started and
        existing containers are not recreated. Scale-down stops containers within their stop_grace_period."""
        return self.run(["up", "--detach", "--no-color", "--quiet-pull", "--no-deps", "--no-recreate",
                         "--scale", "%s=%d" % (service, replicas), "--", service], environ_update=environ_update)


def first_error_line(stderr: str | None) -> str:
    """The most useful line of Compose's stderr (skipping warnings)."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    for line in lines:
        if not re.search(r"level=warn|WARN\[|is obsolete", line):
            return line
    return lines[0] if lines else ""


def quote(cmd: Iterable[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def parse_context(text: str) -> dict[str, Any]:
    """``docker context inspect`` (a JSON array of one context) -> the endpoint fields the Docker SDK needs."""
    (context,) = json.loads(text)[:1]
    endpoint = context["Endpoints"]["docker"]
    tls_path = (context.get("Storage") or {}).get("TLSPath") or ""
    tls_dir = os.path.join(tls_path, "docker") if tls_path.startswith("/") else ""
    return {"name": context.get("Name"), "host": endpoint["Host"],
            "skip_tls_verify": bool(endpoint.get("SkipTLSVerify")),
            "tls_path": tls_dir if tls_dir and os.path.isdir(tls_dir) else None}
