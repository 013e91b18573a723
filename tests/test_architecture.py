"""The import graph of docs/architecture.md: each package imports only the packages below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

#: Each package (or top-level module) and what it may import of the project, lowest first.
MAY_IMPORT: dict[str, set[str]] = {
    "messages": set(),
    "service_log": set(),
    "testmodels": set(),
    "asr": {"messages"},
    "config": {"asr"},
    "results": {"config", "messages"},
    "verification": {"messages"},
    "hotword_lists": {"asr", "messages", "results"},
    "jobs": {"asr", "config", "messages", "results", "verification"},
    "api": {"asr", "config", "messages", "jobs", "results", "verification", "hotword_lists"},
    "webui": {"asr", "config", "messages", "jobs", "results", "verification", "hotword_lists"},
    "app": {
        "asr",
        "config",
        "messages",
        "jobs",
        "results",
        "verification",
        "hotword_lists",
        "api",
        "webui",
        "service_log",
    },
    # Beside the service: they talk to it through run.sh, /health and files, and read the same settings.
    "ops": {"asr", "config", "messages", "jobs", "service_log"},
    "bench": {"asr", "config", "messages", "testmodels", "jobs", "results", "verification", "webui"},
}
#: What the engine must never import: the service's settings, HTTP, the UI and storage.
NOT_IN_THE_ENGINE = {
    "config",
    "gradio",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "sqlite3",
    "redis",
    "huey",
    "pydantic_settings",
    "multipart",
}


def imports_of(package: str) -> dict[str, set[str]]:
    """{top-level name imported: the files importing it} for a package folder or a top-level module."""
    folder = ROOT / package
    files = sorted(folder.rglob("*.py")) if folder.is_dir() else [ROOT / f"{package}.py"]
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_each_package_imports_only_those_below_it(package: str) -> None:
    project = set(MAY_IMPORT)
    wrong = {
        name: files
        for name, files in imports_of(package).items()
        if name in project and name != package and name not in MAY_IMPORT[package]
    }
    assert not wrong, f"{package} may import {sorted(MAY_IMPORT[package])}, but: {wrong}"


def test_the_engine_imports_nothing_of_the_service() -> None:
    wrong = {name: files for name, files in imports_of("asr").items() if name in NOT_IN_THE_ENGINE}
    assert not wrong, wrong


def test_every_package_is_in_the_graph() -> None:
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()} - {"tests"}
    assert packages <= set(MAY_IMPORT), f"add {sorted(packages - set(MAY_IMPORT))} to MAY_IMPORT and the docs"


def test_the_check_sees_a_violation(tmp_path: Path, monkeypatch) -> None:
    # The checker itself: a file importing upwards is found (so a green run means something).
    (tmp_path / "asr").mkdir()
    (tmp_path / "asr" / "x.py").write_text("from config.settings import Settings\nimport gradio as gr\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    found = imports_of("asr")
    assert "config" in found and "gradio" in found
