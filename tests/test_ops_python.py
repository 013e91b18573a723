"""The ops Python that run.sh leans on: the one settings reader (ops/settings.py), the nginx rendering
(ops/nginx.py, against what the bash run.sh rendered: tests/data/ops), the GPU check (ops/cuda.py), the /health
summary (ops/health.py) and the development requirements (ops/requirements.py, `run.sh test`, `run.sh lint`).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ops import cuda, health, requirements
from ops.settings import OpsSettings, SettingsError, file_environment, load_settings
from test_ops import ROOT, fake_nvidia_smi, fake_torch, ops_env, run_sh

pytestmark = pytest.mark.ops
ORACLE = ROOT / "tests" / "data" / "ops"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No setting in the environment (a developer's shell may carry some); ENV_FILE points at tmp/test.env."""
    for key in list(os.environ):
        if key.lower() in OpsSettings.model_fields or key in ("ENV_FILE", "REPLICAS"):
            monkeypatch.delenv(key)
    env_file = tmp_path / "test.env"
    monkeypatch.setenv("ENV_FILE", str(env_file))
    return env_file


# --- one reader of .env ---------------------------------------------------------------------------------------


def test_env_file_quotes_comments_export_and_the_last_line(clean_env: Path) -> None:
    clean_env.write_text(
        "# a comment line\n"
        "\n"
        "export HOST='127.0.0.1'  \n"
        "PORT=7001  # an inline comment\n"
        'SMTP_TO="a@example.com, b@example.com" # after quotes\n'
        "GPU_ALERT_THRESHOLD=95%\n"
        "NGINX_UPSTREAMS=a#b\n"  # no space before #: part of the value
        "STOP_TIMEOUT=5\n"
        "STOP_TIMEOUT=7\n"  # a key set twice: the last line wins (append to .env to override)
        "START_TIMEOUT=\n"  # empty: the default
        "LOG_DIR=var/logs\n"  # relative: inside the project
        "PID_FILE=run/app.pid\n",
        encoding="utf-8",
    )
    s = load_settings()
    assert (s.host, s.port, s.check_host) == ("127.0.0.1", 7001, "127.0.0.1")
    assert s.smtp_to == "a@example.com, b@example.com" and s.gpu_alert_threshold == "95%"
    assert s.nginx_upstreams == "a#b"
    assert (s.stop_timeout, s.start_timeout) == (7, 180)
    assert s.log_dir == ROOT / "var" / "logs" and s.base_pid_file == ROOT / "run" / "app.pid"


def test_the_environment_wins_over_the_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env.write_text("PORT=7001\nWATCHDOG_FAILURES=5\nLOG_DIR=/srv/from-file\n", encoding="utf-8")
    monkeypatch.setenv("PORT", "7100")
    s = load_settings()
    assert (s.port, s.watchdog_failures, s.log_dir) == (7100, 5, Path("/srv/from-file"))
    assert s.base_pid_file == Path("/srv/from-file/app.pid")
    assert "PORT" not in file_environment(clean_env), "the app gets the environment's PORT, not the file's"
    assert load_settings(replicas=3).replicas == 3, "an override (run.sh --replicas) wins over both"


def test_defaults_without_a_file_and_dotenv_example_is_the_defaults(clean_env: Path, monkeypatch) -> None:
    s = load_settings()  # ENV_FILE names a file that does not exist
    assert (s.host, s.port, s.replicas, s.log_dir, s.base_pid_file) == (
        "0.0.0.0",
        7860,
        1,
        ROOT / "logs",
        ROOT / "logs" / "app.pid",
    )
    assert (s.check_host, s.start_timeout, s.stop_timeout, s.rolling_pause_s) == ("127.0.0.1", 180, 20, 10)
    assert s.job_retention_h == 24.0 and s.smtp_security == "auto" and s.smtp_password is None
    monkeypatch.setenv("ENV_FILE", ".env.example")  # relative: to the project folder
    assert load_settings() == s


