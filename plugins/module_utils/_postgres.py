# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Connection options shared by the queue modules, resolved like community.postgresql's, or from QFieldCloud's .env."""

from __future__ import annotations

import functools
import os
import select
import socket
import time
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from collections.abc import Callable, Mapping

    from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _envfile

try:
    from ansible.module_utils.basic import missing_required_lib
except ImportError:  # the programs the roles install on a host run copies of this file without Ansible
    missing_required_lib = None  # type: ignore[assignment]  # only modules call it, and they run with Ansible

# psycopg2 has no type information (.mypy.ini): its classes are Any to mypy, so the bases below are too
_DatabaseError: Any
_Connection: Any
try:
    import psycopg2
    import psycopg2.extensions
    import psycopg2.extras  # noqa: F401  pylint: disable=unused-import

    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR: str | None = None
    _DatabaseError = psycopg2.OperationalError
    _Connection = psycopg2.extensions.connection
except ImportError:
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = traceback.format_exc()
    _DatabaseError = Exception
    _Connection = object

SSL_MODES = ["allow", "disable", "prefer", "require", "verify-ca", "verify-full"]


def ensure_required_libs(module: AnsibleModule) -> None:
    """Fail the task when psycopg2 cannot be imported on the target: the database modules' one check (the programs
    the roles install on a host say it their own way, without Ansible)."""
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_IMPORT_ERROR)


def argument_spec() -> dict[str, dict[str, Any]]:
    """The connection options, documented by the ``qfieldcloud.ops._postgres`` doc fragment."""
    return dict(
        login_host=dict(type="str"),
        login_port=dict(type="int"),
        login_user=dict(type="str"),
        login_password=dict(type="str", no_log=True),
        login_db=dict(type="str"),
        login_unix_socket=dict(type="str"),
        ssl_mode=dict(type="str", choices=SSL_MODES),
        connect_timeout=dict(type="int", default=10),
        env_file=dict(type="path"),
        project_src=dict(type="path"),
    )


class ConnectionFailed(Exception):
    """No connection: a missing or malformed ``.env``, a ``POSTGRES_HOST`` refused before anything is sent, or a login
    that failed or got no answer. The message names the server (never the password)."""


class NoAnswer(_DatabaseError):
    """The server did not answer one call (the login or a statement) within the client-side deadline.

    A psycopg2.OperationalError, so handlers of psycopg2.Error catch it. psycopg2 has closed the connection."""


class DeadlineConnection(_Connection):
    """A connection whose every wait on the server gives up at a client-side deadline.

    ``statement_timeout`` is enforced by the server, and libpq's ``connect_timeout`` only by a blocking connect: neither
    helps when the server accepts the login and then never answers (a hung backend or postmaster, a frozen VM). Here
    libpq runs non-blocking through psycopg2's wait callback (:func:`_wait`), which waits with ``select`` and raises
    :class:`NoAnswer` after ``call_timeout`` seconds of one call, or at the absolute ``deadline`` (``time.monotonic``)
    when one is set for the whole run. psycopg2 then closes the connection: nothing is left waiting.
    """

    def __init__(self, dsn: str, *args: Any, call_timeout: float | None = None, deadline: float | None = None,
                 **kwargs: Any) -> None:
        # set before the (waiting) connect inside __init__: the login has the same kind of deadline
        self.call_timeout = call_timeout
        self.deadline = deadline
        super().__init__(dsn, *args, **kwargs)


def _wait(conn: Any) -> None:
    """psycopg2's wait callback: poll until the call completes, never past the connection's deadline."""
    started = time.monotonic()
    timeout = getattr(conn, "call_timeout", None)
    limits = [t for t in (started + timeout if timeout else None, getattr(conn, "deadline", None)) if t is not None]
    limit = min(limits) if limits else None
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        left = None if limit is None else limit - time.monotonic()
        if limit is not None and left is not None and left <= 0:
            raise NoAnswer("the server did not answer within %.1f s (client-side deadline); it accepts connections "
                           "but does not respond: hung, overloaded or paused" % (limit - started))
        if state == psycopg2.extensions.POLL_READ:
            select.select([conn.fileno()], [], [], left)
        elif state == psycopg2.extensions.POLL_WRITE:
            select.select([], [conn.fileno()], [], left)
        else:
            raise psycopg2.OperationalError("bad state from poll: %s" % state)


