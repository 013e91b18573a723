"""The engine with the tiny random-weight model and the real FSMN-VAD: the whole pipeline, for real."""

import csv
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.audio import load_audio
from asr.engine import Engine, ModelSpec, _explain_load_failure
from asr.errors import InputError, ModelLoadError, ModelNotReadyError, NotAudioError
from asr.hotwords import to_model_argument
from conftest import DATA, UTTERANCE, make_settings

UTTERANCES = sorted((DATA / "utterances").glob("*.wav"))


def bare_automodel(models, ncpu):
    """FunASR's own pipeline on the same folders, without the engine around it."""
    from funasr import AutoModel

    return AutoModel(
        model=str(models.asr),
        vad_model=str(models.vad),
        punc_model=str(models.punc),
        device="cpu",
        disable_update=True,
        disable_pbar=True,
        disable_log=True,
        ncpu=ncpu,
    )


@pytest.fixture(scope="module")
def bare(tiny_models, engine):
    return bare_automodel(tiny_models, engine._model.kwargs["ncpu"])


@pytest.fixture(scope="module")
def vad(tiny_models):
    """A second FSMN-VAD, run by the tests themselves: the reference for segments and sentence times."""
    from funasr import AutoModel

    return AutoModel(model=str(tiny_models.vad), disable_update=True, disable_pbar=True, disable_log=True)


def vad_segments(vad, samples: np.ndarray) -> list[tuple[float, float]]:
    """Speech segments in seconds: the same VAD on the same samples finds what the engine's VAD finds."""
    return [(a / 1000, b / 1000) for a, b in vad.generate(input=samples)[0]["value"]]


def emitted_posteriors(bare, samples: np.ndarray, hotwords: list[str]) -> list[tuple[int, float]]:
    """(token id, posterior) of each token the model emits for one segment, from its forward pieces run here:
    features, encoder, CIF predictor, then the decoder (with hotword biasing when there are hotwords)."""
    import torch
    from funasr.utils.load_utils import extract_fbank

    model, frontend, tokenizer = bare.model, bare.kwargs["frontend"], bare.kwargs["tokenizer"]
    speech, lengths = extract_fbank([torch.from_numpy(samples.copy())], data_type="sound", frontend=frontend)
    with torch.no_grad():
        encoded, encoded_lengths = model.encode(speech, lengths)
        embeds, count = model.calc_predictor(encoded, encoded_lengths)[:2]
        count = int(count.round().long()[0])
        biasing = (
            model.generate_hotwords_list(" ".join(hotwords), tokenizer=tokenizer, frontend=frontend)
            if hotwords
            else None
        )
        scores = model._seaco_decode_with_ASF(encoded, encoded_lengths, embeds, torch.tensor([count]), hw_list=biasing)
    posterior, ids = torch.softmax(scores[0, :count], dim=-1).max(dim=-1)
    dropped = (model.blank_id, model.sos, model.eos)
    return [(i, p) for i, p in zip(ids.tolist(), posterior.tolist(), strict=True) if i not in dropped]


def assert_sentences_follow_the_speech(sentences, segments: list[tuple[float, float]]) -> None:
    """Sentence times against the speech a separate VAD run found (the engine clamps its times into the
    audio, so "inside the audio" alone proves little): in order; each start and end in (or at the edge of)
    a speech segment, 30 ms being FunASR's frame grid; every segment with a sentence in it; and the first
    and last sentence where the speech starts and ends."""
    assert sentences and segments
    previous_end = 0.0
    for s in sentences:
        assert previous_end - 1e-6 <= s.start <= s.end, (previous_end, s)
        previous_end = s.end
        for boundary in (s.start, s.end):
            assert any(a - 0.03 <= boundary <= b + 0.03 for a, b in segments), (s, segments)
    for a, b in segments:
        assert any(s.start < b and s.end > a for s in sentences), f"no sentence in the speech at {a}-{b} s"
    assert 0 <= sentences[0].start - segments[0][0] < 0.3, (sentences[0], segments[0])
    assert sentences[-1].end == pytest.approx(segments[-1][1], abs=0.05), (sentences[-1], segments[-1])


