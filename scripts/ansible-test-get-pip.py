"""Stand-in for the get-pip bootstrap that ansible-test downloads from a host this machine cannot reach.

ansible-test runs it inside each fresh sanity venv with pip-install arguments (for example ``pip==24.2``). It installs
pip from the interpreter's bundled ``ensurepip``, then the requested packages from the package index pip is set up for.
"""

import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}  # options of get-pip.py itself, not of pip install

args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check"] + args)
