"""Who may see, change and use which hotword list, and the hotwords a request ends up with.

Owners are `results.Owner`s, as for jobs and results: an API key, an admin key or a browser's owner cookie. An
owner sees and changes its own lists; shared lists (owner SHARED) are seen and used by everyone and changed only
with an admin key. Any other list answers 404, as one that does not exist, so ids and names cannot be probed.

A request names lists by id or name (its own name first, then a shared list's). Its hotwords are the lists'
words followed by its own `hotwords`; a request that names no list and gives no hotwords gets the shared
`default` list (the service's DEFAULT_HOTWORDS, editable while the service runs), or the engine's default when
that list was deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from asr.hotwords import parse_hotwords
from results import Owner

from .records import DEFAULT_LIST, SHARED, FormatError, HotwordList, Word, is_list_id, new_list
from .store import ListLimitReached, ListStore, NameTaken

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListLimits:
    max_lists_per_owner: int = 50
    max_words: int = 100
    max_word_chars: int = 20
    max_name_chars: int = 64
    max_lists_per_request: int = 8


class HotwordListError(Exception):
    """A list request that cannot be served: HTTP `status`, catalogue `key` (code.reason) with `params`."""

    def __init__(self, status: int, code: str, reason: str = "", **params: object):
        super().__init__(f"{code}{'.' + reason if reason else ''}")
        self.status, self.code, self.params = status, code, params
        self.key = f"{code}.{reason}" if reason else code


def _not_found(ref: str) -> HotwordListError:
    return HotwordListError(404, "hotword_list_not_found", ref=ref[:80])


def split_refs(value: str | Sequence[str] | None) -> list[str]:
    """List references as requests give them: several values, or one with commas."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


