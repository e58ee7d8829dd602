"""Architecture rules from DESIGN.md, checked on the source tree itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# protocol/ is sans-IO: no event loop, sockets, files, clocks, threads or logging
# (and so none of the trio shells in shell/).
FORBIDDEN_IN_PROTOCOL = {
    "trio",
    "asyncio",
    "socket",
    "threading",
    "logging",
    "time",
    "os",
    "random",
    "node",
    "coordinator",
    "cluster",
    "pathlib",
    "subprocess",
    "shell",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            names.update(a.name.split(".")[0] for a in n.names)
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            names.add(n.module.split(".")[0])
    return names


def _py_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _py_files("protocol"), ids=lambda p: str(p.relative_to(ROOT)))
def test_protocol_is_sans_io(path: Path) -> None:
    bad = _imports(path) & FORBIDDEN_IN_PROTOCOL
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize(("package", "other"), [("node", "coordinator"), ("coordinator", "node")])
def test_node_and_coordinator_never_import_each_other(package: str, other: str) -> None:
    for path in _py_files(package):
        assert other not in _imports(path), f"{path.relative_to(ROOT)} imports {other}"


# shell/ holds trio shells both sides share: it may import protocol, never a side.
FORBIDDEN_IN_SHELL = {"node", "coordinator", "cluster"}


@pytest.mark.parametrize("path", _py_files("shell"), ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_imports_neither_side(path: Path) -> None:
    bad = _imports(path) & FORBIDDEN_IN_SHELL
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize(
    "path",
    [p for pkg in ("protocol", "shell", "node", "coordinator", "cluster") for p in _py_files(pkg)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_module_has_a_header_and_stays_small(path: Path) -> None:
    text = path.read_text()
    tree = ast.parse(text)
    assert ast.get_docstring(tree), f"{path.relative_to(ROOT)} has no header docstring"
    assert text.count("\n") <= 700, f"{path.relative_to(ROOT)} is over 700 lines"
