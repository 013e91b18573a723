# Paraformer WebUI as a container image: CPU or NVIDIA GPU from this one file (docs/container.md).
#
#   docker build -t paraformer-webui:cpu .                                      # CPU torch
#   docker build -t paraformer-webui:cu128 --build-arg TORCH=cu128 .            # CUDA 12.8 torch (driver >= 570)
#   docker build -t paraformer-webui:try --build-arg TEST_MODELS=1 .            # + the tiny models, no download
#
# The CUDA torch wheels carry their own CUDA libraries, so the same slim Python base serves both builds; the GPU
# reaches the container through the NVIDIA container toolkit (`docker run --gpus all`, compose.gpu.yaml).
# Layers run from the slowest-changing to the fastest: system packages, torch, requirements.txt, the optional tiny
# models, then the code, so a code change rebuilds only the last layers.

# A mirror of the same image (a registry closer to you) can stand in: --build-arg BASE_IMAGE=...
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# nginx serves the `scale` profile of compose.yaml from this same image (ops/nginx's standalone config, run as
# the app user), so the proxy's config is the one ops/nginx.py writes for run.sh installs. A virtual environment
# (not the base's own Python) keeps pip off the system's packages whichever Python the base carries.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin app \
    && python3 -m venv "$VIRTUAL_ENV" \
    && mkdir -p /app/models /app/outputs /app/data/jobs /app/logs /app/tmp /app/cache/modelscope \
    && chown app:app /app/outputs /app/data /app/data/jobs /app/logs /app/tmp /app/cache /app/cache/modelscope

# torch first and alone, as ./run.sh install does, so nothing after it can choose its build. TORCH: cpu, or the
# CUDA build (cu126, cu128, cu130: docs/gpu.md says which driver runs which). The version is pinned with its
# local tag (2.13.0+cpu), so a wheel of another build is refused rather than installed. TORCH_INDEX_URL="" asks
# pip's own index instead (with PIP_INDEX_URL / PIP_FIND_LINKS: a mirror or a folder holding the wheel).
# pip_ca: an optional build secret with a CA bundle, for a network whose TLS the image's bundle does not verify
# (--secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt); it is never stored in a layer. The wheel's C++
# unit-test programs (torch/test, torch/bin/test_*: about 120 MB) are never loaded by Python and are dropped.
ARG TORCH=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH}
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
RUN --mount=type=secret,id=pip_ca \
    if [ -f /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && pip install -q --upgrade pip \
    && pip install -q "torch==${TORCH_VERSION}+${TORCH}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
    && torch_dir="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/torch" \
    && rm -rf "$torch_dir/test" \
    && find "$torch_dir/bin" -type f \( -name 'test_*' -o -name '*Test' \) -delete

WORKDIR /app
COPY requirements.txt ./
RUN --mount=type=secret,id=pip_ca \
    if [ -f /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && pip install -q -r requirements.txt \
    && pip check \
    && if pip show -q torchaudio 2>/dev/null; then echo "torchaudio got installed: it breaks funasr" >&2; exit 1; fi

# TEST_MODELS=1: the tiny random-weight models and the real FSMN-VAD in /app/models, for a try-out without any
# download (the text is gibberish, the pipeline is real): MODEL_DIR=models/tiny-seaco (docs/container.md).
ARG TEST_MODELS=0
COPY testmodels/ testmodels/
RUN --mount=type=secret,id=pip_ca \
    if [ -f /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && if [ "$TEST_MODELS" = 1 ]; then python -m testmodels --vad --tiny --tiny-online; fi

COPY . .

# The code stays root's (the app cannot change it); what the app writes lives in these folders.
ENV MODELSCOPE_CACHE=/app/cache/modelscope
USER app
EXPOSE 7860
VOLUME ["/app/models", "/app/outputs", "/app/data/jobs", "/app/logs", "/app/cache/modelscope"]
# ok only once the model is loaded; the first start downloads it (start period: 10 minutes).
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 CMD ["python", "-m", "ops.health", "--ok"]
# uvicorn stops on SIGTERM: open requests finish (10 s), a running job is handed back to the queue. Give the stop
# 30 s (compose.yaml's stop_grace_period, `docker stop -t 30`) before the SIGKILL.
STOPSIGNAL SIGTERM
CMD ["python", "app.py"]
