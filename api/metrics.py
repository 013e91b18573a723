"""Prometheus metrics, in a registry of their own per app (tests build several apps in one process).

HTTP metrics count API requests by route and outcome. Transcription metrics come from an engine observer,
so they count every transcription, the web UI's included. Gauges are read at scrape time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from asr.device import device_report
from asr.engine import Engine, Transcription
from asr.errors import ASRError
from asr.gpu import gpu_info

from .admission import Admission
from .errors import APIError
from .funasr_ws import StreamRegistry

logger = logging.getLogger(__name__)

PREFIX = "paraformer"


class GPUCollector(Collector):
    """GPU memory per NVIDIA GPU from NVML at scrape time; no series at all on machines without one."""

    def collect(self) -> Iterable[Metric]:
        gpus = gpu_info()  # NVML errors already mean "no GPU" there ([]), never an exception
        if not gpus:
            return []
        used = GaugeMetricFamily(
            f"{PREFIX}_gpu_memory_used_bytes", "GPU memory in use (all processes).", labels=["gpu", "name"]
        )
        total = GaugeMetricFamily(f"{PREFIX}_gpu_memory_total_bytes", "GPU memory in total.", labels=["gpu", "name"])
        for gpu in gpus:
            labels = [str(gpu["index"]), gpu["name"]]
            used.add_metric(labels, gpu["memory_used_mb"] * 2**20)
            total.add_metric(labels, gpu["memory_total_mb"] * 2**20)
        return [used, total]


class DeviceCollector(Collector):
    """Where the model runs, once loaded: `device_info{device, name, backend}` 1, and `gpu_unused` 1 when an
    NVIDIA GPU is present but the model runs on the CPU (alert on it)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterable[Metric]:
        spec = self.engine.spec
        if spec is None or self.engine.state != "ready":
            return []
        report = device_report(self.engine.config.device, spec.device, self.engine.backend)
        info = GaugeMetricFamily(
            f"{PREFIX}_device_info",
            "The device the model runs on (1), with the GPU's name and the backend.",
            labels=["device", "name", "backend"],
        )
        info.add_metric([spec.device, report["name"] or "", self.engine.backend or ""], 1)
        unused = GaugeMetricFamily(
            f"{PREFIX}_gpu_unused",
            "1 when an NVIDIA GPU is present but the model runs on the CPU (see /health's gpu_warning for why).",
        )
        unused.add_metric([], 1 if report["warning"] else 0)
        return [info, unused]


class Metrics:
    def __init__(self, engine: Engine, admission: Admission, streams: StreamRegistry | None = None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_http_requests", "API requests by route and outcome.", ["route", "outcome"], registry=r
        )
        self.latency = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "API request latency, by route.",
            ["route"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )
        self.transcriptions = Counter(
            f"{PREFIX}_transcriptions",
            "Transcriptions (UI and API) by outcome: ok, "
            "or the error code (not_audio, too_long, model_not_ready, ..., error).",
            ["outcome"],
            registry=r,
        )
        self.audio_seconds = Histogram(
            f"{PREFIX}_audio_duration_seconds",
            "Audio length of each transcription.",
            registry=r,
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
        )
        self.rtf = Histogram(
            f"{PREFIX}_real_time_factor",
            "Processing time / audio length of each transcription.",
            registry=r,
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
        )
        Gauge(
            f"{PREFIX}_queue_depth",
            "Jobs counted against the admission limit: API requests in flight + UI jobs waiting.",
            registry=r,
        ).set_function(lambda: admission.depth)
        Gauge(f"{PREFIX}_queue_max_size", "The admission limit (QUEUE_MAX_SIZE).", registry=r).set(admission.max_size)
        Gauge(f"{PREFIX}_model_waiting", "Calls waiting for the model lock.", registry=r).set_function(
            lambda: engine.waiting
        )
        Gauge(f"{PREFIX}_model_busy", "1 while the model is running.", registry=r).set_function(
            lambda: int(engine.busy)
        )
        Gauge(f"{PREFIX}_model_loaded", "1 when the model is loaded and ready.", registry=r).set_function(
            lambda: int(engine.state == "ready")
        )
        # FunASR WebSocket streams (api.funasr_ws).
        streams = streams or StreamRegistry(0)
        Gauge(f"{PREFIX}_streams_open", "WebSocket streams open now.", registry=r).set_function(lambda: streams.open)
        Gauge(f"{PREFIX}_streams_max", "The stream limit (MAX_STREAMS).", registry=r).set(streams.max_streams)
        self.streams = Counter(
            f"{PREFIX}_streams",
            "WebSocket streams ended, by outcome: ok, disconnected (mid-"
            "utterance), busy, unauthorized, bad_request, too_large, idle_timeout, not_ready, "
            "error.",
            ["outcome"],
            registry=r,
        )
        self.stream_audio_seconds = Counter(
            f"{PREFIX}_stream_audio_seconds",
            "Audio received over WebSocket streams, in seconds, by mode.",
            ["mode"],
            registry=r,
        )
        latency_buckets = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)
        self.partial_latency = Histogram(
            f"{PREFIX}_stream_partial_latency_seconds",
            "From the audio frame that completes a chunk arriving to its online answer being sent.",
            registry=r,
            buckets=latency_buckets,
        )
        self.final_latency = Histogram(
            f"{PREFIX}_stream_final_latency_seconds",
            "From the audio frame in which "
            "the VAD closes a segment (or the end of the utterance) arriving to its "
            "final answer being sent.",
            registry=r,
            buckets=latency_buckets,
        )
        r.register(GPUCollector())
        r.register(DeviceCollector(engine))
        engine.add_observer(self.observe_transcription)

    def observe_transcription(self, result: Transcription | None, error: BaseException | None) -> None:
        if result is None:
            self.transcriptions.labels(error.code if isinstance(error, ASRError) else "error").inc()
            return
        self.transcriptions.labels("ok").inc()
        self.audio_seconds.observe(result.duration)
        if result.duration:
            self.rtf.observe(result.rtf)

    @contextmanager
    def track(self, route: str) -> Iterator[None]:
        """Time a request and count its outcome: "ok", the APIError's outcome, or "error" for anything else."""
        started = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        except APIError as exc:
            outcome = exc.outcome
            raise
        finally:
            self.requests.labels(route, outcome).inc()
            self.latency.labels(route).observe(time.perf_counter() - started)

    def render(self) -> bytes:
        return generate_latest(self.registry)
