"""Files a job names instead of uploading: a path on the server, or a URL, each only where an admin allows it.

- `path`: a file under one of JOB_ALLOWED_DIRS (comma-separated folders). The path is resolved (links and `..`
  followed) before it is checked, so nothing outside those folders can be named; it must be a regular file.
- `url`: an http(s) URL on one of JOB_URL_HOSTS (exact host or host:port, as for callbacks). Redirects are not
  followed, so a job cannot make the server fetch from anywhere else on its network; the download stops at
  JOB_MAX_UPLOAD_MB.

Both are off by default (empty settings): a job that names one is refused with a 400 that says which setting.
Either way the file is copied into JOBS_DIR like an upload, so the job survives the source going away.
`submit_named` does all of it for a submission: the request handler only passes the names on.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from .callbacks import allowed_hosts, url_refusal
from .records import Job
from .service import JobError, JobService, Reader, Upload

DOWNLOAD_TIMEOUT_S = 60.0


def allowed_dirs(setting: str) -> list[Path]:
    return [Path(d.strip()).expanduser().resolve() for d in setting.replace("\n", ",").split(",") if d.strip()]


def server_file(path: str, dirs: list[Path]) -> Path:
    """The file `path` names, when it lies under one of `dirs`; else JobError(code="path_not_allowed")."""
    if not dirs:
        raise JobError(
            "path is not enabled on this server (JOB_ALLOWED_DIRS is empty): upload the file instead.",
            code="path_not_allowed",
        )
    resolved = Path(path).expanduser().resolve()
    if not any(resolved.is_relative_to(root) for root in dirs):
        raise JobError(
            f"'{Path(path).name}' is not in a folder this server reads jobs from (JOB_ALLOWED_DIRS).",
            code="path_not_allowed",
        )
    if not resolved.is_file():
        raise JobError(f"'{Path(path).name}' is not a file on this server.", code="path_not_found")
    return resolved


def download(url: str, hosts_setting: str, max_bytes: int, folder: Path) -> Path:
    """Fetch `url` into a temp file in `folder` (the caller removes it); JobError when not allowed or it fails."""
    reason = url_refusal(
        url,
        allowed_hosts(hosts_setting),
        field="url",
        setting="JOB_URL_HOSTS",
        verb="fetches from",
        instead=": upload the file instead",
    )
    if reason:
        raise JobError(reason, code="url_not_allowed")
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="url-", dir=folder)
    target = Path(name)
    try:
        with (
            os.fdopen(handle, "wb") as out,
            httpx.stream("GET", url, timeout=DOWNLOAD_TIMEOUT_S, follow_redirects=False) as response,
        ):
            if response.status_code != 200:
                raise JobError(f"url answered HTTP {response.status_code}.", code="url_failed")
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise JobError(
                        f"url's file is over {max_bytes / 2**20:.0f} MB (JOB_MAX_UPLOAD_MB).", code="url_failed"
                    )
                out.write(chunk)
    except httpx.HTTPError as exc:
        target.unlink(missing_ok=True)
        raise JobError(f"url could not be fetched ({type(exc).__name__}).", code="url_failed") from None
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def url_name(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or "download"


def submit_named(
    service: JobService,
    owner: Reader | str,
    uploads: list[Upload],
    *,
    paths: list[str],
    urls: list[str],
    **options: Any,
) -> Job:
    """`service.submit` for the uploads plus the server files (JOB_ALLOWED_DIRS) and URLs (JOB_URL_HOSTS) a job
    names; JobError when one is not allowed or cannot be fetched. Blocking: downloads run here, and are removed
    once submit has copied them into JOBS_DIR (or refused them)."""
    s = service.settings
    dirs = allowed_dirs(s.job_allowed_dirs)
    named = [Upload(Path(p).name, server_file(p, dirs)) for p in paths]
    downloads: list[Path] = []
    try:
        for url in urls:
            downloads.append(download(url, s.job_url_hosts, int(s.job_max_upload_mb * 2**20), s.jobs_dir / "downloads"))
            named.append(Upload(url_name(url), downloads[-1]))
        return service.submit(owner, [*uploads, *named], **options)
    finally:
        for downloaded in downloads:
            downloaded.unlink(missing_ok=True)
