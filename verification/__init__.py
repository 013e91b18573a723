"""Verification (验证): does a hotword list, or any other change of setting, make recognition better?

Recordings with their reference transcripts (a manifest) are transcribed with two settings, A and B; each
hypothesis is scored against its reference (CER after a stated normalisation; each hotword's occurrences,
recalls and false alarms) and the report compares A with B, per file, overall and per hotword, as CSV, JSON
and an HTML page. Pure functions over texts and callables: nothing here knows of HTTP, the UI, the jobs
store or the service's settings. docs/verification.md has the definitions.
"""

from .manifest import ManifestError, ManifestItem, items_from_pairs, parse_kaldi, parse_table, read_manifest
from .problems import Problem
from .report import FileRow, HotwordRow, Report
from .run import VerificationStopped, verify
from .scoring import EditCounts, HotwordCounts, TextScore, hotword_terms, normalise, occurrences, score

__all__ = [
    "EditCounts",
    "FileRow",
    "HotwordCounts",
    "HotwordRow",
    "ManifestError",
    "ManifestItem",
    "Problem",
    "Report",
    "TextScore",
    "VerificationStopped",
    "hotword_terms",
    "items_from_pairs",
    "normalise",
    "occurrences",
    "parse_kaldi",
    "parse_table",
    "read_manifest",
    "score",
    "verify",
]
