"""The streaming Paraformer on ONNX Runtime (asr.onnx.online_export, asr.onnx.online) against PyTorch's streaming loop,
on the tiny random-weight model."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.onnx.export import export_model, onnx_file_names
from asr.onnx.online import OnnxOnlineModel, find_online_onnx
from asr.stream_models import OnlineModel
from asr.streaming import StreamConfig, StreamSession
from conftest import DATA, TinyModels

UTTERANCES = sorted((DATA / "utterances").glob("*.wav"))
#: (chunk_size, encoder look-back, decoder look-back): the service's default, FunASR's other documented chunk,
#: no look-back at all, and odd settings (a look-back shorter than the first chunk's cache, a longer decoder one).
SETTINGS = [((5, 10, 5), 4, 1), ((0, 10, 5), 4, 1), ((5, 10, 5), 0, 0), ((8, 8, 4), 1, 2)]


@pytest.fixture(scope="module")
def exported(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny streaming model folder with its fp32 and int8 exports (the shared folder stays as built,
    so the other tests' ONLINE_BACKEND=auto keeps PyTorch)."""
    folder = tmp_path_factory.mktemp("online-onnx") / "tiny-online"
    shutil.copytree(tiny_models.online, folder)
    written = export_model(folder, quantize=True)
    assert [p.name for p in written] == onnx_file_names("ParaformerStreaming", False) + onnx_file_names(
        "ParaformerStreaming", True
    )
    return folder


@pytest.fixture(scope="module")
def torch_fp32(tiny_models: TinyModels) -> OnlineModel:
    return OnlineModel(str(tiny_models.online), "cpu", 1, quantize=False)


def onnx_model(folder: Path, *, quantize: bool, workers: int = 1, max_batch: int = 1) -> OnnxOnlineModel:
    files = find_online_onnx(folder, quantize=quantize)
    assert files is not None
    return OnnxOnlineModel(str(folder), files, ncpu=1, workers=workers, max_batch=max_batch)


def read(path: Path) -> np.ndarray:
    return sf.read(path, dtype="float32")[0]


def steps(model, samples: np.ndarray, chunk_size=(5, 10, 5), enc: int = 4, dec: int = 1) -> list[str]:
    """The text of each step of FunASR's chunk loop: chunk_size[1] x 60 ms per call, is_final on the last."""
    stride = chunk_size[1] * 960
    count = (samples.size - 1) // stride + 1
    cache: dict = {}
    return [
        model.step(
            samples[i * stride : (i + 1) * stride],
            cache,
            is_final=i == count - 1,
            chunk_size=chunk_size,
            encoder_look_back=enc,
            decoder_look_back=dec,
        )
        for i in range(count)
    ]


def test_fp32_gives_pytorchs_tokens_chunk_by_chunk(exported: Path, torch_fp32: OnlineModel) -> None:
    model = onnx_model(exported, quantize=False)
    assert model.precision == "fp32" and model.backend == "onnx" and model.load_seconds > 0
    compared = 0
    for path in UTTERANCES:
        x = read(path)
        for chunk_size, enc, dec in SETTINGS:
            expected = steps(torch_fp32, x, chunk_size, enc, dec)
            assert steps(model, x, chunk_size, enc, dec) == expected, (path.name, chunk_size, enc, dec)
            compared += sum(1 for t in expected if t)
    assert compared > 100  # the random-weight model does say something on most steps


def test_a_session_on_onnx_gives_the_pytorch_session_partials(exported: Path, engine, torch_fp32) -> None:
    """Through StreamSession (60 ms frames buffered into 600 ms steps, the final flush, a second utterance)."""
    x = read(DATA / "utterances" / "funasr_long.wav")
    results = {}
    for name, model in (("torch", torch_fp32), ("onnx", onnx_model(exported, quantize=False))):
        session = StreamSession(engine, StreamConfig(mode="online"), online=model)
        texts = []
        for _ in range(2):
            for i in range(0, x.size, 960):
                texts += [r.text for r in session.feed(x[i : i + 960])]
            texts += [r.text for r in session.finish()]
        results[name] = texts
    assert results["onnx"] == results["torch"] and any(results["torch"])


def test_the_cache_stays_the_same_size_over_a_long_stream(exported: Path) -> None:
    model = onnx_model(exported, quantize=False)
    x = np.concatenate([read(p) for p in UTTERANCES] * 2)
    cache: dict = {}

    def size() -> int:
        s = cache["onnx"]
        return sum(a.size for a in [s.feats, *s.enc_keys, *s.enc_values, *s.dec_fsmn, *s.dec_keys, *s.dec_values])

    sizes = []
    for n, i in enumerate(range(0, x.size - 9600, 9600)):
        model.step(
            x[i : i + 9600], cache, is_final=False, chunk_size=(5, 10, 5), encoder_look_back=4, decoder_look_back=1
        )
        if n in (10, 40, 80):
            sizes.append(size())
    assert sizes[0] > 0 and sizes[0] == sizes[1] == sizes[2], sizes


