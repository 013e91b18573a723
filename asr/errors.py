"""Errors the engine raises for input a user can fix, and the one catalogue of what they say.

Each error kind has a stable `code` (the API's `error.code`, the metrics label) and its wording lives
in `MESSAGES`, in Chinese and English, keyed by the code (a few kinds have variants, `code.reason`).
The UI and the API pick the language; `str(error)` is the English message. The wording never carries
a server path or ffmpeg's output: those go in `detail`, which is for the log only.
"""

from __future__ import annotations

from pathlib import PurePath
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
    "not_audio.undecodable": ("无法解码其中的音频（文件可能已损坏）",
                              "could not decode the audio (the file may be damaged)"),
    "not_audio.not_found": ("找不到文件", "file not found"),
    "not_audio.array_shape": ("采样数组应为一维或（帧数, 声道数），收到的形状是 {shape}",
                              "expected a 1-D or (frames, channels) array, got shape {shape}"),
    "no_audio_stream": ("文件中没有音轨", "the file has no audio stream"),
    "too_short": ("音频只有 {ms} 毫秒，至少需要 {min_ms} 毫秒", "the audio is {ms} ms long; at least {min_ms} ms is needed"),
    "too_long": ("音频超过了 {limit_s} 秒的时长上限", "the audio is longer than the limit of {limit_s} s"),
    "too_large": ("文件大小 {size_mb} MB，超过了 {limit_mb} MB 的上限",
                  "the file is {size_mb} MB, over the limit of {limit_mb} MB"),
    "bad_hotwords": ("热词列表有误", "the hotword list is not valid"),
    "bad_hotwords.too_long": ("热词过长：“{word}”有 {chars} 个字符，上限是 {limit}（请拆成更短的词）",
                              "hotword too long: '{word}' has {chars} characters; the limit is {limit} "
                              "(split it into shorter words)"),
    "bad_hotwords.too_many": ("热词太多：给了 {count} 个，上限是 {limit} 个",
                              "too many hotwords: {count} given; the limit is {limit}"),
    "speakers_unavailable": ("本服务器未启用说话人区分（管理员可设置 ENABLE_SPK=true 开启）",
                             "speaker labels are off on this server: its admin can turn them on with ENABLE_SPK=true"),
    "bad_speaker_count": ("说话人数应在 1 到 {limit} 之间，收到的是 {count}",
                          "the number of speakers must be between 1 and {limit}, not {count}"),
    "decode_failed": ("无法解码音频", "could not decode the audio"),
    "decode_failed.timeout": ("解码超过 {limit_s} 秒，已停止", "decoding took longer than {limit_s} s"),
    "model_not_ready": ("模型暂不可用，请稍后再试", "the model is not available; try again shortly"),
    "model_not_ready.loading": ("模型仍在加载，请稍后再试", "the model is still loading; try again shortly"),
    "model_not_ready.failed": ("模型加载失败，暂时无法识别（原因已记录在服务器日志中）",
                               "the model failed to load, so nothing can be transcribed now (the reason is in "
                               "the server's log)"),
    "server_busy": ("服务繁忙（{depth} 个任务正在处理或排队，上限 {limit}），请稍后再试",
                    "the service is busy ({depth} jobs in progress or waiting, limit {limit}); try again shortly"),
    "interrupted": ("处理已中断，任务将由其他进程继续", "processing was interrupted; the job continues elsewhere"),
    "cancelled": ("任务已取消", "the job was cancelled"),
    "client_gone": ("客户端已断开，识别已停止", "the client went away, so the transcription was stopped"),
    "storage_full": ("服务器存储空间已满，暂时无法保存文件，请稍后再试",
                     "the server's storage is full, so the file cannot be stored now; try again later"),
    "internal": ("识别时出现内部错误，已记录在服务器日志中", "an internal error occurred; it has been logged"),
}


def message(key: str, lang: Lang = "en", **params: object) -> str:
    """The catalogue's text for `key` in `lang` ('zh' or 'en'), placeholders filled in."""
    zh, en = MESSAGES[key]
    text = zh if lang == "zh" else en
    return text.format(**params) if params else text


class ASRError(Exception):
    """Base class: `message(lang)` is a complete, human-readable explanation; `str(error)` is the English one."""

    #: Short machine-readable code, stable across versions (used by the API, the metrics and tests).
    code = "asr_error"
    #: The catalogue key when it is not the code.
    message_key: str | None = None

    def __init__(self, name: str = "", *, reason: str = "", detail: str = "", **params: object):
        # Only the last part of a name is shown: a caller may pass a path, which must not reach the user.
        self.name = PurePath(str(name)).name if name else ""
        base = self.message_key or self.code
        self.key = f"{base}.{reason}" if reason else base
        self.params = params
        #: What the log gets besides the message (ffmpeg's output, a server path); never shown to users.
        self.detail = detail
        super().__init__(self.message("en"))

    def message(self, lang: Lang = "en") -> str:
        text = message(self.key, lang, **self.params)
        if not self.name:
            return text
        return f"{self.name}：{text}" if lang == "zh" else f"{self.name}: {text}"


class InputError(ASRError):
    """The request's input cannot be transcribed (the caller's fault; HTTP 400)."""

    code = "bad_input"


class EmptyAudioError(InputError):
    code = "empty"


class NotAudioError(InputError):
    code = "not_audio"


class NoAudioStreamError(InputError):
    code = "no_audio_stream"


class AudioTooShortError(InputError):
    code = "too_short"


class AudioTooLongError(InputError):
    code = "too_long"


class FileTooLargeError(InputError):
    code = "too_large"

    @classmethod
    def of(cls, name: str, size: int, limit: int) -> FileTooLargeError:
        """For `size` bytes over `limit` bytes (MB = 10^6 bytes, one decimal where it matters)."""
        def mb(n: int) -> str:
            return f"{n / 1e6:.1f}".removesuffix(".0")

        return cls(name, size_mb=mb(size), limit_mb=mb(limit))


class HotwordError(InputError):
    code = "bad_hotwords"


class SpeakersUnavailableError(InputError):
    """Speakers were asked for, but this server runs without the speaker model (ENABLE_SPK=false)."""

    code = "speakers_unavailable"


class SpeakerCountError(InputError):
    code = "bad_speaker_count"


class DecodeError(InputError):
    """ffmpeg failed for a reason other than the ones above (corrupt beyond repair, timeout)."""

    code = "decode_failed"


class ModelNotReadyError(ASRError):
    """The model is still loading or failed to load (HTTP 503)."""

    code = "model_not_ready"


class ModelLoadError(ASRError):
    """A model could not be loaded; `str(error)` names the id or folder and what to do.

    That text is for the operator (it names server folders): it goes to the log and /health, while
    `message()` gives a user only the catalogue's "failed to load".
    """

    code = "model_load_failed"
    message_key = "model_not_ready.failed"

    def __init__(self, operator_message: str):
        super().__init__()
        self.detail = operator_message
        self.args = (operator_message,)

    def __str__(self) -> str:
        return self.detail