def test_every_operations_setting_is_in_dotenv_example_with_its_default() -> None:
    documented = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            documented[key] = value
    defaults = OpsSettings(_env_file=None)
    for name in OpsSettings.model_fields:
        assert name.upper() in documented, f"{name.upper()} missing from .env.example"
        value = getattr(defaults, name)
        if value is None:
            assert documented[name.upper()] == ""
        elif isinstance(value, Path):
            assert ROOT / documented[name.upper()] == value
        elif isinstance(value, bool):
            assert documented[name.upper()] == str(value).lower()
        elif not hasattr(value, "get_secret_value"):
            assert type(value)(documented[name.upper()]) == value, name


def test_a_bad_value_names_the_key_and_where_it_came_from(clean_env: Path, monkeypatch, capsys) -> None:
    clean_env.write_text("STOP_TIMEOUT=soon\nSMTP_SECURITY=TLS-please\n", encoding="utf-8")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"STOP_TIMEOUT (from {clean_env}): Input should be a valid integer" in message and "'soon'" in message
    assert "SMTP_SECURITY" in message and "'auto', 'starttls', 'ssl' or 'none'" in message
    monkeypatch.setenv("PORT", "0")
    with pytest.raises(SettingsError, match=r"PORT \(from the environment\): Input should be greater than or equal"):
        load_settings()
    # stop and status must work whatever .env holds: a warning, and the default
    s = load_settings(lenient=True)
    assert (s.stop_timeout, s.smtp_security, s.port) == (20, "auto", 7860)
    assert "warning: STOP_TIMEOUT" in capsys.readouterr().err


def test_shell_assignments_survive_eval_and_execute_nothing(tmp_path: Path) -> None:
    tricky = 'it\'s a "quoted" `id` $(touch pwned); rm -rf / \\ end'
    quoted = '"' + tricky.replace("\\", "\\\\").replace('"', '\\"') + '"'  # a double-quoted .env value
    env_file = tmp_path / "test.env"
    env_file.write_text(
        f"WATCHDOG_RESTART_CMD=$(touch {tmp_path}/pwned)\nHOST=127.0.0.1\nLOG_DIR={tmp_path}/logs\n"
        f"MY_TOOL_FLAG={quoted}\nAPI_KEYS=sk-secret\nREPLICA_GPUS=0, 1\nREPLICAS=2\n",
        encoding="utf-8",
    )
    env = ops_env(tmp_path, ENV_FILE=str(env_file))
    env.pop("LOG_DIR")
    script = (
        'eval "$(.venv/bin/python -m ops.settings --shell)" || exit 9\n'
        'printf "%s\\n" "$HOST" "$LOG_DIR" "$ACCESS_PROTECTED" "${GPUS[*]}" "${#APP_ENV[@]}"\n'
        'printf "%s\\n" "${APP_ENV[@]}"\n'
    )
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:5] == ["127.0.0.1", f"{tmp_path}/logs", "1", "0 1", "7"]
    assert f"WATCHDOG_RESTART_CMD=$(touch {tmp_path}/pwned)" in lines
    assert f"MY_TOOL_FLAG={tricky}" in lines, "a key that is not a setting still reaches the app's environment"
    assert not (tmp_path / "pwned").exists() and not (ROOT / "pwned").exists()
    assert "sk-secret" not in "\n".join(lines[:5]), "only whether access is protected, not the key"


# --- nginx-config against the bash run.sh's output (tests/data/ops/README.md) ---------------------------------

NGINX_CASES = {
    "three": (
        {"HOST": "10.1.2.3", "PORT": "8000", "REPLICAS": "3", "MAX_UPLOAD_MB": "0.5", "NGINX_LISTEN": "8443"},
        [],
    ),
    "upstreams": (
        {"MAX_UPLOAD_MB": "50.5"},
        ["--upstreams", "a.example:7860, [::1]:7861", "--listen", "127.0.0.1:8080"],
    ),
    "v6host": ({"HOST": "::", "PORT": "9000", "MAX_UPLOAD_MB": "1024", "NGINX_UPSTREAMS": ""}, []),
    "envupstreams": ({"NGINX_UPSTREAMS": "10.0.0.5:7860,10.0.0.6:7860", "NGINX_LISTEN": "127.0.0.1:81"}, []),
}


