"""The device that really runs: DEVICE resolved against this torch build, and every report naming it.

Each test states the machine it is about: a CPU-only torch (`cpu_torch`), an NVIDIA GPU next to one (`gpu_box`),
a CUDA torch with two GPUs (`cuda_box`), by replacing what torch reports (`cuda_state`) and what NVML reports
(`nvidia_gpus`); so they pass on a CPU-only machine and on a GPU box with a CUDA torch alike (FAKE_CUDA=1 runs them
as the latter: tests/fake_cuda). What this machine's own torch reports is checked against torch itself, and where
torch can use a GPU the engine runs on it.
"""

from __future__ import annotations

import logging

import pytest

from asr import device
from asr.device import CudaState, DeviceError, device_report, planned_device, resolve_device
from asr.engine import Engine
from asr.errors import message
from conftest import FAKE_CUDA, UTTERANCE, make_settings
from webui.common import queue_concurrency

RTX = ("NVIDIA GeForce RTX 3060",)
TWO_GPUS = CudaState("2.13.0+cu128", "12.8", True, 2, ("NVIDIA H200", "NVIDIA L4"), None)
NO_DRIVER = CudaState(
    "2.13.0+cu128",
    "12.8",
    False,
    0,
    (),
    "torch 2.13.0+cu128 (CUDA 12.8) finds no usable GPU: "
    "The NVIDIA driver on your system is too old (found version 11040)",
)


def cpu_only_state() -> CudaState:
    import torch

    return CudaState(torch.__version__, None, False, 0, (), f"torch {torch.__version__} is a CPU-only build (no CUDA)")


@pytest.fixture
def cpu_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch is a CPU-only build (whatever this machine's is)."""
    monkeypatch.setattr(device, "cuda_state", cpu_only_state)
    monkeypatch.setattr(device, "_warned", set())


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch, cpu_torch: None) -> None:
    """No NVIDIA GPU in the machine, and a CPU-only torch."""
    monkeypatch.setattr(device, "nvidia_gpus", lambda: ())


@pytest.fixture
def gpu_box(monkeypatch: pytest.MonkeyPatch, cpu_torch: None) -> None:
    """NVML reports an RTX 3060, and torch is a CPU-only build."""
    monkeypatch.setattr(device, "nvidia_gpus", lambda: RTX)


