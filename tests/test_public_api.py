"""The public surface: a literal `__all__`, every name importable, and four lists that agree (the
`__all__`, the table of where lazy names live, the imports for type checkers, the docs' list)."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["qm_xarray", "qm_xarray.lazy"]


def _source(package: str) -> ast.Module:
    return ast.parse((ROOT / package.replace(".", "/") / "__init__.py").read_text())


def _literal_all(tree: ast.Module) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            assert isinstance(node.value, ast.List), "__all__ must be a literal list"
            assert all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.value.elts)
            return [e.value for e in node.value.elts]  # type: ignore[attr-defined]
    raise AssertionError("no __all__")


def _type_checking_reexports(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                for alias in imp.names:
                    assert alias.asname == alias.name, f"{alias.name}: re-export it as itself"
                    names.add(alias.name)
    return names


def _eager(tree: ast.Module) -> set[str]:
    return {alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
            and node.module in ("errors", "_version") for alias in node.names}


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_literal_and_agrees_with_the_lazy_table_and_the_type_checking_imports(package):
    module = importlib.import_module(package)
    tree = _source(package)
    names = _literal_all(tree)
    assert len(names) == len(set(names))
    lazy = set(module._WHERE)
    assert set(names) == lazy | _eager(tree)
    assert _type_checking_reexports(tree) == lazy
    for name in names:
        assert getattr(module, name) is not None, name


def test_every_public_exception_is_exported():
    import qm_xarray as qx
    from qm_xarray import errors

    assert set(errors.__all__) <= set(qx.__all__)
    for name in ("AuthenticationError", "ServerUnavailableError", "ServerUnreachableError",
                 "ClusterNotFoundError"):
        assert issubclass(getattr(qx, name), qx.QMConnectionError), name


def test_the_docs_list_the_same_names():
    import qm_xarray as qx

    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text[text.index("| where | public names of `qm_xarray` |"):]
    rows = [line for line in section.splitlines()[2:] if line.startswith("|")]
    listed = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[2])}
    assert listed == set(qx.__all__)


def test_no_public_name_is_shadowed_by_a_submodule_of_the_same_name() -> None:
    """Importing a submodule binds it on its package: a public function named like its module
    (`lazy.snapshot`) would then be the module. Checked with every submodule imported, in a fresh
    interpreter (the order of imports in this one is the test run's)."""
    code = (
        "import importlib, pkgutil, types, qm_xarray\n"
        "for m in pkgutil.walk_packages(qm_xarray.__path__, 'qm_xarray.'):\n"
        "    if not m.name.startswith(('qm_xarray.wire.pb', 'qm_xarray.testing')) and m.name != 'qm_xarray.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "bad = []\n"
        "for pkg in [qm_xarray] + [importlib.import_module(m.name) for m in pkgutil.walk_packages(qm_xarray.__path__, 'qm_xarray.') if m.ispkg and not m.name.startswith('qm_xarray.wire')]:\n"
        "    for name in getattr(pkg, '__all__', []):\n"
        "        if isinstance(getattr(pkg, name), types.ModuleType):\n"
        "            bad.append(f'{pkg.__name__}.{name}')\n"
        "print(bad)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
