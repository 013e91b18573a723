"""The streaming core (asr.streaming) on FunASR's real classes with the tiny random-weight models."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.engine import Engine
from asr.errors import ModelLoadError
from asr.streaming import OnlineModel, StreamConfig, StreamSession, get_online_model
from conftest import DATA, TinyModels, make_settings

LONG = DATA / "utterances" / "funasr_long.wav"


@pytest.fixture(scope="module")
def online(engine: Engine) -> OnlineModel:
    return get_online_model(engine)


def read(path=LONG) -> np.ndarray:
    return sf.read(path, dtype="float32")[0]


def feed_all(session: StreamSession, samples: np.ndarray, frame: int = 960) -> list:
    results = []
    for i in range(0, samples.size, frame):
        results += session.feed(samples[i : i + frame])
    return results + session.finish()


def with_pauses(seconds: float) -> np.ndarray:
    """The test utterances joined with 2 s pauses (the VAD needs more than 1 s of digital silence to cut)."""
    clips = [read(p) for p in sorted((DATA / "utterances").glob("*.wav"))]
    pause = np.zeros(32000, dtype=np.float32)
    pieces, total = [], 0
    while total < seconds * 16000:
        for clip in clips:
            pieces += [clip, pause]
            total += clip.size + pause.size
    return np.concatenate(pieces)[: int(seconds * 16000)]


def test_online_partials_match_funasrs_own_streaming_loop(engine: Engine, online: OnlineModel) -> None:
    """Our 60 ms frames, buffered into 600 ms steps, give the text of FunASR's documented chunk loop."""
    x = read()
    session = StreamSession(engine, StreamConfig(mode="online", chunk_size=(0, 10, 5)), online=online)
    results = feed_all(session, x)
    cache: dict = {}
    stride = 10 * 960
    expected = []
    for i in range(0, x.size, stride):
        expected.append(
            online.step(
                x[i : i + stride],
                cache,
                is_final=i + stride >= x.size,
                chunk_size=(0, 10, 5),
                encoder_look_back=4,
                decoder_look_back=1,
            )
        )
    assert "".join(r.text for r in results) == "".join(expected) != ""
    assert results[-1].is_last and all(r.kind == "partial" for r in results)
    assert [r.is_last for r in results].count(True) == 1


def test_2pass_finals_are_the_engine_on_each_segment(engine: Engine, online: OnlineModel) -> None:
    x = with_pauses(10)  # two utterances (4.2 s and 2 s) with pauses
    session = StreamSession(engine, StreamConfig(mode="2pass", hotwords=["达摩院"]), online=online)
    results = feed_all(session, x, frame=3200)
    finals = [r for r in results if r.kind == "final"]
    assert len([r for r in finals if r.text]) == 2, "each utterance is a segment of its own"
    # Held audio: the open segment plus the 2 s look-back and a frame, never the whole stream.
    assert session.stats.max_buffered <= (4.2 + 2 + 0.8) * 16000
    assert any(r.kind == "partial" and r.text for r in results)
    for r in finals:
        if not r.text:
            continue
        segment = x[round(r.start * 16000) : round(r.end * 16000)]
        alone = engine.transcribe(segment, sample_rate=16000, hotwords=["达摩院"])
        assert r.text == alone.text  # what a file upload of that segment gives
        assert r.transcription is not None and r.transcription.hotwords == ["达摩院"]
    assert results[-1].is_last and results[-1].kind == "final"
    starts = [r.start for r in finals]
    assert starts == sorted(starts)


def test_a_second_utterance_on_the_same_session_starts_clean(engine: Engine, online: OnlineModel) -> None:
    x = read(DATA / "utterances" / "firered_BAC009S0764W0121.wav")
    session = StreamSession(engine, StreamConfig(mode="2pass"), online=online)
    first = [(r.kind, r.text, r.start, r.end) for r in feed_all(session, x, frame=3200)]
    second = [(r.kind, r.text, r.start, r.end) for r in feed_all(session, x, frame=3200)]
    assert first == second


