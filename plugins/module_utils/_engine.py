# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The Docker Engine: the one place that asks it anything.

A Compose service's containers are found by Compose's labels (``label_filters``), under Compose's project name
(``project_name``). qfc_scale asks through ``engine_client`` (``ping``, ``snapshot``, ``wait_for_replicas``): the
standard library's :class:`StdlibClient` when the engine is a local unix socket, else the Docker SDK (tcp, ssh, TLS;
imported on demand by ``load_sdk``). The callers where the SDK may be missing (the cron collector, the queue modules)
use the standard library over the unix socket (``count_running_stdlib``, ``running_job_ids_stdlib``).

Over a unix socket every request has one deadline for its whole answer (connect, send, status line, headers, body:
:class:`DeadlineSocket`), and every answer is checked for the shape asked for; what cannot be asked in time is a
:class:`NoAnswer`, what answers wrongly a :class:`BadAnswer` (both EngineErrors, so OSErrors). The SDK's timeout
bounds the connect and each read, not the whole answer."""

from __future__ import annotations

import http.client
import importlib
import json
import os
import socket
import time
import traceback
from datetime import datetime, timezone
from urllib.parse import quote
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from collections.abc import Callable, Iterable, Mapping

# The Docker SDK for Python is imported on demand (load_sdk): importing it (and requests) takes about 0.4 s, which
# the stdlib users never need and qfc_scale overlaps with its Compose calls. Until then these are placeholders.
docker: Any = None  # the docker module once load_sdk() imported it
TLSConfig: Any = None
HAS_DOCKER_SDK = False  # True once load_sdk() imported it
DOCKER_SDK_IMPORT_ERROR: str | None = None  # the traceback when load_sdk() failed


class DockerException(Exception):
    pass


class NotFound(DockerException):
    pass


def load_sdk() -> bool:
    """Import the Docker SDK once; returns HAS_DOCKER_SDK. Replaces the placeholders ``docker``, ``TLSConfig``,
    ``DockerException`` and ``NotFound`` with the SDK's own (``except _engine.DockerException`` looks the name up
    when it runs, so it catches the SDK's errors once they can happen)."""
    global docker, TLSConfig, DockerException, NotFound, HAS_DOCKER_SDK, DOCKER_SDK_IMPORT_ERROR  # noqa: PLW0603
    if HAS_DOCKER_SDK or DOCKER_SDK_IMPORT_ERROR:
        return HAS_DOCKER_SDK
    try:
        sdk = importlib.import_module("docker")
        errors = importlib.import_module("docker.errors")
        tls = importlib.import_module("docker.tls")
    except ImportError:
        DOCKER_SDK_IMPORT_ERROR = traceback.format_exc()
        return False
    # the placeholder classes are replaced by the SDK's on purpose (see above), which mypy cannot express
    docker, TLSConfig, DockerException, NotFound = (  # type: ignore[misc]
        sdk, tls.TLSConfig, errors.DockerException, errors.NotFound)
    HAS_DOCKER_SDK = True
    return True


POLL_INTERVAL = 0.2
DOCKER_SOCKET = "/var/run/docker.sock"
DEFAULT_API_TIMEOUT = 30  # seconds per Engine API request unless the caller says (qfc_scale: min(30, command_timeout))


class VerifyError(Exception):
    def __init__(self, msg: str, containers: list[dict[str, Any]]) -> None:
        super().__init__(msg)
        self.msg = msg
        self.containers = containers


def unix_socket_path(context: Mapping[str, Any] | None = None,
                     environ: Mapping[str, str] | None = None) -> str | None:
    """The socket path when the engine is a local unix socket (``unix://PATH``), else None.

    DOCKER_HOST wins as it does for the CLI (unless TLS is asked for); otherwise the ``context``'s host. Without
    either, None: the SDK's ``from_env`` then decides (it may follow the CLI's configuration)."""
    environ = os.environ if environ is None else environ
    if environ.get("DOCKER_HOST"):
        host = environ["DOCKER_HOST"]
        if environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CERT_PATH"):
            return None
    elif context:
        host = context.get("host") or ""
    else:
        return None
    if host.startswith("unix://") and len(host) > len("unix://"):
        return host[len("unix://"):]
    return None


