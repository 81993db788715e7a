"""Stand-in for the get-pip bootstrap that ansible-test downloads from a host this machine cannot reach.

ansible-test runs it inside each fresh, pip-less sanity venv with pip-install arguments (for example ``pip==24.2``).
The base interpreter's own pip installs them into this venv (``pip --python``), from the configured package index.
"""

import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}  # options of get-pip.py itself, not of pip install

args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
base = getattr(sys, "_base_executable", None) or sys.executable
subprocess.check_call([base, "-m", "pip", "--python", sys.executable, "install", "--disable-pip-version-check"] + args)
