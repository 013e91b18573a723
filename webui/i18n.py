"""UI wording in Chinese (the default) and English.

Static labels go to the browser as `gr.I18n` keys and are translated there from the browser's
language (`navigator.language`). Gradio's frontend falls back to English for keys a locale lacks,
so the Chinese table is registered for every locale Gradio knows except English: Chinese stays
the default and English is what an English browser asks for. Text built on the server (details,
table headers, error notices) follows the request's Accept-Language the same way (`lang_of`).
"""

from __future__ import annotations

import json
import logging

import gradio as gr

from messages import Lang, preferred_language

logger = logging.getLogger(__name__)

# key: (中文, English). The Chinese wording follows the reference UI.
TEXTS: dict[str, tuple[str, str]] = {
    "title": ("# 🎤 Paraformer 语音识别", "# 🎤 Paraformer speech recognition"),
    "subtitle": (
        "SeACo-Paraformer 中文语音识别，支持热词、批量处理与实时录音。",
        "Mandarin speech recognition with SeACo-Paraformer: hotwords, batches and live recording.",
    ),
    "tab_single": ("🎤 单个文件", "🎤 Single file"),
    "tab_batch": ("📁 批量处理", "📁 Batch"),
    "tab_live": ("🎙️ 实时录音", "🎙️ Live recording"),
    "tab_sysinfo": ("⚙️ 系统信息", "⚙️ System info"),
    "tab_lists": ("📚 热词库", "📚 Hotword lists"),
    "lists_intro": (
        "把常用热词存成热词库，在各页的热词框旁选择，或在 API、后台任务、WebSocket 中用 `hotword_list=<名称>` 引用。"
        "带“（共享）”的热词库所有人可用，只能用管理员密钥修改。"
        "SeACo 对所有热词一视同仁：权重会保存和显示，但不改变识别。",
        "Keep hotwords as named lists: pick one beside any tab's hotword box, or name it with `hotword_list=<name>` "
        "in the API, jobs and the WebSocket. Lists marked (shared) are everyone's and change only with an admin key. "
        "SeACo biases every hotword alike: weights are kept and shown but do not change the recognition.",
    ),
    "lists_pick": ("热词库", "Hotword list"),
    "lists_use": ("从热词库填入", "Fill from a hotword list"),
    "lists_name": ("名称", "Name"),
    "lists_words": ("热词（每行一个，可跟权重：“词 权重”）", "Words (one per line, optionally 'word weight')"),
    "lists_words_info": ("FunASR 热词文件格式", "FunASR's hotword file format"),
    "lists_create": ("新建", "Create"),
    "lists_save": ("保存修改", "Save changes"),
    "lists_delete": ("删除", "Delete"),
    "lists_import": ("导入 .txt / .csv", "Import .txt / .csv"),
    "lists_export": ("导出 .txt", "Export .txt"),
    "lists_exported": ("导出的文件", "Exported file"),
    "lists_shared_mark": ("（共享）", " (shared)"),
    "lists_created": ("已新建热词库“{name}”（{count} 个热词）", "Created the list '{name}' ({count} words)"),
    "lists_saved": ("已保存热词库“{name}”（{count} 个热词）", "Saved the list '{name}' ({count} words)"),
    "lists_deleted": ("已删除热词库", "The list was deleted"),
    "lists_none_picked": ("请先选择一个热词库", "Pick a hotword list first"),
    "verify_section": ("✅ 验证热词效果", "✅ Check that a list helps"),
    "verify_intro": (
        "上传录音并填写每个文件的参考文本（或上传清单：每行“文件名<TAB>文本”），选择热词库后开始。后台任务会分别在"
        "不用和使用该热词库时识别每个文件，并报告字错误率（CER，去掉标点和空格、全角转半角后计算）与每个热词的召回率。"
        "关闭页面不影响任务，稍后点“刷新”查看。",
        "Upload recordings and write each one's reference transcript (or upload a manifest: `file<TAB>text` per "
        "line), pick a hotword list and start. A background job transcribes every file without and with the list "
        "and reports the character error rate (CER, after removing punctuation and spaces and folding full-width "
        "to half-width) and each hotword's recall. Closing the page does not stop it: come back and refresh.",
    ),
    "verify_files": ("录音文件", "Recordings"),
    "verify_manifest": ("清单（可选，TSV/CSV）", "Manifest (optional, TSV/CSV)"),
    "verify_col_file": ("文件", "File"),
    "verify_col_reference": ("参考文本", "Reference transcript"),
    "verify_start": ("开始验证", "Start the check"),
    "verify_refresh": ("刷新结果", "Refresh"),
    "verify_downloads": ("验证报告（HTML / CSV / JSON）", "Report (HTML / CSV / JSON)"),
    "verify_submitted": (
        "验证任务已提交（{id}…），点“刷新结果”查看进度",
        "Check submitted ({id}…); refresh to follow it",
    ),
    "verify_progress": (
        "任务状态：{state}，已完成 {done}/{total} 个文件",
        "Job {state}: {done} of {total} files finished",
    ),
    "verify_without": ("不用热词库", "without the list"),
    "verify_with": ("使用热词库", "with the list"),
    "verify_recall": ("“{word}”召回率（出现 {n} 次）", "recall of '{word}' ({n} in the references)"),
    "audio_file": ("上传音频或视频文件（可拖入）", "Upload an audio or video file (or drag it here)"),
    "audio_files": ("上传多个音频或视频文件", "Upload several audio or video files"),
    "hotwords": ("热词列表", "Hotwords"),
    "hotwords_info": (
        "用逗号、空格或换行分隔；清空则不使用热词",
        "Separated by commas, spaces or new lines; empty for none",
    ),
    "batch_size": ("批处理大小", "Batch size"),
    "batch_size_info": (
        "每次送入模型的音频量 = 该值 × 服务默认批量秒数；长音频且显存充足时调大更快",
        "Audio per model pass = this × the server's batch seconds; raise it for long files on a big GPU",
    ),
    "start": ("开始识别", "Start recognition"),
    "start_batch": ("开始批量识别", "Start batch recognition"),
    "result": ("识别结果", "Recognition result"),
    "confidence": ("置信度", "Confidence"),
    "details": ("处理详情", "Processing details"),
    "sentences": ("句子时间戳", "Sentence timestamps"),
    "downloads": ("下载结果（TXT / SRT / VTT）", "Download (TXT / SRT / VTT)"),
    "batch_downloads": ("下载结果（CSV / ZIP）", "Download (CSV / ZIP)"),
    "batch_status": ("批量进度", "Batch progress"),
    "batch_table": ("识别结果列表", "Results"),
    "record": ("录音（录完后点击开始识别）", "Record (then click Start recognition)"),
    "live_mic": ("实时转写：点击录音开始说话", "Live transcript: start recording and speak"),
    "live_text": ("实时识别结果", "Live transcript"),
    "record_section": ("### 录音后识别", "### Record, then transcribe"),
    "live_section": (
        "### 实时转写（边说边出字，灰色部分为尚未定稿的内容）",
        "### Live transcript (text appears as you speak; grey text may still change)",
    ),
    "refresh": ("刷新信息", "Refresh"),
    "sysinfo": ("系统信息", "System information"),
    # server-side text
    "no_file": ("请先上传音频文件", "Please upload an audio file first"),
    "no_files": ("请先上传音频文件（可多选）", "Please upload one or more audio files first"),
    "no_recording": ("请先录音或上传音频", "Please record or upload audio first"),
    "too_many_files": (
        "一次最多 {limit} 个文件，本次上传了 {count} 个",
        "At most {limit} files per batch; you gave {count}",
    ),
    "audio_duration": ("音频时长", "Audio duration"),
    "processing_time": ("处理时间", "Processing time"),
    "speed": ("处理速度", "Speed"),
    "realtime": ("倍实时", "× real time"),
    "wait_time": ("排队等待", "Waiting for the model"),
    "hotwords_used": ("使用热词", "Hotwords used"),
    "none": ("无", "none"),
    "seconds": ("秒", "s"),
    "col_start": ("开始", "Start"),
    "col_end": ("结束", "End"),
    "col_text": ("文本", "Text"),
    "col_file": ("文件", "File"),
    "col_duration": ("时长(秒)", "Duration (s)"),
    "col_confidence": ("置信度", "Confidence"),
    "col_status": ("状态", "Status"),
    "status_ok": ("✅ 完成", "✅ done"),
    "status_failed": ("❌ 失败：{reason}", "❌ failed: {reason}"),
    "status_pending": ("⏳ 等待中", "⏳ waiting"),
    "batch_progress": (
        "已完成 {done}/{total}（成功 {ok}，失败 {failed}）",
        "{done}/{total} done ({ok} ok, {failed} failed)",
    ),
    "batch_saved": (
        "结果已保存（{kept}），刷新页面后仍可在“我的历史批次”中下载",
        "Results saved ({kept}); after a reload they are still under “My earlier batches”",
    ),
    "kept_hours": ("保留 {hours} 小时", "kept {hours} h"),
    "kept_forever": ("保留至管理员删除", "kept until an administrator removes them"),
    "history": ("我的历史批次（仅本浏览器可见）", "My earlier batches (only this browser can see them)"),
    "history_refresh": ("刷新列表", "Refresh list"),
    "history_downloads": (
        "下载历史结果（完成的为 ZIP，未完成的为 CSV）",
        "Download earlier results (ZIP when finished, CSV when not)",
    ),
    "col_time": ("开始时间", "Started"),
    "col_files": ("文件数", "Files"),
    "history_done": ("✅ 成功 {ok}，失败 {failed}", "✅ {ok} ok, {failed} failed"),
    "history_unfinished": ("⏸ 未完成（{done}/{total}）", "⏸ unfinished ({done}/{total})"),
    "no_session": (
        "无法识别本浏览器的会话，请刷新页面后重试",
        "This browser's session is unknown; reload the page and try again",
    ),
    "recognising": ("正在识别", "Recognising"),
    "failed": ("识别失败", "Recognition failed"),
    "speakers": ("区分说话人", "Label speakers"),
    "itn": ("数字规整", "Written numbers"),
    "itn_info": (
        "把数字、日期、时间、金额写成书面形式（2026年12月1日、下午3:30、50%）；关闭则保留口语形式",
        "Write numbers, dates, times and money as written (2026年12月1日, 下午3:30, 50%); off keeps them as spoken",
    ),
    "speakers_info": ("标出每句话是谁说的（CAM++ 说话人模型）", "Say who spoke each sentence (CAM++ speaker model)"),
    "speakers_off_info": (
        "服务器未启用说话人模型（ENABLE_SPK）",
        "The server runs without the speaker model (ENABLE_SPK)",
    ),
    "num_speakers": ("说话人数（0 = 自动判断）", "Number of speakers (0 = find out)"),
    "col_speaker": ("说话人", "Speaker"),
    "model": ("识别模型", "Model"),
    "model_info": (
        "SeACo-Paraformer：普通话，支持热词；SenseVoice-Small：普通话、粤语、英语、日语、韩语，给出语种、情绪和声音事件（不支持热词）",
        "SeACo-Paraformer: Mandarin, with hotwords; SenseVoice-Small: Mandarin, Cantonese, English, Japanese, Korean, "
        "with language, emotion and audio events (no hotwords)",
    ),
    "tags": ("在 TXT/SRT/VTT 中标注语种、情绪和事件", "Language, emotion and events in TXT/SRT/VTT"),
    "tags_info": (
        "SenseVoice：每句前加 [yue · angry · laughter] 这样的标注",
        "SenseVoice: each sentence starts with a label such as [yue · angry · laughter]",
    ),
    "col_language": ("语种", "Language"),
    "col_emotion": ("情绪", "Emotion"),
    "col_events": ("事件", "Events"),
    "model_used": ("模型", "Model"),
    "speaker_count": ("说话人数", "Speakers"),
    "downloads_words": ("下载结果（TXT / SRT / VTT / 逐字时间 TSV）", "Download (TXT / SRT / VTT / word times TSV)"),
    # jobs
    "tab_jobs": ("📋 后台任务", "📋 Jobs"),
    "submit_job": (
        "作为后台任务提交（刷新或关闭页面不受影响）",
        "Submit as a background job (survives reload or closing)",
    ),
    "jobs_intro": (
        "本浏览器提交的后台任务：在服务器上运行，刷新或关闭页面不影响；完成后可在此下载结果（保留期内）。",
        "Background jobs from this browser: they run on the server whatever the page does; download the "
        "results here when they finish (within the retention period).",
    ),
    "jobs_table": ("最近的任务", "Recent jobs"),
    "job_select": ("查看任务", "Show job"),
    "cancel_job": ("取消任务", "Cancel job"),
    "col_job": ("任务", "Job"),
    "col_submitted": ("提交时间", "Submitted"),
    "col_job_files": ("文件（完成/总数）", "Files (done/total)"),
    "col_progress": ("进度（音频秒数）", "Progress (audio seconds)"),
    "col_eta": ("预计剩余", "Time left"),
    "job_queued": ("⏳ 排队中", "⏳ queued"),
    "job_running": ("🔄 识别中", "🔄 running"),
    "job_done": ("✅ 完成", "✅ done"),
    "job_failed": ("❌ 失败", "❌ failed"),
    "job_cancelled": ("⏹️ 已取消", "⏹️ cancelled"),
    "job_submitted": (
        "已提交后台任务 {id}：在「后台任务」页查看进度，刷新或关闭页面不影响识别。",
        "Job {id} submitted: follow it in the Jobs tab; reloading or closing the page does not stop it.",
    ),
    "job_summary": (
        "任务 `{id}`：{state}，已完成 {done}/{total}（失败 {failed}），进度 {progress}",
        "Job `{id}`: {state}, {done}/{total} files done ({failed} failed), progress {progress}",
    ),
    "job_cancelling": ("正在取消：当前文件将在下一段处停止", "Cancelling: the current file stops at its next segment"),
    "no_jobs": ("本浏览器还没有后台任务", "No jobs from this browser yet"),
}

