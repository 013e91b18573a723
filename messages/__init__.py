"""The one catalogue of what the service says to users, in Chinese and English.

Each kind has a stable key (the API's `error.code`, the metrics label); a few kinds have variants,
`code.reason`. Every room raises or answers with these keys and the interface picks the language, so a new
message is added here once, in both languages (tests/test_error_messages.py enumerates the catalogue). The wording
never carries a server path or a tool's output: those are for the log only.
"""

from __future__ import annotations

from typing import Literal

Lang = Literal["zh", "en"]

# key: (中文, English). `{name}` is the user's own file name and is added by `ASRError.message`.
MESSAGES: dict[str, tuple[str, str]] = {
    "asr_error": ("识别失败", "recognition failed"),
    "bad_input": ("无法识别这个输入", "this input cannot be transcribed"),
    "empty": ("文件是空的（0 字节）", "the file is empty (0 bytes)"),
    "empty.no_samples": ("文件里没有音频数据", "the file contains no audio samples"),
    "empty.array": ("音频是空的（0 个采样）", "the audio is empty (0 samples)"),
    "not_audio": ("不是可读取的音频或视频文件", "not a readable audio or video file"),
    "not_audio.image": ("这是一张图片，不是音频", "this is an image, not audio"),
    "not_audio.undecodable": (
        "无法解码其中的音频（文件可能已损坏）",
        "could not decode the audio (the file may be damaged)",
    ),
    "not_audio.not_found": ("找不到文件", "file not found"),
    "not_audio.array_shape": (
        "采样数组应为一维或（帧数, 声道数），收到的形状是 {shape}",
        "expected a 1-D or (frames, channels) array, got shape {shape}",
    ),
    "no_audio_stream": ("文件中没有音轨", "the file has no audio stream"),
    "too_short": (
        "音频只有 {ms} 毫秒，至少需要 {min_ms} 毫秒",
        "the audio is {ms} ms long; at least {min_ms} ms is needed",
    ),
    "too_long": ("音频超过了 {limit_s} 秒的时长上限", "the audio is longer than the limit of {limit_s} s"),
    "too_large": (
        "文件大小 {size_mb} MB，超过了 {limit_mb} MB 的上限",
        "the file is {size_mb} MB, over the limit of {limit_mb} MB",
    ),
    "bad_hotwords": ("热词列表有误", "the hotword list is not valid"),
    "bad_hotwords.too_long": (
        "热词过长：“{word}”有 {chars} 个字符，上限是 {limit}（请拆成更短的词）",
        "hotword too long: '{word}' has {chars} characters; the limit is {limit} (split it into shorter words)",
    ),
    "bad_hotwords.too_many": (
        "热词太多：给了 {count} 个，上限是 {limit} 个",
        "too many hotwords: {count} given; the limit is {limit}",
    ),
    "speakers_unavailable": (
        "本服务器未启用说话人区分（管理员可设置 ENABLE_SPK=true 开启）",
        "speaker labels are off on this server: its admin can turn them on with ENABLE_SPK=true",
    ),
    "unknown_model": (
        "本服务器没有模型“{model}”，可用的模型：{available}",
        "this server has no model '{model}'; the models it runs: {available}",
    ),
    "hotwords_unsupported": (
        "模型 {model} 不支持热词：请去掉热词，或改用 paraformer 模型",
        "the model {model} cannot use hotwords: send none, or choose the model paraformer",
    ),
    "unsupported_language": (
        "模型 {model} 不支持语言“{language}”，可选：{available}",
        "the model {model} does not recognise the language '{language}'; it takes: {available}",
    ),
    "bad_speaker_count": (
        "说话人数应在 1 到 {limit} 之间，收到的是 {count}",
        "the number of speakers must be between 1 and {limit}, not {count}",
    ),
    "decode_failed": ("无法解码音频", "could not decode the audio"),
    "decode_failed.timeout": ("解码超过 {limit_s} 秒，已停止", "decoding took longer than {limit_s} s"),
    "model_not_ready": ("模型暂不可用，请稍后再试", "the model is not available; try again shortly"),
    "model_not_ready.loading": ("模型仍在加载，请稍后再试", "the model is still loading; try again shortly"),
    "model_not_ready.failed": (
        "模型加载失败，暂时无法识别（原因已记录在服务器日志中）",
        "the model failed to load, so nothing can be transcribed now (the reason is in the server's log)",
    ),
    "server_busy": (
        "服务繁忙（{depth} 个任务正在处理或排队，上限 {limit}），请稍后再试",
        "the service is busy ({depth} jobs in progress or waiting, limit {limit}); try again shortly",
    ),
    "interrupted": ("处理已中断，任务将由其他进程继续", "processing was interrupted; the job continues elsewhere"),
    "cancelled": ("任务已取消", "the job was cancelled"),
    "client_gone": ("客户端已断开，识别已停止", "the client went away, so the transcription was stopped"),
    "internal": ("识别时出现内部错误，已记录在服务器日志中", "an internal error occurred; it has been logged"),
    # HTTP API: keys and services a server may run without
    "missing_api_key": (
        "缺少 API 密钥：请发送请求头 'Authorization: Bearer <密钥>'",
        "missing API key: send the header 'Authorization: Bearer <key>'",
    ),
    "invalid_api_key": ("API 密钥无效", "invalid API key"),
    "no_owner": (
        "请发送 API 密钥，或保留本服务设置的 owner cookie",
        "send an API key or keep the owner cookie this service sets",
    ),
    "jobs_disabled": ("本服务器未开放后台任务", "jobs are not available on this server"),
    "storage_full": (
        "服务器存储空间已满，暂时无法保存文件，请稍后再试",
        "the server's storage is full, so the file cannot be stored now; try again later",
    ),
    "verification_not_run": (
        "未识别（任务取消或尚未处理到）",
        "not transcribed (the job was cancelled or has not got to it)",
    ),
    "hotword_lists_disabled": ("本服务器未开放热词库", "hotword lists are not available on this server"),
    "hotword_list_not_found": ("找不到热词库“{ref}”", "no hotword list '{ref}'"),
    "hotword_list_shared": (
        "共享热词库只能用管理员密钥修改",
        "shared hotword lists can only be changed with an admin key",
    ),
    "hotword_list_exists": ("已有名为“{name}”的热词库", "a hotword list named '{name}' exists already"),
    "hotword_list_limit": ("热词库已达上限（每人 {limit} 个）", "the limit of {limit} hotword lists is reached"),
    "bad_hotword_list": ("热词库有误", "the hotword list is not valid"),
    "bad_hotword_list.name": (
        "热词库需要一个名称（最多 {limit} 个字符，不含逗号）",
        "a hotword list needs a name (at most {limit} characters, no commas)",
    ),
    "bad_hotword_list.too_many": (
        "热词太多：{count} 个，每个热词库最多 {limit} 个",
        "too many words: {count}; a hotword list holds at most {limit}",
    ),
    "bad_hotword_list.too_long": (
        "热词“{word}”过长，上限是 {limit} 个字符",
        "the word '{word}' is too long; the limit is {limit} characters",
    ),
    "bad_hotword_list.separator": (
        "“{word}”含有空格或逗号：每行只写一个热词",
        "'{word}' contains a space or a comma: give one word per entry",
    ),
    "bad_hotword_list.one_word_per_line": (
        "第 {line} 行：每行一个热词，后面可以跟一个权重（“词 权重”）",
        "line {line}: one word per line, optionally followed by its weight ('word weight')",
    ),
    "bad_hotword_list.bad_weight": (
        "第 {line} 行：权重应是数字",
        "line {line}: the weight must be a number",
    ),
    "bad_hotword_list.bad_words": (
        "words 应是热词列表（字符串，或含 word 和 weight 的对象）",
        "words must be a list of words (strings, or objects with word and weight)",
    ),
    "bad_hotword_list.not_utf8": ("文件不是 UTF-8 文本", "the file is not UTF-8 text"),
    "bad_hotword_list.too_many_lists": (
        "一次请求最多使用 {limit} 个热词库",
        "a request may name at most {limit} hotword lists",
    ),
    # Verification (verification/): a manifest of recordings and their reference transcripts
    "bad_manifest": ("无法读取这个清单", "this manifest cannot be read"),
    "bad_manifest.encoding": ("清单不是 UTF-8 文本", "the manifest is not UTF-8 text"),
    "bad_manifest.empty": ("清单里没有任何条目", "the manifest has no rows"),
    "bad_manifest.no_usable_row": (
        "清单的 {rows} 行中没有一行可用（第 {line} 行：{reason}）",
        "none of the manifest's {rows} rows can be used (line {line}: {reason})",
    ),
    "bad_manifest_row": ("这一行无法使用", "this row cannot be used"),
    "bad_manifest_row.columns": (
        "应有 {expected} 列（含音频路径和参考文本），这一行有 {count} 列",
        "expected {expected} columns (with the audio path and the reference text); this row has {count}",
    ),
    "bad_manifest_row.no_path": ("缺少音频路径", "the audio path is missing"),
    "bad_manifest_row.not_found": ("找不到音频文件", "audio file not found"),
    "bad_manifest_row.not_a_file": ("这个路径不是文件", "this path is not a file"),
    "bad_manifest_row.unreadable": ("音频文件无法读取", "the audio file cannot be read"),
    "bad_manifest_row.not_allowed": (
        "这个文件不在服务器允许读取的文件夹中",
        "this file is not in a folder the server may read",
    ),
    "bad_manifest_row.command": (
        "不支持 wav.scp 中的命令管道（以 | 结尾的行）",
        "command pipes in wav.scp (lines ending in |) are not supported",
    ),
    "bad_manifest_row.no_text": (
        "text 文件中没有编号 {utt_id} 的参考文本",
        "the text file has no reference for utterance id {utt_id}",
    ),
    "bad_manifest_row.no_audio": (
        "wav.scp 中没有编号 {utt_id} 的音频",
        "wav.scp has no audio for utterance id {utt_id}",
    ),
    "bad_manifest_row.duplicate_id": (
        "编号 {utt_id} 重复（第一次出现在第 {first} 行）",
        "utterance id {utt_id} appears twice (first on line {first})",
    ),
}


def message(key: str, lang: Lang = "en", **params: object) -> str:
    """The catalogue's text for `key` in `lang` ('zh' or 'en'), placeholders filled in."""
    zh, en = MESSAGES[key]
    text = zh if lang == "zh" else en
    return text.format(**params) if params else text


def preferred_language(header: str | None, default: Lang) -> Lang:
    """The language an `Accept-Language` header prefers among Chinese and English, by its q-values
    (`en;q=0.1,zh;q=0.9` is Chinese); `default` when it names neither (or only with q=0)."""
    best: tuple[float, int, Lang] | None = None
    for position, entry in enumerate((header or "").split(",")):
        tag, *params = [part.strip() for part in entry.split(";")]
        tag = tag.lower()
        lang: Lang | None = "zh" if tag.startswith("zh") else "en" if tag.startswith("en") else None
        if lang is None:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0  # a malformed weight counts as no preference
        if not 0.0 < quality <= 1.0:
            continue
        if best is None or quality > best[0]:  # on a tie the one listed first wins
            best = (quality, position, lang)
    return best[2] if best else default
