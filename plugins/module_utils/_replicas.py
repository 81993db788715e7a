# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The worker count asked for: an integer, or ``auto`` (CPU cores x the guideline, capped), checked against the
hard ceiling and the core-count guard; the count a rollback restores. Pure functions.

``argument_spec()`` pairs with the ``qfieldcloud.ops._replicas`` doc fragment (replicas, auto_max,
max_replicas_per_core, force)."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from re import Pattern

AUTO = "auto"
# The hard ceiling of workers on one host, which force=true cannot pass: each worker is a QFieldCloud process plus
# the QGIS job containers it starts; beyond this a host is a multi-server layout, and Compose itself accepts counts
# up to 2**63-1.
MAX_REPLICAS = 100
# Names that reach .env and the Compose command line: a .env/Compose variable name and a Compose service name.
ENV_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SERVICE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def check_number(name: str, value: Any, low: float, high: float, low_open: bool = False,
                 unit: str = "") -> float:
    """Raise ValueError unless ``value`` is a finite number in [low, high] (``low_open``: strictly above ``low``).

    Booleans are refused; the message names the option, the range and what it got.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("%s must be a number, got %r." % (name, value))
    if not math.isfinite(value):
        raise ValueError("%s must be a finite number, got %s." % (name, value))
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        raise ValueError("%s must be %s %s%s and at most %s%s, got %s."
                         % (name, "greater than" if low_open else "at least", low, unit, high, unit, value))
    return value


def check_name(name: str, value: Any, pattern: Pattern[str], what: str) -> str:
    """Raise ValueError unless ``value`` matches ``pattern`` in full (no newline, no ``=``, no space)."""
    if not isinstance(value, str) or not pattern.match(value) or "\n" in value:
        raise ValueError("%s must be %s (%s), got %r." % (name, what, pattern.pattern, value))
    return value


DEFAULT_MAX_REPLICAS_PER_CORE = 2.5  # the operations guideline: workers per CPU core (the one place it is defined)
DEFAULT_AUTO_MAX = 10
# Beyond this many workers on one host the guideline is a multi-server layout (a warning, not a refusal).
MULTI_SERVER_THRESHOLD = 10


def argument_spec() -> dict[str, dict[str, Any]]:
    """The options documented by the ``qfieldcloud.ops._replicas`` doc fragment."""
    return dict(
        replicas=dict(type="raw", required=True),
        auto_max=dict(type="int", default=DEFAULT_AUTO_MAX),
        max_replicas_per_core=dict(type="float", default=DEFAULT_MAX_REPLICAS_PER_CORE),
        force=dict(type="bool", default=False),
    )


def core_limit(cores: int | None, per_core: float) -> int:
    """The operations guideline as a count: 2 cores x 2.5 = 5 workers, 4 cores = 10."""
    return int(min((cores or 1) * per_core, MAX_REPLICAS))


def resolve(value: Any, cores: int | None, per_core: float, auto_max: int) -> int:
    """``value`` as an int; ``auto`` becomes min(cores x per_core, auto_max), at least 1.

    Raises ValueError with a message fit for the user on anything else (booleans included: YAML's ``yes``).
    """
    if isinstance(value, bool):
        raise ValueError("replicas must be an integer or 'auto', got the boolean %s." % value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == AUTO:
            if auto_max < 1:
                raise ValueError("auto_max must be 1 or more, got %d." % auto_max)
            return max(1, min(core_limit(cores, per_core), auto_max))
        try:
            return int(text)
        except ValueError:
            pass
    raise ValueError("replicas must be an integer or 'auto', got %r." % (value,))


def check_count(replicas: int) -> int:
    """Raise ValueError unless the resolved count is within 0 and the hard ceiling (which force does not lift)."""
    if replicas < 0:
        raise ValueError("replicas must be 0 or more, got %d." % replicas)
    if replicas > MAX_REPLICAS:
        raise ValueError("replicas=%d is above the hard ceiling of %d workers per host, which force=true does not "
                         "lift. Spread the workers over more servers." % (replicas, MAX_REPLICAS))
    return replicas


def guard_problem(replicas: int, cores: int, per_core: float, force: bool) -> str | None:
    """Why the core-count guard refuses ``replicas`` (None when it passes, or when ``force`` lifts it)."""
    limit = core_limit(cores, per_core)
    if replicas > limit and not force:
        return ("replicas=%d exceeds the core-count guard: %d CPU cores x %s workers per core = at most %d workers on "
                "this host. Add cores, spread workers over more servers, or set force=true."
                % (replicas, cores, per_core, limit))
    return None


def rollback_target(previous: int | None, previous_running: int | None) -> int | None:
    """The count to restore when a change must be undone: the previous ``.env`` value; without one (the variable
    was absent or not an integer) the count that was running; None when neither is known."""
    return previous if previous is not None else previous_running
