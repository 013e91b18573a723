"""The container image and compose.yaml, built and run with podman (docs/container.md).

No image registry is reachable from CI, so the Dockerfile's base (python:3.11-slim-bookworm) is made on the spot:
a Debian bookworm root from `debootstrap` (python3, python3-venv, ca-certificates: what the Dockerfile needs of
the official image), laid out as Debian's images are (apt sources, policy-rc.d), `podman import`ed under the base's
name and cached (the podman image, and its tarball in ~/.cache/paraformer-webui/). Redis, for compose.yaml's
`scale` profile, is stood in for the same way: Debian's redis-server on that base, under the image name the file
names. Then the project is built from a clean copy of the checkout, rebuilt after a one-line change (torch and the
requirements must come from the cache), and run:

- one container, the tiny models as a volume: /health, the README's curl, a FunASR WebSocket stream, a job that
  survives `podman kill` + `podman start`, and `podman stop` handing the running job back with a clean log;
- compose.yaml's services (app, app-2, redis, nginx), each a `podman run` built from the parsed file (image,
  command, environment, volumes, healthcheck, dependencies): jobs done across the two replicas behind nginx.

Every container runs with --network=host and talks to 127.0.0.1 only; nothing creates a network, so compose's
service names are given to each container as /etc/hosts entries (--add-host NAME:127.0.0.1) and the services
get free ports through the file's own ${...} variables. Facts of these machines: podman needs the runc runtime
and explicit ulimits, and pip inside a build needs the host's CA bundle (a build secret, pip_ca). Needs root,
podman, runc and debootstrap (apt-get install podman runc debootstrap; .ci/run installs them): skipped without
them, a failure under CI=true.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
import websockets
import yaml

from conftest import ROOT, UTTERANCE, TinyModels, free_port

pytestmark = [pytest.mark.container, pytest.mark.server]

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "paraformer-webui"
#: The bootstrapped base, kept between runs; the version changes when what goes into it does.
BASE_TARBALL = CACHE / "bookworm-python3.11-base-v1.tar"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE = "localhost/paraformer-webui:test"
ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
#: What every container gets: runc (crun rejects this host's hybrid cgroups), the host's network, the ulimits, and
#: no healthcheck timer (podman would ask systemd for one; the test runs the checks itself).
RUN_FLAGS = ["--runtime", "runc", "--network=host", *ULIMITS, "--health-interval", "disable"]
PREFIX = f"pwtest-{uuid.uuid4().hex[:8]}"  # this run's containers and volumes
STOP_TIMEOUT_S = 30  # compose.yaml's stop_grace_period
TINY_SETTINGS = {
    "MODEL_DIR": "models/tiny-seaco",
    "VAD_MODEL_DIR": "models/fsmn-vad",
    "PUNC_MODEL_DIR": "models/tiny-punc",
    "DEVICE": "cpu",
    "NCPU": "1",
}


def _missing_tools() -> list[str]:
    missing = [tool for tool in ("podman", "runc", "debootstrap") if not shutil.which(tool)]
    if os.geteuid() != 0:
        missing.append("root (debootstrap and podman's runc runtime)")
    return missing


@pytest.fixture(scope="module")
def podman() -> None:
    missing = _missing_tools()
    if missing:
        text = f"the container test needs {', '.join(missing)}: apt-get install podman runc debootstrap (as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(text)
        pytest.skip(text)


def sh(*args: str, timeout: float = 120, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{shlex.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def image_exists(name: str) -> bool:
    return sh("podman", "image", "exists", name, check=False).returncode == 0


def full_name(image: str) -> str:
    """The name podman stores an image under: docker.io/library/NAME for a bare Docker Hub name."""
    first = image.split("/", 1)[0]
    if "/" not in image:
        return f"docker.io/library/{image}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{image}"
    return image


def dockerfile_base() -> str:
    match = re.search(r"^ARG BASE_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "the Dockerfile names its base in ARG BASE_IMAGE"
    return full_name(match[1])


# --- images ---------------------------------------------------------------------------------------------------


def bootstrap_base(tarball: Path) -> None:
    """A bookworm root with what the Dockerfile uses of python:3.11-slim-bookworm, as a tarball."""
    with tempfile.TemporaryDirectory(prefix="bookworm-") as tmp:
        root = Path(tmp) / "root"
        sh(
            "debootstrap",
            "--variant=minbase",
            f"--include={BASE_PACKAGES}",
            "bookworm",
            str(root),
            DEBIAN_MIRROR,
            timeout=900,
        )
        # As Debian's own images: the three suites in deb822 form, and no service started by a package's install.
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
        (root / "etc/apt/sources.list.d/debian.sources").write_text(
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
            "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
            for path in (root / junk).glob("*"):
                if path.is_file() or path.is_symlink():
                    path.unlink()
                else:
                    shutil.rmtree(path)
        tarball.parent.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        sh("tar", "-C", str(root), "-cf", str(partial), ".", timeout=300)
        partial.rename(tarball)


def ensure_base(name: str) -> str:
    """The base image under `name`: kept from an earlier run, else imported from the cached tarball (made first)."""
    if image_exists(name):
        return "kept"
    how = "cached tarball"
    if not BASE_TARBALL.exists():
        bootstrap_base(BASE_TARBALL)
        how = "debootstrap"
    sh(
        "podman",
        "import",
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        'CMD ["python3"]',
        str(BASE_TARBALL),
        name,
        timeout=300,
    )
    return how


def build_args() -> list[str]:
    """The build's network needs on this machine: the host's CA bundle for pip (a secret, never in a layer), and the
    host's pip wheel folders (find-links) mounted where pip looks, so a torch wheel kept there is used."""
    args = ["--runtime", "runc", "--network=host", "--pull=never", "--format", "docker", *ULIMITS]
    if HOST_CA.exists():
        args += ["--secret", f"id=pip_ca,src={HOST_CA}"]
    folders = [f for f in host_find_links() if Path(f).is_dir()]
    if folders:
        args += [arg for f in folders for arg in ("--volume", f"{f}:{f}:ro")]
        args += ["--build-arg", f"PIP_FIND_LINKS={' '.join(folders)}"]
        torch_wheels = [w for f in folders for w in Path(f).glob("torch-2.13.0+cpu-*.whl")]
        if torch_wheels and not os.environ.get("CONTAINER_TORCH_INDEX_URL"):
            args += ["--build-arg", "TORCH_INDEX_URL="]  # the wheel is here: pip's own index and find-links
    if os.environ.get("CONTAINER_TORCH_INDEX_URL"):
        args += ["--build-arg", f"TORCH_INDEX_URL={os.environ['CONTAINER_TORCH_INDEX_URL']}"]
    return args


