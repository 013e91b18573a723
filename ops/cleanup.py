#!/usr/bin/env python3
"""Cleanup: upload temp files not accessed for CLEANUP_MAX_AGE_H hours (default 1), results older than
OUTPUT_RETENTION_H hours (default 168, a week; 0 keeps them), and finished jobs older than JOB_RETENTION_H hours
(default 24).

    python ops/cleanup.py [--max-age-hours 1] [--retention-hours 168] [--job-retention-hours 24] [--dry-run]
    # cron: every 2 hours

Temp files: only inside TEMP_DIR (default tmp/uploads; Gradio puts each upload in a subfolder there). Subfolders
emptied by the run (or empty and older than the age limit) are removed; TEMP_DIR itself stays. "Not accessed"
means neither read (atime) nor written (mtime) since the limit, so a `noatime`/`relatime` mount errs on the side
of keeping files.

Results: each entry of OUTPUT_DIR (default outputs; one folder per result) goes as a whole once nothing in it
was written for OUTPUT_RETENTION_H hours; downloading a result does not keep it longer. A batch still being
written is kept (its newest file is fresh).

Jobs: a job that finished (done, failed or cancelled) more than JOB_RETENTION_H hours ago loses its folders under
JOBS_DIR and its record (the SQLite file in JOBS_DIR, or Redis with JOBS_BACKEND=redis: the same settings as the
app). Queued and running jobs are never touched; job folders without a record (a submission cut short) go once
older than the retention.

Symbolic links are never followed in either: a link is removed as a link, what it points to is left alone.
Every removal and the bytes freed go to LOG_DIR/ops.log. Exit status: 0 done, 1 some entries could not be removed.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import shutil
import stat
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ops.common import ROOT, read_settings, run_loop, setup_logging  # noqa: E402
from ops.settings import OpsSettings  # noqa: E402

_RESULT_NAME = re.compile(r"[a-z]+-\d{8}-\d{6}-[0-9a-f]{32}")  # results/store.py's names (ops imports no app code)


def last_used(st: os.stat_result) -> float:
    if stat.S_ISLNK(st.st_mode):  # resolving a link updates its atime: only its mtime (creation) means anything
        return st.st_mtime
    return max(st.st_atime, st.st_mtime)


def check_temp_dir(temp_dir: Path, key: str = "TEMP_DIR", example: str = "tmp/uploads") -> Path:
    """The resolved folder, refusing places where a cleanup could only do harm."""
    resolved = temp_dir.resolve()
    forbidden = {Path("/"), Path.home().resolve(), ROOT, ROOT.parent}
    if resolved in forbidden or len(resolved.parts) < 3:
        raise SystemExit(f"refusing to clean {resolved}: {key} must be a dedicated folder such as {example}")
    return resolved


def cleanup(temp_dir: Path, max_age_s: float, logger: logging.Logger, *, dry_run: bool = False) -> int:
    """Remove old files (and emptied subfolders) under temp_dir; return the number of entries that failed."""
    if not temp_dir.is_dir():
        logger.info("nothing to clean: %s does not exist", temp_dir)
        return 0
    root = check_temp_dir(temp_dir)
    cutoff = time.time() - max_age_s
    removed = freed = errors = dirs_removed = 0
    verb = "would remove" if dry_run else "removed"
    # Bottom-up, so a folder is looked at after its contents; os.walk never descends into symlinked folders.
    for dirpath, dirnames, filenames in os.walk(root, topdown=False, followlinks=False):
        here = Path(dirpath)
        emptied = False
        # os.walk lists symlinks to folders under dirnames: treat them as the links they are.
        links = [d for d in dirnames if (here / d).is_symlink()]
        for name in filenames + links:
            path = here / name
            try:
                st = path.lstat()  # the entry itself, never a link's target
                if last_used(st) > cutoff:
                    continue
                size = st.st_size if stat.S_ISREG(st.st_mode) else 0
                if not dry_run:
                    path.unlink()
                removed += 1
                freed += size
                emptied = True
                logger.info(
                    "%s %s (%d bytes, last used %s)",
                    verb,
                    path,
                    size,
                    time.strftime("%Y-%m-%d %H:%M", time.localtime(last_used(st))),
                )
            except FileNotFoundError:
                continue  # gone meanwhile
            except OSError as exc:
                errors += 1
                logger.error("could not remove %s: %s", path, exc)
        if here == root or dry_run:
            continue
        try:
            if any(here.iterdir()):
                continue
            if emptied or last_used(here.lstat()) <= cutoff:
                here.rmdir()
                dirs_removed += 1
                logger.info("removed empty folder %s", here)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:  # a new upload arrived meanwhile
                continue
            errors += 1
            logger.error("could not remove folder %s: %s", here, exc)
    logger.info(
        "cleanup of %s: %s %d file(s), %d folder(s), %.1f MB freed (%d bytes)%s",
        root,
        verb,
        removed,
        dirs_removed,
        freed / 1e6,
        freed,
        f", {errors} error(s)" if errors else "",
    )
    return errors


def _newest_write(path: Path) -> tuple[float, int, int]:
    """(newest mtime, files, bytes) of an entry and everything under it, without following links."""
    st = path.lstat()
    newest, files, size = st.st_mtime, 0, 0
    if not stat.S_ISDIR(st.st_mode):
        return newest, 1, st.st_size if stat.S_ISREG(st.st_mode) else 0
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in dirnames + filenames:
            sub = Path(dirpath) / name
            sub_st = sub.lstat()
            newest = max(newest, sub_st.st_mtime)
            if not stat.S_ISDIR(sub_st.st_mode):
                files += 1
                size += sub_st.st_size if stat.S_ISREG(sub_st.st_mode) else 0
    return newest, files, size


def _shown(name: str) -> str:
    # The random part of a result's name stays out of the log; the kind, time and 6 digits identify it.
    return name[:-26] + "…" if _RESULT_NAME.fullmatch(name) else name


def expire_results(output_dir: Path, max_age_s: float, logger: logging.Logger, *, dry_run: bool = False) -> int:
    """Remove result folders (whole) under output_dir not written for max_age_s; return the entries that failed."""
    if not output_dir.is_dir():
        logger.info("no results to expire: %s does not exist", output_dir)
        return 0
    root = check_temp_dir(output_dir, "OUTPUT_DIR", "outputs")
    cutoff = time.time() - max_age_s
    removed = freed = errors = 0
    verb = "would remove" if dry_run else "removed"
    for entry in sorted(root.iterdir()):
        try:
            newest, files, size = _newest_write(entry)
            if newest > cutoff:
                continue
            if not dry_run:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)  # removes links inside as links, never what they point to
                else:
                    entry.unlink()
            removed += 1
            freed += size
            logger.info(
                "%s result %s (%d file(s), %d bytes, last written %s)",
                verb,
                _shown(entry.name),
                files,
                size,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(newest)),
            )
        except FileNotFoundError:
            continue
        except OSError as exc:
            errors += 1
            logger.error("could not remove result %s: %s", _shown(entry.name), exc)
    logger.info(
        "results in %s older than %.0f h: %s %d, %.1f MB freed (%d bytes)%s",
        root,
        max_age_s / 3600,
        verb,
        removed,
        freed / 1e6,
        freed,
        f", {errors} error(s)" if errors else "",
    )
    return errors


def cleanup_jobs(settings: OpsSettings, retention_h: float, logger: logging.Logger, *, dry_run: bool = False) -> int:
    """Remove finished jobs older than `retention_h`; return the number of jobs that could not be removed."""
    backend = settings.jobs_backend
    jobs_dir = settings.jobs_dir
    if backend == "sqlite" and not (jobs_dir / "jobs.db").exists():
        logger.info("no jobs to clean: %s has no job database", jobs_dir)
        return 0
    from jobs.files import JobFiles
    from jobs.records import is_job_id
    from jobs.store import open_store

    store = open_store(backend, jobs_dir, settings.jobs_redis_url)
    files = JobFiles(jobs_dir)
    cutoff = time.time() - retention_h * 3600
    removed = freed = errors = 0
    verb = "would remove" if dry_run else "removed"
    try:
        for job_id in store.finished_before(cutoff):
            try:
                if not dry_run:
                    freed += files.remove(job_id)
                    store.delete(job_id)
                removed += 1
            except Exception as exc:  # one job's trouble must not stop the others' cleanup
                errors += 1
                logger.error("could not remove job %s: %s", job_id, exc)
        for kind in ("uploads", "results"):  # folders whose record is gone (a submission cut short)
            folder = jobs_dir / kind
            for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                if (
                    is_job_id(path.name)
                    and path.is_dir()
                    and path.lstat().st_mtime < cutoff
                    and store.get(path.name) is None
                ):
                    logger.info("%s job folder without a record: %s", verb, path)
                    if not dry_run:
                        freed += files.remove(path.name)
    finally:
        store.close()
    logger.info(
        "job cleanup of %s: %s %d finished job(s) older than %g h, %.1f MB freed%s",
        jobs_dir,
        verb,
        removed,
        retention_h,
        freed / 1e6,
        f", {errors} error(s)" if errors else "",
    )
    return errors


def main(argv: list[str] | None = None) -> int:
    settings = read_settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--temp-dir", type=Path, default=settings.temp_dir, help="the folder to clean (TEMP_DIR, default tmp/uploads)"
    )
    parser.add_argument(
        "--max-age-hours",
        type=float,
        default=settings.cleanup_max_age_h,
        help="remove files not accessed for this long (CLEANUP_MAX_AGE_H, default 1)",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=settings.output_dir, help="the results folder (OUTPUT_DIR, default outputs)"
    )
    parser.add_argument(
        "--retention-hours",
        type=float,
        default=settings.output_retention_h,
        help="remove results not written for this long; 0 keeps them (OUTPUT_RETENTION_H, default 168)",
    )
    parser.add_argument(
        "--job-retention-hours",
        type=float,
        default=settings.job_retention_h,
        help="remove jobs finished longer ago than this (JOB_RETENTION_H, default 24)",
    )
    parser.add_argument("--dry-run", action="store_true", help="only log what would be removed")
    parser.add_argument("--loop", action="store_true", help="clean every CLEANUP_INTERVAL_S s (default 7200)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log to LOG_DIR/ops.log only (cron)")
    args = parser.parse_args(argv)
    if args.max_age_hours < 0:
        parser.error("--max-age-hours must be >= 0")
    if args.retention_hours < 0:
        parser.error("--retention-hours must be >= 0")
    if args.job_retention_hours <= 0:
        parser.error("--job-retention-hours must be > 0")
    logger = setup_logging("cleanup", settings.log_dir, verbose=not args.quiet)
    temp_dir = args.temp_dir if args.temp_dir.is_absolute() else ROOT / args.temp_dir
    output_dir = args.output_dir if args.output_dir.is_absolute() else ROOT / args.output_dir

    def step() -> int:
        errors = cleanup(temp_dir, args.max_age_hours * 3600, logger, dry_run=args.dry_run)
        if args.retention_hours > 0:
            errors += expire_results(output_dir, args.retention_hours * 3600, logger, dry_run=args.dry_run)
        errors += cleanup_jobs(settings, args.job_retention_hours, logger, dry_run=args.dry_run)
        return 1 if errors else 0

    if args.loop:
        return run_loop(step, settings.cleanup_interval_s, logger)
    return step()


if __name__ == "__main__":
    sys.exit(main())