@pytest.mark.parametrize("case", NGINX_CASES)
def test_nginx_config_is_what_the_bash_run_sh_wrote(case: str, tmp_path: Path) -> None:
    extra, args = NGINX_CASES[case]
    result = run_sh("nginx-config", *args, env=ops_env(tmp_path, **extra))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ORACLE / f"nginx-{case}.conf").read_text(encoding="utf-8")


def test_nginx_config_standalone_and_output_file_are_what_the_bash_run_sh_wrote(tmp_path: Path) -> None:
    env = ops_env(tmp_path, NGINX_UPSTREAMS="10.0.0.5:7860, 10.0.0.6:7860", MAX_UPLOAD_MB="50.5")
    folder = tmp_path / "ngx"
    result = run_sh("nginx-config", "--standalone", str(folder), "--listen", "127.0.0.1:8080", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"wrote {folder}/nginx.conf and {folder}/paraformer-webui.conf; run nginx with:\n"
        f"  nginx -p {folder} -c {folder}/nginx.conf -g 'daemon off; pid {folder}/nginx.pid;'\n"
    )
    assert (folder / "paraformer-webui.conf").read_text() == (ORACLE / "nginx-standalone-site.conf").read_text()
    user = f"user {os.popen('id -un').read().strip()} {os.popen('id -gn').read().strip()};" if os.geteuid() == 0 else ""
    main = (ORACLE / "nginx-standalone-main.conf").read_text().replace("{{DIR}}", str(folder))
    assert (folder / "nginx.conf").read_text() == main.replace("{{USER}}", user)
    assert (folder / "tmp").is_dir()

    out = tmp_path / "site.conf"
    written = run_sh("nginx-config", "-o", str(out), env=ops_env(tmp_path, **NGINX_CASES["three"][0]))
    assert written.returncode == 0 and written.stderr == f"wrote {out}\n" and written.stdout == ""
    assert out.read_text() == (ORACLE / "nginx-three.conf").read_text()


def test_nginx_config_refuses_bad_input_clearly(tmp_path: Path) -> None:
    bad = run_sh("nginx-config", env=ops_env(tmp_path, NGINX_UPSTREAMS="10.0.0.5:7860,no-port"))
    assert bad.returncode == 1 and bad.stderr == "error: not HOST:PORT: 'no-port'\n"
    size = run_sh("nginx-config", env=ops_env(tmp_path, MAX_UPLOAD_MB="lots"))
    assert size.returncode == 1 and "MAX_UPLOAD_MB (from the environment)" in size.stderr and "'lots'" in size.stderr
    option = run_sh("nginx-config", "--frob", env=ops_env(tmp_path))
    assert option.returncode == 2 and "unrecognized arguments: --frob" in option.stderr


# --- check-gpu ------------------------------------------------------------------------------------------------

GPU_LINE = "NVIDIA GPU: NVIDIA GeForce RTX 3060; the driver runs CUDA {}"


def _check_gpu(tmp: Path, driver: str = "12.4", torch: str | None = "2.13.0+cpu", **extra: str) -> tuple[int, str]:
    torch_env = fake_torch(tmp, torch)
    env = ops_env(
        tmp,
        PATH=fake_nvidia_smi(tmp, driver),
        PYTHONPATH=torch_env["FAKE_TORCH_PATH"],
        FAKE_TORCH=torch_env["FAKE_TORCH"],
        **extra,
    )
    result = run_sh("check-gpu", env=env)
    return result.returncode, result.stdout + result.stderr