@pytest.fixture
def cuda_box(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch sees two usable GPUs."""
    monkeypatch.setattr(device, "cuda_state", lambda: TWO_GPUS)
    monkeypatch.setattr(device, "nvidia_gpus", lambda: TWO_GPUS.names)


def test_cuda_state_is_what_this_torch_reports() -> None:
    import torch

    state = device.cuda_state()
    assert state.torch_version == torch.__version__ and state.cuda_build == torch.version.cuda
    if torch.version.cuda is None:
        assert not state.available and "CPU-only build" in state.problem
    elif torch.cuda.is_available() and torch.cuda.device_count():
        assert state.available and state.problem is None
        assert state.names == tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    else:
        assert not state.available and state.device_count == 0 and "no usable GPU" in state.problem


def test_cuda_without_cuda_is_a_load_error_that_says_why_and_what_to_do(no_gpu) -> None:
    for requested in ("cuda", "cuda:0", "cuda:1", "CUDA"):
        with pytest.raises(DeviceError) as caught:
            resolve_device(requested)
        message = str(caught.value)
        assert f"DEVICE={requested}" in message and "no NVIDIA GPU was found" in message
        assert "CPU-only build" in message and "nvidia-smi" in message and "DEVICE=auto" in message
    assert planned_device("cuda") == "cpu"  # defaults before the (failing) load: the CPU's


def test_a_driver_too_old_and_an_index_out_of_range_are_named(monkeypatch, gpu_box) -> None:
    monkeypatch.setattr(device, "cuda_state", lambda: NO_DRIVER)
    with pytest.raises(DeviceError, match=r"NVIDIA GPU \(NVIDIA GeForce RTX 3060\) is present but .*too old"):
        resolve_device("cuda")
    monkeypatch.setattr(device, "cuda_state", lambda: TWO_GPUS)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    with pytest.raises(DeviceError, match=r"sees 2 GPU\(s\), cuda:0..cuda:1 \(CUDA_VISIBLE_DEVICES='2,3'"):
        resolve_device("cuda:2")


def test_bad_values_are_refused() -> None:
    for bad in ("gpu", "cuda:x", "cuda:-1", "mps"):
        with pytest.raises(DeviceError, match="is not a device"):
            resolve_device(bad)


def test_auto_falls_back_to_the_cpu_and_warns_when_a_gpu_is_present(gpu_box, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="asr.device"):
        assert resolve_device("auto") == "cpu"
        assert resolve_device("auto") == "cpu"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "said once per process"
    assert "NVIDIA GeForce RTX 3060" in warnings[0] and "runs on the CPU" in warnings[0]
    assert "CPU-only build" in warnings[0] and "./run.sh install" in warnings[0]


def test_no_gpu_no_warning(no_gpu) -> None:
    assert resolve_device("auto") == "cpu"
    assert device_report("auto", "cpu", "torch")["warning"] is None


def test_the_cuda_paths_on_a_gpu_machine(cuda_box) -> None:
    assert resolve_device("auto") == "cuda:0"
    assert resolve_device("cuda") == "cuda:0"
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("cpu") == "cpu"
    report = device_report("cuda:1", "cuda:1", "torch")
    assert report["name"] == "NVIDIA L4" and report["warning"] is None and report["torch_cuda"] == "12.8"
    # ONNX Runtime runs on the CPU: with a GPU asked for that is a contradiction; with auto, the CPU (and a warning).
    with pytest.raises(DeviceError, match="ENGINE_BACKEND=onnx"):
        resolve_device("cuda", "onnx")
    assert resolve_device("auto", "onnx") == "cpu"
    assert "ENGINE_BACKEND=onnx" in device_report("auto", "cpu", "onnx")["warning"]
    assert "set DEVICE=auto" in device_report("cpu", "cpu", "torch")["warning"]


def test_defaults_follow_the_device_that_runs(tiny_models, tmp_path, cuda_box) -> None:
    settings = make_settings(tiny_models, tmp_path, device="auto")
    gpu = Engine(settings.engine_config())
    assert gpu.resolve_spec().device == "cuda:0"
    assert queue_concurrency(settings, gpu) == 8 and gpu.batch_max_requests(gpu.resolve_spec().device) == 8
    assert gpu.resolve_backend(gpu.resolve_spec())[0] == "torch"
    assert gpu.info()["device"] == "cuda:0"


def test_engine_with_cuda_and_no_cuda_fails_to_load_and_every_report_says_so(tiny_models, tmp_path, cpu_torch) -> None:
    from api.admission import Admission
    from api.metrics import Metrics
    from app import health_payload
    from webui.sysinfo import info_markdown, system_info

    settings = make_settings(tiny_models, tmp_path, device="cuda")
    engine = Engine(settings.engine_config())
    assert queue_concurrency(settings, engine) == 2, "before the load: the CPU's defaults, not the GPU's"
    with pytest.raises(DeviceError, match="DEVICE=cuda"):
        engine.load()
    assert engine.state == "error" and "CPU-only build" in engine.load_error
    code, body = health_payload(settings, engine, 0.0, admin=True)  # the operator's reason: to admin keys and the log
    assert code == 503 and body["status"] == "error" and body["device"] is None and "DEVICE=cuda" in body["detail"]
    code, body = health_payload(settings, engine, 0.0)  # anyone: that it failed, in the catalogue's words
    assert code == 503 and body["detail"] == message("model_not_ready.failed")
    data = system_info(engine, settings)
    assert data["device"] is None and data["model_state"] == "error"
    assert data["load_error"] == message("model_not_ready.failed") in info_markdown(data, "en")
    metrics = Metrics(engine, Admission(settings.queue_max_size)).render().decode()
    assert "paraformer_device_info" not in metrics and "paraformer_model_loaded 0.0" in metrics


def test_auto_on_a_gpu_box_with_a_cpu_torch_reports_the_cpu_everywhere(tiny_models, tmp_path, gpu_box) -> None:
    from api.admission import Admission
    from api.metrics import Metrics
    from app import health_payload
    from webui.sysinfo import info_markdown, system_info

    settings = make_settings(tiny_models, tmp_path, device="auto")
    engine = Engine(settings.engine_config())
    engine.load()
    assert engine.spec.device == "cpu" and engine.batcher.max_requests == 1 and queue_concurrency(settings, engine) == 2
    code, body = health_payload(settings, engine, 0.0)
    assert code == 200 and body["device"] == "cpu" and body["device_info"]["requested"] == "auto"
    assert "NVIDIA GeForce RTX 3060" in body["gpu_warning"] and "runs on the CPU" in body["gpu_warning"]
    data = system_info(engine, settings)
    assert data["device"] == "cpu" and data["gpu_warning"] == body["gpu_warning"]
    table = info_markdown(data, "en")
    assert "⚠️ GPU unused" in table and "| cpu (DEVICE=auto, torch) |" in table
    assert "GPU 未使用" in info_markdown(data, "zh")
    metrics = Metrics(engine, Admission(settings.queue_max_size)).render().decode()
    assert 'paraformer_device_info{backend="torch",device="cpu",name=""} 1.0' in metrics
    assert "paraformer_gpu_unused 1.0" in metrics
    assert engine.transcribe(UTTERANCE, hotwords="").duration > 1  # and it serves, on the CPU


def test_a_gpu_torch_can_use_runs_the_engine(tiny_models, tmp_path) -> None:
    """On a GPU box with a CUDA torch (skipped elsewhere): DEVICE=auto loads the models on cuda:0, the reports name
    that GPU, and the engine transcribes there."""
    import torch

    from app import health_payload

    if FAKE_CUDA or not torch.cuda.is_available():
        pytest.skip("needs a GPU that torch can use" + (" (FAKE_CUDA only pretends)" if FAKE_CUDA else ""))
    settings = make_settings(tiny_models, tmp_path, device="auto")
    engine = Engine(settings.engine_config())
    engine.load()
    assert engine.spec.device == "cuda:0" and engine.batcher.max_requests > 1
    code, body = health_payload(settings, engine, 0.0)
    assert code == 200 and body["device"] == "cuda:0" and body["gpu_warning"] is None
    assert body["device_info"]["name"] == torch.cuda.get_device_name(0)
    result = engine.transcribe(UTTERANCE)
    assert result.duration > 1 and result.text
