"""Stored results and who may read them: the web UI's downloads today, the jobs API's results tomorrow.

- `store`: result folders under OUTPUT_DIR with unguessable names (`RESULT_ID_BITS` random bits) and an
  owner record; `ResultStore.create / get / file / list`, `ResultNotFound` for "missing or not yours".
- `access`: the caller as an `Owner` (owner cookie, API key, admin key), and the middleware that issues the
  cookie and answers 404 to anyone fetching a result file they do not own.

Used by app.py (the middleware), webui/ (writing and listing results) and api/ (`/v1/results`). Knows nothing
of the engine or of Gradio's components.
"""

from .access import OWNER_COOKIE, ResultAccess, ResultsMiddleware, owner_cookie
from .store import RESULT_ID_BITS, Owner, Result, ResultNotFound, ResultStore, is_result_id, new_result_id

__all__ = [
    "OWNER_COOKIE",
    "RESULT_ID_BITS",
    "Owner",
    "Result",
    "ResultAccess",
    "ResultNotFound",
    "ResultStore",
    "ResultsMiddleware",
    "is_result_id",
    "new_result_id",
    "owner_cookie",
]