def test_cost_per_chunk_does_not_grow_with_the_stream(engine: Engine, online: OnlineModel) -> None:
    """The streaming model's caches stay the same size from second 10 to second 60 (online mode: no VAD
    resets them), so each 600 ms step costs the same."""
    x = with_pauses(60)
    session = StreamSession(engine, StreamConfig(mode="online"), online=online)

    def cache_size() -> int:
        total = 0
        for part in session._u.online_cache.values():
            for value in part.values() if isinstance(part, dict) else [part]:
                if isinstance(value, torch.Tensor):
                    total += value.numel()
        return total

    sizes = []
    for i in range(0, x.size, 9600):
        session.feed(x[i : i + 9600])
        if i // 9600 in (16, 50, 95):
            sizes.append(cache_size())
    assert session.stats.partial_steps == 100
    assert sizes[0] > 0 and sizes[0] == sizes[1] == sizes[2], sizes
    assert session.stats.max_buffered <= 9600
    session.close()


def test_a_folder_that_is_not_a_streaming_model_is_refused(tiny_models: TinyModels, tmp_path) -> None:
    settings = make_settings(tiny_models, tmp_path, online_model_dir=tiny_models.asr)
    with pytest.raises(ModelLoadError, match="not a streaming Paraformer"):
        get_online_model(Engine(settings.engine_config()))
    settings = make_settings(tiny_models, tmp_path, online_model_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="ONLINE_MODEL_DIR"):
        get_online_model(Engine(settings.engine_config()))


def test_online_quantize_runs_the_linear_layers_in_int8(tiny_models: TinyModels, online: OnlineModel) -> None:
    quantized = torch.ao.nn.quantized.dynamic.Linear
    assert online.precision == "int8"  # ONLINE_QUANTIZE defaults to on, and this is a CPU
    for model in online.modules():
        layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, quantized))]
        assert layers and all(isinstance(m, quantized) for m in layers)
    plain = OnlineModel(str(tiny_models.online), "cpu", 1, quantize=False)
    assert plain.precision == "fp32"
    assert not any(isinstance(m, quantized) for model in plain.modules() for m in model.modules())
    # Both decode the same chunks; int8 changes the numbers a little, so the texts are compared in the benchmark.
    x = read()[: 9600 * 3]
    for model in (online, plain):
        cache: dict = {}
        texts = [
            model.step(
                x[i : i + 9600],
                cache,
                is_final=i + 9600 >= x.size,
                chunk_size=(5, 10, 5),
                encoder_look_back=4,
                decoder_look_back=1,
            )
            for i in range(0, x.size, 9600)
        ]
        assert any(texts), model.precision


def test_copies_side_by_side_give_each_stream_its_one_copy_partials(tiny_models: TinyModels) -> None:
    """Two streams through two copies at once (any copy takes any step: the state is the stream's cache)
    give the partials each stream gets alone from one copy."""
    import threading

    x = read()

    def partials(model: OnlineModel, samples: np.ndarray) -> list[str]:
        cache: dict = {}
        return [
            model.step(
                samples[i : i + 9600],
                cache,
                is_final=i + 9600 >= samples.size,
                chunk_size=(5, 10, 5),
                encoder_look_back=4,
                decoder_look_back=1,
            )
            for i in range(0, samples.size, 9600)
        ]

    one = OnlineModel(str(tiny_models.online), "cpu", 1, quantize=True, workers=1)
    streams = [x, x[::-1].copy()]
    alone = [partials(one, s) for s in streams]
    two = OnlineModel(str(tiny_models.online), "cpu", 2, quantize=True, workers=2)
    together: dict[int, list[str]] = {}
    threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, partials(two, streams[i]))) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [together[0], together[1]] == alone and any(alone[0])