def engine_client(context: Mapping[str, Any] | None = None, timeout: float = DEFAULT_API_TIMEOUT) -> Any:
    """A low-level Engine API client, asking nothing yet.

    With DOCKER_HOST set, or without a ``context``, it honours DOCKER_HOST and friends like the CLI. Otherwise it
    connects where the CLI's current context points (``context`` as returned by ``_compose.Compose.context``), so
    qfc_scale and ``docker compose`` talk to the same engine (a rootless or remote context, for example).

    A local unix socket gets the standard-library :class:`StdlibClient` (no SDK import, no version negotiation:
    about 0.15 s less per run); tcp, ssh and TLS get the SDK's ``APIClient`` (version negotiated, which already
    asks the engine, within ``timeout``).
    """
    path = unix_socket_path(context)
    if path:
        return StdlibClient(path, timeout)
    load_sdk()
    if os.environ.get("DOCKER_HOST") or not context:
        return docker.from_env(version="auto", timeout=timeout).api
    tls: Any = False
    if context.get("tls_path") or context["host"].startswith("https://"):
        tls = context_tls(context)
    return docker.APIClient(base_url=context["host"], version="auto", timeout=timeout, tls=tls)


def context_tls(context: Mapping[str, Any]) -> Any:
    """TLS settings of a context as the CLI stores them: ca.pem, cert.pem, key.pem under its TLS path."""
    path = context.get("tls_path") or ""
    files = {name: os.path.join(path, name + ".pem") for name in ("ca", "cert", "key")}
    present = {name: f for name, f in files.items() if path and os.path.isfile(f)}
    cert = (present["cert"], present["key"]) if "cert" in present and "key" in present else None
    return TLSConfig(client_cert=cert, ca_cert=present.get("ca"), verify=not context.get("skip_tls_verify"))


def ping(client: Any) -> None:
    """Raise DockerException (or an OSError: requests' errors, :class:`EngineError`) unless the engine answers
    ``/_ping``."""
    if not client.ping():
        raise DockerException("the engine did not answer OK to /_ping")


def label_filters(project: str, service: str) -> dict[str, list[str]]:
    """Engine filters for a Compose service's own containers (one-off ``run`` containers excluded)."""
    return {"label": ["com.docker.compose.project=%s" % project,
                      "com.docker.compose.service=%s" % service,
                      "com.docker.compose.oneoff=False"]}


def normalize_project_name(name: str) -> str:
    """Compose's own normalisation (compose-go ``loader.NormalizeProjectName``): lowercase, keep only [a-z0-9_-],
    then strip leading '_' and '-'. ``_Rel-Qfc.Été`` becomes ``rel-qfct``."""
    kept = "".join(ch for ch in name.lower() if ch in "abcdefghijklmnopqrstuvwxyz0123456789_-")
    return kept.lstrip("_-")


def project_name(env: Mapping[str, str], project_src: str, configured: str | None = None,
                 environ: Mapping[str, str] | None = None) -> str:
    """Compose's project name. COMPOSE_PROJECT_NAME (the environment, then .env) wins, as it does for Compose; then
    the name Compose itself gave (``configured``, from ``docker compose config``: it knows a top-level ``name:``);
    else the directory name, normalised as Compose does."""
    environ = os.environ if environ is None else environ
    name = environ.get("COMPOSE_PROJECT_NAME") or env.get("COMPOSE_PROJECT_NAME") or configured
    if not name:
        name = normalize_project_name(os.path.basename(os.path.normpath(project_src)))
    return name


class DeadlineSocket(socket.socket):
    """A socket whose every connect, send and receive waits at most what is left until ``deadline`` (a
    ``time.monotonic()``), and raises socket.timeout once it has passed: one deadline for a whole request, however
    the answer trickles in (a socket's own timeout bounds each operation, so an answer sent one byte at a time never
    ends it)."""

    deadline: float | None = None

    def _arm(self) -> None:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            self.settimeout(left)

    def connect(self, address: Any) -> None:
        self._arm()
        return super().connect(address)

    def send(self, data: Any, *args: Any) -> int:
        self._arm()
        return super().send(data, *args)

    def sendall(self, data: Any, *args: Any) -> None:  # with a timeout, one sendall is bounded as a whole (Python 3.5+)
        self._arm()
        return super().sendall(data, *args)

    def recv(self, bufsize: int, *args: Any) -> bytes:
        self._arm()
        return super().recv(bufsize, *args)

    def recv_into(self, buffer: Any, *args: Any) -> int:  # what the response's file object (makefile) reads through
        self._arm()
        return super().recv_into(buffer, *args)


