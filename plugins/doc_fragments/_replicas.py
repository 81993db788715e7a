# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this doc fragment is PRIVATE to the collection. It can have breaking changes at any time.

from __future__ import annotations


class ModuleDocFragment:
    # The worker count and its guards; paired with _replicas.argument_spec() in module_utils.
    DOCUMENTATION = r"""
options:
  replicas:
    description:
      - The number of C(worker_wrapper) containers, a whole number (an integer, or a string of digits). V(0) stops
        every worker, so no job is processed.
      - At most 100, a hard ceiling per host that O(force=true) does not lift (Compose itself would accept
        9223372036854775807).
      - V(auto) (in any case, surrounding spaces ignored) sizes the host by the operations guideline, CPU cores x
        O(max_replicas_per_core) (2 cores - 5 workers), capped at O(auto_max) and at least 1; the count used is
        returned as RV(replicas).
      - Anything else (a boolean such as YAML's C(yes), a fraction, a negative number) fails the task before any
        change.
    type: raw
    required: true
  auto_max:
    description:
      - The cap for O(replicas=auto). Beyond 10 workers the guideline is a multi-server layout, not a bigger host.
      - From 1 to 100.
    type: int
    default: 10
  max_replicas_per_core:
    description:
      - The core-count guard. More than this many workers per CPU core of the target is refused unless O(force=true).
        The default follows the operations guideline (2 cores - 4 to 5 workers, 4 cores - 8 to 10 workers).
      - Above 10 workers on one host a warning recommends a multi-server layout.
      - A finite number greater than 0 and at most 100.
    type: float
    default: 2.5
  force:
    description: Accept a replica count above the core-count guard (never above the hard ceiling of 100).
    type: bool
    default: false
"""
