"""Named hotword lists (热词库): stored beside the jobs, owned like jobs and results, named by requests.

`records` (a list, FunASR's `词 权重` text and CSV formats), `store` (SQLite or Redis), `service` (ownership,
limits, and the hotwords a request ends up with). No HTTP and no Gradio here: `api.hotword_lists` and
`webui.hotword_lists` are the thin doors to it.
"""

from .records import DEFAULT_LIST, SHARED, FormatError, HotwordList, Word
from .service import HotwordListError, HotwordListService, ListLimits, split_refs
from .store import open_list_store

__all__ = [
    "DEFAULT_LIST",
    "SHARED",
    "FormatError",
    "HotwordList",
    "HotwordListError",
    "HotwordListService",
    "ListLimits",
    "Word",
    "open_list_store",
    "split_refs",
]
