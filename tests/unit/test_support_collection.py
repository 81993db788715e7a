"""tests/support/collection.py: the collection path the tests give pytest-ansible and Ansible."""

from __future__ import annotations

import importlib

from tests.support import collection


def test_an_empty_path_becomes_ansible_cfgs_list():
    assert collection.collections_path("") == ":".join(collection.PATHS)
    assert collection.collections_path(None).split(":")[0] == str(collection.COLLECTIONS)


def test_the_checkout_goes_first_once():
    given = "/elsewhere:%s:/other" % collection.COLLECTIONS
    assert collection.collections_path(given) == "%s:/elsewhere:/other" % collection.COLLECTIONS


def test_export_sets_the_variable():
    environ = {}
    assert collection.export_collections_path(environ) == environ["ANSIBLE_COLLECTIONS_PATH"]


def test_the_collection_is_imported_from_this_checkout():
    module = importlib.import_module("ansible_collections.qfieldcloud.ops.plugins.module_utils._jobs")
    assert module.__file__.startswith(str(collection.COLLECTIONS))
