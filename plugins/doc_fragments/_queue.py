# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this doc fragment is PRIVATE to the collection. It can have breaking changes at any time.

from __future__ import annotations


class ModuleDocFragment:
    # The queue modules' options beyond the connection's; paired with _queue.argument_spec() in module_utils.
    DOCUMENTATION = r"""
options:
  worker_timeout_s:
    description:
      - QFieldCloud's worker timeout, for the stuck-job definitions (stale means C(started_at) older than timeout +
        10 s, as upstream's cron). When set it wins (C(worker_timeout_source=option)).
      - Otherwise it is read where the database's release reads it, as upstream's cron does. From v26.24,
        C(QFIELDCLOUD_WORKER_TIMEOUT_S) from C(.env) (C(env)); up to v26.23 the django-constance row
        C(WORKER_TIMEOUT_S) in C(constance_constance) (C(constance)), whatever C(.env) says; else 600 (C(default)).
      - The release is told by the schema (C(project_qgisproject.area_of_interest) means v26.25 or later). v26.24 has
        v26.23's schema; it is recognised by its C(docker-compose.yml) in O(project_src) (or beside O(env_file)),
        which passes C(QFIELDCLOUD_WORKER_TIMEOUT_S) to the services. Without that file a v26.24 database is read as
        v26.23.
    type: int
  thresholds:
    description:
      - Overrides of the alert thresholds C(queue_depth_warning) (10), C(failed_ratio_critical) (0.30),
        C(idle_grace_s) (60) and C(pending_after_s) (86400). Numbers, finite and not negative.
    type: dict
    default: {}
  statement_timeout:
    description:
      - Milliseconds each statement may run before PostgreSQL cancels it (the server's C(statement_timeout), set for
        the queue's read-only transaction). 1 to 2147483647.
      - "Deadlines, from the inside out: the server cancels a statement after O(statement_timeout) and answers
        C(canceling statement due to statement timeout). The client waits for each call at most
        O(statement_timeout) + 2 s, a little longer, so that a live server's own cancel always arrives first; only a
        server that does not answer at all (hung, paused, frozen) reaches that client-side limit, and the module
        then fails with C(PostgreSQL at user@host:port/db stopped answering). The login has O(connect_timeout).
        The whole database part of a run ends within O(connect_timeout) + O(statement_timeout) + 2 s."
    type: int
    default: 5000
  service:
    description: The Compose service of the workers.
    type: str
    default: worker_wrapper
  env_var:
    description: The C(.env) variable holding the configured worker count.
    type: str
    default: QFIELDCLOUD_WORKER_REPLICAS
  max_replicas_per_core:
    description:
      - The core guard, as the scale role's - at most this many workers per CPU core of the target. It caps the
        recommended worker count of M(qfieldcloud.ops.qfc_queue_facts) and the upper bound of a decision of
        M(qfieldcloud.ops.qfc_autoscale_decision).
      - Above 0, at most 64.
    type: float
    default: 2.5
"""
