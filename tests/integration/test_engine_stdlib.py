"""The standard-library Engine client qfc_scale verifies with on a local socket, against the real Docker Engine: it
must see exactly what the Docker SDK sees, and the settle wait must end as soon as the youngest worker has been up
for settle_time (measured from the engine's StartedAt), not a poll later."""

from __future__ import annotations

import os
import time

import docker
import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _engine
from tests.support.stacks import make_stack


def local_socket():
    path = _engine.unix_socket_path({"host": "unix://%s" % _engine.DOCKER_SOCKET})
    if not os.path.exists(path):
        pytest.skip("no local Docker Engine socket at %s" % path)
    return path


@pytest.fixture
def clients():
    """(the standard-library client, the SDK's low-level client) on the same local engine."""
    path = local_socket()
    assert _engine.load_sdk()
    stdlib = _engine.engine_client({"name": "default", "host": "unix://%s" % path}, timeout=10)
    assert isinstance(stdlib, _engine.StdlibClient)
    sdk = docker.APIClient(base_url="unix://%s" % path, version="auto", timeout=10)
    yield stdlib, sdk
    stdlib.close()
    sdk.close()


def test_stdlib_and_sdk_snapshots_agree(stack, clients):
    stdlib, sdk = clients
    _engine.ping(stdlib)
    stack.compose("run", "-d", "--no-deps", "worker_wrapper")  # a one-off: not one of the service's workers
    stack.containers()[0].stop(timeout=1)  # an exited worker: listed, not running
    ours = _engine.snapshot(stdlib, stack.project, "worker_wrapper")
    theirs = _engine.snapshot(sdk, stack.project, "worker_wrapper")
    assert ours == theirs
    assert sorted(c["state"] for c in ours) == ["exited", "running"]
    assert all(c["started_at"] and c["name"].startswith(stack.project) for c in ours)


def test_the_settle_wait_ends_settle_time_after_the_youngest_start(stack, clients):
    stdlib, _sdk = clients
    stack.set_env("QFIELDCLOUD_WORKER_REPLICAS", 4)
    stack.compose("up", "-d", "--no-deps", "--no-recreate", "worker_wrapper")
    containers = _engine.wait_for_replicas(stdlib, stack.project, "worker_wrapper", 4, 30, 2.0)
    returned = time.time()
    youngest = max(c["started_at"] for c in containers)
    print("returned %.3fs after the youngest worker had been up for 2.0s" % (returned - youngest - 2.0))
    assert [c["number"] for c in containers] == [1, 2, 3, 4]
    assert 0 <= returned - youngest - 2.0 < 0.3  # not before it settled, and no poll interval wasted after


def test_a_crash_looping_worker_is_reported_with_its_restarts(tmp_path, clients):
    stdlib, _sdk = clients
    crashing = make_stack(tmp_path, replicas=1, extra_env={"QFC_SIM_CRASH": "1"})
    try:
        with pytest.raises(_engine.VerifyError) as err:
            _engine.wait_for_replicas(stdlib, crashing.project, "worker_wrapper", 1, 6, 1.0)
        assert "expected 1 running worker_wrapper containers stable for 1.0s" in err.value.msg
        assert err.value.containers and err.value.containers[0]["restart_count"] >= 1, err.value.containers
    finally:
        crashing.down()