def host_find_links() -> list[str]:
    listing = sh(str(ROOT / ".venv" / "bin" / "python"), "-m", "pip", "config", "list", check=False).stdout
    values = re.findall(r"find-links='([^']*)'", listing) + [os.environ.get("PIP_FIND_LINKS", "")]
    return list(dict.fromkeys(p for value in values for p in value.split() if p.startswith("/")))


def clean_copy(target: Path) -> Path:
    """The checkout as a fresh clone has it: tracked and unignored files only (no venv, models, logs, .env)."""
    listed = sh("git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@dataclass
class Build:
    seconds: float
    output: str


def podman_build(context: Path, tag: str, *extra: str, timeout: float = 480) -> Build:
    started = time.time()
    result = sh("podman", "build", *build_args(), *extra, "-t", tag, str(context), timeout=timeout)
    return Build(time.time() - started, result.stdout + result.stderr)


def step_cached(output: str, marker: str) -> bool:
    """Whether the build step whose instruction contains `marker` came from the layer cache."""
    steps = re.split(r"^STEP \d+/\d+: ", output, flags=re.MULTILINE)
    step = next(s for s in steps if marker in s.split("\n", 1)[0])
    return "Using cache" in step


def image_bytes(name: str) -> int:
    return int(sh("podman", "image", "inspect", "--format", "{{.Size}}", name).stdout.strip())


@dataclass
class Images:
    base: str
    base_from: str
    app: str
    context: Path
    first: Build
    rebuild: Build
    size: int


@pytest.fixture(scope="module")
def images(podman: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    base = dockerfile_base()
    base_from = ensure_base(base)
    context = clean_copy(tmp_path_factory.mktemp("context"))
    first = podman_build(context, IMAGE)
    first_id = sh("podman", "image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    # A one-line code change: only the layers from `COPY . .` on are rebuilt.
    with open(context / "app.py", "a", encoding="utf-8") as f:
        f.write(f"# a one-line change, for the rebuild ({PREFIX})\n")  # new each run: the code layer is not cached
    rebuild = podman_build(context, IMAGE, timeout=300)
    if sh("podman", "image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip() != first_id:
        sh("podman", "rmi", first_id, check=False)  # its own top layers only; the rest is shared
    size = image_bytes(IMAGE)
    cold = "from the layer cache" if step_cached(first.output, "torch==") else "torch and requirements installed"
    print(
        f"\nbase {base} ({base_from}); build {first.seconds:.0f} s ({cold}); rebuild after a one-line change "
        f"{rebuild.seconds:.0f} s; image {size / 1e9:.2f} GB"
    )
    yield Images(base, base_from, IMAGE, context, first, rebuild, size)


# --- containers -----------------------------------------------------------------------------------------------


@dataclass
class Containers:
    """This run's containers and volumes, removed at the end."""

    names: list[str] = field(default_factory=list)
    volumes: dict[str, str] = field(default_factory=dict)

    def volume(self, name: str) -> str:
        if name not in self.volumes:
            self.volumes[name] = f"{PREFIX}-{name}"
            sh("podman", "volume", "create", self.volumes[name])
        return self.volumes[name]

    def run(self, name: str, image: str, args: list[str], command: list[str] | None = None) -> str:
        full = f"{PREFIX}-{name}"
        self.names.append(full)
        sh("podman", "run", "-d", "--name", full, *RUN_FLAGS, *args, image, *(command or []), timeout=120)
        return full

    def remove(self) -> None:
        for name in reversed(self.names):
            sh("podman", "rm", "-f", "-v", "-t", "5", name, check=False, timeout=60)  # -v: its anonymous volumes too
        for volume in self.volumes.values():
            sh("podman", "volume", "rm", "-f", volume, check=False)


@pytest.fixture
def containers() -> Iterator[Containers]:
    made = Containers()
    try:
        yield made
    finally:
        made.remove()


def logs(name: str) -> str:
    result = sh("podman", "logs", name, check=False)
    return result.stdout + result.stderr


def running(name: str) -> bool:
    return sh("podman", "inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "true"


def wait_ok(url: str, name: str, timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert running(name), f"{name} exited:\n{logs(name)[-4000:]}"
        try:
            response = httpx.get(url + "/health", timeout=3)
            if response.status_code == 200 and response.json().get("status") == "ok":
                return response.json()
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url}/health never said ok:\n{logs(name)[-4000:]}")


def tiny_models_dir(tiny_models: TinyModels) -> Path:
    return tiny_models.asr.resolve().parent


def long_wav(folder: Path, repeats: int = 20) -> Path:
    clip = sf.read(UTTERANCE, dtype="float32")[0]
    path = folder / "long.wav"
    sf.write(path, np.tile(np.concatenate([clip, np.zeros(6400, np.float32)]), repeats), 16000, subtype="PCM_16")
    return path


def post_job(client: httpx.Client, url: str, paths: list[Path]) -> str:
    files = [("file", (p.name, p.read_bytes())) for p in paths]
    response = client.post(url + "/v1/jobs", files=files)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_job(client: httpx.Client, url: str, job_id: str, done, timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            body = client.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
            if done(body):
                return body
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached the state asked for")


def mid_job(body: dict) -> bool:
    return body["status"] == "running" and body["files"][0]["status"] == "done"


def finished(body: dict) -> bool:
    return body["status"] in ("done", "failed", "cancelled")


def readme_curl(port: int) -> list[str]:
    """The README's container quickstart curl, pointed at `port`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### In a container", 1)[1]
    line = next(line for line in section.splitlines() if line.startswith("curl ") and "transcriptions" in line)
    return shlex.split(line.replace("localhost:7860", f"127.0.0.1:{port}"))


async def offline_stream(url: str, audio: bytes) -> list[dict]:
    async with websockets.connect(url, subprotocols=["binary"]) as ws:
        await ws.send(json.dumps({"mode": "offline", "wav_name": "container", "wav_format": "pcm", "audio_fs": 16000}))
        for i in range(0, len(audio), 9600):
            await ws.send(audio[i : i + 9600])
        await ws.send(json.dumps({"is_speaking": False}))
        answers = []
        while not answers or not answers[-1].get("is_final"):
            answers.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
        return answers


def test_the_image_builds_from_a_clean_checkout_and_a_code_change_keeps_torch_cached(images: Images) -> None:
    assert "Successfully tagged" in images.first.output
    # The rebuild after a one-line change: torch and the requirements come from the cache, the code does not.
    assert step_cached(images.rebuild.output, "torch==") and step_cached(images.rebuild.output, "-r requirements.txt")
    assert not step_cached(images.rebuild.output, "COPY . .")
    assert images.size < 2.5e9, f"the CPU image is {images.size / 1e9:.2f} GB (target: 2.5 GB)"
    inspected = json.loads(sh("podman", "image", "inspect", images.app).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == "app" and config["Cmd"] == ["python", "app.py"] and config["StopSignal"] == "SIGTERM"
    assert inspected["Healthcheck"]["Test"] == ["CMD", "python", "-m", "ops.health", "--ok"]
    assert set(config["Volumes"]) == {
        "/app/models",
        "/app/outputs",
        "/app/data/jobs",
        "/app/logs",
        "/app/cache/modelscope",
    }
    probe = sh(
        "podman", "run", "--rm", *RUN_FLAGS, images.app,
        "python", "-c", "import torch, os; print(torch.__version__, os.getuid(), os.access('/app/app.py', os.W_OK))",
    )  # fmt: skip
    assert probe.stdout.split()[-3:] == ["2.13.0+cpu", "1000", "False"], probe.stdout


def test_one_container_serves_streams_and_keeps_its_jobs_through_kill_and_stop(
    images: Images, containers: Containers, tiny_models: TinyModels, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    volumes = {
        "jobs": "/app/data/jobs",
        "outputs": "/app/outputs",
        "logs": "/app/logs",
        "cache": "/app/cache/modelscope",
    }
    args = ["-v", f"{tiny_models_dir(tiny_models)}:/app/models:ro"]
    args += [a for name, path in volumes.items() for a in ("-v", f"{containers.volume(name)}:{path}")]
    env = {**TINY_SETTINGS, "HOST": "127.0.0.1", "PORT": str(port)}
    args += [a for key, value in env.items() for a in ("-e", f"{key}={value}")]
    name = containers.run("app", images.app, args)
    health = wait_ok(url, name)
    assert health["device"] == "cpu" and health["jobs"]["running"]
    assert sh("podman", "healthcheck", "run", name, check=False).returncode == 0  # the image's HEALTHCHECK
    assert sh("podman", "exec", name, "id", "-un").stdout.strip() == "app"

    curl = sh(*readme_curl(port), cwd=ROOT, timeout=60)
    assert json.loads(curl.stdout)["text"], curl.stdout
    audio = sf.read(UTTERANCE, dtype="int16")[0].tobytes()
    answers = asyncio.run(offline_stream(url.replace("http://", "ws://") + "/", audio))
    assert answers[-1]["mode"] == "offline" and answers[-1]["is_final"] and answers[-1]["text"]

    client = httpx.Client(timeout=30)
    wav = long_wav(tmp_path)
    # SIGKILL mid-job, then the same container again: the job is taken back from the volume and finished.
    job_id = post_job(client, url, [wav, wav, wav])
    wait_job(client, url, job_id, mid_job)
    sh("podman", "kill", name)
    sh("podman", "start", name)
    wait_ok(url, name)
    body = wait_job(client, url, job_id, finished)
    assert body["status"] == "done" and body["runs"] == 2, body
    assert "queued again" in logs(name)

    # podman stop (SIGTERM) mid-job: a clean exit, the job handed back, and done after the next start.
    job_id = post_job(client, url, [wav, wav, wav])
    wait_job(client, url, job_id, mid_job)
    started = time.time()
    sh("podman", "stop", "-t", str(STOP_TIMEOUT_S), name, timeout=STOP_TIMEOUT_S + 30)
    stop_s = time.time() - started
    state = json.loads(sh("podman", "inspect", name).stdout)[0]["State"]
    text = logs(name)
    assert state["ExitCode"] == 0 and stop_s < STOP_TIMEOUT_S, (state["ExitCode"], stop_s, text[-3000:])
    assert f"job {job_id}: let go at shutdown; queued again" in text
    assert "Traceback" not in text and " ERROR " not in text, text[-4000:]
    sh("podman", "start", name)
    wait_ok(url, name)
    body = wait_job(client, url, job_id, finished)
    assert body["status"] == "done" and body["runs"] == 2, body
    print(f"\npodman stop took {stop_s:.1f} s")


def test_the_readme_try_out_image_has_the_tiny_models_baked_in(images: Images, containers: Containers) -> None:
    """TEST_MODELS=1, run as the README's container quickstart runs it: no volume, no download."""
    tag = "localhost/paraformer-webui:try-test"
    podman_build(images.context, tag, "--build-arg", "TEST_MODELS=1", timeout=300)
    try:
        port = free_port()
        env = {k: v for k, v in TINY_SETTINGS.items() if k.endswith("MODEL_DIR")}
        args = [a for k, v in {**env, "HOST": "127.0.0.1", "PORT": str(port)}.items() for a in ("-e", f"{k}={v}")]
        name = containers.run("try", tag, args)
        wait_ok(f"http://127.0.0.1:{port}", name)
        curl = sh(*readme_curl(port), cwd=ROOT, timeout=60)
        assert json.loads(curl.stdout)["text"], curl.stdout
        readme = (ROOT / "README.md").read_text(encoding="utf-8").split("### In a container", 1)[1]
        assert all(f"-e {k}={v}" in readme for k, v in env.items()) and "TEST_MODELS=1" in readme
    finally:
        containers.remove()
        containers.names.clear()
        sh("podman", "rmi", tag, check=False)


# --- compose.yaml ---------------------------------------------------------------------------------------------


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: Any, variables: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and $$, throughout a parsed file."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        if match[0] == "$$":
            return "$"
        name = match[1] or match[4]
        given = variables.get(name)
        operator, word = match[2], match[3] or ""
        if operator == ":-":
            return given or word
        if operator == "-":
            return word if given is None else given
        if operator in (":?", "?") and not given:
            raise AssertionError(f"compose.yaml needs {name}: {word}")
        return given or ""

    return _VARIABLE.sub(one, value)


def load_compose(*files: str, variables: dict[str, str] | None = None) -> dict:
    """compose.yaml (and overrides), merged as compose merges them for the keys these files use."""
    merged: dict = {}
    for name in files:
        text = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
        text = interpolate(text, variables or {})
        for key, value in text.items():
            if key == "services":
                services = merged.setdefault("services", {})
                for service, config in value.items():
                    services[service] = _merge(services.get(service, {}), config)
            elif not key.startswith("x-"):
                merged[key] = _merge(merged.get(key) or {}, value or {})
    return merged


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in override.items()}}
    return override


def test_compose_file_structure() -> None:
    compose = load_compose("compose.yaml")
    services = compose["services"]
    assert set(services) == {"app", "app-2", "redis", "nginx"}
    assert "profiles" not in services["app"], "the app starts without a profile"
    assert all(services[s]["profiles"] == ["scale"] for s in ("app-2", "redis", "nginx"))
    declared = set(compose["volumes"])
    for name in ("app", "app-2"):
        app = services[name]
        assert app["image"] == "paraformer-webui:cpu" and app["build"]["args"] == {"TORCH": "cpu", "TEST_MODELS": "0"}
        targets = {v.split(":")[1]: v.split(":")[0] for v in app["volumes"]}
        assert set(targets) == {"/app/models", "/app/outputs", "/app/data/jobs", "/app/logs", "/app/cache/modelscope"}
        assert set(targets.values()) <= declared
        assert app["healthcheck"]["test"] == ["CMD", "python", "-m", "ops.health", "--ok"]
        assert app["env_file"] == [{"path": ".env", "required": False}] and app["environment"]["HOST"] == "0.0.0.0"
        assert app["stop_grace_period"] == f"{STOP_TIMEOUT_S}s"
        assert app["environment"]["JOBS_REDIS_URL"] == "redis://redis:6379/0"
    assert services["app"]["ports"] == ["7860:7860"] and services["app-2"]["environment"]["PORT"] == "7861"
    assert services["app-2"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["app"]["depends_on"]["redis"] == {"condition": "service_healthy", "required": False}
    assert services["nginx"]["environment"]["NGINX_UPSTREAMS"] == "app:7860,app-2:7861"
    assert {s: d["condition"] for s, d in services["nginx"]["depends_on"].items()} == {
        "app": "service_healthy",
        "app-2": "service_healthy",
    }
    assert "ops.nginx --standalone" in services["nginx"]["command"][-1]
    assert services["redis"]["healthcheck"]["test"][:2] == ["CMD", "redis-cli"]
    # The Dockerfile's build arguments are the ones compose passes.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert all(re.search(rf"^ARG {arg}=", dockerfile, re.MULTILINE) for arg in services["app"]["build"]["args"])

    gpu = load_compose("compose.yaml", "compose.gpu.yaml")["services"]
    for name, gpu_id in (("app", "0"), ("app-2", "1")):
        [device] = gpu[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device == {"driver": "nvidia", "device_ids": [gpu_id], "capabilities": ["gpu"]}
        assert gpu[name]["environment"]["DEVICE"] == "cuda" and gpu[name]["build"]["args"]["TORCH"] == "cu128"
        assert gpu[name]["environment"]["PORT"] == services[name]["environment"]["PORT"]  # merged, not replaced
        assert gpu[name]["volumes"] == services[name]["volumes"]
    assert gpu["app"]["image"] == gpu["nginx"]["image"] == "paraformer-webui:cuda"


def standin_redis(base: str, name: str) -> None:
    """compose.yaml's Redis image, stood in for by Debian's redis-server on the bootstrapped base (kept)."""
    if image_exists(name):
        return
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "Containerfile").write_text(
            f"FROM {base}\nRUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
            "--no-install-recommends redis-server && apt-get clean && rm -rf /var/lib/apt/lists/*\n"
            'LABEL org.opencontainers.image.description="test stand-in: Debian\'s redis-server"\n'
            'RUN mkdir -p /data\nWORKDIR /data\nCMD ["redis-server"]\n'
        )
        sh(
            "podman",
            "build",
            "--runtime",
            "runc",
            "--network=host",
            "--pull=never",
            *ULIMITS,
            "-t",
            name,
            tmp,
            timeout=300,
        )


def compose_run_args(service: str, config: dict, containers: Containers, env_file: Path, hosts: list[str]) -> list[str]:
    """`podman run` arguments for one compose service: its env_file, environment, volumes and service names."""
    args = [a for host in hosts for a in ("--add-host", f"{host}:127.0.0.1")]
    for entry in config.get("env_file", []):
        assert entry["path"] == ".env"
        args += ["--env-file", str(env_file)]  # this test's settings file in place of the project's .env
    environment = dict(config.get("environment", {}))
    if "HOST" in environment:
        environment["HOST"] = "127.0.0.1"  # the host's network here: listen on loopback, not every address
    args += [a for key, value in environment.items() for a in ("-e", f"{key}={value}")]
    for volume in config.get("volumes", []):
        source, target = volume.split(":")[:2]
        mode = volume.split(":")[2] if volume.count(":") == 2 else "rw"
        if source.startswith(("/", ".")):
            path = (ROOT / source).resolve()
        else:
            path = containers.volume(source)
        args += ["-v", f"{path}:{target}:{mode}"]
    return args


def wait_healthy(name: str, config: dict, timeout: float = 180) -> None:
    """Until the service's own healthcheck command passes, run in its container."""
    test = config["healthcheck"]["test"]
    assert test[0] == "CMD"
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert running(name), f"{name} exited:\n{logs(name)[-4000:]}"
        if sh("podman", "exec", name, *test[1:], check=False, timeout=30).returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(f"{name} never passed its healthcheck:\n{logs(name)[-4000:]}")


def start_order(services: dict) -> list[str]:
    order: list[str] = []

    def visit(name: str) -> None:
        for dependency in services[name].get("depends_on", {}):
            visit(dependency)
        if name not in order:
            order.append(name)

    for name in services:
        visit(name)
    return order


def test_compose_services_do_jobs_across_two_replicas_behind_nginx(
    images: Images, containers: Containers, tiny_models: TinyModels, tmp_path: Path
) -> None:
    ports = {name: free_port() for name in ("PORT", "PORT_REPLICA_1", "NGINX_PORT", "REDIS_PORT")}
    variables = {
        **{k: str(v) for k, v in ports.items()},
        "IMAGE": images.app,
        "JOBS_BACKEND": "redis",
        "MODELS_VOLUME": str(tiny_models_dir(tiny_models)),
    }
    compose = load_compose("compose.yaml", variables=variables)
    services = compose["services"]
    redis_image = full_name(services["redis"]["image"])
    standin_redis(images.base, redis_image)
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in TINY_SETTINGS.items()))
    names: dict[str, str] = {}
    for service in start_order(services):
        config = services[service]
        for dependency, rule in config.get("depends_on", {}).items():
            assert rule["condition"] == "service_healthy"
            wait_healthy(names[dependency], services[dependency])
        args = compose_run_args(service, config, containers, env_file, list(services))
        image = redis_image if service == "redis" else config["image"]
        names[service] = containers.run(service, image, args, config.get("command"))
    wait_healthy(names["nginx"], services["nginx"])

    proxy = f"http://127.0.0.1:{ports['NGINX_PORT']}"
    for index in (0, 1):
        assert httpx.get(f"{proxy}/replica/{index}/health", timeout=10).json()["jobs"]["backend"] == "redis"
    client = httpx.Client(timeout=60)
    ids = [post_job(client, proxy, [UTTERANCE, UTTERANCE]) for _ in range(8)]
    bodies = [wait_job(client, proxy, job_id, finished, timeout=240) for job_id in ids]
    assert all(body["status"] == "done" for body in bodies), bodies
    for job_id in ids:  # every result, through nginx, whichever replica made it
        result = client.get(f"{proxy}/v1/jobs/{job_id}/result")
        assert result.status_code == 200 and result.content, result.text
    done_by = {s: {i for i in ids if f"job {i} done" in logs(names[s])} for s in ("app", "app-2")}
    assert done_by["app"] and done_by["app-2"], f"both replicas work: {done_by}"
    assert done_by["app"] | done_by["app-2"] == set(ids) and not done_by["app"] & done_by["app-2"]
    access = logs(names["nginx"])
    assert access.count("POST /v1/jobs") == len(ids), access[-3000:]
    for name in names.values():
        assert "Traceback" not in logs(name), logs(name)[-3000:]
    print(f"\njobs per replica: app {len(done_by['app'])}, app-2 {len(done_by['app-2'])}")
