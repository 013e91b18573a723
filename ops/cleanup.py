#!/usr/bin/env python3
"""Temp cleanup: remove upload temp files not accessed for more than CLEANUP_MAX_AGE_H hours (default 1).

    python ops/cleanup.py [--max-age-hours 1] [--dry-run]     # cron: every 2 hours

Works only inside TEMP_DIR (default tmp/uploads; Gradio puts each upload in a subfolder there). Symbolic links
are never followed: a link is removed as a link, what it points to is left alone. Subfolders emptied by the run
(or empty and older than the age limit) are removed; TEMP_DIR itself stays. "Not accessed" means neither read
(atime) nor written (mtime) since the limit, so a `noatime`/`relatime` mount errs on the side of keeping files.
Every removal and the bytes freed go to LOG_DIR/ops.log. Exit status: 0 done, 1 some entries could not be removed.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import stat
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ops.common import ROOT, Config, run_loop, setup_logging  # noqa: E402


def last_used(st: os.stat_result) -> float:
    if stat.S_ISLNK(st.st_mode):  # resolving a link updates its atime: only its mtime (creation) means anything
        return st.st_mtime
    return max(st.st_atime, st.st_mtime)


def check_temp_dir(temp_dir: Path) -> Path:
    """The resolved temp dir, refusing places where a cleanup could only do harm."""
    resolved = temp_dir.resolve()
    forbidden = {Path("/"), Path.home().resolve(), ROOT, ROOT.parent}
    if resolved in forbidden or len(resolved.parts) < 3:
        raise SystemExit(f"refusing to clean {resolved}: TEMP_DIR must be a dedicated folder such as tmp/uploads")
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
                logger.info("%s %s (%d bytes, last used %s)", verb, path, size,
                            time.strftime("%Y-%m-%d %H:%M", time.localtime(last_used(st))))
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
    logger.info("cleanup of %s: %s %d file(s), %d folder(s), %.1f MB freed (%d bytes)%s", root, verb, removed,
                dirs_removed, freed / 1e6, freed, f", {errors} error(s)" if errors else "")
    return errors


def main(argv: list[str] | None = None) -> int:
    config = Config()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--temp-dir", type=Path, default=config.path("TEMP_DIR", "tmp/uploads"),
                        help="the folder to clean (TEMP_DIR, default tmp/uploads)")
    parser.add_argument("--max-age-hours", type=float, default=config.get_float("CLEANUP_MAX_AGE_H", 1.0),
                        help="remove files not accessed for this long (CLEANUP_MAX_AGE_H, default 1)")
    parser.add_argument("--dry-run", action="store_true", help="only log what would be removed")
    parser.add_argument("--loop", action="store_true", help="clean every CLEANUP_INTERVAL_S s (default 7200)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log to LOG_DIR/ops.log only (cron)")
    args = parser.parse_args(argv)
    if args.max_age_hours < 0:
        parser.error("--max-age-hours must be >= 0")
    logger = setup_logging("cleanup", config.log_dir, verbose=not args.quiet)
    temp_dir = args.temp_dir if args.temp_dir.is_absolute() else ROOT / args.temp_dir

    def step() -> int:
        return 1 if cleanup(temp_dir, args.max_age_hours * 3600, logger, dry_run=args.dry_run) else 0

    if args.loop:
        return run_loop(step, config.get_float("CLEANUP_INTERVAL_S", 7200), logger)
    return step()


if __name__ == "__main__":
    sys.exit(main())
