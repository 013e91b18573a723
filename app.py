"""Paraformer WebUI: one process serving the Gradio UI at `/`, `GET /health`, the API under `/v1` and FunASR's
WebSocket protocol at `ws://HOST:PORT/`.

    python app.py [--host 0.0.0.0] [--port 7860] [--queue-max-size 20]

Flags override `.env`, which overrides the defaults in config/settings.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
#: Gradio's own upload folder setting as the operator left it (create_app sets the variable for Gradio).
OPERATOR_GRADIO_TEMP_DIR = os.environ.get("GRADIO_TEMP_DIR")

import gradio as gr  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402

from api import install_api  # noqa: E402
from api.ws_protocol import FrameLimitWSProtocol  # noqa: E402
from asr.device import device_report  # noqa: E402
from asr.engine import Engine, get_engine, model_name  # noqa: E402
from config.settings import Settings, get_settings  # noqa: E402
from hotword_lists import HotwordListService, ListLimits, open_list_store  # noqa: E402
from jobs import JobService  # noqa: E402
from messages import message  # noqa: E402
from results import ResultAccess, ResultsMiddleware  # noqa: E402
from service_log import configure_logging  # noqa: E402
from webui.common import queue_concurrency  # noqa: E402

__version__ = "0.1.0"

logger = logging.getLogger("app")


def health_payload(
    settings: Settings,
    engine: Engine,
    started_at: float,
    jobs: JobService | None = None,
    streams: dict[str, int] | None = None,
    *,
    admin: bool = False,
) -> tuple[int, dict[str, Any]]:
    """/health body and status code: 200 when the model is ready, 503 while loading or after a failure.

    Anyone may ask, so the model is named by its id or folder name and a load failure by the catalogue's words;
    `admin` (an ADMIN_API_KEYS caller) also gets the folders' paths and the load error itself."""
    status = {"ready": "ok", "loading": "loading", "not_loaded": "loading", "error": "error"}[engine.state]
    spec = engine.spec
    # Once the load has resolved the device: what really runs (never the setting), and a GPU left unused.
    device = device_report(settings.device, spec.device, engine.backend) if spec else None
    body: dict[str, Any] = {
        "status": status,
        "version": __version__,
        "model": model_name(spec.asr if spec else str(settings.model_dir or settings.model)),
        # What `model=` may choose (SenseVoice once loaded), and SenseVoice's id or folder name when configured.
        "models": engine.models,
        "sensevoice_model": model_name(spec.sensevoice) if spec else None,
        "sensevoice_backend": engine.sensevoice_backend,
        "device": spec.device if spec else None,
        "device_info": device,
        "gpu_warning": device["warning"] if device else None,
        "backend": engine.backend or settings.engine_backend,
        "uptime_s": round(time.time() - started_at, 1),
        "queue": {
            "model_waiting": engine.waiting,
            "model_busy": engine.busy,
            "max_size": settings.queue_max_size,
            "concurrency": queue_concurrency(settings, engine),
        },
        "batching": engine.batching_info(),
        "requests": {"served": engine.requests_served, "failed": engine.requests_failed},
    }
    if jobs is not None:  # the job workers are threads of this process: they live and die with it
        body["jobs"] = {
            "backend": jobs.settings.jobs_backend,
            "workers": jobs.settings.job_workers,
            "running": jobs.running,
        }
        # A full disk is reported, not made a failed check: a restart would not free space (ops/watchdog.py warns).
        body["storage"] = jobs.storage.status()
    if streams is not None:
        body["streams"] = streams
    if engine.state == "error":
        body["detail"] = engine.load_error if admin else message("model_not_ready.failed")
    if admin:
        body["model_paths"] = (
            {"asr": spec.asr, "vad": spec.vad, "punc": spec.punc, "spk": spec.spk, "sensevoice": spec.sensevoice}
            if spec
            else None
        )
    return (200 if status == "ok" else 503), body


def gradio_upload_dir(settings: Settings) -> Path:
    """The folder Gradio stores uploads in, created: TEMP_DIR, unless the operator set Gradio's own GRADIO_TEMP_DIR
    (then that one, and the ownership rule of results.access guards it instead)."""
    chosen = OPERATOR_GRADIO_TEMP_DIR
    folder = Path(chosen).expanduser().resolve() if chosen else settings.resolved_temp_dir().resolve()
    if chosen and folder != settings.temp_dir.resolve():
        logger.warning(
            "GRADIO_TEMP_DIR=%s overrides TEMP_DIR=%s: uploads go there, and only their sender may read "
            "them; point ops/cleanup.py (TEMP_DIR) at it too",
            folder,
            settings.temp_dir,
        )
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(folder)  # read by Gradio when the UI is built and mounted
    return folder


def hotword_list_service(settings: Settings, engine: Engine) -> HotwordListService:
    """The lists, in the jobs' store (JOBS_BACKEND), with DEFAULT_HOTWORDS as the shared `default` list."""
    store = open_list_store(settings.jobs_backend, settings.jobs_dir, settings.jobs_redis_url)
    limits = ListLimits(
        max_lists_per_owner=settings.hotword_lists_per_owner,
        max_words=settings.hotword_list_max_words,
        max_word_chars=settings.max_hotword_chars,
    )
    service = HotwordListService(store, limits)
    try:
        service.seed_default(engine.default_hotwords)
    except Exception as exc:  # noqa: BLE001 (a store that is down now may be up for the first request)
        logger.warning("could not create the shared default hotword list: %s: %s", type(exc).__name__, exc)
    return service


