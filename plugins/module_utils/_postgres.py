# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Connection options shared by the queue modules, resolved like community.postgresql's, or from QFieldCloud's .env."""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import time
import traceback

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _envfile

try:
    import psycopg2
    import psycopg2.extensions
    import psycopg2.extras  # noqa: F401  pylint: disable=unused-import

    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
    _DatabaseError = psycopg2.OperationalError
    _Connection = psycopg2.extensions.connection
except ImportError:
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = traceback.format_exc()
    _DatabaseError = Exception
    _Connection = object

SSL_MODES = ["allow", "disable", "prefer", "require", "verify-ca", "verify-full"]


def argument_spec():
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


class ConnectionError_(Exception):
    pass


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

    def __init__(self, dsn, *args, **kwargs):
        # set before the (waiting) connect inside __init__: the login has the same kind of deadline
        self.call_timeout = _CONNECT[0]
        self.deadline = _CONNECT[1]
        super().__init__(dsn, *args, **kwargs)


_CONNECT = [None, None]  # call timeout and run deadline for the connection being opened (one thread per process)


def _wait(conn):
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
        if left is not None and left <= 0:
            raise NoAnswer("the server did not answer within %.1f s (client-side deadline); it accepts connections "
                           "but does not respond: hung, overloaded or paused" % (time.monotonic() - started))
        if state == psycopg2.extensions.POLL_READ:
            select.select([conn.fileno()], [], [], left)
        elif state == psycopg2.extensions.POLL_WRITE:
            select.select([], [conn.fileno()], [], left)
        else:
            raise psycopg2.OperationalError("bad state from poll: %s" % state)


def is_compose_service_name(host, resolves=None):
    """``db`` (QFieldCloud's standalone service) resolves only inside the compose network, not on the host. A dotless
    name that the host can resolve (an external server such as ``pgprod``) is left alone."""
    if not host or host == "localhost" or host.startswith("/") or "." in host:
        return False
    try:
        ipaddress.ip_address(host)
        return False
    except ValueError:
        pass
    return not (resolves or _resolves)(host)


def _resolves(host):
    try:
        socket.getaddrinfo(host, None)
        return True
    except OSError:
        return False


def load_env(module):
    """Read ``env_file`` (or ``<project_src>/.env``) and register its secrets as no_log values.

    Returns ({}, None) when neither is set."""
    path = module.params.get("env_file")
    if not path and module.params.get("project_src"):
        path = os.path.join(module.params["project_src"], ".env")
    if not path:
        return {}, None
    if not os.path.isfile(path):
        raise ConnectionError_("env_file %s does not exist." % path)
    try:
        _raw, _text, entries = _envfile.read(path)
    except _envfile.EnvFileError as exc:
        raise ConnectionError_("%s is malformed, %s." % (path, exc)) from None
    module.no_log_values.update(_envfile.secret_values(entries))
    return {e.key: e.value for e in entries}, path


def connection_params(params, env):
    """Explicit login_* options win over POSTGRES_* from .env, which win over libpq's defaults.

    When .env points at a compose service name (``POSTGRES_HOST=db``), the host cannot resolve it; QFieldCloud's
    standalone override publishes the database on ``HOST_POSTGRES_PORT`` (default 5433) instead.
    """
    host = env.get("POSTGRES_HOST") or None
    port = env.get("POSTGRES_PORT") or None
    explicit_host = params.get("login_unix_socket") or params.get("login_host")
    if not explicit_host and is_compose_service_name(host):
        host, port = "127.0.0.1", env.get("HOST_POSTGRES_PORT") or "5433"
    out = {
        "host": params.get("login_unix_socket") or params.get("login_host") or host,
        "port": params.get("login_port") or (int(port) if port and str(port).isdigit() else None),
        "user": params.get("login_user") or env.get("POSTGRES_USER") or None,
        "password": params.get("login_password") or env.get("POSTGRES_PASSWORD") or None,
        "dbname": params.get("login_db") or env.get("POSTGRES_DB") or None,
        "sslmode": params.get("ssl_mode") or env.get("POSTGRES_SSLMODE") or "prefer",
        "connect_timeout": params.get("connect_timeout"),
        "application_name": "qfieldcloud.ops",
    }
    return {k: v for k, v in out.items() if v is not None}


def describe(conn_params):
    """Where we connect, for messages: never the password."""
    return "%s@%s:%s/%s" % (conn_params.get("user", ""), conn_params.get("host", "(socket)"),
                            conn_params.get("port", 5432), conn_params.get("dbname", ""))


def connect(conn_params, call_timeout=None, deadline=None):
    """Open a :class:`DeadlineConnection`.

    The login may wait ``connect_timeout`` seconds (from ``conn_params``); every later call ``call_timeout`` seconds
    (default: ``connect_timeout``). ``deadline`` (a ``time.monotonic()`` value) caps every call, the login included.
    """
    login_timeout = conn_params.get("connect_timeout") or None
    psycopg2.extensions.set_wait_callback(_wait)
    _CONNECT[:] = [login_timeout, deadline]
    try:
        conn = psycopg2.connect(connection_factory=DeadlineConnection, **conn_params)
    except psycopg2.Error as exc:
        message = str(exc).strip().replace(conn_params.get("password") or "\0", "********")
        raise ConnectionError_("Cannot connect to PostgreSQL at %s: %s" % (describe(conn_params), message)) from None
    finally:
        _CONNECT[:] = [None, None]
    conn.call_timeout = call_timeout or login_timeout
    return conn