def test_int8_agrees_with_fp32_on_most_characters(exported: Path) -> None:
    from test_streaming import edit_distance

    fp32, int8 = onnx_model(exported, quantize=False), onnx_model(exported, quantize=True)
    assert int8.precision == "int8"
    changed = total = 0
    for path in UTTERANCES:
        x = read(path)
        a, b = "".join(steps(fp32, x)), "".join(steps(int8, x))
        changed += edit_distance(a, b)
        total += len(a)
    # Like PyTorch's int8 (tests/test_streaming.py: 10.3 %): this random-weight model's scores are near ties.
    assert total > 200 and changed / total <= 0.2, (changed, total)


def test_workers_side_by_side_give_each_stream_its_alone_partials(exported: Path) -> None:
    x = read(DATA / "utterances" / "funasr_long.wav")
    streams = [x, x[::-1].copy()]
    alone = [steps(onnx_model(exported, quantize=True), s) for s in streams]
    two = onnx_model(exported, quantize=True, workers=2)
    together: dict[int, list[str]] = {}
    threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, steps(two, streams[i]))) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [together[0], together[1]] == alone and any(alone[0])


def test_online_backend_auto_takes_the_export_on_cpu(exported: Path, tiny_models: TinyModels) -> None:
    from asr.errors import ModelLoadError
    from asr.stream_models import resolve_online_backend

    assert resolve_online_backend("auto", "cpu", str(exported), True)[0] == "onnx"
    assert resolve_online_backend("auto", "cpu", str(exported), False)[1].encoder.name == "encoder_chunk.onnx"
    assert resolve_online_backend("auto", "cuda:0", str(exported), True) == ("torch", None)
    assert resolve_online_backend("torch", "cpu", str(exported), True) == ("torch", None)
    assert resolve_online_backend("auto", "cpu", str(tiny_models.online), True) == ("torch", None)
    with pytest.raises(ModelLoadError, match="python -m asr.onnx.export --model-dir"):
        resolve_online_backend("onnx", "cpu", str(tiny_models.online), True)


