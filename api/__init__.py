"""The HTTP API next to the UI: OpenAI-compatible `/v1/audio/transcriptions` and `/v1/models`, `/v1/results`
(the caller's stored results), `/metrics`, and FunASR's WebSocket protocol at `ws://HOST:PORT/` (`api.funasr_ws`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from asr.device import planned_device
from asr.engine import Engine
from asr.stream_models import planned_online_backend
from config.settings import Settings
from hotword_lists import HotwordListService
from jobs import JobService
from results import ResultAccess

from .admission import Admission
from .auth import APIKeys
from .errors import APIError, handle_api_error
from .funasr_ws import StreamRegistry, funasr_stream
from .hotword_lists import router as hotword_lists_router
from .jobs import install_job_metrics
from .jobs import router as jobs_router
from .metrics import Metrics
from .results import router as results_router
from .routes import APIServices, router
from .routing import refuse_other_methods
from .verifications import router as verifications_router

__all__ = ["APIServices", "Admission", "install_api", "router"]


def install_api(
    app: FastAPI,
    engine: Engine,
    settings: Settings,
    blocks: Any = None,
    access: ResultAccess | None = None,
    jobs: JobService | None = None,
    hotword_lists: HotwordListService | None = None,
) -> APIServices:
    """Add the API routes and /metrics to `app`; with `blocks` (queued), share its admission limit.
    `access` (default: from `settings`) decides who reads which result; it is kept on `app.state.results`.
    With `jobs`, serve /v1/jobs (kept on `app.state.jobs`); with `hotword_lists`, /v1/hotword-lists and the
    `hotword_list` field of requests.

    Call before mounting Gradio at "/", so these routes are matched first.
    """
    admission = Admission(settings.queue_max_size)
    if blocks is not None:
        admission.attach_gradio(blocks)
    device = planned_device(engine.config.device, engine.config.engine_backend)
    streams = StreamRegistry.for_setting(settings.max_streams, device, settings.ncpu, planned_online_backend(engine))
    api = APIServices(
        engine=engine,
        settings=settings,
        admission=admission,
        metrics=Metrics(engine, admission, streams),
        keys=APIKeys(settings.api_keys, settings.admin_api_keys),
        streams=streams,
        hotword_lists=hotword_lists,
    )
    app.state.api = api
    app.state.results = access or ResultAccess.from_settings(settings)
    app.state.jobs = jobs
    if jobs is not None:
        install_job_metrics(api.metrics, jobs)
    app.include_router(router)
    app.include_router(results_router)
    app.include_router(jobs_router)
    app.include_router(hotword_lists_router)
    app.include_router(verifications_router)
    if settings.max_streams:
        # A WebSocket route only matches WebSocket requests, so `GET /` still reaches the UI mounted at "/".
        app.add_api_websocket_route("/", funasr_stream, name="funasr_stream")
    app.add_exception_handler(APIError, handle_api_error)
    refuse_other_methods(
        app, [router, results_router, jobs_router, hotword_lists_router, verifications_router]
    )  # and /health, added before
    return api