class UnixHTTPConnection(http.client.HTTPConnection):
    """The Engine API over its unix socket with the standard library only (no SDK import, no CLI spawn).

    Every request has one deadline for its whole answer, connect, send, status line, headers and body included:
    :meth:`arm` sets it (``timeout`` seconds from now unless given) before each request."""

    timeout: float  # always given (the base class allows None)
    sock: DeadlineSocket | None  # connect() below makes only DeadlineSockets

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path
        self.deadline: float | None = None

    def arm(self, deadline: float | None = None) -> None:
        self.deadline = time.monotonic() + self.timeout if deadline is None else deadline
        if self.sock is not None:
            self.sock.deadline = self.deadline

    def connect(self) -> None:
        if self.deadline is None:
            self.arm()
        self.sock = DeadlineSocket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.deadline = self.deadline
        self.sock.connect(self.path)


MAX_ANSWER_BYTES = 64 * 1024 * 1024  # an Engine answer larger than this is not one (a listing of 10,000 is ~30 MB)


class EngineError(OSError):
    """The Engine could not be asked, or answered with an error (an OSError: callers already treat requests'
    connection errors, which are OSErrors, as the engine failing)."""


class NoAnswer(EngineError):
    """Nothing could be asked or nothing came back in time: no socket, connection refused or closed before an
    answer, or the request's deadline passed."""


class BadAnswer(EngineError):
    """Something answered, but not what the Engine API answers: not HTTP (another service on the socket), cut
    short, an HTTP error, not JSON, or JSON of another shape than asked for."""


class ContainerGone(EngineError):
    """``inspect`` answered 404: the container was removed after it was listed."""


def ask(conn: UnixHTTPConnection, path: str, where: str, deadline: float | None = None) -> tuple[int, bytes]:
    """(status, body bytes) of ``GET path`` on ``conn`` (a :class:`UnixHTTPConnection`) within one deadline
    (``deadline``, else the connection's timeout from now). NoAnswer or BadAnswer (both EngineErrors) otherwise;
    the caller closes the connection after an error."""
    conn.arm(deadline)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        chunks, size = [], 0
        while True:  # in pieces: a body without a length (or a lying one) cannot fill the memory
            chunk = response.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise BadAnswer("%s: an answer of more than %d bytes" % (where, MAX_ANSWER_BYTES))
            chunks.append(chunk)
        body = b"".join(chunks)
    except EngineError:
        raise
    except OSError as exc:  # before HTTPException: RemoteDisconnected (closed, no answer) is both
        if isinstance(exc, socket.timeout):
            raise NoAnswer("%s: no answer within %ss" % (where, conn.timeout)) from exc
        raise NoAnswer("%s: %s" % (where, exc)) from exc
    except (http.client.HTTPException, ValueError) as exc:  # BadStatusLine, IncompleteRead, LineTooLong, ...
        raise BadAnswer("%s: not an HTTP answer (%s: %s)" % (where, type(exc).__name__, short(exc))) from exc
    return response.status, body


def short(value: object, limit: int = 200) -> str:
    """At most ``limit`` characters of ``value`` (bytes or any object) on one line, for a message."""
    if isinstance(value, bytes):
        value = value[:limit].decode("utf-8", errors="replace")
    return " ".join(str(value).split())[:limit]


def decode_json(status: int, body: bytes, where: str) -> Any:
    """The JSON of a 200 answer; ContainerGone on 404, BadAnswer on any other status or what is not JSON."""
    text = short(body)
    if status == 404:
        raise ContainerGone("%s: 404 %s" % (where, text))
    if status != 200:
        raise BadAnswer("%s: HTTP %d %s" % (where, status, text))
    try:
        return json.loads(body)
    except ValueError:
        raise BadAnswer("%s: not JSON: %s" % (where, text)) from None


