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


@pytest.fixture(scope="module")
def fp32(tiny_models: TinyModels) -> OnlineModel:
    """The streaming model unquantized (ONLINE_QUANTIZE=false), as FunASR runs it."""
    return OnlineModel(str(tiny_models.online), "cpu", 1, quantize=False)


def funasr_chunk_loop(model_dir, samples: np.ndarray, chunk_size: list[int], look_back: tuple[int, int]) -> list[str]:
    """FunASR's own streaming loop, as its README gives it: a bare AutoModel, `chunk_size[1]` x 60 ms per
    `generate` call with the stream's `cache`, `is_final` on the last chunk."""
    from funasr import AutoModel

    model = AutoModel(
        model=str(model_dir), device="cpu", ncpu=1, disable_update=True, disable_pbar=True, disable_log=True
    )
    stride = chunk_size[1] * 960
    chunks = (samples.size - 1) // stride + 1
    cache: dict = {}
    texts = []
    for i in range(chunks):
        result = model.generate(
            input=samples[i * stride : (i + 1) * stride],
            cache=cache,
            is_final=i == chunks - 1,
            chunk_size=chunk_size,
            encoder_chunk_look_back=look_back[0],
            decoder_chunk_look_back=look_back[1],
        )
        texts.append(result[0]["text"] if result else "")
    return texts


@pytest.mark.parametrize("chunk_size", [(0, 10, 5), (5, 10, 5)])
def test_online_partials_match_funasrs_own_streaming_loop(
    engine: Engine, tiny_models: TinyModels, fp32: OnlineModel, chunk_size: tuple[int, int, int]
) -> None:
    """Our 60 ms frames, buffered into 600 ms steps, give the text of FunASR's documented chunk loop, step by step."""
    x = read()
    config = StreamConfig(mode="online", chunk_size=chunk_size, encoder_look_back=4, decoder_look_back=1)
    session = StreamSession(engine, config, online=fp32)
    results = feed_all(session, x)
    expected = funasr_chunk_loop(tiny_models.online, x, list(chunk_size), (4, 1))
    assert [r.text for r in results if r.text] == [t for t in expected if t] != []
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
    # int8 changes the numbers a little, and on this random-weight model, whose scores are near ties, a little
    # flips some tokens: over the test utterances the int8 partials differ from fp32's by 10.3 % of the characters
    # (edit distance; 0-19 % per clip). A quantization that broke the layers would differ by most of them.
    changed = total = 0
    for path in sorted((DATA / "utterances").glob("*.wav")):
        x = read(path)
        texts = {}
        for model in (online, plain):
            cache: dict = {}
            texts[model.precision] = "".join(
                model.step(
                    x[i : i + 9600],
                    cache,
                    is_final=i + 9600 >= x.size,
                    chunk_size=(5, 10, 5),
                    encoder_look_back=4,
                    decoder_look_back=1,
                )
                for i in range(0, x.size, 9600)
            )
        changed += edit_distance(texts["fp32"], texts["int8"])
        total += len(texts["fp32"])
    assert total > 200 and changed / total <= 0.2, (changed, total)


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]


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
