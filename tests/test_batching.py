"""Cross-request batching: concurrent requests share model calls and each still gets its own answer.

The batcher is tested on a fake model (grouping, caps, failures, empty results), then in the engine on
the tiny model, where a batched request's text, confidence and sentences must equal its unbatched ones.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asr.audio import SAMPLE_RATE as RATE
from asr.batching import PREDICTED_TOKENS, CrossRequestBatcher
from asr.engine import Engine
from conftest import DATA, make_settings, service_settings
from webui.common import queue_concurrency

UTTERANCES = sorted((DATA / "utterances").glob("*.wav"))


class FakeModel:
    """Answers each segment with its length and hotword; a segment of length 13 makes the call fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], Any]] = []

    def inference(self, data_in: list, key: list | None = None, **kwargs: Any) -> tuple:
        self.calls.append(([len(x) for x in data_in], kwargs.get("hotword")))
        if any(len(x) == 13 for x in data_in):
            raise RuntimeError("segment 13 breaks the model")
        if all(len(x) < 5 for x in data_in):
            return ([],)  # like SeacoParaformer: no segment produced a token
        return (
            [
                {"key": k, "text": f"{kwargs.get('hotword')}:{len(x)}", PREDICTED_TOKENS: int(len(x) >= 5)}
                for k, x in zip(key, data_in, strict=False)
            ],
            {"batch_data_time": 1.0},
        )


class FakeEngine:
    """The engine's side of the contract: a condition held while FunASR code runs, and a count of requests inside."""

    def __init__(self, max_requests: int, max_seconds: float = 1e9) -> None:
        self.condition = threading.Condition()
        self.inside = 0
        self.count_lock = threading.Lock()
        self.model = FakeModel()
        self.batcher = CrossRequestBatcher(
            self.condition, lambda: self.inside, max_requests=max_requests, max_seconds=max_seconds
        )
        self.batcher.install(self.model)

    def request(self, length: int, hotword: str | None, barrier: threading.Barrier | None = None) -> Any:
        with self.count_lock:
            self.inside += 1
        if barrier:
            barrier.wait()
        with self.condition:
            try:
                return self.model.inference([np.zeros(length)], key=[f"k{length}"], hotword=hotword)
            except Exception as exc:
                return exc
            finally:
                with self.count_lock:
                    self.inside -= 1
                self.condition.notify_all()


def run_concurrently(engine: FakeEngine, requests: list[tuple[int, str | None]]) -> list[Any]:
    barrier = threading.Barrier(len(requests))
    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(lambda r: engine.request(*r, barrier=barrier), requests))


def test_concurrent_requests_share_calls_and_keep_their_own_answers():
    engine = FakeEngine(max_requests=8)
    requests = [(20 + i, "甲" if i % 2 else None) for i in range(6)]
    answers = run_concurrently(engine, requests)
    for (length, hotword), answer in zip(requests, answers, strict=False):
        results, meta = answer
        assert [r["text"] for r in results] == [f"{hotword}:{length}"]
        assert PREDICTED_TOKENS not in results[0]
        assert meta == {"batch_data_time": 1.0}
    # Two hotword lists -> two groups; every call carries one list only, and all six rode in 2 calls.
    assert len(engine.model.calls) == 2
    for lengths, hotword in engine.model.calls:
        assert all((length % 2 == 1) == (hotword == "甲") for length in lengths)
    assert engine.batcher.stats.jobs == 6 and engine.batcher.stats.calls == 2


