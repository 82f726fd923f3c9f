"""The direction of imports between packages, checked statically (docs/ARCHITECTURE.md,
"Layers and imports").

Every module in sdk/, training/, export/ and runtime/ is read with `ast` (never imported)
and every `import x` and `from x import y` in it, inside functions and `TYPE_CHECKING`
blocks included, is held to its layer's rule: core (sdk/, sdk/demo/) imports no torch,
training, export, runtime or cli; runtime no torch, training or export; training no
runtime or export; export may import runtime only inside the functions SEAMS names; only
the cli (sdk/cli/) imports fusionedge.cli, and it may import everything. Imports built
from strings (importlib) are not seen.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Source folder -> import package, as in pyproject.toml ([tool.setuptools] package-dir).
PACKAGES: dict[str, str] = {
    "sdk": "fusionedge",
    "sdk/cli": "fusionedge.cli",
    "sdk/card": "fusionedge.card",
    "sdk/demo": "fusionedge.demo",
    "training": "fusionedge.training",
    "export": "fusionedge.export",
    "runtime": "fusionedge.runtime",
}
TOP_FOLDERS = ("sdk", "training", "export", "runtime")

LAYER_FOLDERS: dict[str, frozenset[str]] = {
    "core": frozenset({"sdk", "sdk/card", "sdk/demo"}),
    "runtime": frozenset({"runtime"}),
    "training": frozenset({"training"}),
    "export": frozenset({"export"}),
    # The command line reaches every package, each inside the function that needs it;
    # tests/sdk/test_imports.py checks that `fusionedge --help` still loads no torch.
    "cli": frozenset({"sdk/cli"}),
}

# Layer -> module prefixes it may not import (a prefix covers its submodules).
LIBRARY = ("fusionedge.training", "fusionedge.export", "fusionedge.runtime")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": ("torch", *LIBRARY, "fusionedge.cli"),
    "runtime": ("torch", "fusionedge.training", "fusionedge.export", "fusionedge.cli"),
    "training": ("fusionedge.runtime", "fusionedge.export", "fusionedge.cli"),
    "export": ("fusionedge.runtime", "fusionedge.cli"),
    "cli": (),
}

# The documented seam (docs/ARCHITECTURE.md, "Known seams"): (module, function) -> the
# modules that function may import although its layer may not. Export measures parity
# and precision through the runtime a user runs; nowhere else does it import the runtime.
SEAMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("export/parity.py", "check_parity"): ("fusionedge.runtime.predictor",),
    ("export/precision.py", "open_session"): ("fusionedge.runtime.sessions",),
}


def layers_of(rel: str) -> list[str]:
    """Every layer that claims the module at `rel` (a path relative to the root)."""
    folder = rel.rpartition("/")[0]
    return [name for name, dirs in LAYER_FOLDERS.items() if folder in dirs]


def imported_names(node: ast.Import | ast.ImportFrom, rel: str) -> list[str]:
    """The absolute module names a statement in `rel` may import."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    module = node.module or ""
    if node.level:
        parts = PACKAGES[rel.rpartition("/")[0]].split(".")
        base = parts[: len(parts) - (node.level - 1)]
        module = ".".join([*base, *([module] if module else [])])
    # `from fusionedge import runtime` imports fusionedge.runtime: check module.name too.
    return [module, *(f"{module}.{alias.name}" for alias in node.names)]


def imports_by_function(
    node: ast.AST, function: str | None = None
) -> Iterator[tuple[ast.Import | ast.ImportFrom, str | None]]:
    """Every import statement under node, with the innermost function holding it."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, function
        inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else None
        yield from imports_by_function(child, inner or function)


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(source: str, rel: str) -> list[str]:
    """One line per import in `source` (the module at `rel`) that breaks its layer's rule."""
    layers = layers_of(rel)
    assert len(layers) == 1, f"{rel} is in layers {layers}, not exactly one"
    layer = layers[0]
    found = []
    for node, function in imports_by_function(ast.parse(source, filename=rel)):
        seam = SEAMS.get((rel, function or ""), ())
        names = [n for n in imported_names(node, rel) if not under(n, seam)]
        for prefix in FORBIDDEN[layer]:
            if any(under(n, (prefix,)) for n in names):
                text = ast.unparse(node)
                found.append(f"{rel}:{node.lineno}: `{text}`: {layer} may not import {prefix}")
    return sorted(found, key=lambda line: int(line.split(":")[1]))


