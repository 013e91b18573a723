"""What the app's /health says, for run.sh (start waits on it, status shows it) and the watchdog.

    python -m ops.health URL     # three lines: the status word (with the detail on an error), the device the
                                 # model runs on (empty before the load), a warning about an unused GPU (or empty)
    python -m ops.health --ok [URL]  # the status word; exit 0 when it is ok, 1 otherwise (the container's
                                     # HEALTHCHECK); without URL, the app's own: CHECK_HOST:PORT of the settings

Standard library only: run.sh asks once a second while an app starts.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any


class NoAnswer(Exception):
    """/health did not answer (refused, timed out, not JSON); the message says how."""


def read_health(url: str, timeout: float) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of /health: 503 bodies too (loading, load error); NoAnswer when there is none."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            code, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:  # 503 while loading or after a load error; the body says which
        code, raw = exc.code, exc.read()
    except (OSError, ValueError) as exc:
        raise NoAnswer(f"no answer from {url} ({getattr(exc, 'reason', exc)})") from None
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        body = {}
    return code, body if isinstance(body, dict) else {}


def gpu_warning(body: dict[str, Any]) -> str:
    """The app's own warning about a GPU it does not use; else, for an app on the CPU on a machine whose nvidia-smi
    lists a GPU (one NVML cannot see), what nvidia-smi lists."""
    warning = " ".join(str(body.get("gpu_warning") or "").split())
    device = str(body.get("device") or "")
    if warning or not device or device.startswith("cuda"):
        return warning
    from ops.cuda import nvidia_facts

    facts = nvidia_facts()
    if not facts.gpus:
        return ""
    return f"nvidia-smi lists {facts.names} but the model runs on {device}: see ./run.sh check-gpu and docs/gpu.md"


def summary(url: str, timeout: float = 5) -> list[str]:
    try:
        _, body = read_health(url, timeout)
    except NoAnswer:
        return ["down", "", ""]
    detail = body.get("detail")
    status = str(body.get("status", "unknown")) + (f" ({detail})" if detail else "")
    return [" ".join(status.split()), str(body.get("device") or ""), gpu_warning(body)]


def settings_url() -> str:
    """This app's /health, as run.sh asks it: the settings' CHECK_HOST and PORT (environment, then ENV_FILE)."""
    from ops.common import read_settings

    settings = read_settings()
    return f"http://{settings.check_host}:{settings.port}/health"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--ok"] and len(argv) <= 2:
        status = summary(argv[1] if len(argv) == 2 else settings_url())[0]
        print(status)
        return 0 if status == "ok" else 1
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m ops.health URL | python -m ops.health --ok [URL]", file=sys.stderr)
        return 2
    print("\n".join(summary(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