def test_the_service_loads_the_onnx_streaming_model_and_says_so(
    exported: Path, tiny_models: TinyModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asr.stream_models as stream_models
    from asr.engine import Engine
    from conftest import make_settings

    monkeypatch.setattr(stream_models, "_online_models", {})  # the process's other tests keep their model
    settings = make_settings(tiny_models, tmp_path, online_model_dir=exported, online_backend="onnx")
    assert settings.engine_config().online_backend == "onnx"
    model = stream_models.get_online_model(Engine(settings.engine_config()))
    assert isinstance(model, OnnxOnlineModel) and model.precision == "int8"  # ONLINE_QUANTIZE's default
    assert model.max_batch == 8  # ONLINE_MAX_BATCH's default: the int8 export batches exactly
    assert stream_models.online_model_state() == "ready (onnx, int8)"


@pytest.mark.parametrize("quantize", [False, True], ids=["fp32", "int8"])
def test_concurrent_streams_share_calls_and_keep_their_alone_partials(exported: Path, quantize: bool) -> None:
    """Eight streams at once on one call slot: the chunks that queue behind a call go through one batched call, and
    each stream's partials are exactly its partials alone (int8 too: its activations are quantized per row)."""
    clips = [read(p) for p in UTTERANCES]
    streams = [
        clips[i % len(clips)][: 16000 * 6] if i < len(clips) else clips[i % len(clips)][::-1].copy() for i in range(8)
    ]
    alone_model = onnx_model(exported, quantize=quantize)
    alone = [steps(alone_model, s) for s in streams]
    assert alone_model.batch_stats()["encoder_mean_batch"] == 1.0
    shared = onnx_model(exported, quantize=quantize, workers=1, max_batch=8)

    class Slow:
        """The tiny model's calls take a millisecond; 20 ms make the other streams' chunks queue as behind a big one."""

        def __init__(self, session):
            self.session = session

        def run(self, names, feeds):
            time.sleep(0.02)
            return self.session.run(names, feeds)

    shared._encoder.session = Slow(shared._encoder.session)
    shared._decoder.session = Slow(shared._decoder.session)
    together: dict[int, list[str]] = {}
    barrier = threading.Barrier(len(streams))

    def run(i: int) -> None:
        barrier.wait()
        together[i] = steps(shared, streams[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(streams))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = shared.batch_stats()
    assert stats["encoder_mean_batch"] > 1.5 and stats["decoder_mean_batch"] > 1.5, stats
    assert [together[i] for i in range(len(streams))] == alone
    assert sum(bool(t) for a in alone for t in a) > 20


def test_an_int8_export_from_before_per_row_quantization_runs_its_chunks_alone(
    exported: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its one activation scale per call would let a batch's streams change each other's partials: max_batch 1."""
    from asr.onnx.export import _quantize

    folder = tmp_path / "old-export"
    shutil.copytree(exported, folder)
    for name in onnx_file_names("ParaformerStreaming", False):
        _quantize(folder / name)  # quantize_dynamic alone, as the export did before
    with caplog.at_level("WARNING", logger="asr.onnx.online"):
        old = onnx_model(folder, quantize=True, max_batch=8)
    assert old.max_batch == 1
    assert "re-export" in caplog.text and "--quantize" in caplog.text
    assert onnx_model(exported, quantize=True, max_batch=8).max_batch == 8


def test_a_batch_error_reaches_every_caller_of_the_batch() -> None:
    from asr.onnx.online_batching import SharedSession

    class Failing:
        def run(self, names, feeds):
            raise RuntimeError("boom")

    shared = SharedSession(Failing(), slots=1, max_batch=4)
    with pytest.raises(RuntimeError, match="boom"):
        shared.run({"x": np.zeros((1, 2), dtype=np.float32)})
    assert shared.calls == 1


def test_max_streams_auto_counts_the_onnx_figure_per_core(exported: Path, tiny_models: TinyModels, tmp_path) -> None:
    from api.funasr_ws import StreamRegistry
    from asr.engine import Engine
    from asr.stream_capacity import ONNX_STREAMS_PER_CORE, STREAMS_PER_CORE, default_max_streams
    from asr.stream_models import planned_online_backend
    from conftest import make_settings

    assert default_max_streams("cpu", 3, "onnx") == 3 * ONNX_STREAMS_PER_CORE > 3 * STREAMS_PER_CORE
    on_onnx = Engine(make_settings(tiny_models, tmp_path, online_model_dir=exported).engine_config())
    assert planned_online_backend(on_onnx) == "onnx"  # auto, on CPU, with the export
    on_torch = Engine(
        make_settings(tiny_models, tmp_path, online_model_dir=exported, online_backend="torch").engine_config()
    )
    assert planned_online_backend(on_torch) == "torch"
    streams = StreamRegistry.for_setting("auto", "cpu", 3, planned_online_backend(on_onnx)).info()
    assert streams["max"] == 3 * ONNX_STREAMS_PER_CORE and streams["streams_per_core"] == ONNX_STREAMS_PER_CORE


def test_a_chunk_costs_the_same_two_hours_into_a_stream_on_onnx(exported: Path) -> None:
    """The ONNX runtime encodes only the positions of the step (FunASR's encoding of positions start+1..start+T)."""
    from test_stream_cost import TWO_HOURS

    model = onnx_model(exported, quantize=True)
    chunk = (np.random.default_rng(0).standard_normal(9600) * 0.1).astype(np.float32)

    def step(cache: dict) -> float:
        began = time.perf_counter()
        model.step(chunk, cache, is_final=False, chunk_size=(5, 10, 5), encoder_look_back=4, decoder_look_back=1)
        return time.perf_counter() - began

    fresh, late = {}, {}
    step(fresh), step(late)
    late["onnx"].start_idx += TWO_HOURS
    times = [(step(fresh), step(late)) for _ in range(20)]
    start, end = min(t[0] for t in times), min(t[1] for t in times)
    assert end <= 1.1 * start + 0.005, f"a chunk took {start * 1000:.1f} ms at the start, {end * 1000:.1f} ms at hour 2"


def test_a_free_slot_takes_its_share_of_the_queue() -> None:
    """With two slots, the first to free up takes half the queued chunks; the other slot takes the rest."""
    from asr.onnx.online_batching import SharedSession, _Request

    shared = SharedSession(object(), slots=2, max_batch=8)
    requests = [_Request({}, ("same",)) for _ in range(5)] + [_Request({}, ("other",))]
    shared._queue = list(requests)
    assert shared._take(requests[0]) == requests[:3]
    assert shared._take(requests[3]) == requests[3:4]  # ceil(2 / 2): one now, one for the other slot
    assert shared._queue == requests[4:]
