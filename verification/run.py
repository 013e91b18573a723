"""Run a verification: every manifest item through two settings, each file scored as soon as both are done.

The two settings are two callables, `(path) -> text`: the engine without and with a hotword list, fp32 and
int8, ITN off and on. Files go one at a time, A then B, so a caller that stores each `on_progress` row can
restart an interrupted run with `done=` and only the files not yet finished are transcribed again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from .manifest import ManifestItem
from .problems import Problem, Stage
from .report import FileRow, Report

logger = logging.getLogger(__name__)

#: One setting: the text it recognises in the file at `path`.
Transcriber = Callable[[str], str]
#: Called after each file with its row, the files finished so far (resumed ones included) and the total.
ProgressListener = Callable[[FileRow, int, int], None]


class VerificationStopped(Exception):
    """`should_stop` said stop: `rows` are the files finished before it (each was already given to
    `on_progress`)."""

    def __init__(self, rows: Sequence[FileRow]):
        self.rows = list(rows)
        super().__init__(f"verification stopped after {len(self.rows)} files")


def verify(
    items: Sequence[ManifestItem],
    transcribe_a: Transcriber,
    transcribe_b: Transcriber,
    hotwords: Sequence[str],
    *,
    label_a: str = "A",
    label_b: str = "B",
    done: Mapping[str, tuple[str, str]] | None = None,
    on_progress: ProgressListener | None = None,
    should_stop: Callable[[], bool] | None = None,
    fatal_errors: tuple[type[BaseException], ...] = (),
) -> Report:
    """Transcribe every usable item with both settings and score it against its reference and `hotwords`.

    Args:
        items: the manifest (`verification.manifest`); items with a problem are reported, not transcribed.
        transcribe_a, transcribe_b: the two settings, each `(path) -> text`.
        hotwords: the words whose recall is counted (the list under test, whatever the settings are).
        label_a, label_b: what the report calls the settings.
        done: hypotheses already computed, `{str(item.path): (text_a, text_b)}` (the rows a previous run gave
            `on_progress`): those files are scored again but not transcribed again.
        on_progress: called after each file, resumed ones included, in manifest order.
        should_stop: checked before each transcription; True ends the run with VerificationStopped.
        fatal_errors: exceptions that end the whole run, raised unchanged, instead of failing one file (a
            job's own cancel or shutdown signal raised from inside a transcription).

    A file whose transcription raises anything else fails alone: its row gets the exception's catalogue key
    (an engine `ASRError` carries one) or "internal", and the run goes on. Returns the report of all items.
    """
    done = done or {}
    rows: list[FileRow] = []
    total = len(items)
    for item in items:
        path = str(item.path) if item.path is not None else ""
        if item.problem is not None:
            row = FileRow.build(item.name, item.reference, path=path, problems=[item.problem], hotwords=hotwords)
        elif path in done:
            text_a, text_b = done[path]
            row = FileRow.build(
                item.name, item.reference, path=path, hypothesis_a=text_a, hypothesis_b=text_b, hotwords=hotwords
            )
        else:
            texts: dict[Stage, str | None] = {}
            problems: list[Problem] = []
            for stage, transcribe in (("a", transcribe_a), ("b", transcribe_b)):
                if should_stop is not None and should_stop():
                    raise VerificationStopped(rows)
                texts[stage] = _transcribe(transcribe, path, stage, item, problems, fatal_errors)
            row = FileRow.build(
                item.name,
                item.reference,
                path=path,
                hypothesis_a=texts["a"],
                hypothesis_b=texts["b"],
                problems=problems,
                hotwords=hotwords,
            )
        rows.append(row)
        if on_progress is not None:
            on_progress(row, len(rows), total)
    return Report.build(label_a, label_b, hotwords, rows)


def _transcribe(
    transcribe: Transcriber,
    path: str,
    stage: Stage,
    item: ManifestItem,
    problems: list[Problem],
    fatal_errors: tuple[type[BaseException], ...],
) -> str | None:
    try:
        return transcribe(path)
    except fatal_errors:
        raise
    except Exception as error:
        problem = Problem.of_exception(stage, error)
        # the file's own name and the error kind; a server path or an internal error's trace is for the log
        if problem.key == "internal":
            logger.exception("verification: setting %s failed on manifest line %d", stage.upper(), item.line)
        else:
            logger.info("verification: setting %s refused manifest line %d: %s", stage.upper(), item.line, problem.key)
        problems.append(problem)
        return None
