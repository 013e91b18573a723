"""Uploads and results of jobs on disk: JOBS_DIR/uploads/<job id>/<n> and JOBS_DIR/results/<job id>/<n>.json.

Paths are built from the job id (checked to be `job_` + 32 hex digits) and the file's index, never from a
name a client sent, so no upload can land outside JOBS_DIR. Results are written to a temp file and renamed,
so a crash leaves either the whole result or none.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from asr.engine import Sentence, Transcription, Word

from .records import is_job_id

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024


class JobFiles:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _folder(self, kind: str, job_id: str) -> Path:
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / kind / job_id

    def upload_path(self, job_id: str, index: int) -> Path:
        return self._folder("uploads", job_id) / f"{int(index):04d}"

    def result_path(self, job_id: str, index: int) -> Path:
        return self._folder("results", job_id) / f"{int(index):04d}.json"

    def save_upload(self, job_id: str, index: int, source: BinaryIO, max_bytes: int) -> int:
        """Copy an upload in chunks; returns its size. Raises ValueError past `max_bytes` (the file is removed)."""
        path = self.upload_path(job_id, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        with open(path, "wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    break
                out.write(chunk)
        if size > max_bytes:
            path.unlink(missing_ok=True)
            raise ValueError(f"larger than {max_bytes / 2**20:.0f} MB")
        return size

    def write_result(self, job_id: str, index: int, result: Transcription) -> None:
        self._write_json(self.result_path(job_id, index), result.to_dict())

    def hypotheses_path(self, job_id: str, index: int) -> Path:
        return self._folder("results", job_id) / f"{int(index):04d}.verification.json"

    def write_hypotheses(self, job_id: str, index: int, texts: dict) -> None:
        """A verification file's outcome: `{"a": text, "b": text}`, or `{"problem": ...}` when it failed."""
        self._write_json(self.hypotheses_path(job_id, index), texts)

    def read_hypotheses(self, job_id: str, index: int) -> dict | None:
        try:
            return json.loads(self.hypotheses_path(job_id, index).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    @staticmethod
    def _write_json(path: Path, data: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as out:
                json.dump(data, out, ensure_ascii=False)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:  # a full disk, say: no half-written temp file stays to take more space
            tmp.unlink(missing_ok=True)
            raise

    def read_result(self, job_id: str, index: int) -> Transcription | None:
        try:
            data = json.loads(self.result_path(job_id, index).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        data["sentences"] = [
            Sentence(**{**s, "words": [Word(**w) for w in s.get("words", [])]}) for s in data.get("sentences", [])
        ]
        return Transcription(**data)

    def remove_upload(self, job_id: str, index: int) -> None:
        """Delete one upload, and the job's upload folder once it is empty."""
        path = self.upload_path(job_id, index)
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()
        except OSError:  # not empty (other files still to run), or already gone
            pass

    def remove_uploads(self, job_id: str) -> None:
        """Delete a job's upload folder (no file of it will run again)."""
        shutil.rmtree(self._folder("uploads", job_id), ignore_errors=True)

    def remove(self, job_id: str) -> int:
        """Delete a job's uploads and results; returns the bytes freed."""
        freed = 0
        for kind in ("uploads", "results"):
            folder = self._folder(kind, job_id)
            if folder.is_dir():
                freed += sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
                shutil.rmtree(folder, ignore_errors=True)
        return freed
