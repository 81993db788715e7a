"""meta/runtime.yml's action groups: every module of a group takes the group's options, with the same type,
default and choices, so that ``module_defaults`` for the group means the same to each of them (read from the argument
specs the modules really build)."""

from __future__ import annotations

import importlib

import pytest
import yaml

from ansible_collections.qfieldcloud.ops.plugins.doc_fragments import _attributes
from ansible_collections.qfieldcloud.ops.plugins.module_utils import _postgres
from tests.support.argspecs import action_groups, argument_spec, module_names

# The options each group is for. qfc is the old all-modules group, kept so that playbooks naming it still load: its
# modules share no option (qfc_capacity_report has none of the others'), which test_qfc_is_kept_and_shares_nothing
# states.
GROUP_OPTIONS = {
    "qfc_db": sorted(_postgres.argument_spec()),
    "qfc_project": ["env_file", "project_src"],
    "qfc": [],
}
SAME = ("type", "default", "choices", "elements", "no_log")


def test_every_group_says_which_options_it_shares():
    assert sorted(action_groups()) == sorted(GROUP_OPTIONS)
    for members in action_groups().values():
        assert members == sorted(members) and set(members) <= set(module_names())


@pytest.mark.parametrize("group", sorted(GROUP_OPTIONS))
def test_the_modules_of_a_group_share_its_options(group):
    members = action_groups()[group]
    assert len(members) >= 2, "a group of one module is not a group"
    specs = {name: argument_spec(name) for name in members}
    for option in GROUP_OPTIONS[group]:
        missing = [name for name, spec in specs.items() if option not in spec]
        assert not missing, "%s of group %s is not an option of %s" % (option, group, missing)
        seen = {name: {k: specs[name][option].get(k) for k in SAME} for name in members}
        assert len({repr(sorted(v.items())) for v in seen.values()}) == 1, (group, option, seen)


def test_the_db_group_shares_exactly_the_postgres_spec():
    for name in action_groups()["qfc_db"]:
        spec = argument_spec(name)
        for option, definition in _postgres.argument_spec().items():
            assert spec[option] == definition, (name, option)


def test_qfc_is_kept_and_shares_nothing():
    members = action_groups()["qfc"]
    assert members == module_names()
    shared = set.intersection(*(set(argument_spec(name)) for name in members))
    assert shared == set(), "qfc now shares %s: name it in GROUP_OPTIONS" % sorted(shared)


def _documentation(name):
    module = importlib.import_module("ansible_collections.qfieldcloud.ops.plugins.modules.%s" % name)
    return yaml.safe_load(module.DOCUMENTATION)


@pytest.mark.parametrize("name", module_names())
def test_each_module_documents_the_groups_it_is_in(name):
    """The action_group attribute (ansible-core's, as community.docker documents it) lists exactly the groups of
    meta/runtime.yml that hold the module; its description and support come from the _attributes fragment."""
    doc = _documentation(name)
    groups = sorted("qfieldcloud.ops.%s" % group for group, members in action_groups().items() if name in members)
    assert groups, "%s is in no action group" % name
    assert "qfieldcloud.ops._attributes.action_group" in doc["extends_documentation_fragment"]
    assert doc["attributes"]["action_group"] == {"membership": groups}


def test_the_fragment_describes_the_action_group_attribute():
    attribute = yaml.safe_load(_attributes.ModuleDocFragment.ACTION_GROUP)["attributes"]["action_group"]
    assert attribute["support"] == "full" and "module_defaults" in " ".join(attribute["description"])
    for group in action_groups():
        assert "C(%s)" % group in " ".join(attribute["description"]), group
