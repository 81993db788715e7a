# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this doc fragment is PRIVATE to the collection. It can have breaking changes at any time.

from __future__ import annotations


class ModuleDocFragment:
    # The operations log; paired with _oplog.argument_spec() in module_utils.
    DOCUMENTATION = r"""
options:
  operations_log:
    description:
      - The operations log on the target, one JSON object per line (JSON Lines), appended to for every change this
        module makes (never in check mode, never for a run that changes nothing). Missing parent directories are
        created (mode C(0755)), the file with mode C(0640).
      - Each record holds C(time) (UTC), C(host), C(action) (O(operation)), C(before), C(after), C(reason),
        C(actor) and C(result) (V(changed), V(failed) or V(rolled_back)), and may hold C(details). Values of
        secrets from the project's C(.env) are masked.
      - Appends are one write under an exclusive lock, so concurrent runs neither interleave nor lose records.
      - The log is an audit trail, so it is never written through a symbolic link (nor created through a dangling
        one), nor when it is not a regular file with a single link, nor when its directory can be written by a user
        other than root, the user the module runs as or the log's owner (that user could replace or forge records).
      - A log that cannot be written (permissions, full disk, one of the refusals above) does not fail the task nor
        undo its change; the task warns that the record was not written and returns RV(operations_log_error).
      - V("") turns the log off.
    type: path
    default: /var/log/qfieldcloud/operations.jsonl
  operation:
    description:
      - The record's C(action). Defaults to the module's own (V(scale) for M(qfieldcloud.ops.qfc_scale),
        V(job_cleanup) for M(qfieldcloud.ops.qfc_job_cleanup)); the autoscaler passes V(autoscale), the scale role's
        rollback V(rollback).
    type: str
  operation_reason:
    description:
      - Why the change is made, recorded as the record's C(reason). V("") lets the module word one from the change
        (for example C(replicas 2 -> 4 requested)).
    type: str
    default: ""
  operation_actor:
    description:
      - "Who asked for the change, recorded as the record's C(actor). With O(operation_actor.awx_job_id) the actor is
        C({kind: awx, awx_job_id, user}), else C({kind: controller, user})."
      - Without it, or without a user, the user the module runs as on the target is recorded.
    type: dict
    suboptions:
      awx_job_id:
        description: The AWX job id (the C(awx_job_id) extra variable AWX sets).
        type: str
      awx_user_name:
        description: The AWX user who launched the job (the C(awx_user_name) extra variable).
        type: str
      user:
        description: The user on the controller.
        type: str
"""
