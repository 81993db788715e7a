# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The one place where the collection calls the Docker Compose v2 CLI, plus pure parsers of its output."""

from __future__ import annotations

import json
import os
import re
import shlex

MINIMUM_COMPOSE_VERSION = (2, 20, 0)  # keep in sync with the qfieldcloud.ops._compose doc fragment
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
DEFAULT_COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
DEFAULT_OVERRIDE_FILES = ("compose.override.yaml", "compose.override.yml",
                          "docker-compose.override.yaml", "docker-compose.override.yml")


class ComposeError(Exception):
    """A failed Compose call; carries what Ansible failures must carry."""

    def __init__(self, msg, cmd=None, rc=None, stdout="", stderr=""):
        super().__init__(msg)
        self.msg = msg
        self.cmd = cmd
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr

    def result(self):
        out = {"msg": self.msg}
        if self.cmd is not None:
            out.update(cmd=self.cmd, rc=self.rc, stdout=self.stdout, stderr=self.stderr)
        return out


def parse_version(text):
    """``2.26.1-4`` or ``v2.29.2-desktop.1`` -> (2, 26, 1); None when there is no version."""
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(x) for x in match.groups()) if match else None


def parse_ps_json(text):
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


def parse_labels(text):
    """Compose joins labels as ``k=v,k=v``. A value may itself hold commas (``config_files`` lists paths), so a
    piece that does not start with a label key continues the previous value."""
    labels = {}
    last = None
    for piece in text.split(",") if text else []:
        key, sep, value = piece.partition("=")
        if sep and LABEL_KEY_RE.match(key):
            labels[key] = value
            last = key
        elif last is not None:
            labels[last] += "," + piece
    return labels


def service_containers(containers, service, include_oneoff=False):
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


def summarize_ps(container):
    """The fields the collection reports for a container, from one parsed ``ps`` object."""
    labels = container.get("Labels") or {}
    return {
        "name": container.get("Name", ""),
        "number": int(labels.get("com.docker.compose.container-number", 0) or 0),
        "state": container.get("State", "unknown"),
        "id": (container.get("ID") or "")[:12],
    }


def compose_files(project_src, env):
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


def find_service_conflicts(documents, service, variable):
    """Problems that stop Compose from scaling ``service``, per file, from already-parsed YAML documents.

    ``documents`` is a list of (path, parsed YAML). Returns a list of human-readable problems, each naming its file.
    """
    problems = []
    for path, doc in documents:
        services = (doc or {}).get("services") or {} if isinstance(doc, dict) else {}
        svc = services.get(service)
        if not isinstance(svc, dict):
            continue
        deploy = svc.get("deploy") if isinstance(svc.get("deploy"), dict) else {}
        if "replicas" in deploy:
            problems.append("%s sets services.%s.deploy.replicas; remove it, the count lives in ${%s} (scale:)"
                            % (path, service, variable))
        if "container_name" in svc:
            problems.append("%s sets services.%s.container_name; remove it, scaled containers need unique names"
                            % (path, service))
    return problems


def effective_scale(service_config):
    """The replica count Compose will use for a service in ``docker compose config --format json`` output."""
    if service_config.get("scale") is not None:
        return int(service_config["scale"])
    replicas = (service_config.get("deploy") or {}).get("replicas")
    return int(replicas) if replicas is not None else 1


class Compose:
    """Runs ``docker compose`` for one project directory. Every call goes through :meth:`run`."""

    def __init__(self, module, project_src, env_file=None, docker_cli=None):
        self.module = module
        self.project_src = project_src
        self.docker_cli = docker_cli or module.get_bin_path("docker")
        if not self.docker_cli:
            raise ComposeError("The docker CLI was not found on PATH. Install the Docker CLI and the Compose v2 "
                               "plugin (docker-compose-plugin), or set docker_cli.")
        self.base = [self.docker_cli, "compose", "--ansi", "never", "--project-directory", project_src]
        if env_file and os.path.abspath(env_file) != os.path.join(os.path.abspath(project_src), ".env"):
            self.base += ["--env-file", env_file]

    def run(self, args, environ_update=None, check=True):
        """The single choke point: list arguments, no shell, ``project_src`` as working directory."""
        cmd = self.base + list(args)
        rc, out, err = self.module.run_command(cmd, cwd=self.project_src, environ_update=environ_update or {},
                                               expand_user_and_vars=False)
        if check and rc != 0:
            raise ComposeError("docker compose %s failed: %s" % (args[0], first_error_line(err) or "rc=%d" % rc),
                               cmd=" ".join(shlex.quote(c) for c in cmd), rc=rc, stdout=out, stderr=err)
        return rc, out, err

    def version(self):
        """The Compose v2 version tuple; fails clearly when the plugin is missing or too old."""
        rc, out, err = self.run(["version", "--format", "json"], check=False)
        if rc != 0:
            raise ComposeError("Docker Compose v2 is not available (`docker compose version` failed). Install the "
                               "Compose v2 CLI plugin (package docker-compose-plugin); Compose v1 (docker-compose) "
                               "names containers differently and is not supported.",
                               cmd=" ".join(self.base + ["version", "--format", "json"]), rc=rc, stdout=out, stderr=err)
        try:
            version = parse_version(json.loads(out).get("version"))
        except (ValueError, AttributeError):
            version = parse_version(out)
        if version is None or version < MINIMUM_COMPOSE_VERSION:
            raise ComposeError("Docker Compose %s is too old; %s or newer is required."
                               % (".".join(map(str, version or ())) or "(unknown)",
                                  ".".join(map(str, MINIMUM_COMPOSE_VERSION))))
        return version

    def config(self, environ_update=None):
        """The fully merged and interpolated project, as Compose itself loads it."""
        _rc, out, _err = self.run(["config", "--format", "json"], environ_update=environ_update)
        return json.loads(out)

    def ps(self, service):
        """The service's containers as Compose sees them (one-offs excluded), sorted by container number."""
        _rc, out, _err = self.run(["ps", "--all", "--format", "json", "--", service])
        try:
            containers = parse_ps_json(out)
        except ValueError as exc:
            raise ComposeError("Cannot parse `docker compose ps --format json` output: %s" % exc,
                               cmd=" ".join(self.base + ["ps", "--all", "--format", "json", "--", service]), rc=0,
                               stdout=out, stderr=_err) from exc
        return sorted((summarize_ps(c) for c in service_containers(containers, service)), key=lambda c: c["number"])

    def scale(self, service, replicas, environ_update=None):
        """Bring ``service`` to ``replicas`` containers, touching nothing else: no dependencies are started and
        existing containers are not recreated. Scale-down stops containers within their stop_grace_period."""
        return self.run(["up", "--detach", "--no-color", "--quiet-pull", "--no-deps", "--no-recreate",
                         "--scale", "%s=%d" % (service, replicas), "--", service], environ_update=environ_update)


def first_error_line(stderr):
    """The most useful line of Compose's stderr (skipping warnings)."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    for line in lines:
        if not re.search(r"level=warn|WARN\[|is obsolete", line):
            return line
    return lines[0] if lines else ""