class HotwordListService:
    def __init__(self, store: ListStore, limits: ListLimits | None = None):
        self.store = store
        self.limits = limits or ListLimits()

    # ------------------------------------------------------------------------------------------ checks
    def _checked_name(self, name: object) -> str:
        if not isinstance(name, str) or not name.strip():
            raise HotwordListError(400, "bad_hotword_list", "name", limit=self.limits.max_name_chars)
        name = name.strip()
        if len(name) > self.limits.max_name_chars or "," in name or is_list_id(name) or not name.isprintable():
            raise HotwordListError(400, "bad_hotword_list", "name", limit=self.limits.max_name_chars)
        return name

    def _checked_words(self, words: list[Word]) -> list[Word]:
        limits = self.limits
        if len(words) > limits.max_words:
            raise HotwordListError(400, "bad_hotword_list", "too_many", count=len(words), limit=limits.max_words)
        for word in words:
            if len(word.text) > limits.max_word_chars:
                raise HotwordListError(
                    400, "bad_hotword_list", "too_long", word=word.text[:40], limit=limits.max_word_chars
                )
            # One word as the model will see it: the engine splits hotwords at spaces and commas.
            if parse_hotwords(word.text, max_count=1_000_000, max_chars=1_000_000) != [word.text]:
                raise HotwordListError(400, "bad_hotword_list", "separator", word=word.text[:40])
        return words

    @staticmethod
    def format_error(exc: FormatError) -> HotwordListError:
        return HotwordListError(400, "bad_hotword_list", exc.reason, line=exc.line)

    def _readable(self, hotword_list: HotwordList | None, owner: Owner, ref: str) -> HotwordList:
        if hotword_list is None or not (hotword_list.shared or owner.may_read(hotword_list.owner)):
            raise _not_found(ref)
        return hotword_list

    def _writable(self, list_id: str, owner: Owner) -> HotwordList:
        hotword_list = self._readable(self.store.get(list_id), owner, list_id)
        if hotword_list.shared and not owner.admin:
            raise HotwordListError(403, "hotword_list_shared")
        return hotword_list

    # ------------------------------------------------------------------------------------------ CRUD
    def visible(self, owner: Owner) -> list[HotwordList]:
        """The owner's lists, then the shared ones."""
        return self.store.of_owner(owner.id) + self.store.of_owner(SHARED)

    def get(self, list_id: str, owner: Owner) -> HotwordList:
        return self._readable(self.store.get(list_id) if is_list_id(list_id) else None, owner, list_id)

    def create(self, owner: Owner, name: object, words: list[Word], *, shared: bool = False) -> HotwordList:
        if shared and not owner.admin:
            raise HotwordListError(403, "hotword_list_shared")
        hotword_list = new_list(self._checked_name(name), SHARED if shared else owner.id, self._checked_words(words))
        try:
            self.store.create(hotword_list, max_per_owner=self.limits.max_lists_per_owner)
        except ListLimitReached:
            raise HotwordListError(409, "hotword_list_limit", limit=self.limits.max_lists_per_owner) from None
        except NameTaken:
            raise HotwordListError(409, "hotword_list_exists", name=hotword_list.name) from None
        logger.info("hotword list %s created (%d words%s)", hotword_list.id, len(words), ", shared" if shared else "")
        return hotword_list

    def update(
        self, list_id: str, owner: Owner, *, name: object = None, words: list[Word] | None = None
    ) -> HotwordList:
        hotword_list = self._writable(list_id, owner)
        if name is not None:
            hotword_list.name = self._checked_name(name)
        if words is not None:
            hotword_list.words = self._checked_words(words)
        hotword_list.updated_at = time.time()
        try:
            if not self.store.replace(hotword_list):
                raise _not_found(list_id)
        except NameTaken:
            raise HotwordListError(409, "hotword_list_exists", name=hotword_list.name) from None
        logger.info("hotword list %s changed (%d words)", hotword_list.id, len(hotword_list.words))
        return hotword_list

    def delete(self, list_id: str, owner: Owner) -> None:
        self._writable(list_id, owner)
        if not self.store.delete(list_id):
            raise _not_found(list_id)
        logger.info("hotword list %s deleted", list_id)

    def seed_default(self, words: Sequence[str]) -> None:
        """Make DEFAULT_HOTWORDS the shared `default` list, once: later edits of the list are kept."""
        if self.store.by_name(SHARED, DEFAULT_LIST) is not None:
            return
        try:
            self.store.create(new_list(DEFAULT_LIST, SHARED, [Word(w) for w in words]), max_per_owner=0)
            logger.info("hotword list %r created from DEFAULT_HOTWORDS (%d words)", DEFAULT_LIST, len(words))
        except NameTaken:
            pass  # another replica made it first

    # ------------------------------------------------------------------------------------------ requests
    def find(self, ref: str, owner: Owner | None) -> HotwordList:
        """A list by id, or by name: the owner's own first, then a shared one (only those without an owner)."""
        if is_list_id(ref):
            found = self.store.get(ref)
        else:
            found = (self.store.by_name(owner.id, ref) if owner else None) or self.store.by_name(SHARED, ref)
        if found is not None and not found.shared and (owner is None or not owner.may_read(found.owner)):
            found = None
        if found is None:
            raise _not_found(ref)
        return found

    def request_hotwords(self, refs: Sequence[str], hotwords: str | None, owner: Owner | None) -> str | None:
        """What to pass as the engine's `hotwords`: the named lists' words, then the request's own; None leaves
        the engine's default (no list named, no hotwords, and no shared `default` list)."""
        if len(refs) > self.limits.max_lists_per_request:
            raise HotwordListError(400, "bad_hotword_list", "too_many_lists", limit=self.limits.max_lists_per_request)
        if not refs:
            if hotwords is not None:
                return hotwords
            default = self.store.by_name(SHARED, DEFAULT_LIST)
            return None if default is None else ",".join(default.texts)
        words = [word for ref in refs for word in self.find(ref, owner).texts]
        return ",".join(words + ([hotwords] if hotwords else []))
