"""The OpenAPI schema: what it declares (multipart bodies, error answers, /metrics as text, 405 for other methods)
and `schemathesis run --checks all` against a live server with API keys: no server error, no answer the schema
does not describe. The CI run is bounded (examples per operation, a fixed seed); `docs/api.md` gives the command
for a longer run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app import create_app
from asr.engine import Engine
from conftest import Server, TinyModels, missing_tool, start_server, stop_server

HERE = Path(__file__).resolve().parent
KEY = "schema-key"


def schemathesis_command() -> list[str] | None:
    binary = Path(sys.executable).with_name("schemathesis")
    found = str(binary) if binary.exists() else shutil.which("schemathesis")
    return [found] if found else None


def test_the_schema_declares_bodies_errors_and_text(tiny_settings, engine: Engine) -> None:
    client = TestClient(create_app(tiny_settings, engine, load=False))
    paths = client.get("/openapi.json").json()["paths"]
    for route, required in (("/v1/audio/transcriptions", ["file"]), ("/v1/jobs", None)):
        body = paths[route]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert body["properties"]["file"] and body.get("required") == required
        assert {"400", "401", "413", "503"} <= set(paths[route]["post"]["responses"])
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert "404" in paths["/v1/jobs/{job_id}"]["get"]["responses"]
    for method, path in (
        ("PUT", "/v1/models"),
        ("GET", "/v1/audio/transcriptions"),
        ("QUERY", "/v1/jobs"),
        ("POST", "/health"),
        ("PATCH", "/v1/jobs/abc"),
        ("TRACE", "/metrics"),
    ):
        response = client.request(method, path)
        assert response.status_code == 405, (method, path, response.text)
        assert response.headers["allow"] and response.json()["error"]["code"] == "method_not_allowed"
    assert client.get("/v1/models").status_code == 200


@pytest.fixture(scope="module")
def keyed(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tiny_models, tmp_path_factory.mktemp("openapi"), API_KEYS=KEY)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.mark.server
def test_schemathesis_finds_no_server_error_and_no_schema_violation(keyed: Server, tmp_path: Path) -> None:
    command = schemathesis_command()
    if command is None:
        pytest.skip(missing_tool("schemathesis", "pip install -r requirements.txt"))
    run = subprocess.run(
        [
            *command,
            "--config-file",
            str(HERE / "schemathesis.toml"),
            "run",
            f"{keyed.url}/openapi.json",
            "--checks",
            "all",
            "-H",
            f"Authorization: Bearer {KEY}",
            "--max-examples",
            "15",
            "--seed",
            "20261202",
            "--workers",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert " passed" in output and "failed" not in output.split("SUMMARY")[-1], output[-3000:]
    log = keyed.log_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