def test_utterance_gives_a_complete_result(engine, vad):
    r = engine.transcribe(UTTERANCE, hotwords="达摩院,语音识别")
    assert r.text and r.hotwords == ["达摩院", "语音识别"]
    assert 0.0 < r.confidence <= 1.0
    assert r.duration == pytest.approx(5.55, abs=0.01)
    assert r.processing_time == pytest.approx(r.decode_time + r.model_time)
    assert r.rtf == pytest.approx(r.processing_time / r.duration)
    assert_sentences_follow_the_speech(r.sentences, vad_segments(vad, sf.read(UTTERANCE, dtype="float32")[0]))

    def letters(text):
        return [c for c in text.replace("<unk>", "") if c.isalnum()]

    assert letters("".join(s.text for s in r.sentences)) == letters(r.text)


def test_results_are_deterministic(engine):
    first = engine.transcribe(UTTERANCE)
    second = engine.transcribe(UTTERANCE.read_bytes())
    assert (first.text, first.confidence, first.sentences) == (second.text, second.confidence, second.sentences)


@pytest.mark.parametrize("hotwords", [None, "达摩院,语音识别"])
def test_engine_text_equals_bare_automodel(engine, bare, hotwords):
    samples, _ = sf.read(UTTERANCE, dtype="float32")
    kwargs = {"hotword": " ".join(hotwords.split(","))} if hotwords else {}
    expected = bare.generate(input=samples, sentence_timestamp=True, batch_size_s=300, **kwargs)[0]["text"]
    assert engine.transcribe(UTTERANCE, hotwords=hotwords or "").text == expected


def test_two_minute_file_through_the_whole_pipeline(engine, bare, vad, long_wav):
    r = engine.transcribe(long_wav, hotwords="")
    samples, _ = sf.read(long_wav, dtype="float32")
    expected = bare.generate(input=samples, sentence_timestamp=True, batch_size_s=300)[0]
    assert r.text == expected["text"]
    assert r.duration == pytest.approx(120.0)
    # VAD split it: many sentences, in order, where the speech is (not restarting at each segment)
    segments = vad_segments(vad, samples)
    assert len(r.sentences) > 10 and len(segments) > 5
    assert_sentences_follow_the_speech(r.sentences, segments)
    assert 0.0 < r.confidence <= 1.0


def test_hotwords_reach_the_bias_decoder(engine, monkeypatch):
    model = engine._model.model
    tokenizer = engine._model.kwargs["tokenizer"]
    seen: list[list[list[int]]] = []
    original = model._hotword_representation

    def spy(hotword_pad, hotword_lengths):
        seen.append([row[: int(n)].tolist() for row, n in zip(hotword_pad, hotword_lengths, strict=False)])
        return original(hotword_pad, hotword_lengths)

    monkeypatch.setattr(model, "_hotword_representation", spy)
    engine.transcribe(UTTERANCE, hotwords="")
    assert seen == []  # no hotwords: the bias decoder is not consulted
    without = engine.transcribe(UTTERANCE, hotwords="")
    engine.transcribe(UTTERANCE, hotwords="达摩院,语音识别")
    expected = [tokenizer.tokens2ids(list("达摩院")), tokenizer.tokens2ids(list("语音识别")), [model.sos]]
    assert seen and all(call == expected for call in seen)
    with_words = engine.transcribe(UTTERANCE, hotwords="达摩院,语音识别")
    assert with_words.confidence != without.confidence  # the biased posteriors differ


