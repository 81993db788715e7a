"""The argument specs of the collection's modules, read the way ansible-test's validate-modules reads them: each
module's ``main()`` runs until it builds its ``AnsibleModule``, which is replaced by a stand-in that records the
spec and stops the run. Needs ``ansible_collections.qfieldcloud.ops`` importable (tests/support/collection.py)."""

from __future__ import annotations

import importlib
from pathlib import Path
from unittest import mock

import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "ansible_collections.qfieldcloud.ops.plugins"


class _Built(Exception):
    def __init__(self, kwargs):
        super().__init__("AnsibleModule built")
        self.kwargs = kwargs


def _stand_in(*args, **kwargs):
    if args:
        kwargs = dict(kwargs, argument_spec=args[0])
    raise _Built(kwargs)


def module_names():
    """The modules that run on the host (an AnsibleModule of their own); a module file that only documents an action
    plugin of the same name (qfc_scale_rollout) is not one."""
    return sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py")
                  if not p.name.startswith("_") and not (ROOT / "plugins" / "action" / p.name).exists())


def argument_spec(module_name):
    """``argument_spec`` that module ``module_name`` (short name, e.g. ``qfc_scale``) passes to AnsibleModule."""
    module = importlib.import_module("%s.modules.%s" % (PACKAGE, module_name))
    with mock.patch.object(module, "AnsibleModule", _stand_in):
        try:
            module.main()
        except _Built as built:
            return built.kwargs["argument_spec"]
    raise AssertionError("%s.main() never built an AnsibleModule" % module_name)


def fragment_options(fragment_name):
    """The ``options`` of doc fragment ``fragment_name`` (e.g. ``_postgres``), parsed."""
    module = importlib.import_module("%s.doc_fragments.%s" % (PACKAGE, fragment_name))
    return yaml.safe_load(module.ModuleDocFragment.DOCUMENTATION)["options"]


def assert_fragment_matches_spec(fragment_name, spec):
    """Doc fragment ``fragment_name`` documents exactly the options of the argument spec ``spec``, with the same type,
    default, choices, required, elements, aliases and suboption names. Returns the fragment's options."""
    docs = fragment_options(fragment_name)
    assert sorted(docs) == sorted(spec)
    for name, option in spec.items():
        doc = docs[name]
        assert doc.get("type", "str") == option.get("type", "str"), name
        for key in ("default", "choices", "elements", "aliases"):
            assert doc.get(key) == option.get(key), (name, key)
        assert doc.get("required", False) == option.get("required", False), name
        assert sorted(doc.get("suboptions") or {}) == sorted(option.get("options") or {}), name
    return docs


def action_groups():
    """meta/runtime.yml's action groups: group name -> module short names."""
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text(encoding="utf-8"))
    return {name: [m for m in members if isinstance(m, str)] for name, members in runtime["action_groups"].items()}
