"""The command-line programs the roles install on the hosts (the cron collector, the scheduled cleanup): load one as
a module, and the closure of the collection's module_utils it imports (what its role must copy beside it)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_UTILS = ROOT / "plugins" / "module_utils"
PACKAGE = "ansible_collections.qfieldcloud.ops.plugins.module_utils"


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def imported_module_utils(path):
    """The collection's module_utils a file imports (``from PACKAGE import a, b`` or ``from PACKAGE.a import x``)."""
    names = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == PACKAGE:
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE + "."):
            names.add(node.module.rsplit(".", 1)[1])
    return names


def module_utils_closure(path):
    """Every module_util ``path`` needs: its imports, theirs, and so on."""
    needed, todo = set(), imported_module_utils(path)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo |= imported_module_utils(MODULE_UTILS / (name + ".py"))
    return needed