@pytest.mark.parametrize("hotwords", [[], ["达摩院", "语音识别"]])
def test_confidence_is_the_mean_posterior_of_the_emitted_tokens(engine, bare, vad, hotwords):
    # Two utterances with a pause: several VAD segments, whose tokens the engine pools.
    clips = [sf.read(p, dtype="float32")[0] for p in (UTTERANCE, UTTERANCES[0])]
    samples = np.concatenate([clips[0], np.zeros(3 * 16000, np.float32), clips[1]])
    segments = vad_segments(vad, samples)
    assert len(segments) >= 2, segments
    emitted = [
        token
        for a, b in segments
        for token in emitted_posteriors(bare, samples[round(a * 16000) : round(b * 16000)], hotwords)
    ]
    result = engine.transcribe(samples, sample_rate=16000, hotwords=hotwords)
    tokenizer = bare.kwargs["tokenizer"]
    spoken = tokenizer.tokens2text(tokenizer.ids2tokens([i for i, _ in emitted]))

    def letters(text):
        return [c.lower() for c in text.replace("<unk>", "") if c.isalnum()]

    assert letters(result.text) == letters(spoken)  # the same tokens (punctuation added)
    expected = float(np.mean([p for _, p in emitted]))
    print(f"confidence {result.confidence:.9f}, from the posteriors {expected:.9f}, {len(emitted)} tokens")
    assert result.confidence == pytest.approx(expected, rel=1e-5, abs=0)


def test_default_hotwords_apply_when_the_request_has_none(tiny_models, tmp_path):
    eng = Engine(make_settings(tiny_models, tmp_path, default_hotwords="科哥,Paraformer").engine_config())
    assert eng.resolve_hotwords(None) == ["科哥", "Paraformer"]
    assert eng.resolve_hotwords("达摩院") == ["达摩院"]
    assert to_model_argument(eng.resolve_hotwords(None)).split() == ["科哥", "Paraformer"]


def test_concurrent_calls_match_sequential_calls(engine):
    sequential = {p.name: engine.transcribe(p).text for p in UTTERANCES}
    barrier = threading.Barrier(8)

    def run(path):
        barrier.wait()
        return path.name, engine.transcribe(path).text

    jobs = [UTTERANCES[i % len(UTTERANCES)] for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, jobs))
    assert len(results) == 8
    assert all(text == sequential[name] for name, text in results)
    assert engine.waiting == 0 and not engine.busy


@pytest.mark.parametrize(
    "bad",
    [
        "empty.wav",
        "not_audio.wav",
        "random_bytes.mp3",
        "image_renamed.wav",
        "video_no_audio.mp4",
        "50ms.wav",
        "header_only.wav",
    ],
)
def test_bad_input_never_poisons_the_next_request(engine, bad):
    before = engine.transcribe(UTTERANCE)
    failed = engine.requests_failed
    with pytest.raises(InputError):
        engine.transcribe(DATA / "bad" / bad)
    assert engine.requests_failed == failed + 1
    after = engine.transcribe(UTTERANCE)
    assert (after.text, after.confidence) == (before.text, before.confidence)


@pytest.mark.parametrize("name", ["silence_10s.wav", "noise_10s.wav"])
def test_silence_and_noise_give_a_normal_result(engine, name):
    r = engine.transcribe(DATA / "bad" / name)
    assert r.duration == pytest.approx(10.0)
    if name.startswith("silence"):
        assert (r.text, r.sentences, r.confidence) == ("", [], 0.0)
    assert 0.0 <= r.confidence <= 1.0


