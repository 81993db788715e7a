"""The molecule scenarios (molecule/*/molecule.yml), run by pytest through pytest-ansible's ``molecule_scenario``
fixture: one test per scenario that git tracks, ``molecule test -s NAME`` in the checkout.

Not in pyproject.toml's testpaths, so a plain ``pytest`` does not run them; ``scripts/test.sh molecule`` (and so
``make test``) runs ``pytest tests/molecule`` once, and its pytest step runs tests/unit and tests/integration only.
``pytest tests/molecule -k fleet`` runs one scenario; ``MOLECULE_OPTS`` adds options to ``molecule test``.

pytest-ansible 26.x marks its molecule support deprecated (it points to ``molecule test --all``); the fixture still
works with molecule 26 and ansible-core 2.19. The deprecation warning is shown, not hidden.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_scenario(molecule_scenario):
    # pytest-ansible gives the scenario's directory relative to the checkout (git ls-files); make it absolute so that
    # pytest may run from anywhere
    molecule_scenario.parent_directory = ROOT / molecule_scenario.parent_directory
    # molecule remembers "prepared" per checkout path and would skip prepare.yml on a second run: reset it first
    subprocess.run([sys.executable, "-m", "molecule", "reset", "-s", molecule_scenario.name],
                   cwd=molecule_scenario.parent_directory, check=True, capture_output=True, text=True)
    proc = molecule_scenario.test()
    assert proc.returncode == 0, "molecule test -s %s failed (output above)" % molecule_scenario.name
