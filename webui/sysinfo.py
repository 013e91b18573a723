"""⚙️ System info: model, device, GPU, CPU, memory, versions, queue and counters, with a refresh button."""

from __future__ import annotations

import logging
import os
import platform
import time
from importlib import metadata
from typing import Any

import gradio as gr
import psutil

from asr.device import device_report
from asr.engine import Engine, model_name
from asr.gpu import gpu_info
from config.settings import Settings
from messages import message

from .common import queue_concurrency
from .i18n import lang_of, t

logger = logging.getLogger(__name__)

_STARTED = time.time()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def system_info(engine: Engine, settings: Settings, lang: str = "en") -> dict[str, Any]:
    """Everything the tab shows, as plain data (also the `system_info` API endpoint's answer)."""
    zh = lang == "zh"
    import torch

    info = engine.info()
    memory = psutil.virtual_memory()
    gpus = gpu_info()
    device = device_report(settings.device, info["device"], info["backend"])
    # Anyone with the UI reads this: models by id or folder name, a load failure in the catalogue's words (the
    # paths and the error itself are in the log, and in /health for an admin key).
    return {
        "model": model_name(info["model"]),
        "vad_model": model_name(info["vad_model"]),
        "punc_model": model_name(info["punc_model"]),
        "sensevoice_model": model_name(info["sensevoice_model"]),
        "model_state": info["state"],
        "model_load_s": info["load_seconds"],
        "load_error": message("model_not_ready.failed", "zh" if zh else "en") if info["load_error"] else None,
        "device": info["device"],
        "device_requested": settings.device,
        "device_name": device["name"],
        "backend": info["backend"],
        "gpu_warning": device["warning"],
        "cuda_available": device["cuda_available"],
        "cuda_version": torch.version.cuda,
        "gpus": gpus,
        "cpu": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "cpu_percent": psutil.cpu_percent(interval=None),
        "ram_used_mb": round(memory.used / 2**20),
        "ram_total_mb": round(memory.total / 2**20),
        "process_rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "funasr": _version("funasr"),
            "gradio": gr.__version__,
        },
        "queue_waiting": info["waiting"],
        "model_busy": info["busy"],
        "queue_max_size": settings.queue_max_size,
        "model_concurrency": queue_concurrency(settings, engine),
        "requests_served": info["requests_served"],
        "requests_failed": info["requests_failed"],
        "audio_seconds_served": info["audio_seconds_served"],
        "uptime_s": round(time.time() - _STARTED, 1),
    }


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _device_cell(data: dict[str, Any], label: Any) -> str:
    # The device that runs, as loaded, with the GPU's name; the setting and the backend in brackets.
    device = data["device"] or label("未加载", "not loaded")
    if data["device_name"]:
        device += f" — {data['device_name']}"
    return f"{device} (DEVICE={data['device_requested']}, {data['backend']})"


def info_markdown(data: dict[str, Any], lang: str) -> str:
    zh = lang != "en"

    def label(chinese: str, english: str) -> str:
        return chinese if zh else english

    yes, no = label("是", "yes"), label("否", "no")
    if data["gpus"]:
        gpu_lines = "<br>".join(
            f"GPU {g['index']}: {g['name']} — {g['memory_used_mb']:.0f} / {g['memory_total_mb']:.0f} MB"
            for g in data["gpus"]
        )
    else:
        gpu_lines = label("无 GPU（使用 CPU）", "no GPU (running on the CPU)")
    load = f"{data['model_load_s']:.1f} s" if data["model_load_s"] is not None else "-"
    versions = ", ".join(f"{k} {v}" for k, v in data["versions"].items())
    rows = [
        (label("模型", "Model"), f"`{data['model']}`"),
        (label("VAD / 标点模型", "VAD / punctuation"), f"`{data['vad_model']}` / `{data['punc_model']}`"),
        (
            label("SenseVoice 模型", "SenseVoice model"),
            f"`{data['sensevoice_model']}`" if data["sensevoice_model"] else "-",
        ),
        (
            label("模型状态", "Model state"),
            f"{data['model_state']}" + (f" ({data['load_error']})" if data["load_error"] else ""),
        ),
        (label("加载耗时", "Load time"), load),
        (label("设备类型", "Device"), _device_cell(data, label)),
        (
            label("CUDA 可用", "CUDA available"),
            (yes if data["cuda_available"] else no)
            + (f" (CUDA {data['cuda_version']})" if data["cuda_version"] else ""),
        ),
        (label("GPU 显存", "GPU memory"), gpu_lines),
        ("CPU", f"{data['cpu']} × {data['cpu_cores']} ({data['cpu_percent']:.0f}%)"),
        (label("内存", "RAM"), f"{data['ram_used_mb']} / {data['ram_total_mb']} MB"),
        (label("进程内存 (RSS)", "Process memory (RSS)"), f"{data['process_rss_mb']} MB"),
        (label("软件版本", "Versions"), versions),
        (
            label("排队 / 上限", "Queue waiting / limit"),
            f"{data['queue_waiting']} / {data['queue_max_size']}"
            + (label("（模型运行中）", " (model busy)") if data["model_busy"] else ""),
        ),
        (
            label("已处理 / 失败请求", "Requests served / failed"),
            f"{data['requests_served']} / {data['requests_failed']} ({data['audio_seconds_served']:.0f} s audio)",
        ),
        (label("运行时间", "Uptime"), _duration(data["uptime_s"])),
    ]
    if data["gpu_warning"]:
        rows.insert(5, (label("⚠️ GPU 未使用", "⚠️ GPU unused"), data["gpu_warning"]))
    header = label("| 项目 | 值 |", "| Item | Value |")
    return header + "\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def create_sysinfo_tab(engine: Engine, settings: Settings, blocks: gr.Blocks) -> None:
    with gr.Tab(t("tab_sysinfo"), id="sysinfo"):
        button = gr.Button(t("refresh"), elem_id="sysinfo-refresh")
        table = gr.Markdown(elem_id="sysinfo-table")
        with gr.Accordion("JSON", open=False):
            raw = gr.JSON()

    def refresh(request: gr.Request) -> tuple[str, dict[str, Any]]:
        lang = lang_of(request)
        data = system_info(engine, settings, lang)
        return info_markdown(data, lang), data

    # Not queued: the numbers matter most when the queue is full, and this never touches the model.
    button.click(refresh, None, [table, raw], api_name="system_info", queue=False)
    blocks.load(refresh, None, [table, raw], queue=False, api_visibility="private")