def python_files() -> list[str]:
    files = (p for top in TOP_FOLDERS for p in (ROOT / top).rglob("*.py"))
    return sorted(p.relative_to(ROOT).as_posix() for p in files)


FILES = python_files()


def test_every_module_is_in_exactly_one_layer() -> None:
    assert len(FILES) > 40, f"too few modules found under {ROOT}: {FILES}"
    unclassified = {rel: layers_of(rel) for rel in FILES if len(layers_of(rel)) != 1}
    assert not unclassified, f"modules in no layer or in several: {unclassified}"
    assert any(layers_of(rel) == ["cli"] for rel in FILES), "no module in the cli layer"


@pytest.mark.parametrize(("rel", "function"), sorted(SEAMS))
def test_each_seam_is_still_used(rel: str, function: str) -> None:
    """A seam whose import has gone is removed from SEAMS, not left open."""
    tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
    used = [
        n
        for node, holder in imports_by_function(tree)
        if holder == function
        for n in imported_names(node, rel)
        if under(n, SEAMS[rel, function])
    ]
    assert used, f"{rel}: {function} no longer imports {SEAMS[rel, function]}"


@pytest.mark.parametrize("rel", FILES)
def test_module_follows_its_layer(rel: str) -> None:
    source = (ROOT / rel).read_text(encoding="utf-8")
    found = "\n".join(violations(source, rel))
    assert not found, f"imports against docs/ARCHITECTURE.md, Layers and imports:\n{found}"


@pytest.mark.parametrize(
    ("rel", "source", "expected"),
    [
        ("runtime/fake.py", "def f():\n    import torch\n", "2: `import torch`: runtime"),
        ("runtime/fake.py", "from ..training import model\n", "fusionedge.training"),
        ("training/fake.py", "if x:\n    from fusionedge import export\n", "2: `from"),
        ("sdk/fake.py", "class A:\n    def f(self):\n        import torch.nn\n", "core"),
        ("sdk/demo/fake.py", "from .. import runtime\n", "core may not import fusionedge"),
    ],
)
def test_checker_reports_a_violation(rel: str, source: str, expected: str) -> None:
    found = violations(source, rel)
    assert len(found) == 1 and expected in found[0], found


def test_seam_holds_only_inside_its_function() -> None:
    inside = "def open_session():\n    from fusionedge.runtime.sessions import open_session\n"
    assert violations(inside, "export/precision.py") == []
    for source, rel in [
        ("from fusionedge.runtime.sessions import open_session\n", "export/precision.py"),
        ("def other():\n    from fusionedge.runtime.sessions import x\n", "export/precision.py"),
        ("def open_session():\n    from fusionedge.runtime.live import P\n", "export/precision.py"),
        ("def open_session():\n    from fusionedge.runtime.sessions import x\n", "export/run.py"),
        ("def open_session():\n    from fusionedge import runtime\n", "export/precision.py"),
    ]:
        assert len(violations(source, rel)) == 1, (source, rel)


def test_only_the_cli_may_import_the_cli() -> None:
    assert violations("from fusionedge.cli import main\n", "runtime/x.py")
    assert violations("def f():\n    from fusionedge.cli.commands import x\n", "sdk/x.py")


def test_checker_accepts_allowed_imports() -> None:
    assert (
        violations("import torch\nfrom fusionedge.spec import ModelSpec\n", "training/x.py") == []
    )
    assert violations("def f():\n    import torch\n", "sdk/cli/commands.py") == []
