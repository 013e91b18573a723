"""Meetings: no text lost to a segment without tokens, word timestamps, and speaker labels.

The lost-text input: two utterances with a 0.6 s noise burst between them, 2 s of silence on either side,
so the real FSMN-VAD cuts the burst as a segment of its own. The ASR model is `tiny-seaco-sparse`: the tiny
model with its CIF predictor steered (output layer bias) so each frame weighs 0.03 of a token; a segment's
token count is floor(frames x 0.03 + 0.45), 0 for the burst's 11 frames and 2 for an utterance's 81. On CPU
FunASR decodes each segment in a call of its own, so the burst's call returns `([],)`.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.engine import Engine, Sentence, Transcription, Word
from asr.errors import SpeakerCountError, SpeakersUnavailableError
from asr.speakers import Span, SpeakerLabeller
from asr.subtitles import to_srt, to_txt, to_vtt, to_word_tsv
from conftest import DATA, UTTERANCE, make_settings

SR = 16000
PUNCTUATION = re.compile(r"[\s，。？！、,.?!；;：:]")


def _clip(name: str) -> np.ndarray:
    return sf.read(DATA / "utterances" / name, dtype="float32")[0]


@pytest.fixture(scope="module")
def burst_input() -> np.ndarray:
    speech = _clip(UTTERANCE.name)
    burst = (np.random.default_rng(0).standard_normal(int(0.6 * SR)) * 0.3).astype(np.float32)
    silence = np.zeros(2 * SR, dtype=np.float32)
    return np.concatenate([speech, silence, burst, silence, speech])


@pytest.fixture(scope="module")
def sparse_engine(tiny_models, tmp_path_factory) -> Engine:
    engine = Engine(
        make_settings(tiny_models, tmp_path_factory.mktemp("sparse"), model_dir=tiny_models.sparse).engine_config()
    )
    engine.load()
    return engine


def _bare(models, asr: Path, **extra):
    from funasr import AutoModel

    return AutoModel(
        model=str(asr),
        vad_model=str(models.vad),
        punc_model=str(models.punc),
        device="cpu",
        disable_update=True,
        disable_pbar=True,
        disable_log=True,
        **extra,
    )


def _vad_segments(models, samples: np.ndarray) -> list[list[int]]:
    from funasr import AutoModel

    vad = AutoModel(model=str(models.vad), device="cpu", disable_update=True, disable_pbar=True, disable_log=True)
    return vad.generate(input=samples)[0]["value"]


def _at_once(calls: list) -> list[Transcription]:
    """Run the calls in threads at the same time; their results in order (a failure is raised here, not lost)."""
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # returned, then raised in the test's own thread
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


# ------------------------------------------------------------------------------------ no lost text
def test_bare_funasr_loses_the_whole_text_where_the_engine_keeps_it(tiny_models, sparse_engine, burst_input):
    segments = _vad_segments(tiny_models, burst_input)
    assert len(segments) == 3 and (segments[1][1] - segments[1][0]) < 1000, segments  # the burst stands alone

    bare = _bare(tiny_models, tiny_models.sparse).generate(input=burst_input, sentence_timestamp=True)
    assert bare[0]["text"] == "", "FunASR no longer drops the text: the engine's guard may be retired"

    # The oracle: the model alone (no VAD) on each speech segment, offsets added.
    asr_only = _bare(tiny_models, tiny_models.sparse)
    asr_only.vad_model = asr_only.punc_model = None
    expected_words, expected_times = [], []
    for begin_ms, end_ms in (segments[0], segments[2]):
        part = asr_only.generate(input=burst_input[begin_ms * 16 : end_ms * 16])[0]
        expected_words += part["text"].split()
        expected_times += [(begin_ms + a, begin_ms + b) for a, b in part["timestamp"]]
    assert expected_words, "each utterance alone gives tokens"

    result = sparse_engine.transcribe(burst_input, sample_rate=SR)
    assert [w.text for w in result.words] == [w for w in expected_words if not w.startswith("<")]
    times = [(t, w) for t, w in zip(expected_times, expected_words, strict=False) if not w.startswith("<")]
    assert [(round(w.start * 1000), round(w.end * 1000)) for w in result.words] == [t for t, _ in times]
    assert PUNCTUATION.sub("", result.text).replace("<unk>", "") == "".join(w.text for w in result.words)
    assert result.confidence > 0 and result.sentences
    # Sentences keep the utterances' times: the first starts in the first utterance, the last ends in the second.
    assert segments[0][0] <= result.sentences[0].start * 1000 < segments[0][1]
    assert segments[2][0] < result.sentences[-1].end * 1000 <= segments[2][1] + 20


def test_no_lost_text_under_cross_request_batching(tiny_models, sparse_engine, burst_input, tmp_path):
    alone = sparse_engine.transcribe(burst_input, sample_rate=SR)
    batching = Engine(
        make_settings(tiny_models, tmp_path, model_dir=tiny_models.sparse, batch_max_requests=4).engine_config()
    )
    batching.load()
    inputs = [burst_input, burst_input[: 9 * SR], burst_input, _clip(UTTERANCE.name)]
    results = _at_once([lambda x=x: batching.transcribe(x, sample_rate=SR) for x in inputs])
    assert batching.batcher.stats.calls < batching.batcher.stats.segments, "the requests shared model calls"
    for i in (0, 2):
        assert results[i].text == alone.text and results[i].words == alone.words
        assert results[i].sentences == alone.sentences


def test_no_lost_text_on_the_onnx_backend(tiny_models, sparse_engine, burst_input, tmp_path):
    from asr.onnx.export import export_model

    export_model(tiny_models.sparse, output_dir=tmp_path / "onnx", quantize=False)
    onnx = Engine(
        make_settings(
            tiny_models, tmp_path, model_dir=tiny_models.sparse, engine_backend="onnx", onnx_model_dir=tmp_path / "onnx"
        ).engine_config()
    )
    onnx.load()
    assert onnx.backend == "onnx"
    torch_result = sparse_engine.transcribe(burst_input, sample_rate=SR)
    onnx_result = onnx.transcribe(burst_input, sample_rate=SR)
    assert onnx_result.text == torch_result.text != ""
    assert [w.text for w in onnx_result.words] == [w.text for w in torch_result.words]


def test_a_streamed_request_reports_the_tokenless_burst_and_keeps_the_text(sparse_engine, burst_input):
    plain = sparse_engine.transcribe(burst_input, sample_rate=SR)
    reported = []
    streamed = sparse_engine.transcribe(burst_input, sample_rate=SR, on_segment=reported.append)
    assert (streamed.text, streamed.sentences, streamed.words) == (plain.text, plain.sentences, plain.words)
    assert [bool(s.text) for s in reported] == [True, False, True]  # the burst has no token, and is still told


def test_silence_and_a_lone_burst_still_give_an_empty_result(sparse_engine, burst_input):
    lone = burst_input[int(5.5 * SR) : int(10.0 * SR)]  # 2 s silence, the burst, 2 s silence
    result = sparse_engine.transcribe(lone, sample_rate=SR)
    assert (result.text, result.sentences, result.words, result.confidence) == ("", [], [], 0.0)


# ------------------------------------------------------------------------------------ word timestamps
def test_word_times_are_funasrs_token_times(tiny_models, engine, long_wav):
    bare = _bare(tiny_models, tiny_models.asr).generate(
        input=str(long_wav), sentence_timestamp=True, return_raw_text=True
    )[0]
    result = engine.transcribe(long_wav)
    expected = [
        (u, a, b)
        for u, (a, b) in zip(bare["raw_text"].split(), bare["timestamp"], strict=False)
        if not u.startswith("<")
    ]  # noqa: E501
    assert len(expected) > 100
    assert [(w.text, round(w.start * 1000), round(w.end * 1000)) for w in result.words] == expected
    # Each sentence lists the words FunASR timed for it, inside its own span, in order.
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    for sentence in result.sentences:
        for word in sentence.words:
            assert sentence.start <= word.start <= word.end <= sentence.end
            assert word.end <= result.duration
        assert PUNCTUATION.sub("", sentence.text).replace("<unk>", "") == "".join(w.text for w in sentence.words)


def test_word_tsv_lists_each_word_with_its_sentence():
    sentences = [
        Sentence("你好。", 0.5, 1.0, 1, [Word("你", 0.5, 0.7), Word("好", 0.7, 1.0)]),
        Sentence("再见。", 1.2, 1.6, 2, [Word("再", 1.2, 1.4), Word("见", 1.4, 1.6)]),
    ]
    assert to_word_tsv(sentences).splitlines() == [
        "start\tend\tword\tsentence\tspeaker",
        "0.500\t0.700\t你\t1\t说话人1",
        "0.700\t1.000\t好\t1\t说话人1",
        "1.200\t1.400\t再\t2\t说话人2",
        "1.400\t1.600\t见\t2\t说话人2",
    ]
    assert to_word_tsv([Sentence("嗯。", 0, 1)]) == ""


# ------------------------------------------------------------------------------------ speakers
def test_files_name_the_speakers():
    sentences = [Sentence("你好。", 0.0, 1.0, 1), Sentence("在吗？", 1.0, 2.0, 1), Sentence("在。", 2.5, 3.0, 2)]
    assert to_txt(sentences) == "说话人1：你好。在吗？\n说话人2：在。\n"
    assert "00:00:02,500 --> 00:00:03,000\n说话人2：在。" in to_srt(sentences)
    assert "00:00:00.000 --> 00:00:01.000\n<v 说话人1>你好。</v>" in to_vtt(sentences)
    assert to_txt([Sentence("你好。", 0.0, 1.0)]) == "你好。\n"  # no speakers: as before


@pytest.fixture(scope="module")
def turns() -> tuple[np.ndarray, list[tuple[float, float, int]]]:
    """Two speakers' clips alternating (A B A B A B), 0.8 s apart, with the true turn times."""
    voices = {1: _clip(UTTERANCE.name), 2: _clip("firered_BAC009S0764W0121.wav")}
    pieces, truth, at = [], [], 0.0
    for speaker in (1, 2, 1, 2, 1, 2):
        pieces += [voices[speaker], np.zeros(int(0.8 * SR), np.float32)]
        truth.append((at, at + len(voices[speaker]) / SR, speaker))
        at += len(voices[speaker]) / SR + 0.8
    return np.concatenate(pieces), truth


