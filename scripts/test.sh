#!/usr/bin/env bash
# Runs every check, cheapest first; pytest (unit + integration on the real engine) runs last so that its summary
# line closes the output. `scripts/test.sh STEP...` runs only the named steps.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=${QFC_VENV:-$ROOT/.venv}
export PATH="$VENV/bin:$PATH"
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(ruff changelog mypy lint sanity molecule pytest)
banner() { printf '\n===== %s =====\n' "$*"; }
for step in "${steps[@]}"; do
  case "$step" in
    ruff) banner "ruff"; ruff check plugins tests bench scripts ;;
    changelog) banner "antsibull-changelog lint"; antsibull-changelog lint; antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml ;;
    # type hints of plugins/module_utils and plugin_utils (.mypy.ini says what is checked and why)
    mypy) banner "mypy"; mypy ;;
    lint) banner "ansible-lint (production profile)"; ansible-lint --profile production --strict ;;
    sanity) banner "ansible-test sanity"; bash scripts/sanity.sh ;;
    # every scenario git tracks (molecule/*/molecule.yml), once, through pytest-ansible's molecule_scenario fixture:
    # tests/molecule/test_molecule.py resets each scenario, then runs `molecule test -s NAME`; -s streams its output.
    # The pytest step below does not run them (tests/molecule is not in pyproject.toml's testpaths).
    molecule) banner "molecule test (every scenario, through pytest)"; python -m pytest -s tests/molecule ;;
    pytest) banner "pytest: unit and integration"; python -m pytest --durations=30 tests/unit tests/integration ;;
    # the inner loop: every unit test (37 s on the 2-core machine, 10 s of it CPU); not in the default steps, since
    # pytest above runs them too
    unit) banner "pytest: unit"; python -m pytest -q tests/unit ;;
    *) echo "unknown step: $step" >&2; exit 2 ;;
  esac
done