# A statement's client-side deadline is its statement_timeout plus this grace, so that a live server's own cancel
# (a clear "canceling statement due to statement timeout") always arrives first; only a server that does not answer
# at all reaches the client-side deadline.
CANCEL_GRACE_S = 2.0
MAX_STATEMENT_TIMEOUT_MS = 2147483647  # PostgreSQL's limit for statement_timeout and lock_timeout


def call_timeout_for(statement_timeout_ms: float) -> float:
    """Seconds a client waits for one call when the server cancels statements after ``statement_timeout_ms``."""
    return statement_timeout_ms / 1000.0 + CANCEL_GRACE_S


def session_timeouts_sql(statement_timeout_ms: int, lock_timeout_ms: int) -> str:
    """``SET`` statements for the whole session's statement_timeout and lock_timeout (checked integers, ms)."""
    return "SET statement_timeout = %d; SET lock_timeout = %d; " % (int(statement_timeout_ms), int(lock_timeout_ms))


def check_timeout_ms(name: str, value: Any) -> int:
    """statement_timeout and lock_timeout: 1 ms to PostgreSQL's maximum (0 would mean no timeout at all)."""
    if value is None or isinstance(value, bool) or not 1 <= value <= MAX_STATEMENT_TIMEOUT_MS:
        raise ValueError("%s must be 1 to %d milliseconds, got %s (0 would mean no timeout)"
                         % (name, MAX_STATEMENT_TIMEOUT_MS, value))
    return int(value)


STANDALONE_DB_SERVICE = "db"  # the database service of QFieldCloud's docker-compose.override.standalone.yml
MAX_CONNECT_TIMEOUT_S = 3600


def host_decision(host: str | None, sslmode: str | None = None,
                  resolves: Callable[[str], bool] | None = None) -> str:
    """How to reach ``POSTGRES_HOST`` from ``.env`` on the Docker host: ``"direct"``, ``"service"`` or ``"refuse"``.

    ``.env`` is written for the containers, which resolve a name without a dot first as a compose service and only
    then through DNS and its search domains. The host knows only DNS, so the same name may reach another server
    there: ``db`` plus a search domain ``corp.example`` is ``db.corp.example``, which would get QFieldCloud's
    credentials (with ``sslmode=prefer``, even in clear text). So:

    - an IP address, ``localhost``, a socket directory or a name with a dot is used as is (``"direct"``);
    - ``db`` (the standalone database service) is always the compose service, reached through the port it publishes
      on the host's loopback (``"service"``), whether or not the host's DNS resolves ``db``;
    - another dotless name that the host cannot resolve exists only in the compose network: ``"service"`` too;
    - another dotless name that the host resolves is ambiguous (an external server such as ``pgprod``, or a compose
      service the host resolves elsewhere): ``"direct"`` only when ``sslmode=verify-full`` proves the server's name,
      else ``"refuse"`` (set ``login_host``, or a fully qualified ``POSTGRES_HOST``).
    """
    if not host or host == "localhost" or host.startswith("/") or "." in host or ":" in host:
        return "direct"
    if host == STANDALONE_DB_SERVICE:
        return "service"
    if not (resolves or _resolves)(host):
        return "service"
    return "direct" if sslmode == "verify-full" else "refuse"


def is_compose_service_name(host: str | None, resolves: Callable[[str], bool] | None = None) -> bool:
    """Kept for callers of the earlier API: True where :func:`host_decision` maps the name to the compose service."""
    return host_decision(host, resolves=resolves) == "service"


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
        return True
    except OSError:
        return False


def load_env(module: AnsibleModule) -> tuple[dict[str, str], str | None]:
    """Read ``env_file`` (or ``<project_src>/.env``) and register its secrets as no_log values.

    Returns ({}, None) when neither is set."""
    path = module.params.get("env_file")
    if not path and module.params.get("project_src"):
        path = os.path.join(module.params["project_src"], ".env")
    if not path:
        return {}, None
    if not os.path.isfile(path):
        raise ConnectionFailed("env_file %s does not exist." % path)
    try:
        _raw, _text, entries = _envfile.read(path)
    except _envfile.EnvFileError as exc:
        raise ConnectionFailed("%s is malformed, %s." % (path, exc)) from None
    module.no_log_values.update(_envfile.secret_values(entries))
    return {e.key: e.value for e in entries}, path