@pytest.fixture(scope="module")
def spk_engine(tiny_models, tmp_path_factory) -> Engine:
    engine = Engine(
        make_settings(
            tiny_models, tmp_path_factory.mktemp("spk"), enable_spk=True, spk_model_dir=tiny_models.spk
        ).engine_config()
    )
    engine.load()
    return engine


def test_speakers_follow_the_embeddings_to_the_true_turns(tiny_models, turns, monkeypatch):
    """With embeddings that tell the voices apart, every sentence gets its true speaker.

    Random CAM++ weights cannot tell voices apart, so the embedder is replaced by one that reads the true
    speaker of each window's middle: what is tested is the windowing, FunASR's clustering, the merging into
    turns and the assignment to sentences.
    """
    once, first = turns
    span = len(once) / SR  # the turns twice: enough windows (1.5 s each) for clustering without a count
    samples, truth = np.concatenate([once, once]), first + [(a + span, b + span, s) for a, b, s in first]
    labeller = SpeakerLabeller(str(tiny_models.spk), "cpu")
    rng = np.random.default_rng(0)
    centres = {1: rng.standard_normal(192), 2: rng.standard_normal(192)}
    windows_seen = []

    def embed_by_truth(audio: list[np.ndarray]) -> np.ndarray:
        out = []
        for window in audio:
            start = _find(samples, window) / SR
            middle = start + len(window) / SR / 2
            speaker = min(
                truth, key=lambda t: 0 if t[0] <= middle <= t[1] else min(abs(middle - t[0]), abs(middle - t[1]))
            )[2]
            out.append(centres[speaker] + 0.05 * rng.standard_normal(192))
            windows_seen.append(start)
        return np.stack(out)

    monkeypatch.setattr(labeller, "_embed", embed_by_truth)
    spans = [Span(a + 0.1, b - 0.1) for a, b, _ in truth]  # one "sentence" per turn, as a recogniser would give
    for count in (2, None):
        assert labeller.label(samples, spans, count) == [s for _, _, s in truth], count
    assert len(windows_seen) >= 2 * 20  # enough windows for spectral clustering without a count


