"""replicas: an integer or `auto` (cores x guideline, capped)."""

from __future__ import annotations

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils._replicas import (
    ENV_VAR_RE, MAX_REPLICAS, SERVICE_RE, check_name, check_number, core_limit, resolve)


@pytest.mark.parametrize("cores, per_core, expected", [(2, 2.5, 5), (4, 2.5, 10), (3, 2.5, 7), (1, 1.0, 1)])
def test_core_limit_follows_the_guideline(cores, per_core, expected):
    assert core_limit(cores, per_core) == expected


@pytest.mark.parametrize("value, expected", [(4, 4), ("4", 4), (" 6 ", 6), (0, 0), (3.0, 3), ("-1", -1)])
def test_integers_pass_through(value, expected):
    assert resolve(value, cores=2, per_core=2.5, auto_max=10) == expected


@pytest.mark.parametrize("cores, auto_max, expected", [(2, 10, 5), (4, 10, 10), (8, 10, 10), (8, 16, 16),
                                                       (2, 3, 3)])
def test_auto_is_cores_times_guideline_capped(cores, auto_max, expected):
    assert resolve("auto", cores=cores, per_core=2.5, auto_max=auto_max) == expected
    assert resolve("AUTO", cores=cores, per_core=2.5, auto_max=auto_max) == expected


def test_auto_runs_at_least_one_worker():
    assert resolve("auto", cores=1, per_core=0.5, auto_max=10) == 1


@pytest.mark.parametrize("value", [True, False, "four", "", "4.5", 4.5, None, [4], {"n": 4}])
def test_anything_else_is_refused_with_the_value(value):
    with pytest.raises(ValueError, match="integer or 'auto'"):
        resolve(value, cores=2, per_core=2.5, auto_max=10)


def test_auto_max_below_one_is_refused():
    with pytest.raises(ValueError, match="auto_max"):
        resolve("auto", cores=2, per_core=2.5, auto_max=0)


@pytest.mark.parametrize("value, low, high, low_open, message", [
    (float("inf"), 0, 100, True, "must be a finite number"),
    (float("-inf"), 0, 100, True, "must be a finite number"),
    (float("nan"), 0, 3600, False, "must be a finite number"),
    (-1, 0, 100, False, "must be at least 0"),
    (0, 0, 100, True, "must be greater than 0"),
    (10 ** 12, 1, 86400, False, "at most 86400"),
    (True, 0, 100, False, "must be a number"),
    ("5", 0, 100, False, "must be a number"),
])
def test_check_number_refuses(value, low, high, low_open, message):
    with pytest.raises(ValueError, match=message):
        check_number("opt", value, low, high, low_open=low_open)


@pytest.mark.parametrize("value, low, high, low_open", [(0, 0, 10, False), (10, 0, 10, False), (0.1, 0, 1, True),
                                                        (2.5, 0, 100, True)])
def test_check_number_accepts_the_range(value, low, high, low_open):
    assert check_number("opt", value, low, high, low_open=low_open) == value


@pytest.mark.parametrize("value, ok", [("QFIELDCLOUD_WORKER_REPLICAS", True), ("_X1", True),
                                       ("QFC_X\nPOSTGRES_PASSWORD", False), ("QFC_X\n", False), ("QFC_X=1", False),
                                       ("1QFC", False), ("QFC X", False), ("QFC-X", False), ("", False), (None, False)])
def test_env_var_names(value, ok):
    if ok:
        assert check_name("env_var", value, ENV_VAR_RE, "a .env variable name") == value
    else:
        with pytest.raises(ValueError, match="env_var must be a .env variable name"):
            check_name("env_var", value, ENV_VAR_RE, "a .env variable name")


@pytest.mark.parametrize("value, ok", [("worker_wrapper", True), ("qgis-1.x", True), ("0w", True),
                                       ("worker\n", False), ("worker=x", False), ("-worker", False),
                                       (".w", False), ("w w", False)])
def test_service_names(value, ok):
    if ok:
        assert check_name("service", value, SERVICE_RE, "a Compose service name") == value
    else:
        with pytest.raises(ValueError, match="service must be a Compose service name"):
            check_name("service", value, SERVICE_RE, "a Compose service name")


def test_core_limit_never_exceeds_the_hard_ceiling():
    assert core_limit(64, 100) == MAX_REPLICAS == 100