def create_app(settings: Settings | None = None, engine: Engine | None = None, *, load: bool = True) -> FastAPI:
    """Build the FastAPI app with /health and the Gradio UI mounted at `/`.

    With `load=True` the engine loads in a background thread, so /health answers "loading" meanwhile.
    """
    from webui import build_i18n, build_ui, gradio_notices_head

    settings = settings or get_settings()
    engine = engine or get_engine(settings.engine_config())
    started_at = time.time()
    upload_dir = gradio_upload_dir(settings)
    jobs = JobService(settings, engine)
    hotword_lists = hotword_list_service(settings, engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if engine.state == "ready":  # load=False with an engine loaded already (tests, embedding)
            jobs.start()
        try:
            yield
        finally:
            # A running job lets go at its next segment and is queued again for the next start.
            await run_in_threadpool(jobs.stop)

    app = FastAPI(title="Paraformer WebUI", version=__version__, lifespan=lifespan)
    app.state.engine = engine
    app.state.settings = settings
    access = ResultAccess.from_settings(settings, upload_dir=upload_dir)
    app.state.results = access

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        api = getattr(app.state, "api", None)
        owner = access.owner_of(request.headers)
        code, body = health_payload(
            settings,
            engine,
            started_at,
            jobs,
            api.streams.info() if api else None,
            admin=owner is not None and owner.admin,
        )
        return JSONResponse(body, status_code=code)

    blocks = build_ui(engine, settings, access, jobs, hotword_lists)
    blocks.queue(max_size=settings.queue_max_size, default_concurrency_limit=queue_concurrency(settings, engine))
    # /v1/* and /metrics, registered before the UI is mounted at "/"; the API shares the UI queue's limit.
    install_api(app, engine, settings, blocks, access, jobs=jobs, hotword_lists=hotword_lists)
    auth = None
    if settings.webui_auth:
        user, _, password = settings.webui_auth.get_secret_value().partition(":")
        auth = (user, password)
    # Result files are handed to Gradio where they lie (a static path: not copied into its cache, where they
    # would be served to anyone with the URL) and reach only their owner: ResultsMiddleware answers 404 to
    # everyone else before Gradio sees the request. OUTPUT_DIR is not in allowed_paths.
    gr.set_static_paths([settings.output_dir])
    # max_file_size: Gradio refuses an oversized upload while receiving it, before it fills the temp dir.
    # show_error=False: an unexpected exception's text (paths, internals) stays in the log; gr.Error still shows.
    app = gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        auth=auth,
        i18n=build_i18n(),
        max_file_size=engine.limits.max_bytes,
        show_error=False,
        head=gradio_notices_head(),
    )
    app.add_middleware(ResultsMiddleware, access=access)
    if Path(blocks.GRADIO_CACHE).resolve() != upload_dir.resolve():  # fail closed: never guard the wrong folder
        raise RuntimeError(
            f"Gradio stores uploads in {blocks.GRADIO_CACHE}, not in {upload_dir}, the folder whose "
            f"uploads only their sender may read; set GRADIO_TEMP_DIR before anything imports gradio"
        )

    if load:

        def load_engine() -> None:
            try:
                engine.load()
            except Exception:  # the state and message are on the engine; /health reports them
                return
            jobs.start()  # job workers need the model; queued jobs wait in the queue until then
            if settings.max_streams:
                from asr.streaming import preload

                preload(engine)

        threading.Thread(target=load_engine, name="model-loader", daemon=True).start()
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Paraformer WebUI: Mandarin speech recognition (SeACo-Paraformer) with a web UI and /health.",
        epilog="Every other setting is read from the environment or .env (see .env.example).",
    )
    parser.add_argument("--host", help="address to listen on (HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (PORT, default 7860)")
    parser.add_argument(
        "--queue-max-size", type=int, help="jobs that may wait in the queue (QUEUE_MAX_SIZE, default 20)"
    )
    parser.add_argument("--model-dir", help="local SeACo-Paraformer folder (MODEL_DIR)")
    parser.add_argument(
        "--device",
        help="auto, cpu, cuda or cuda:N (DEVICE, default auto: the GPU when torch can "
        "use one; cuda without a usable GPU is a load error)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    settings = Settings(**overrides) if overrides else get_settings()
    configure_logging(settings.log_level)
    logger.info("starting Paraformer WebUI %s on %s:%s", __version__, settings.host, settings.port)
    app = create_app(settings, get_engine(settings.engine_config()))
    # The WebSocket message limit is STREAM_MAX_FRAME_KB, answered by the stream's own JSON error (api.ws_protocol).
    # No keepalive pings of uvicorn's own (FunASR's servers send none either): while a stream's audio waits for
    # the model, uvicorn stops reading the socket, so the client's pong would sit unread behind the audio and the
    # ping would time out a stream that is merely busy. A vanished client is caught by STREAM_IDLE_TIMEOUT_S.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=10,
        ws=FrameLimitWSProtocol,
        ws_max_size=settings.stream_max_frame_kb * 1024,
        ws_ping_interval=None,
    )


if __name__ == "__main__":
    main()