def test_windows_follow_each_other_and_cover_the_speech(tiny_models):
    labeller = SpeakerLabeller(str(tiny_models.spk), "cpu")
    windows = labeller._windows(np.zeros(10 * SR, np.float32), [Span(1.0, 5.2), Span(6.0, 6.5), Span(8.0, 8.05)])
    assert [(round(a, 2), round(b, 2), len(x)) for a, b, x in windows] == [
        (1.0, 2.5, 24000),
        (2.5, 4.0, 24000),
        (3.7, 5.2, 24000),
        (6.0, 6.5, 8000),
    ]  # the 50 ms sliver is left out
    from funasr.models.campplus.utils import sv_chunk

    samples = np.random.default_rng(0).standard_normal(10 * SR).astype(np.float32)
    funasr_like = SpeakerLabeller(str(tiny_models.spk), "cpu", window_shift_s=0.75)._windows(samples, [Span(1.0, 5.2)])
    funasr = sv_chunk([[1.0, 5.2, samples[SR : int(5.2 * SR)]]])  # FunASR's own windows, half overlapping
    assert [(a, b) for a, b, _ in funasr_like] == [(a, b) for a, b, _ in funasr] and len(funasr) == 5
    assert all(np.array_equal(x, y) for (*_, x), (*_, y) in zip(funasr_like, funasr, strict=False))