# Notices Gradio's frontend writes itself, in English whatever the locale (a full queue: HTTP 503 on
# queue/join; an upload over max_file_size, refused before it is sent): (JavaScript regex, Chinese).
GRADIO_NOTICES: list[tuple[str, str]] = [
    (r"^This application is currently busy\. Please try again\.\s*$", "服务繁忙，排队已满，请稍后再试。"),
    (r"^File\(s\) exceed the maximum allowed size of (.+?): (.+)$", "文件超过了 $1 的大小上限：$2"),
]

# Locales the Gradio 6 frontend resolves to (its bundled languages); English is left out on purpose.
_GRADIO_LOCALES = (
    "ar ca ckb de es et eu fa fi fr he hi id ja ko lt nb nl pl pt-BR pt ro ru sv ta th tr uk ur uz zh zh-CN zh-TW"
).split()


def build_i18n() -> gr.I18n:
    """The `gr.I18n` to pass to `mount_gradio_app(..., i18n=...)` or `launch(i18n=...)`."""
    chinese = {key: zh for key, (zh, _) in TEXTS.items()}
    english = {key: en for key, (_, en) in TEXTS.items()}
    return gr.I18n(en=english, **{locale: chinese for locale in _GRADIO_LOCALES})


def t(key: str) -> gr.i18n.I18nData:
    """A label translated in the browser."""
    if key not in TEXTS:
        raise KeyError(key)
    return gr.i18n.I18nData(key)