def test_caps_on_requests_and_padded_seconds():
    engine = FakeEngine(max_requests=3)
    run_concurrently(engine, [(20 + i, None) for i in range(7)])
    assert max(len(lengths) for lengths, _ in engine.model.calls) == 3
    assert sum(len(lengths) for lengths, _ in engine.model.calls) == 7

    # Padded seconds = longest segment x segments: 3 segments of ~0.06 s would pass 0.15 s.
    engine = FakeEngine(max_requests=8, max_seconds=0.15)
    run_concurrently(engine, [(RATE // 20 + i, None) for i in range(4)])
    assert max(len(lengths) for lengths, _ in engine.model.calls) == 2


def test_one_broken_segment_does_not_sink_the_others():
    engine = FakeEngine(max_requests=8)
    answers = run_concurrently(engine, [(11, None), (13, None), (12, None)])
    assert isinstance(answers[1], RuntimeError)
    assert answers[0][0][0]["text"] == "None:11" and answers[2][0][0]["text"] == "None:12"


def test_a_segment_without_tokens_gets_one_empty_result_batched_or_alone():
    # FunASR's model answers `([],)`; its VAD merge then drops the whole file's text (fewer results than
    # segments), so the batcher answers one empty result per segment instead, batched or not.
    empty = [{"key": "k3", "text": "", "timestamp": [], "token_probs": []}]
    alone = FakeEngine(max_requests=8).request(3, None)
    assert alone == (empty, {})
    engine = FakeEngine(max_requests=8)
    answers = run_concurrently(engine, [(3, None), (12, None)])
    assert answers[0][0] == empty  # batched with a segment that has tokens: the same empty result
    assert answers[1][0][0]["text"] == "None:12"
    assert len(engine.model.calls) == 1


def test_requests_with_more_hotwords_than_the_filter_run_alone():
    engine = FakeEngine(max_requests=8)
    many = " " + " ".join(f"词{i}" for i in range(60)) + " "
    answers = run_concurrently(engine, [(20, many), (21, many), (22, "甲"), (23, "甲")])
    assert [a[0][0]["text"] for a in answers] == [f"{many}:20", f"{many}:21", "甲:22", "甲:23"]
    assert sorted(len(lengths) for lengths, _ in engine.model.calls) == [1, 1, 2]


def test_one_request_or_batching_off_calls_the_model_directly():
    engine = FakeEngine(max_requests=8)
    assert engine.request(10, None)[0][0]["text"] == "None:10"
    off = FakeEngine(max_requests=1)
    run_concurrently(off, [(10 + i, None) for i in range(4)])
    assert len(off.model.calls) == 4 and off.batcher.stats.calls == 0


# ------------------------------------------------------------------------------ the engine, tiny model
@pytest.fixture(scope="module")
def batching_engine(tiny_models, tmp_path_factory) -> Engine:
    eng = Engine(make_settings(tiny_models, tmp_path_factory.mktemp("batching"), batch_max_requests=4).engine_config())
    eng.load()
    return eng


def test_batched_results_equal_unbatched_results(engine, batching_engine, long_wav):
    """Every request, run 4 at a time with mixed hotword lists, gets exactly what it gets alone."""
    hotword_lists = [None, "达摩院,语音识别", "科哥", None]
    work: list[tuple[Path, str | None]] = [(p, hotword_lists[i % 4]) for i, p in enumerate(UTTERANCES * 2)]
    work.append((long_wav, "达摩院"))
    alone = {(p, h): engine.transcribe(p, hotwords=h) for p, h in set(work)}  # fixture engine: no batching
    assert engine.batcher is not None and engine.batcher.max_requests == 1

    before = batching_engine.batcher.stats.as_dict()
    with ThreadPoolExecutor(4) as pool:
        batched = list(pool.map(lambda item: batching_engine.transcribe(item[0], hotwords=item[1]), work))
    for (path, hotwords), result in zip(work, batched, strict=False):
        expected = alone[(path, hotwords)]
        assert result.text == expected.text, f"{path.name} with {hotwords}"
        assert result.confidence == pytest.approx(expected.confidence, abs=1e-5)
        assert [(s.text, s.start, s.end) for s in result.sentences] == [
            (s.text, s.start, s.end) for s in expected.sentences
        ]
    # How many requests share a call depends on this machine's timing (decoding and VAD run outside the
    # model lock); that some did, and that this run needed fewer calls than requests' jobs, does not.
    after = batching_engine.batcher.stats.as_dict()
    jobs, calls = after["jobs"] - before["jobs"], after["calls"] - before["calls"]
    assert after["largest_jobs"] > 1 and 0 < calls < jobs
    assert batching_engine.waiting == 0 and not batching_engine.busy


def test_auto_batch_size_and_concurrency_follow_the_device(tiny_models, tmp_path, monkeypatch):
    from asr import device

    def concurrency(**overrides) -> tuple[Engine, int]:
        settings = make_settings(tiny_models, tmp_path, **overrides)
        engine = Engine(settings.engine_config())
        return engine, queue_concurrency(settings, engine)

    cpu, cpu_concurrency = concurrency()
    assert cpu.batch_max_requests("cpu") == 1 and cpu.batch_max_requests("cuda:0") == 8
    assert cpu_concurrency == 2
    # DEVICE=cuda:0 where torch has no CUDA: the load will fail, and nothing takes the GPU's defaults meanwhile
    assert concurrency(device="cuda:0")[1] == 2
    monkeypatch.setattr(device, "cuda_state", lambda: device.CudaState("2.13.0+cu128", "12.8", True, 1, ("GPU",), None))
    assert concurrency(device="cuda:0")[1] == 8  # requests must be in the engine together to share a call
    fixed, fixed_concurrency = concurrency(batch_max_requests=3, model_concurrency=5)
    assert fixed.batch_max_requests("cpu") == 3 and fixed_concurrency == 5


def test_health_reports_batching_and_never_fails_before_a_load(tiny_models, tmp_path, batching_engine):
    from app import health_payload

    code, body = health_payload(service_settings(batching_engine, tmp_path), batching_engine, 0.0)
    assert code == 200 and body["batching"]["max_requests"] == 4 and body["queue"]["concurrency"] == 4
    # A model folder that does not exist: the engine cannot even resolve its spec; /health must still answer.
    broken_settings = make_settings(tiny_models, tmp_path, model_dir=tmp_path / "no-such-model")
    broken = Engine(broken_settings.engine_config())
    with pytest.raises(Exception):  # noqa: B017
        broken.load()
    code, body = health_payload(broken_settings, broken, 0.0, admin=True)  # the operator sees why
    assert code == 503 and body["status"] == "error" and "no-such-model" in body["detail"]
    assert body["batching"] is None


def test_an_urgent_sentence_goes_ahead_of_a_long_file_at_its_next_segment(engine: Engine, long_wav: Path) -> None:
    """A live stream's sentence (`urgent=True`) waits for the file's current segment, not for the whole file; the
    file's result is unchanged. A plain request, the control, waits for the whole file."""
    import time

    import soundfile as sf

    from asr.progress import segment_hook

    samples = np.tile(sf.read(long_wav, dtype="float32")[0], 3)  # 6 minutes: seconds of work for the tiny model
    sentence = DATA / "utterances" / "firered_BAC009S0764W0121.wav"
    alone = engine.transcribe(samples, sample_rate=RATE)

    def beside_the_file(urgent: bool) -> tuple[float, float, Any]:
        started, file_done, results = threading.Event(), [], {}

        def file_job() -> None:
            with segment_hook(lambda seconds: started.set()):
                results["file"] = engine.transcribe(samples, sample_rate=RATE)
            file_done.append(time.perf_counter())

        thread = threading.Thread(target=file_job)
        thread.start()
        assert started.wait(30)
        time.sleep(0.3)  # the file is well into its segments
        asked = time.perf_counter()
        engine.transcribe(sentence, urgent=urgent)
        answered = time.perf_counter()
        thread.join()
        return answered - asked, file_done[0] - answered, results["file"]

    waited, file_left, file_result = beside_the_file(urgent=True)
    assert file_left > 0.5, "the sentence was answered while the file still had work left"
    assert waited < 1.0
    assert (file_result.text, file_result.sentences) == (alone.text, alone.sentences)
    waited, file_left, _ = beside_the_file(urgent=False)
    assert file_left <= 0, "a plain request waits for the whole file"