def _find(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Where a window was cut from (exact samples)."""
    head = needle[:64]
    for start in np.flatnonzero(haystack == head[0]):
        if np.array_equal(haystack[start : start + 64], head):
            return int(start)
    raise AssertionError("window not found in the input")


def test_engine_labels_sentences_and_keeps_the_text(spk_engine, turns):
    samples, _ = turns
    plain = spk_engine.transcribe(samples, sample_rate=SR)
    labelled = spk_engine.transcribe(samples, sample_rate=SR, diarize=True, num_speakers=2)
    assert labelled.text == plain.text and [s.text for s in labelled.sentences] == [s.text for s in plain.sentences]
    assert all(s.speaker is None for s in plain.sentences) and plain.speakers == 0
    assert {s.speaker for s in labelled.sentences} == {1, 2} and labelled.speakers == 2
    assert labelled.sentences[0].speaker == 1  # numbered by first appearance
    assert 0 < labelled.speaker_time <= labelled.model_time
    one = spk_engine.transcribe(samples, sample_rate=SR, diarize=True, num_speakers=1)
    assert {s.speaker for s in one.sentences} == {1}


def test_speaker_requests_fail_clearly_when_off_or_out_of_range(engine, spk_engine):
    with pytest.raises(SpeakersUnavailableError, match="ENABLE_SPK"):
        engine.transcribe(UTTERANCE, diarize=True)
    with pytest.raises(SpeakerCountError, match="between 1 and 15"):
        spk_engine.transcribe(UTTERANCE, diarize=True, num_speakers=40)
    assert engine.transcribe(UTTERANCE).text  # the refusal left the engine as it was


def test_speakers_with_batching(tiny_models, long_wav, tmp_path):
    engine = Engine(
        make_settings(
            tiny_models, tmp_path, enable_spk=True, spk_model_dir=tiny_models.spk, batch_max_requests=3
        ).engine_config()
    )
    engine.load()
    part = sf.read(long_wav, dtype="float32")[0][: 40 * SR]  # 40 s: several VAD segments, windows to cluster
    alone = engine.transcribe(part, sample_rate=SR, diarize=True)
    results = _at_once([lambda d=d: engine.transcribe(part, sample_rate=SR, diarize=d) for d in (True, False, True)])
    assert engine.batcher.stats.calls < engine.batcher.stats.segments, "the requests shared model calls"
    assert results[0].sentences == alone.sentences == results[2].sentences  # speakers included
    assert results[1].text == alone.text and all(s.speaker is None for s in results[1].sentences)
    assert all(s.speaker is not None for s in alone.sentences)