def lang_of(request: gr.Request | None) -> Lang:
    """'en' when the browser prefers English to Chinese (Accept-Language, q-values read), else 'zh' (the default)."""
    header = ""
    if request is not None and request.headers is not None:
        header = request.headers.get("accept-language", "") or ""
    return preferred_language(header, "zh")


def tr(key: str, lang: str, **values: object) -> str:
    """A server-side string in `lang`, with `{placeholders}` filled in."""
    zh, en = TEXTS[key]
    text = en if lang == "en" else zh
    return text.format(**values) if values else text


def gradio_notices_head() -> str:
    """A `<script>` for `mount_gradio_app(head=...)` that puts Gradio's own English notices into Chinese.

    Same rule as the labels: any browser whose language is not English reads Chinese.
    """
    rules = json.dumps(GRADIO_NOTICES, ensure_ascii=False)
    return f"""<script>
(() => {{
  if ((navigator.language || "").toLowerCase().startsWith("en")) return;
  const rules = {rules}.map(([pattern, zh]) => [new RegExp(pattern), zh]);
  const translate = (node) => {{
    const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
    for (let text = node.nodeType === 3 ? node : walker.nextNode(); text; text = walker.nextNode()) {{
      for (const [pattern, zh] of rules) {{
        if (pattern.test(text.data)) {{ text.data = text.data.replace(pattern, zh); break; }}
      }}
    }}
  }};
  new MutationObserver((records) => {{
    for (const record of records) {{
      if (record.type === "characterData") translate(record.target);
      record.addedNodes.forEach(translate);
    }}
  }}).observe(document.documentElement, {{ childList: true, subtree: true, characterData: true }});
}})();
</script>"""