def container_list(value: Any, where: str) -> list[dict[str, Any]]:
    """``value`` when it has the shape of a container listing (a list of objects, ``Labels`` an object or null),
    else BadAnswer. An error object such as ``{"message": ...}`` is not a list of one container."""
    if not isinstance(value, list):
        raise BadAnswer("%s: not a list of containers: %s" % (where, short(json.dumps(value))))
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("Labels") or {}, dict) \
                or not isinstance(item.get("Id", ""), str):
            raise BadAnswer("%s: not a list of containers: an item is %s" % (where, short(json.dumps(item))))
    return value


def inspected_container(value: Any, where: str) -> dict[str, Any]:
    """``value`` when it is a container's inspect data that :func:`summarize` can read (an object with an ``Id``,
    its State and Config objects, a start time, restart count and container number it can parse), else
    BadAnswer."""
    try:
        if not isinstance(value, dict) or not isinstance(value.get("Id"), str):
            raise TypeError("not an object with an Id")
        summarize(value)
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise BadAnswer("%s: not a container's inspect data (%s): %s"
                        % (where, short(exc), short(json.dumps(value)))) from None
    return value


class StdlibClient:
    """The part of the SDK's ``APIClient`` that qfc_scale uses (``ping``, ``containers``, ``inspect_container``),
    over a local unix socket with the standard library. Unversioned paths: the engine answers with its own API
    version, and the fields read here (state, start time, restart count, labels) are in every version.

    One keep-alive connection serves consecutive requests; every request has one deadline, ``timeout`` seconds for
    the whole answer (connect, send, status, headers, body; a reconnect included), and a failed request drops the
    connection. Answers are checked for the shape asked for (a list of containers, a container's inspect data):
    anything else is a :class:`BadAnswer`, an EngineError, never a crash further on."""

    def __init__(self, path: str, timeout: float = DEFAULT_API_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self.base_url = "unix://%s" % path
        self.conn: UnixHTTPConnection | None = None

    def where(self, path: str) -> str:
        return "GET %s on %s" % (path.split("?", 1)[0], self.base_url)

    def request(self, path: str) -> tuple[int, bytes]:
        """(status, body bytes) of ``GET path`` within ``timeout`` seconds; NoAnswer or BadAnswer (EngineErrors)
        otherwise."""
        deadline = time.monotonic() + self.timeout
        for attempt in (1, 2):
            reused = self.conn is not None
            if self.conn is None:
                self.conn = UnixHTTPConnection(self.path, self.timeout)
            try:
                return ask(self.conn, path, self.where(path), deadline)
            except EngineError as exc:
                self.close()
                # the engine may close an idle keep-alive connection (RemoteDisconnected, EPIPE: ConnectionErrors);
                # a GET is safe to send once more, afresh, within the same deadline. A timeout is not retried.
                if reused and attempt == 1 and isinstance(exc.__cause__, ConnectionError):
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def get_json(self, path: str) -> Any:
        status, body = self.request(path)
        return decode_json(status, body, self.where(path))

    def ping(self) -> bool:
        status, body = self.request("/_ping")
        return status == 200 and body.strip() == b"OK"

    def containers(self, all: bool = False, filters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:  # noqa: A002  (the SDK's name)
        path = "/containers/json?all=%d" % bool(all)
        if filters:
            path += "&filters=%s" % quote(json.dumps(filters))
        return container_list(self.get_json(path), self.where(path))

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        path = "/containers/%s/json" % quote(container_id, safe="")
        return inspected_container(self.get_json(path), self.where(path))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def list_containers_checked(filters: Mapping[str, Any] | None, timeout: float,
                            socket_path: str = DOCKER_SOCKET) -> list[dict[str, Any]]:
    """``GET /containers/json`` over the unix socket: a list of containers (dicts), within one deadline of
    ``timeout`` seconds for the whole answer. NoAnswer when the engine cannot be asked in time (no socket, refused,
    no whole answer within ``timeout``; with no time left it is not even asked), BadAnswer when what answered is not
    a container list (not HTTP, an HTTP error, not JSON, another shape)."""
    where = "GET /containers/json on unix://%s" % socket_path
    if timeout <= 0:
        raise NoAnswer("%s: no time left to ask" % where)
    if not os.path.exists(socket_path):
        raise NoAnswer("%s: no such socket" % where)
    client = StdlibClient(socket_path, timeout)
    try:
        return client.containers(filters=filters)
    finally:
        client.close()


def list_containers_stdlib(filters: Mapping[str, Any] | None, timeout: float,
                           socket_path: str = DOCKER_SOCKET) -> list[dict[str, Any]] | None:
    """:func:`list_containers_checked`, or None when the engine cannot be asked or gave no usable answer."""
    try:
        return list_containers_checked(filters, timeout, socket_path)
    except EngineError:
        return None


def count_running_stdlib(project: str, service: str, timeout: float = 3.0,
                         socket_path: str = DOCKER_SOCKET) -> int | None:
    """Running containers of the service by Compose labels; None when the engine cannot be asked or gave no usable
    answer."""
    filters = dict(label_filters(project, service), status=["running"])
    containers = list_containers_stdlib(filters, timeout, socket_path)
    return None if containers is None else len(containers)


WORKER_COUNT_TIMEOUT_S = 5.0  # the Engine's whole answer to one container listing, for the queue modules


def worker_counts(env: Mapping[str, str], project_src: str | None, env_var: str, service: str,
                  warn: Callable[[str], object], has_compose_file: bool, timeout: float = WORKER_COUNT_TIMEOUT_S,
                  socket_path: str | None = None,
                  environ: Mapping[str, str] | None = None) -> dict[str, int | None]:
    """Configured (``env_var`` in ``env``, the project's .env) and running workers, None where unknown: the counts
    of qfc_queue_facts and qfc_autoscale_decision.

    Running workers are counted the way the metrics collector counts them: the Engine's containers with the
    service's Compose labels, over a local unix socket with the standard library (no SDK, no CLI): ``socket_path``,
    else a ``unix://`` DOCKER_HOST (a rootless engine), else /var/run/docker.sock. Monitoring degrades instead of
    failing: without ``project_src`` or a Compose file (``has_compose_file``), with a DOCKER_HOST that is not a local
    socket, when the Engine does not answer in time (``timeout`` seconds for the whole answer), or when what answers
    is not a container list, ``running`` is None and ``warn`` says why."""
    value = env.get(env_var)
    workers: dict[str, int | None] = {"configured": int(value) if value and value.strip().isdigit() else None,
                                      "running": None}
    if not project_src:
        return workers
    if not has_compose_file:
        warn("Running workers unknown: no Compose file in %s" % project_src)
        return workers
    if socket_path is None:
        environ = os.environ if environ is None else environ
        socket_path = unix_socket_path(None, environ)
        if socket_path is None and environ.get("DOCKER_HOST"):
            warn("Running workers unknown: DOCKER_HOST=%s is not a local unix socket, and the queue modules count "
                 "workers over one" % environ["DOCKER_HOST"])
            return workers
        socket_path = socket_path or DOCKER_SOCKET
    filters = dict(label_filters(project_name(env, project_src), service), status=["running"])
    try:
        workers["running"] = len(list_containers_checked(filters, timeout, socket_path))
    except BadAnswer as exc:
        warn("Running workers unknown: the Docker Engine at %s gave no usable answer: %s" % (socket_path, exc))
    except EngineError:
        warn("Running workers unknown: the Docker Engine at %s did not answer within %ss" % (socket_path, timeout))
    return workers


def running_job_ids_checked(timeout: float = 5.0, socket_path: str = DOCKER_SOCKET) -> set[str | None] | None:
    """``job_id`` labels of running containers (QFieldCloud labels each QGIS job container with its job id); None
    when the engine cannot be asked in time (NoAnswer); BadAnswer raised when what answered is not a container
    list, so that a caller can refuse to go on without the answer."""
    try:
        containers = list_containers_checked({"label": ["job_id"], "status": ["running"]}, timeout, socket_path)
    except NoAnswer:
        return None
    return {(c.get("Labels") or {}).get("job_id") for c in containers}


def running_job_ids_stdlib(timeout: float = 5.0, socket_path: str = DOCKER_SOCKET) -> set[str | None] | None:
    """:func:`running_job_ids_checked`, None also when what answered is not a container list."""
    try:
        return running_job_ids_checked(timeout, socket_path)
    except BadAnswer:
        return None


def parse_docker_time(value: str | None) -> float | None:
    """Engine timestamps are RFC 3339 with nanoseconds (``2026-11-29T18:16:17.003583243Z``) -> epoch seconds."""
    if not value or value.startswith("0001-"):
        return None
    main, _dot, frac = value.rstrip("Z").partition(".")
    frac = "".join(ch for ch in frac if ch.isdigit())[:6]
    parsed = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return parsed.timestamp() + (float("0." + frac) if frac else 0.0)


def summarize(inspected: Mapping[str, Any]) -> dict[str, Any]:
    """The fields we report and decide on, from ``docker inspect`` data."""
    state = inspected.get("State") or {}
    labels = (inspected.get("Config") or {}).get("Labels") or {}
    status = state.get("Status", "unknown")
    if state.get("Restarting"):
        status = "restarting"
    return {
        "id": inspected.get("Id", "")[:12],
        "name": (inspected.get("Name") or "").lstrip("/"),
        "number": int(labels.get("com.docker.compose.container-number", 0) or 0),
        "state": status,
        "restart_count": int(inspected.get("RestartCount") or 0),
        "started_at": parse_docker_time(state.get("StartedAt")),
    }


def snapshot(client: Any, project: str, service: str) -> list[dict[str, Any]]:
    """The service's containers (one-offs excluded), sorted by container number."""
    containers: list[dict[str, Any]] = []
    for item in client.containers(all=True, filters=label_filters(project, service)):
        if not isinstance(item, dict) or not isinstance(item.get("Id"), str):
            raise BadAnswer("the Docker Engine listed a container without an Id: %s" % short(item))
        try:
            containers.append(summarize(client.inspect_container(item["Id"])))
        except (NotFound, ContainerGone):  # removed between list and inspect (a scale-down in progress)
            continue
    return sorted(containers, key=lambda c: c["number"])


def count_running(containers: Iterable[Mapping[str, Any]]) -> int:
    return sum(1 for c in containers if c["state"] == "running")


def evaluate(containers: Iterable[Mapping[str, Any]], replicas: int, settle_time: float,
             now: float) -> tuple[bool, str, float]:
    """Pure decision: are exactly ``replicas`` containers running and have they stayed up for ``settle_time``?

    Returns (ok, reason, seconds to wait before the youngest container counts as settled).
    """
    running = [c for c in containers if c["state"] == "running"]
    others = [c for c in containers if c["state"] != "running"]
    if others:
        detail = ", ".join("%s %s (restarts: %d)" % (c["name"], c["state"], c["restart_count"]) for c in others)
        return False, "%d running, not running: %s" % (len(running), detail), POLL_INTERVAL
    if len(running) != replicas:
        return False, "%d running" % len(running), POLL_INTERVAL
    young = [c for c in running if c["started_at"] is None or now - c["started_at"] < settle_time]
    if young:
        detail = ", ".join("%s restarts: %d" % (c["name"], c["restart_count"]) for c in young)
        wait = max(settle_time - (now - (c["started_at"] or now)) for c in young)
        reason = "%d running, %d of them up for less than %ss (%s)" % (len(running), len(young), settle_time, detail)
        return False, reason, max(min(wait, 1.0), 0.05)
    return True, "%d running" % len(running), 0.0


def wait_for_replicas(client: Any, project: str, service: str, replicas: int, timeout: float, settle_time: float,
                      clock: Callable[[], float] = time.time,
                      sleep: Callable[[float], None] = time.sleep) -> list[dict[str, Any]]:
    """Poll until ``evaluate`` is satisfied; raise VerifyError with the last reason after ``timeout`` seconds."""
    deadline = clock() + timeout
    while True:
        containers = snapshot(client, project, service)
        now = clock()
        ok, reason, pause = evaluate(containers, replicas, settle_time, now)
        if ok:
            return containers
        if now + pause > deadline:
            raise VerifyError("expected %d running %s containers stable for %ss, found %s after %ss"
                              % (replicas, service, settle_time, reason, timeout), containers)
        sleep(pause)