def connection_params(params: Mapping[str, Any], env: Mapping[str, str],
                      resolves: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """Explicit login_* options win over POSTGRES_* from .env, which win over libpq's defaults.

    ``POSTGRES_HOST`` from .env is checked with :func:`host_decision`: a compose service name (``POSTGRES_HOST=db``)
    becomes ``127.0.0.1`` and ``HOST_POSTGRES_PORT`` (default 5433), the port QFieldCloud's standalone override
    publishes; an ambiguous dotless name raises :class:`ConnectionFailed` before anything is sent.
    ``connect_timeout`` must be 1 to 3600 s (libpq's 0 would wait forever); ValueError otherwise.
    """
    timeout = params.get("connect_timeout")
    if timeout is not None and not 1 <= timeout <= MAX_CONNECT_TIMEOUT_S:
        raise ValueError("connect_timeout must be 1 to %d seconds, got %s (0 would wait forever)"
                         % (MAX_CONNECT_TIMEOUT_S, timeout))
    host = env.get("POSTGRES_HOST") or None
    port = env.get("POSTGRES_PORT") or None
    sslmode = params.get("ssl_mode") or env.get("POSTGRES_SSLMODE") or "prefer"
    explicit_host = params.get("login_unix_socket") or params.get("login_host")
    if not explicit_host:
        decision = host_decision(host, sslmode, resolves)
        if decision == "service":
            host, port = "127.0.0.1", env.get("HOST_POSTGRES_PORT") or "5433"
        elif decision == "refuse":
            raise ConnectionFailed(
                "POSTGRES_HOST=%s in .env is a name without a domain that this host resolves through DNS, but the "
                "containers may resolve it to a compose service: connecting could send QFieldCloud's database "
                "credentials to another server. Nothing was sent. Set login_host (and login_port), write a fully "
                "qualified name or an IP address in POSTGRES_HOST, or use ssl_mode=verify-full." % host)
    out = {
        "host": explicit_host or host,
        "port": params.get("login_port") or (int(port) if port and str(port).isdigit() else None),
        "user": params.get("login_user") or env.get("POSTGRES_USER") or None,
        "password": params.get("login_password") or env.get("POSTGRES_PASSWORD") or None,
        "dbname": params.get("login_db") or env.get("POSTGRES_DB") or None,
        "sslmode": sslmode,
        "connect_timeout": timeout,
        "application_name": "qfieldcloud.ops",
    }
    return {k: v for k, v in out.items() if v is not None}


def describe(conn_params: Mapping[str, Any]) -> str:
    """Where we connect, for messages: never the password."""
    return "%s@%s:%s/%s" % (conn_params.get("user", ""), conn_params.get("host", "(socket)"),
                            conn_params.get("port", 5432), conn_params.get("dbname", ""))


def connect(conn_params: Mapping[str, Any], call_timeout: float | None = None,
            deadline: float | None = None) -> DeadlineConnection:
    """Open a :class:`DeadlineConnection`.

    The login may wait ``connect_timeout`` seconds (from ``conn_params``); every later call ``call_timeout`` seconds
    (default: ``connect_timeout``). ``deadline`` (a ``time.monotonic()`` value) caps every call, the login included.
    """
    login_timeout = conn_params.get("connect_timeout") or None
    psycopg2.extensions.set_wait_callback(_wait)
    factory = functools.partial(DeadlineConnection, call_timeout=login_timeout, deadline=deadline)
    try:
        conn = psycopg2.connect(connection_factory=factory, **conn_params)
    except psycopg2.Error as exc:
        message = str(exc).strip().replace(conn_params.get("password") or "\0", "********")
        raise ConnectionFailed("Cannot connect to PostgreSQL at %s: %s" % (describe(conn_params), message)) from None
    conn.call_timeout = call_timeout or login_timeout
    return conn
