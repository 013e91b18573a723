"""The 热词库 / "Hotword lists" tab, and the list picker beside the other tabs' hotword boxes.

Thin: every change goes through `hotword_lists.HotwordListService`, as the API's do, under the browser's owner
cookie, so a list made here is the same list `hotword_list=<name>` names in the API. The picker copies a list's
words into the hotword box: the box stays what is sent, and the user sees exactly which words bias the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from hotword_lists import FormatError, HotwordList, HotwordListError, HotwordListService
from hotword_lists.records import parse_file, parse_text, to_text
from jobs import JobService
from messages import message
from results import ResultAccess

from .common import request_owner, safe_stem
from .i18n import lang_of, t, tr
from .verification import create_verification_section

logger = logging.getLogger(__name__)


def _fail(exc: HotwordListError, lang: str) -> gr.Error:
    return gr.Error(message(exc.key, lang, **exc.params), print_exception=False)  # type: ignore[arg-type]


def _label(item: HotwordList, lang: str) -> str:
    shared = tr("lists_shared_mark", lang) if item.shared else ""
    return f"{item.name}{shared} ({len(item.words)})"


def _choices(service: HotwordListService, access: ResultAccess, request: gr.Request | None) -> list[tuple[str, str]]:
    lang = lang_of(request)
    return [(_label(item, lang), item.id) for item in service.visible(request_owner(access, request, lang))]


def choices_update(service: HotwordListService, access: ResultAccess) -> Callable[[gr.Request], dict[str, Any]]:
    """An event handler giving a list dropdown the lists this browser may use."""

    def update(request: gr.Request) -> dict[str, Any]:
        return gr.update(choices=_choices(service, access, request))

    return update


def create_hotword_lists_tab(
    service: HotwordListService, access: ResultAccess, blocks: gr.Blocks, jobs: JobService | None = None
) -> gr.Dataframe | None:
    """The tab (with the verification section when `jobs` is given); returns the verification's table."""
    table = None
    with gr.Tab(t("tab_lists"), id="lists"):
        gr.Markdown(t("lists_intro"))
        with gr.Row():
            with gr.Column(scale=1):
                picked = gr.Dropdown(label=t("lists_pick"), choices=[], value=None, elem_id="lists-pick")
                name = gr.Textbox(label=t("lists_name"), elem_id="lists-name")
                words = gr.Textbox(label=t("lists_words"), info=t("lists_words_info"), lines=10, elem_id="lists-words")
                with gr.Row():
                    create = gr.Button(t("lists_create"), variant="primary", elem_id="lists-create")
                    save = gr.Button(t("lists_save"), elem_id="lists-save")
                    delete = gr.Button(t("lists_delete"), variant="stop", elem_id="lists-delete")
            with gr.Column(scale=1):
                imported = gr.File(label=t("lists_import"), file_types=[".txt", ".csv"], elem_id="lists-import")
                export = gr.Button(t("lists_export"), elem_id="lists-export")
                exported = gr.File(label=t("lists_exported"), interactive=False)
                status = gr.Markdown(elem_id="lists-status")
        if jobs is not None:
            table = create_verification_section(service, jobs, access, blocks, choices_update(service, access))

    def refresh(request: gr.Request, selected: str | None = None) -> dict[str, Any]:
        return gr.update(choices=_choices(service, access, request), value=selected)

    def show(list_id: str | None, request: gr.Request) -> tuple[str, str]:
        if not list_id:
            return "", ""
        lang = lang_of(request)
        try:
            item = service.get(list_id, request_owner(access, request, lang))
        except HotwordListError as exc:
            raise _fail(exc, lang) from None
        return item.name, to_text(item.words)

    def parsed(text: str, lang: str) -> list:
        try:
            return parse_text(text or "")
        except FormatError as exc:
            raise _fail(service.format_error(exc), lang) from None

    def do_create(list_name: str, text: str, request: gr.Request) -> tuple[dict[str, Any], str]:
        lang = lang_of(request)
        try:
            item = service.create(request_owner(access, request, lang), list_name, parsed(text, lang))
        except HotwordListError as exc:
            raise _fail(exc, lang) from None
        return refresh(request, item.id), tr("lists_created", lang, name=item.name, count=len(item.words))

    def do_save(list_id: str | None, list_name: str, text: str, request: gr.Request) -> tuple[dict[str, Any], str]:
        lang = lang_of(request)
        if not list_id:
            raise gr.Error(tr("lists_none_picked", lang), print_exception=False)
        try:
            item = service.update(
                list_id, request_owner(access, request, lang), name=list_name, words=parsed(text, lang)
            )
        except HotwordListError as exc:
            raise _fail(exc, lang) from None
        return refresh(request, item.id), tr("lists_saved", lang, name=item.name, count=len(item.words))

    def do_delete(list_id: str | None, request: gr.Request) -> tuple[dict[str, Any], str, str, str]:
        lang = lang_of(request)
        if not list_id:
            raise gr.Error(tr("lists_none_picked", lang), print_exception=False)
        try:
            service.delete(list_id, request_owner(access, request, lang))
        except HotwordListError as exc:
            raise _fail(exc, lang) from None
        return refresh(request), "", "", tr("lists_deleted", lang)

    def do_import(path: str | None, list_name: str, request: gr.Request) -> tuple[str, str]:
        if not path:
            return gr.update(), gr.update()  # type: ignore[return-value]
        lang = lang_of(request)
        owner = request_owner(access, request, lang)
        if not access.may_use_upload(path, owner):
            raise gr.Error(tr("no_file", lang), print_exception=False)
        file = Path(path)
        try:
            read = parse_file(file.name, file.read_bytes())
        except FormatError as exc:
            raise _fail(service.format_error(exc), lang) from None
        return list_name or file.stem, to_text(read)

    def do_export(list_id: str | None, request: gr.Request) -> str:
        lang = lang_of(request)
        if not list_id:
            raise gr.Error(tr("lists_none_picked", lang), print_exception=False)
        owner = request_owner(access, request, lang)
        try:
            item = service.get(list_id, owner)
        except HotwordListError as exc:
            raise _fail(exc, lang) from None
        path = access.store.create("hotwords", owner).folder / f"{safe_stem(item.name)}.txt"
        path.write_text(to_text(item.words), encoding="utf-8")
        return str(path)

    private: dict[str, Any] = {"api_visibility": "private"}
    blocks.load(refresh, None, picked, queue=False, **private)
    picked.input(show, picked, [name, words], **private)  # the user's pick only, not the refreshes
    create.click(do_create, [name, words], [picked, status], **private)
    save.click(do_save, [picked, name, words], [picked, status], **private)
    delete.click(do_delete, picked, [picked, name, words, status], **private)
    imported.upload(do_import, [imported, name], [name, words], **private)
    export.click(do_export, picked, exported, **private)
    return table


def hotword_list_picker(
    service: HotwordListService, access: ResultAccess, blocks: gr.Blocks, box: gr.Textbox, elem_id: str
) -> gr.Dropdown:
    """A dropdown beside `box`: picking a list puts its words in the box."""
    picker = gr.Dropdown(label=t("lists_use"), choices=[], value=None, elem_id=elem_id)
    choices = choices_update(service, access)

    def fill(list_id: str | None, request: gr.Request) -> Any:
        if not list_id:
            return gr.update()
        lang = lang_of(request)
        try:
            item = service.get(list_id, request_owner(access, request, lang))
        except HotwordListError as exc:
            raise _fail(exc, lang) from None
        return ", ".join(item.texts)

    blocks.load(choices, None, picker, queue=False, api_visibility="private")
    picker.focus(choices, None, picker, queue=False, api_visibility="private")
    picker.input(fill, picker, box, queue=False, api_visibility="private")
    return picker
