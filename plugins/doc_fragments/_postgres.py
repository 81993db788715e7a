# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this doc fragment is PRIVATE to the collection. It can have breaking changes at any time.

from __future__ import annotations


class ModuleDocFragment:
    # Connection options, modelled on community.postgresql's, plus QFieldCloud's .env as a source.
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Database host. Overrides C(POSTGRES_HOST) from the C(.env) file. Setting it is the operator's decision, so the
        C(.env) checks below are skipped.
      - C(.env) is written for the containers, which resolve a name without a dot first as a compose service. From
        the host, C(POSTGRES_HOST) is therefore used as follows. An IP address, C(localhost) or a name with a dot is
        used as written. C(db) (QFieldCloud's standalone database service) always means the compose service and is
        reached through C(127.0.0.1) and C(HOST_POSTGRES_PORT) (default 5433), even when the host's DNS resolves
        C(db) (through a search domain, say) to another server, which would otherwise receive QFieldCloud's
        credentials. Another dotless name that the host cannot resolve is treated the same way.
      - Another dotless name that the host does resolve (C(pgprod)) is ambiguous, so the module fails before sending
        anything, unless O(ssl_mode) (or C(POSTGRES_SSLMODE)) is V(verify-full), which makes the server prove that
        name. Set O(login_host), or write a fully qualified name or an address in C(POSTGRES_HOST).
    type: str
  login_port:
    description: Database port. Overrides C(POSTGRES_PORT) from C(.env); libpq's default is 5432.
    type: int
  login_user:
    description: Database user. Overrides C(POSTGRES_USER) (QFieldCloud uses C(qfieldcloud_db_admin)).
    type: str
  login_password:
    description: Password of O(login_user). Overrides C(POSTGRES_PASSWORD). Never logged.
    type: str
  login_db:
    description: Database name. Overrides C(POSTGRES_DB) (QFieldCloud uses C(qfieldcloud_db)).
    type: str
  login_unix_socket:
    description: Directory of the PostgreSQL unix socket; used instead of O(login_host).
    type: str
  ssl_mode:
    description: libpq C(sslmode). Overrides C(POSTGRES_SSLMODE); default V(prefer).
    type: str
    choices: [allow, disable, prefer, require, verify-ca, verify-full]
  connect_timeout:
    description:
      - Seconds the login may take, from the TCP connection to the server's answer to the login.
      - Enforced on the client side (libpq runs non-blocking, psycopg2's wait callback waits with C(select)), so it
        also ends the wait when the server accepts the connection and then never answers (a stopped or hung
        postmaster, a frozen virtual machine). The module then fails with C(Cannot connect to PostgreSQL at
        user@host:port/db) and C(did not answer within N s).
      - Only the login. Each later statement has its own client-side limit, see the module's O(statement_timeout).
        Resolving the host name (DNS) is not covered.
      - 1 to 3600; libpq's V(0) (wait forever) is refused.
    type: int
    default: 10
  env_file:
    description:
      - QFieldCloud's C(.env) to read C(POSTGRES_*), C(QFIELDCLOUD_WORKER_TIMEOUT_S) and C(QFIELDCLOUD_WORKER_REPLICAS)
        from. Defaults to C(<project_src>/.env) when O(project_src) is set.
      - Its secret-looking values are registered as C(no_log) values.
    type: path
  project_src:
    description:
      - The QFieldCloud checkout. Used for C(.env) and, where the module needs them, to list the worker containers
        with C(docker compose ps) (Compose labels, one-off containers excluded).
    type: path
requirements:
  - psycopg2 (C(python3-psycopg2) or C(psycopg2-binary)) on the target.
"""