def _manifest_expects_text() -> list[str]:
    with open(DATA / "manifest.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    # "text" or "text-or-error": these decode (tests/test_audio.py), so they must give text
    return [Path(r["path"]).name for r in rows if r["kind"] == "bad" and r["expect"].startswith("text")]


@pytest.mark.parametrize("name", _manifest_expects_text())
def test_damaged_but_decodable_audio_is_transcribed(engine, vad, name):
    path = DATA / "bad" / name
    r = engine.transcribe(path)
    assert r.duration > 1.0
    assert r.text.strip() and r.confidence > 0.0, f"{name}: the manifest expects text, got {r.text!r}"
    assert_sentences_follow_the_speech(r.sentences, vad_segments(vad, load_audio(path).samples))


def test_arrays_and_gradio_tuples_are_accepted(engine):
    samples, rate = sf.read(UTTERANCE, dtype="float32")
    from_path = engine.transcribe(UTTERANCE).text
    assert engine.transcribe(samples, sample_rate=rate).text == from_path
    assert engine.transcribe((rate, (samples * 32767).astype(np.int16))).duration == pytest.approx(5.55, abs=0.01)


def test_without_vad_and_punctuation(tiny_models, tmp_path):
    eng = Engine(make_settings(tiny_models, tmp_path, enable_vad=False, enable_punc=False).engine_config())
    eng.load()
    r = eng.transcribe(UTTERANCE)
    assert r.text and not any(p in r.text for p in "，。？、")
    assert len(r.sentences) == 1 and 0 <= r.sentences[0].start < r.sentences[0].end <= r.duration


def test_missing_model_folder_is_a_clear_load_error(tiny_models, tmp_path):
    eng = Engine(make_settings(tiny_models, tmp_path, model_dir=tmp_path / "nowhere").engine_config())
    with pytest.raises(ModelLoadError, match="MODEL_DIR=.*nowhere does not exist"):
        eng.load()
    assert eng.state == "error" and "nowhere" in eng.load_error
    with pytest.raises(ModelNotReadyError, match="failed to load") as refused:
        eng.transcribe(UTTERANCE)
    assert "nowhere" not in str(refused.value) and "nowhere" in refused.value.detail  # the path is the log's
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a FunASR model folder"):
        Engine(make_settings(tiny_models, tmp_path, model_dir=tmp_path / "empty").engine_config()).load()


def test_hub_failure_message_says_what_to_do():
    spec = ModelSpec(asr="iic/speech_seaco_paraformer_large", vad="fsmn-vad", punc=None, device="cpu")
    message = _explain_load_failure(spec, RuntimeError("model 'x' is not registered.\nRegistered: A, B, C"))
    assert "iic/speech_seaco_paraformer_large, fsmn-vad" in message and "Set MODEL_DIR" in message
    assert "Registered:" not in message


def test_not_loaded_engine_refuses_politely(tiny_settings):
    with pytest.raises(ModelNotReadyError, match="not available"):
        Engine(tiny_settings.engine_config()).transcribe(UTTERANCE)


def test_bad_input_is_reported_before_the_model_is_touched(tiny_settings):
    # An unloaded engine still rejects bad input with the input error, not "model not ready".
    with pytest.raises(NotAudioError):
        Engine(tiny_settings.engine_config()).transcribe(DATA / "bad" / "not_audio.wav")


def test_unrecorded_calls_leave_the_request_counts_alone(engine):
    served, failed = engine.requests_served, engine.requests_failed
    engine.transcribe(UTTERANCE, record=False)
    with pytest.raises(InputError):
        engine.transcribe(DATA / "bad" / "empty.wav", record=False)
    assert (engine.requests_served, engine.requests_failed) == (served, failed)
    engine.transcribe(UTTERANCE)
    assert engine.requests_served == served + 1


def test_features_are_computed_in_pieces_with_the_same_frames(engine):
    """A 3-minute file's filterbank: the same frames as FunASR's one-call path, and another thread is not
    shut out meanwhile (the one-call path holds the GIL for the whole file: 0.45 s and more on 2 cores)."""
    import kaldi_native_fbank
    import torch
    from funasr.utils import fbank as funasr_fbank

    assert getattr(funasr_fbank._knf, "piecewise", False)  # installed by Engine.load()
    wave = torch.from_numpy(np.random.default_rng(0).normal(0, 3000, 180 * 16000).astype(np.float32))[None]
    options = dict(
        num_mel_bins=80, frame_length=25, frame_shift=10, dither=0.0, window_type="hamming", sample_frequency=16000
    )

    def longest_wait_of_another_thread(compute):
        waits: list[float] = []
        done = threading.Event()

        def ticker() -> None:
            while not done.is_set():
                started = time.perf_counter()
                time.sleep(0.001)
                waits.append(time.perf_counter() - started)

        thread = threading.Thread(target=ticker)
        thread.start()
        try:
            return compute(), max(waits)
        finally:
            done.set()
            thread.join()

    # The best of three: on shared cores the other thread can also wait for a CPU, which no GIL change helps.
    runs = [longest_wait_of_another_thread(lambda: funasr_fbank._fbank_knf(wave, **options)) for _ in range(3)]
    pieces, pieces_wait = runs[0][0], min(wait for _, wait in runs)
    patched, funasr_fbank._knf = funasr_fbank._knf, kaldi_native_fbank
    try:
        whole, whole_wait = longest_wait_of_another_thread(lambda: funasr_fbank._fbank_knf(wave, **options))
    finally:
        funasr_fbank._knf = patched
    assert torch.equal(pieces, whole)
    assert pieces_wait < whole_wait / 3, (pieces_wait, whole_wait)


def test_freed_memory_goes_back_to_the_system_when_idle(tiny_settings):
    """A trim gives back what a large freed allocation left behind; the engine trims once it has been quiet."""
    import ctypes

    import psutil

    from asr.heap import HeapTrimmer

    trimmer = HeapTrimmer()
    if not trimmer.available:
        pytest.skip("no glibc malloc_trim on this system")
    me = psutil.Process()
    # Blocks below the mmap threshold (so they live in the heap), each followed by a small one that stays:
    # once the large ones are freed, their pages sit in holes that free() alone does not give back.
    large, kept = [], []
    for _ in range(3000):  # ~190 MiB
        large.append(ctypes.create_string_buffer(64 * 1024))
        kept.append(ctypes.create_string_buffer(1024))  # over pymalloc's 512 bytes: from the same heap
    del large
    held = me.memory_info().rss
    assert trimmer.request()
    wait_for(lambda: trimmer.trims == 1)
    assert me.memory_info().rss < held - 50 * 2**20, (held, me.memory_info().rss)

    engine = Engine(tiny_settings.engine_config())
    engine.load()
    engine.heap.quiet_s = 0.3
    wait_for(lambda: engine.heap.trims == 1)  # the one after loading
    before = engine.heap.trims
    engine.transcribe(UTTERANCE)
    wait_for(lambda: engine.heap.trims == before + 1)
    time.sleep(0.6)
    assert engine.heap.trims == before + 1, "one trim per idle period"


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_no_trim_while_requests_keep_coming(tiny_settings) -> None:
    """Back-to-back short requests (gaps under the quiet period) never pay for a trim; the quiet after them does."""
    from asr.heap import HeapTrimmer

    if not HeapTrimmer().available:
        pytest.skip("no glibc malloc_trim on this system")
    engine = Engine(tiny_settings.engine_config())
    engine.load()
    engine.heap.quiet_s = 0.5
    wait_for(lambda: engine.heap.trims == 1)  # the one after loading
    before = engine.heap.trims
    ended = time.monotonic() + 2.0
    while time.monotonic() < ended:
        engine.transcribe(UTTERANCE)
        time.sleep(0.1)  # a gap shorter than the quiet period
    assert engine.heap.trims == before, "a trim ran between back-to-back requests"
    wait_for(lambda: engine.heap.trims == before + 1)


def test_heap_trim_off_leaves_the_heap_alone(tiny_models, tmp_path) -> None:
    engine = Engine(make_settings(tiny_models, tmp_path, heap_trim=False).engine_config())
    engine.load()
    engine.heap.quiet_s = 0
    engine.transcribe(UTTERANCE)
    time.sleep(0.5)
    assert not engine.heap.available and engine.heap.trims == 0