def test_check_gpu_messages(tmp_path: Path) -> None:
    """The whole message for each case; the wording is the bash run.sh's, except the reason CUDA fails, which is
    asr/device.py's (the app's own probe)."""
    install = (
        "install the CUDA build for this driver: TORCH_INDEX_URL=https://download.pytorch.org/whl/{} ./run.sh install"
    )
    cpu_only = "torch 2.13.0+cpu is a CPU-only build: it cannot use the GPU, and the service runs on the CPU"
    assert _check_gpu(tmp_path, "12.4", "2.13.0+cu128") == (
        0,
        "\n".join(
            [GPU_LINE.format("12.4"), "torch 2.13.0+cu128 (CUDA 12.8) uses it: 1 GPU(s): NVIDIA GeForce RTX 3060", ""]
        ),
    )
    assert _check_gpu(tmp_path, "12.4") == (
        1,
        "\n".join([GPU_LINE.format("12.4"), cpu_only, install.format("cu126"), ""]),
    )
    assert _check_gpu(tmp_path, "13.0") == (
        1,
        "\n".join([GPU_LINE.format("13.0"), cpu_only, install.format("cu130"), ""]),
    )
    assert _check_gpu(tmp_path, "12.8", "2.13.0+cu128", FAKE_TORCH_NO_GPU="CUDA driver version is insufficient") == (
        1,
        "\n".join(
            [
                GPU_LINE.format("12.8"),
                "torch 2.13.0+cu128 (CUDA 12.8) finds no usable GPU: CUDA driver version is insufficient",
                install.format("cu128"),
                "",
            ]
        ),
    )
    assert _check_gpu(tmp_path, "11.8") == (
        1,
        "\n".join(
            [
                GPU_LINE.format("11.8"),
                cpu_only,
                "the driver (CUDA 11.8) is older than every CUDA build of torch 2.13.0 "
                "(cu126, cu128, cu130): upgrade the NVIDIA driver",
                "",
            ]
        ),
    )
    assert _check_gpu(tmp_path, "") == (
        1,
        "\n".join(
            [
                GPU_LINE.format("(unknown)"),
                cpu_only,
                "pick the build for this driver (nvidia-smi shows its CUDA version): "
                "TORCH_INDEX_URL=https://download.pytorch.org/whl/cuNNN ./run.sh install",
                "",
            ]
        ),
    )
    assert _check_gpu(tmp_path, "12.4", None) == (
        1,
        "\n".join([GPU_LINE.format("12.4"), f"torch is not installed in {ROOT}/.venv: run ./run.sh install", ""]),
    )
    assert _check_gpu(tmp_path, "12.4", VENV=str(tmp_path / "no-venv")) == (
        1,
        "\n".join([GPU_LINE.format("12.4"), f"no virtual environment at {tmp_path}/no-venv: run ./run.sh install", ""]),
    )
    broken = run_sh("check-gpu", env=ops_env(tmp_path, PATH=fake_nvidia_smi(tmp_path, fails=True)))
    assert (broken.returncode, broken.stdout) == (
        1,
        "nvidia-smi is installed but fails: NVIDIA-SMI has failed "
        "because it couldn't communicate with the NVIDIA driver.\nno GPU "
        "can be used until the NVIDIA driver works; the service runs on "
        "the CPU meanwhile (DEVICE=auto)\n",
    )


def test_check_gpu_without_any_nvidia_smi(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "dirname"):  # run.sh's own needs, without the rest of the PATH
        (bin_dir / tool).symlink_to(subprocess.check_output(["bash", "-c", f"command -v {tool}"], text=True).strip())
    none = run_sh("check-gpu", env=ops_env(tmp_path, PATH=str(bin_dir)))
    assert (none.returncode, none.stdout) == (
        0,
        "no NVIDIA GPU (nvidia-smi not found or lists none): the service runs on the CPU\n",
    ), none.stderr


@pytest.mark.parametrize(
    ("driver", "index"),
    [
        ("12.4", "cu126"),
        ("12.0", "cu126"),
        ("12.6", "cu126"),
        ("12.7", "cu126"),
        ("12.8", "cu128"),
        ("12.9", "cu128"),
        ("13.0", "cu130"),
        ("13.2", "cu130"),
        ("14.1", "cu130"),
        ("11.8", None),
        ("", None),
        ("twelve", None),
    ],
)
def test_the_torch_build_for_a_driver(driver: str, index: str | None) -> None:
    assert cuda.torch_index_for_cuda(driver) == (f"https://download.pytorch.org/whl/{index}" if index else None)


# --- /health for run.sh ---------------------------------------------------------------------------------------


def test_the_gpu_warning_is_the_apps_else_what_nvidia_smi_lists(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path, "12.8"))
    assert health.gpu_warning({"device": "cpu", "gpu_warning": "the app's  own\nwords"}) == "the app's own words"
    assert health.gpu_warning({"device": "cpu"}) == (
        "nvidia-smi lists NVIDIA GeForce RTX 3060 but the model runs on cpu: see ./run.sh check-gpu and docs/gpu.md"
    )
    assert health.gpu_warning({"device": "cuda:0"}) == "" and health.gpu_warning({"status": "loading"}) == ""
    assert health.summary("http://127.0.0.1:9/health", timeout=2) == ["down", "", ""]


