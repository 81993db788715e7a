"""replicas: an integer or `auto` (cores x guideline, capped)."""

from __future__ import annotations

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils._replicas import core_limit, resolve


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
