"""The README's "What bad input gets" table is held to tests/reliability/: every row
names a test that exists there, and every test module there has a row, so the table can
neither promise a case nobody checks nor leave a checked one unmentioned."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def readme_rows() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## What bad input gets", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    }


def test_every_row_names_a_test_that_exists() -> None:
    rows = readme_rows()[1:]  # the header row names no test
    assert len(rows) >= 20, rows
    named = 0
    for row in rows:
        for module, function in re.findall(r"`(test_\w+\.py)::(test_\w+)`", row):
            assert function in defined_tests(HERE / module), f"README names {module}::{function}"
            named += 1
    assert named >= len(rows) - 1  # the soak row names its module in tests/live


def test_every_reliability_module_has_a_row() -> None:
    table = "\n".join(readme_rows())
    modules = {p.name for p in HERE.glob("test_*.py")} - {Path(__file__).name}
    missing = sorted(m for m in modules if f"`{m}::" not in table)
    assert not missing, f"tests/reliability modules without a README row: {missing}"


def test_the_matrix_holds_sixty_cases_or_more() -> None:
    count = sum(len(defined_tests(p)) for p in HERE.glob("test_*.py"))
    assert count >= 60, count