@pytest.mark.parametrize(("status", "code", "exit_status"), [("ok", 200, 0), ("loading", 503, 1), (None, None, 1)])
def test_health_ok_exit_status_for_the_containers_healthcheck(
    status: str | None, code: int | None, exit_status: int, clean_env: Path, monkeypatch, capsys
) -> None:
    """`python -m ops.health --ok`: 0 only when /health says ok; without a URL it asks CHECK_HOST:PORT."""
    import http.server
    import json
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": status}).encode()
            self.send_response(code if self.path == "/health" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    port = server.server_address[1]
    if status is None:  # nothing listens there
        server.server_close()
    else:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HOST", "0.0.0.0")
        monkeypatch.setenv("PORT", str(port))
        assert health.main(["--ok"]) == exit_status
        assert capsys.readouterr().out.strip() == (status or "down")
        assert health.main(["--ok", f"http://127.0.0.1:{port}/health"]) == exit_status
    finally:
        if status is not None:
            server.shutdown()
            server.server_close()
    assert health.main(["--ok", "a", "b"]) == 2 and health.main(["--bad"]) == 2


# --- development requirements ---------------------------------------------------------------------------------


def test_unmet_requirements_are_the_missing_and_the_differing_pins(tmp_path: Path) -> None:
    import pytest as installed

    pins = tmp_path / "req.txt"
    pins.write_text(
        f"# comment\npytest=={installed.__version__}\nno-such-package-here==1.0\npytest-thing>=1\n"
        "ruff==0.0.1  # not this one\n"
    )
    assert requirements.unmet(pins) == ["no-such-package-here==1.0", "ruff==0.0.1"]
    assert requirements.unmet(ROOT / "requirements-dev.txt") == [], "this venv is a development one"


def test_requirements_are_split_into_runtime_and_development() -> None:
    runtime = (ROOT / "requirements.txt").read_text()
    dev = (ROOT / "requirements-dev.txt").read_text()
    for name in ("pytest", "selenium", "matplotlib", "openai", "ruff"):
        assert f"\n{name}==" in dev and f"\n{name}==" not in runtime, name


_FAKE_DEV_PYTHON = r"""#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG"
[[ "$*" == "-m ops.requirements requirements-dev.txt" ]] && exit "$FAKE_UNMET"
exit 0
"""


def test_run_sh_test_installs_the_development_requirements_when_missing(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(_FAKE_DEV_PYTHON)
    (venv / "bin" / "python").chmod(0o755)
    log = tmp_path / "log"
    env = ops_env(tmp_path, VENV=str(venv), FAKE_LOG=str(log), FAKE_UNMET="1")
    result = run_sh("test", "-k", "engine", env=env)
    assert result.returncode == 0 and "installing the development requirements" in result.stderr
    assert log.read_text().splitlines() == [
        "-m ops.requirements requirements-dev.txt",
        "-m pip install -q -r requirements-dev.txt",
        "-m pytest -q -k engine",
    ]
    log.unlink()
    assert run_sh("test", env={**env, "FAKE_UNMET": "0"}).returncode == 0
    assert log.read_text().splitlines() == ["-m ops.requirements requirements-dev.txt", "-m pytest -q"]


def test_run_sh_lint_fails_on_a_finding_and_on_formatting(tmp_path: Path) -> None:
    clean = tmp_path / "clean.py"
    clean.write_text('"""A module."""\n\nVALUE = 1\n')
    unused = tmp_path / "unused.py"
    unused.write_text("import os\n")
    unformatted = tmp_path / "unformatted.py"
    unformatted.write_text("VALUE = [1,2]\n")
    env = ops_env(tmp_path)
    assert run_sh("lint", str(clean), env=env).returncode == 0
    found = run_sh("lint", str(unused), env=env)
    assert found.returncode == 1 and "F401" in found.stdout
    formatting = run_sh("lint", str(unformatted), env=env)
    assert formatting.returncode == 1 and "Would reformat" in formatting.stdout
