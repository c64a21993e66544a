"""Every test helper is defined once: plain functions and classes in tests/factories.py,
fixtures in tests/conftest.py. Two modules under tests/ may not define a top-level function or
class of the same name (tests, ``Test*`` classes and pytest hooks aside), nor two helpers with
the same body under different names, unless :data:`ALLOWED` says why."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent

#: Names several modules define on purpose, with the reason.
ALLOWED = {
    "card": "a module's model card: conftest's tiny UNet, overridden where a module needs "
    "another network (test_cuda: 3 levels on 32³ tiles; test_pipeline: the phantom's classes)",
    "model": "the network of the module's card (conftest's); test_cuda makes a fresh one per "
    "test, since its runs move the model between devices",
    "case": "each module's own case: CT and labels files for the report (test_report), the "
    "model and phantom volumes in memory (test_worst_case)",
    "models": "two tiny models (seeds 0 and 1) saved under the names each module's report "
    "shows (tiny/tiny2 in test_report, m0/m1 in test_report_transfer)",
    "_case": "not the same case: test_report's has air slices and returns (ct, labels); "
    "test_report_transfer's has none and returns (name, ct, labels or None)",
    "_job": "a toy generator in test_relay, a TrainJob in test_train_widget",
}

#: Least statements a helper needs (docstring aside) for its body to count as a copy.
MIN_STATEMENTS = 3


def _is_test(name: str) -> bool:
    return name.startswith(("test_", "Test", "pytest_"))


def _top_level_definitions() -> list[tuple[str, str, ast.AST]]:
    """``(module, name, node)`` of every top-level function and class under tests/."""
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        module = path.relative_to(TESTS).as_posix()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
            if isinstance(node, kinds) and not _is_test(node.name):
                found.append((module, node.name, node))
    return found


def _body(node: ast.AST) -> ast.Module | None:
    """A function's body without its docstring, when long enough to count as a copy."""
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    module = ast.Module(body=body, type_ignores=[])
    statements = sum(isinstance(n, ast.stmt) for n in ast.walk(module))
    return module if statements >= MIN_STATEMENTS else None


def test_no_helper_name_is_defined_in_two_modules():
    where = defaultdict(list)
    for module, name, _ in _top_level_definitions():
        where[name].append(module)
    repeated = {n: m for n, m in where.items() if len(m) > 1 and n not in ALLOWED}
    assert not repeated, (
        "helpers defined in more than one module (put one in tests/factories.py or a fixture "
        f"in tests/conftest.py, or allow it in ALLOWED with the reason): {repeated}"
    )


def test_no_helper_body_is_copied_under_another_name():
    where = defaultdict(list)
    for module, name, node in _top_level_definitions():
        body = _body(node)
        if body is not None:
            where[ast.dump(body)].append(f"{module}:{name}")
    copies = [places for places in where.values() if len(places) > 1]
    assert not copies, f"the same helper body in several places (share one): {copies}"


def test_the_allowed_names_are_still_repeated():
    """An allowance that no longer applies is removed."""
    where = defaultdict(set)
    for module, name, _ in _top_level_definitions():
        where[name].add(module)
    stale = sorted(name for name in ALLOWED if len(where[name]) < 2)
    assert not stale, f"ALLOWED names defined in one module only: {stale}"
