"""The connection options are defined twice, as community.postgresql pairs ``postgres_common_argument_spec()`` with
its doc fragment: ``_postgres.argument_spec()`` for AnsibleModule and doc_fragments/_postgres.py for ansible-doc.
They must say the same thing."""

from __future__ import annotations

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _postgres
from tests.support.argspecs import assert_fragment_matches_spec


def test_the_fragment_documents_exactly_the_spec_options_with_their_types_defaults_and_choices():
    assert_fragment_matches_spec("_postgres", _postgres.argument_spec())


def test_the_password_is_no_log():
    assert _postgres.argument_spec()["login_password"]["no_log"] is True
    assert [n for n, s in _postgres.argument_spec().items() if s.get("no_log")] == ["login_password"]


def test_session_timeouts_sql():
    assert _postgres.session_timeouts_sql(5000, 1000) == "SET statement_timeout = 5000; SET lock_timeout = 1000; "
