"""Imports point down only (docs/architecture.md): every ``import hiergym.X`` in the package, at module level or
inside a function, goes to a layer below the importing module's, or to its own part of its own layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Source folder -> the package it installs as (pyproject.toml's package-dir).
FOLDERS = {"hiergym": "hiergym", "envs": "hiergym.envs", "agents": "hiergym.agents",
           "training": "hiergym.training", "benchmarks": "hiergym.benchmarks"}

#: (layer, part, module prefixes), lowest first; the longest matching prefix names a module's layer. Modules of
#: one layer may import each other only within the same part (training and evaluation do not know each other).
LAYERS = [
    (0, "records", ("hiergym.version", "hiergym.records", "hiergym.stats")),
    (1, "envs", ("hiergym.envs", "hiergym.registration")),
    (2, "agents", ("hiergym.agents",)),
    (3, "driver", ("hiergym.driver", "hiergym.multiagent_driver")),
    (4, "training", ("hiergym.training",)),
    (4, "evaluation", ("hiergym.benchmarks.harness", "hiergym.benchmarks.summary")),
    # The command line, the benchmark scripts and the integrations use everything.
    (5, "top", ("hiergym.cli", "hiergym.__main__", "hiergym.training.cli", "hiergym.benchmarks",
                "hiergym.integrations")),
]


def layer_of(module: str) -> tuple[int, str] | None:
    best = None
    for level, part, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), level, part)
    return None if best is None else (best[1], best[2])


def package_modules() -> dict[str, Path]:
    modules = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            relative = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name == "hiergym" or name.startswith("hiergym.")]


def upward_imports() -> list[str]:
    problems = []
    for module, path in sorted(package_modules().items()):
        if module == "hiergym":  # the package's __init__: registration and lazy re-exports only
            continue
        own = layer_of(module)
        assert own is not None, f"{module} belongs to no layer: add it to LAYERS (and docs/architecture.md)"
        for line, target in imported_modules(path):
            if target == "hiergym":
                continue
            theirs = layer_of(target)
            assert theirs is not None, f"{path}:{line} imports {target}, which belongs to no layer"
            if theirs[0] > own[0] or (theirs[0] == own[0] and theirs[1] != own[1]):
                problems.append(f"{path.relative_to(ROOT)}:{line}: {module} ({own[1]}) imports {target} "
                                f"({theirs[1]})")
    return problems


def test_imports_point_down() -> None:
    problems = upward_imports()
    assert not problems, "upward imports:\n" + "\n".join(problems)


@pytest.mark.parametrize(("module", "expected"), [
    ("hiergym.envs.vector", (1, "envs")), ("hiergym.training.trainer", (4, "training")),
    ("hiergym.benchmarks.harness", (4, "evaluation")), ("hiergym.benchmarks.learning", (5, "top")),
    ("hiergym.training.cli", (5, "top")), ("hiergym.records", (0, "records")),
])
def test_layer_map(module: str, expected: tuple[int, str]) -> None:
    assert layer_of(module) == expected


def test_the_checker_sees_an_upward_import(tmp_path) -> None:
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from hiergym.training.trainer import Trainer\n")
    assert imported_modules(source) == [(2, "hiergym.training.trainer")]
