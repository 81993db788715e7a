"""_postgres: where the credentials go (POSTGRES_HOST from .env), timeout validation, and the client-side deadline
against a server that accepts a connection and never answers (a plain socket, no PostgreSQL needed)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _postgres

ENV = {"POSTGRES_USER": "qfieldcloud_db_admin", "POSTGRES_PASSWORD": "pw", "POSTGRES_DB": "qfieldcloud_db",
       "POSTGRES_PORT": "5432", "HOST_POSTGRES_PORT": "5433"}


def resolves(*names):
    return lambda host: host in names


@pytest.mark.parametrize("host, sslmode, resolvable, decision", [
    # used as written: addresses, localhost, sockets, qualified names
    ("127.0.0.1", None, (), "direct"),
    ("::1", None, (), "direct"),
    ("localhost", None, (), "direct"),
    ("/var/run/postgresql", None, (), "direct"),
    ("db.example.org", None, (), "direct"),
    (None, None, (), "direct"),
    # QFieldCloud's standalone service: the compose service, also when a DNS search domain makes the host resolve it
    ("db", None, (), "service"),
    ("db", None, ("db",), "service"),
    ("db", "verify-full", ("db",), "service"),
    # another dotless name only the compose network knows
    ("postgres", None, (), "service"),
    # a dotless name the host resolves: ambiguous, unless the server has to prove that name
    ("pgprod", None, ("pgprod",), "refuse"),
    ("pgprod", "prefer", ("pgprod",), "refuse"),
    ("pgprod", "require", ("pgprod",), "refuse"),
    ("pgprod", "verify-full", ("pgprod",), "direct"),
])
def test_host_decision(host, sslmode, resolvable, decision):
    assert _postgres.host_decision(host, sslmode, resolves(*resolvable)) == decision


def test_db_resolving_through_a_search_domain_still_goes_to_the_published_loopback_port():
    params = _postgres.connection_params({"connect_timeout": 5}, dict(ENV, POSTGRES_HOST="db"), resolves("db"))
    assert (params["host"], params["port"]) == ("127.0.0.1", 5433)


def test_an_ambiguous_dotless_host_is_refused_before_anything_is_sent():
    with pytest.raises(_postgres.ConnectionFailed, match="POSTGRES_HOST=pgprod in .env is a name without a domain"):
        _postgres.connection_params({"connect_timeout": 5}, dict(ENV, POSTGRES_HOST="pgprod"), resolves("pgprod"))


def test_the_operator_can_name_the_server():
    env = dict(ENV, POSTGRES_HOST="pgprod")
    params = _postgres.connection_params({"login_host": "pgprod", "connect_timeout": 5}, env, resolves("pgprod"))
    assert (params["host"], params["port"]) == ("pgprod", 5432)
    params = _postgres.connection_params({"ssl_mode": "verify-full", "connect_timeout": 5}, env, resolves("pgprod"))
    assert (params["host"], params["sslmode"]) == ("pgprod", "verify-full")
    env = dict(ENV, POSTGRES_HOST="pgprod", POSTGRES_SSLMODE="verify-full")
    assert _postgres.connection_params({"connect_timeout": 5}, env, resolves("pgprod"))["host"] == "pgprod"


@pytest.mark.parametrize("timeout", [0, -1, 3601, 10 ** 12])
def test_connect_timeout_range(timeout):
    with pytest.raises(ValueError, match="connect_timeout must be 1 to 3600 seconds"):
        _postgres.connection_params({"connect_timeout": timeout}, ENV)


@pytest.mark.parametrize("value", [0, -5, 2 ** 31, 10 ** 15, None, True])
def test_statement_and_lock_timeout_range(value):
    with pytest.raises(ValueError, match="lock_timeout must be 1 to 2147483647 milliseconds"):
        _postgres.check_timeout_ms("lock_timeout", value)


def test_the_client_waits_a_little_longer_than_the_server():
    assert _postgres.check_timeout_ms("statement_timeout", 5000) == 5000
    assert _postgres.call_timeout_for(5000) == 5000 / 1000.0 + _postgres.CANCEL_GRACE_S
    assert _postgres.CANCEL_GRACE_S >= 1


@pytest.fixture
def silent_server():
    """Accepts TCP connections and never sends a byte: a hung postmaster, seen from the client."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    stop = threading.Event()

    def serve():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def params(port, **over):
    return dict({"host": "127.0.0.1", "port": port, "user": "u", "password": "s3cret-pw", "dbname": "d",
                 "sslmode": "disable", "connect_timeout": 1}, **over)


@pytest.mark.skipif(not _postgres.HAS_PSYCOPG2, reason="psycopg2 missing")
def test_a_login_without_answer_ends_at_connect_timeout(silent_server):
    started = time.monotonic()
    with pytest.raises(_postgres.ConnectionFailed) as caught:
        _postgres.connect(params(silent_server))
    took = time.monotonic() - started
    assert 0.9 <= took < 3
    assert "Cannot connect to PostgreSQL at u@127.0.0.1:%d/d: the server did not answer within 1.0 s" % silent_server \
        in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)


@pytest.mark.skipif(not _postgres.HAS_PSYCOPG2, reason="psycopg2 missing")
def test_a_run_deadline_caps_the_login(silent_server):
    started = time.monotonic()
    with pytest.raises(_postgres.ConnectionFailed, match="did not answer within 0.5 s"):
        _postgres.connect(params(silent_server, connect_timeout=30), deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 2
