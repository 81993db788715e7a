# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The worker count asked for: an integer, or ``auto`` (CPU cores x the guideline, capped). Pure functions."""

from __future__ import annotations

AUTO = "auto"


def core_limit(cores, per_core):
    """The operations guideline as a count: 2 cores x 2.5 = 5 workers, 4 cores = 10."""
    return int((cores or 1) * per_core)


def resolve(value, cores, per_core, auto_max):
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
