# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this doc fragment is PRIVATE to the collection. It can have breaking changes at any time.

from __future__ import annotations


class ModuleDocFragment:
    # Standard documentation fragment
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
  diff_mode:
    description:
      - Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
      - This assumes that the system controlled/queried by the module has not changed in a relevant way.
"""

    # With the standard fragment, for the modules of meta/runtime.yml's action groups; each module lists its groups
    # in its own attributes (action_group: membership: [...]); tests/unit/test_action_groups.py compares the lists.
    ACTION_GROUP = r"""
options: {}
attributes:
  action_group:
    description:
      - Use C(group/qfieldcloud.ops.<group>) in C(module_defaults) to set defaults for this module, for each group it
        is a member of. C(qfc_db) sets the database connection options, C(qfc_project) C(project_src) and
        C(env_file); C(qfc) holds every module and shares no option.
    support: full
"""
