"""module_utils/_engine.py: the shape checks of the standard-library client's answers, pure. Whatever does not have
the shape asked for (a list of containers, a container's inspect data, a 200 with JSON) is a BadAnswer, an
EngineError (so an OSError, what every caller already handles), never a count, a crash or an AttributeError later."""

from __future__ import annotations

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _engine

WHERE = "GET /containers/json on unix:///run/docker.sock"
INSPECTED = {"Id": "a" * 64, "Name": "/qfc-worker_wrapper-1", "RestartCount": 0,
             "State": {"Status": "running", "Restarting": False, "StartedAt": "2026-11-29T18:16:17.003583243Z"},
             "Config": {"Labels": {"com.docker.compose.container-number": "1"}}}


@pytest.mark.parametrize("value", [
    [], [{"Id": "a", "Labels": None}], [{"Labels": {"job_id": "7d1c"}, "State": "running"}], [{}]])
def test_a_container_list_passes(value):
    assert _engine.container_list(value, WHERE) is value


@pytest.mark.parametrize("value", [
    {"message": "page not found"},  # an error object: was counted as 1 running worker
    None, "OK", 1, True,
    [1], ["a"], [None], [[]],
    [{"Labels": "job_id=1"}], [{"Labels": ["job_id"]}],  # running_job_ids' .get would raise AttributeError
    [{"Id": 7}], [{"Id": None}]])
def test_what_is_not_a_container_list_is_a_bad_answer(value):
    with pytest.raises(_engine.BadAnswer, match="^%s: not a list of containers" % WHERE) as err:
        _engine.container_list(value, WHERE)
    assert isinstance(err.value, _engine.EngineError) and isinstance(err.value, OSError)


def test_inspect_data_passes():
    assert _engine.inspected_container(INSPECTED, WHERE) is INSPECTED
    assert _engine.inspected_container({"Id": "b"}, WHERE) == {"Id": "b"}  # a container not started yet


@pytest.mark.parametrize("value", [
    [], [INSPECTED], {"message": "No such container"}, None, "x",
    dict(INSPECTED, Id=None), dict(INSPECTED, State="running"), dict(INSPECTED, Config=["x"]),
    dict(INSPECTED, Config={"Labels": "x"}), dict(INSPECTED, RestartCount="many"),
    dict(INSPECTED, State={"StartedAt": "yesterday"}),
    dict(INSPECTED, Config={"Labels": {"com.docker.compose.container-number": "one"}})])
def test_what_summarize_cannot_read_is_a_bad_answer(value):
    with pytest.raises(_engine.BadAnswer, match="not a container's inspect data"):
        _engine.inspected_container(value, WHERE)


def test_decode_json_by_status():
    assert _engine.decode_json(200, b'[{"Id": "a"}]', WHERE) == [{"Id": "a"}]
    with pytest.raises(_engine.ContainerGone, match="404"):
        _engine.decode_json(404, b'{"message": "No such container"}', WHERE)
    with pytest.raises(_engine.BadAnswer, match='^%s: HTTP 500 {"message": "boom"}$' % WHERE):
        _engine.decode_json(500, b'{"message": "boom"}', WHERE)
    with pytest.raises(_engine.BadAnswer, match="not JSON: SSH-2.0"):
        _engine.decode_json(200, b"SSH-2.0-OpenSSH_9.2\r\n", WHERE)


class Listing:
    """A client whose listing is ``items`` (the SDK's client is not checked by the stdlib's container_list)."""

    def __init__(self, items):
        self.items = items

    def containers(self, all=False, filters=None):  # noqa: A002
        return self.items

    def inspect_container(self, cid):
        return dict(INSPECTED, Id=cid)


@pytest.mark.parametrize("items", [[{"Names": ["/x"]}], ["abc"], [{"Id": 3}]])
def test_snapshot_refuses_a_listing_without_ids(items):
    with pytest.raises(_engine.BadAnswer, match="listed a container without an Id"):
        _engine.snapshot(Listing(items), "qfc", "worker_wrapper")


def test_short_keeps_messages_on_one_line():
    assert _engine.short(b"SSH-2.0-OpenSSH_9.2\r\n\x00" + b"x" * 500).startswith("SSH-2.0-OpenSSH_9.2 \x00xxx")
    assert len(_engine.short("y" * 1000)) == 200
