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
      - Database host. Overrides C(POSTGRES_HOST) from the C(.env) file.
      - When C(.env) names a compose service (C(POSTGRES_HOST=db), QFieldCloud's standalone setup), the host cannot
        resolve it, so C(127.0.0.1) and C(HOST_POSTGRES_PORT) (default 5433) are used instead.
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
    description: Seconds to wait for the connection.
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
