"""The layering contract of docs/design.md ("Layers"), enforced: only rollout/adapters/ may import
azure.* or requests; the decider and the analysis import nothing that does I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2] / "rollout"
DOMAIN = sorted(p for p in ROOT.glob("*.py") if p.name != "bootstrap.py")
IO_MODULES = {"azure", "requests", "socket", "urllib", "http", "subprocess", "os", "time"}
PURE = {
    "machine.py",
    "admission.py",
    "preflight.py",
    "whatif.py",
    "analysis.py",
    "judge.py",
    "model.py",
    "policy.py",
    "releases.py",
    "views.py",
    "access.py",
    "waves.py",
    "targets_doc.py",
    "notifications.py",
    "logcontext.py",
}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", DOMAIN, ids=lambda p: p.name)
def test_domain_modules_do_not_import_azure_or_requests(path: Path) -> None:
    assert not imported_roots(path) & {"azure", "requests"}


@pytest.mark.parametrize("path", [p for p in DOMAIN if p.name in PURE], ids=lambda p: p.name)
def test_pure_modules_import_nothing_that_does_io(path: Path) -> None:
    assert not imported_roots(path) & IO_MODULES


def test_bootstrap_reaches_azure_only_through_adapters() -> None:
    assert not imported_roots(ROOT / "bootstrap.py") & {"azure", "requests"}


def test_the_contract_sees_the_modules_it_guards() -> None:
    assert {"machine.py", "service.py", "analysis.py"} <= {p.name for p in DOMAIN}


# Code that runs the product (not tests): the app, the twin, the benchmarks, the tools.
PRODUCT_CODE = [
    ROOT.parent / "function_app.py",
    *sorted(ROOT.rglob("*.py")),
    *sorted((ROOT.parent / "emulator").rglob("*.py")),
    *sorted((ROOT.parent / "bench").rglob("*.py")),
    *sorted((ROOT.parent / "tools").rglob("*.py")),
]


def test_only_the_composition_root_wires_the_service_and_declares_the_clock() -> None:
    """The app and the benchmarks get their service from rollout.bootstrap, never wired by hand."""
    wired, clocks = [], []
    for path in PRODUCT_CODE:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "RolloutService":
                wired.append(path.relative_to(ROOT.parent).as_posix())
            # A clock for the product (the emulator may keep its own time for the fleet it simulates).
            in_emulator = "emulator" in path.relative_to(ROOT.parent).parts
            if isinstance(node, ast.FunctionDef) and node.name == "now" and path.name != "ports.py" and not in_emulator:
                clocks.append(path.relative_to(ROOT.parent).as_posix())
    assert set(wired) == {"rollout/bootstrap.py"}  # one service per target: build_service, build_target_service
    assert clocks == ["rollout/bootstrap.py"]


def test_mypy_strict_covers_the_product_and_its_triggers() -> None:
    """function_app.py is product code: its handlers are type-checked like rollout/ (pyproject.toml)."""
    import tomllib

    config = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True
    assert {"rollout", "function_app.py"} <= set(config["files"])
