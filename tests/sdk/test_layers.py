"""The direction of imports between packages, checked statically (docs/ARCHITECTURE.md,
"Layers and imports").

Every module in sdk/, training/, export/ and runtime/ is read with `ast` (never imported)
and every `import x` and `from x import y` in it, inside functions and `TYPE_CHECKING`
blocks included, is held to its layer's rule: core (sdk/, sdk/demo/) imports no torch,
training, export or runtime; runtime no torch, training or export; training no runtime or
export; export may import runtime only through the documented seam. Imports built from
strings (importlib) are not seen.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Source folder -> import package, as in pyproject.toml ([tool.setuptools] package-dir).
PACKAGES: dict[str, str] = {
    "sdk": "fusionedge",
    "sdk/demo": "fusionedge.demo",
    "training": "fusionedge.training",
    "export": "fusionedge.export",
    "runtime": "fusionedge.runtime",
}
TOP_FOLDERS = ("sdk", "training", "export", "runtime")

# The CLI layer: these modules reach every package (each inside the function that needs
# it), so they are held to no rule here; tests/sdk/test_imports.py checks they load no torch.
CLI_MODULES = frozenset(
    {"sdk/cli.py", "sdk/commands.py", "sdk/quickstart.py", "sdk/compare.py", "sdk/bench.py"}
)

LAYER_FOLDERS: dict[str, frozenset[str]] = {
    "core": frozenset({"sdk", "sdk/demo"}),
    "runtime": frozenset({"runtime"}),
    "training": frozenset({"training"}),
    "export": frozenset({"export"}),
}

# Layer -> module prefixes it may not import (a prefix covers its submodules).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": ("torch", "fusionedge.training", "fusionedge.export", "fusionedge.runtime"),
    "runtime": ("torch", "fusionedge.training", "fusionedge.export"),
    "training": ("fusionedge.runtime", "fusionedge.export"),
    "export": ("fusionedge.runtime",),
    "cli": (),
}

# Layer -> forbidden prefixes it is allowed anyway, each a documented exception.
ALLOWED: dict[str, tuple[str, ...]] = {
    # export/parity.py and precision.py import runtime inside a function, to measure
    # parity and precision through the runtime a user runs (docs/ARCHITECTURE.md, "Known
    # seams").
    "export": ("fusionedge.runtime",),
}


def layers_of(rel: str) -> list[str]:
    """Every layer that claims the module at `rel` (a path relative to the root)."""
    folder = rel.rpartition("/")[0]
    layers = [name for name, dirs in LAYER_FOLDERS.items() if folder in dirs]
    return ["cli"] if rel in CLI_MODULES else layers


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


def violations(source: str, rel: str) -> list[str]:
    """One line per import in `source` (the module at `rel`) that breaks its layer's rule."""
    layers = layers_of(rel)
    assert len(layers) == 1, f"{rel} is in layers {layers}, not exactly one"
    layer = layers[0]
    rules = [p for p in FORBIDDEN[layer] if p not in ALLOWED.get(layer, ())]
    found = []
    for node in ast.walk(ast.parse(source, filename=rel)):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        names = imported_names(node, rel)
        broken = [p for p in rules if any(n == p or n.startswith(p + ".") for n in names)]
        for prefix in broken:
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
    missing = sorted(CLI_MODULES - set(FILES))
    assert not missing, f"CLI_MODULES names files that do not exist: {missing}"


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


def test_checker_accepts_allowed_imports() -> None:
    assert violations("from fusionedge.runtime.split import PART_KEY\n", "export/x.py") == []
    assert (
        violations("import torch\nfrom fusionedge.spec import ModelSpec\n", "training/x.py") == []
    )
    assert violations("def f():\n    import torch\n", "sdk/cli.py") == []
