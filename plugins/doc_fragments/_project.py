# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this doc fragment is PRIVATE to the collection. It can have breaking changes at any time.

from __future__ import annotations


class ModuleDocFragment:
    # Options that locate a QFieldCloud Docker Compose project.
    DOCUMENTATION = r"""
options:
  project_src:
    description:
      - Path to the QFieldCloud checkout on the target that holds the compose files and C(.env).
      - Compose runs with this directory as project directory, so C(COMPOSE_FILE), C(COMPOSE_PROJECT_NAME) and
        C(COMPOSE_PATH_SEPARATOR) from C(.env) apply exactly as they do for an operator in that directory.
    type: path
    required: true
  env_file:
    description:
      - The C(.env) file to read and edit. Defaults to C(<project_src>/.env).
      - A different file is passed to Compose with C(--env-file).
    type: path
  docker_cli:
    description:
      - Path to the Docker CLI. Defaults to C(docker) on E(PATH). The Compose v2 plugin (C(docker compose)) must be
        installed for it.
    type: path
requirements:
  - Docker CLI with the Compose v2 plugin 2.20.0 or newer on the target (tested with 2.26.1).
notes:
  - Secret-looking values in C(.env) (keys containing C(PASSWORD), C(PASSWD), C(SECRET), C(KEY), C(TOKEN),
    C(CREDENTIAL), C(DSN) or C(STORAGES)) are registered as C(no_log) values, so they are masked in every result,
    diff and error. Short values are masked too (flags and counts such as C(1) or C(true) are not secrets).
  - Under any key, the password of a URL (C(postgres://user:password@host), an S3 endpoint with its keys), its
    secret-looking query parameters and the secret-looking members of a JSON value are masked as well, each also in
    the escaped forms Compose and Go print in their errors (quotes and backslashes escaped, non-ASCII as C(\xNN))
    and percent-encoded.
"""
