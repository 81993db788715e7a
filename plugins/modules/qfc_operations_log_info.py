#!/usr/bin/python
# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: qfc_operations_log_info
short_description: Read the last records of a QFieldCloud host's operations log
version_added: 0.1.0
description:
  - Reads the operations log (JSON Lines) that M(qfieldcloud.ops.qfc_scale), M(qfieldcloud.ops.qfc_job_cleanup) and
    the autoscaler append to on the host, one record per change - time (UTC), host, action, before, after, reason,
    actor, result - and returns the last O(limit) records, oldest first.
  - The log is read backwards from its end, only as far back as the O(limit) newest records.
  - Lines that are not JSON objects (a line cut short by a full disk, an edit by hand, bytes that are not UTF-8,
    NaN or a number out of range, nesting deeper than 16 levels) are skipped and counted in RV(skipped_lines), never a
    failure.
  - A log that does not exist yet (no change was ever recorded) gives no records. A path that is not a regular file
    (a directory, a FIFO), or a file that cannot be read (permissions), fails the task with the reason.
  - Read-only; the records hold no secrets (the writers mask them).
extends_documentation_fragment:
  - qfieldcloud.ops._attributes
  - qfieldcloud.ops._attributes.action_group
attributes:
  action_group:
    membership: [qfieldcloud.ops.qfc]
  check_mode:
    support: full
    details: [Read-only; reads the same in check mode.]
  diff_mode:
    support: none
  idempotent:
    support: full
    details: [Never changes anything.]
options:
  path:
    description: The operations log on the host.
    type: path
    default: /var/log/qfieldcloud/operations.jsonl
  limit:
    description:
      - How many of the newest records to return, from V(1) to V(10000); V(0) returns every record (the whole log is
        read). Anything else is refused.
    type: int
    default: 20
seealso:
  - module: qfieldcloud.ops.qfc_scale
  - module: qfieldcloud.ops.qfc_capacity_report
author:
  - qfieldcloud.ops contributors (@qfieldcloud-ops)
"""

EXAMPLES = r"""
- name: Read the last 10 changes
  qfieldcloud.ops.qfc_operations_log_info:
    limit: 10
  become: true  # the log is root's, mode 0640
  register: qfc_ops

- name: Print them as a table
  ansible.builtin.debug:
    msg: "{{ qfc_ops.records | qfieldcloud.ops.qfc_operations_table }}"
"""

RETURN = r"""
records:
  description:
    - The last O(limit) records, oldest first, as written - C(time) (UTC), C(host), C(action) (C(scale),
      C(autoscale), C(rollback), C(job_cleanup)), C(before), C(after), C(reason), C(actor) (C(kind), C(user),
      C(awx_job_id) when run from AWX), C(result) (C(changed), C(failed), C(rolled_back)) and, when given,
      C(details).
  returned: always
  type: list
  elements: dict
  sample:
    - time: "2026-12-02T23:59:01Z"
      host: qfc1
      action: autoscale
      before: 2
      after: 4
      reason: "queue depth 12 > 10 for 600 s"
      actor: {kind: awx, awx_job_id: "4711", user: alice}
      result: changed
skipped_lines:
  description: Lines skipped because they were not JSON objects, counted in the part of the log read (from its end back
    to the oldest record returned; the whole log for O(limit=0)).
  returned: always
  type: int
  sample: 0
exists:
  description: Whether the log exists (false when no change was ever recorded).
  returned: always
  type: bool
  sample: true
path:
  description: The log read.
  returned: always
  type: str
  sample: /var/log/qfieldcloud/operations.jsonl
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _oplog

MAX_LIMIT = 10000  # records in one task result; 0 asks for all of them


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default=_oplog.DEFAULT_PATH),
            limit=dict(type="int", default=20),
        ),
        supports_check_mode=True,
    )
    path, limit = module.params["path"], module.params["limit"]
    if not 0 <= limit <= MAX_LIMIT:
        module.fail_json(msg="limit must be 0 (every record) or from 1 to %d, got %d" % (MAX_LIMIT, limit))
    # Only a regular file is read: a FIFO at the path would block the open, a directory has no lines.
    if os.path.exists(path) and not os.path.isfile(path):
        module.fail_json(msg="The operations log %s is not a regular file" % path, path=path)
    try:
        records, skipped = _oplog.read(path, limit=limit or None)
    except (OSError, ValueError) as exc:
        module.fail_json(msg="Cannot read the operations log %s: %s" % (path, to_native(exc)), path=path)
    module.exit_json(changed=False, records=records, skipped_lines=skipped, exists=os.path.exists(path), path=path)


if __name__ == "__main__":
    main()
