"""The ONNX Runtime backend against the PyTorch engine, on the tiny model exported in a fixture.

fp32 must give the PyTorch text exactly (same VAD segments, hotwords, punctuation, sentences); int8 only
has to run, and its agreement with fp32 is measured and reported (`-s` prints it, and it is recorded as
the test's `int8_token_agreement` property), not asserted.
"""

from __future__ import annotations

import difflib
import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from asr.engine import Engine
from asr.errors import HotwordError, InputError, ModelLoadError
from asr.onnx import graph as ort_graph
from asr.onnx.backend import _session, find_asr_onnx, resolve_backend
from asr.onnx.export import export_model, model_type, onnx_file_names
from conftest import DATA, UTTERANCE, make_settings, service_settings, start_server, stop_server

UTTERANCES = sorted((DATA / "utterances").glob("*.wav"))
HOTWORDS = "达摩院,语音识别"
UNREWRITTEN = "unrewritten"


@pytest.fixture(scope="session")
def tiny_onnx(tiny_models, tmp_path_factory) -> Path:
    """The tiny SeACo-Paraformer exported (fp32 and int8) into a temp folder: a build product, never committed.

    The backbones as exported, before `asr.onnx.graph` rewrote them, are kept in `unrewritten/` with
    `rewrites.json`, what the rewrite changed in each.
    """
    out = tmp_path_factory.mktemp("tiny-onnx")
    (out / UNREWRITTEN).mkdir()
    rewrites: dict[str, dict] = {}
    rewrite = ort_graph.optimize_for_ort

    def keep_then_rewrite(path: Path, output: Path | None = None) -> dict:
        shutil.copy(path, out / UNREWRITTEN / Path(path).name)
        rewrites[Path(path).name] = rewrite(path, output)
        return rewrites[Path(path).name]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ort_graph, "optimize_for_ort", keep_then_rewrite)
        export_model(tiny_models.asr, output_dir=out, quantize=True)
    (out / UNREWRITTEN / "rewrites.json").write_text(json.dumps(rewrites), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def onnx_engine(tiny_models, tiny_onnx, tmp_path_factory) -> Engine:
    eng = Engine(
        make_settings(
            tiny_models, tmp_path_factory.mktemp("onnx"), engine_backend="onnx", onnx_model_dir=tiny_onnx
        ).engine_config()
    )
    eng.load()
    return eng


@pytest.fixture(scope="session")
def int8_engine(tiny_models, tiny_onnx, tmp_path_factory) -> Engine:
    eng = Engine(
        make_settings(
            tiny_models,
            tmp_path_factory.mktemp("int8"),
            engine_backend="onnx",
            onnx_model_dir=tiny_onnx,
            onnx_quantize=True,
        ).engine_config()
    )
    eng.load()
    return eng


def assert_same(torch_result, onnx_result) -> None:
    assert onnx_result.text == torch_result.text
    assert [s.text for s in onnx_result.sentences] == [s.text for s in torch_result.sentences]
    for a, b in zip(torch_result.sentences, onnx_result.sentences, strict=False):
        assert (b.start, b.end) == pytest.approx((a.start, a.end), abs=0.061)  # one LFR frame at most
    assert onnx_result.confidence == pytest.approx(torch_result.confidence, rel=1e-3)


def test_export_writes_the_graphs_the_backend_needs(tiny_models, tiny_onnx):
    import onnxruntime as ort

    assert model_type(tiny_models.asr) == "SeacoParaformer"
    for name in onnx_file_names("SeacoParaformer", False) + onnx_file_names("SeacoParaformer", True):
        assert (tiny_onnx / name).stat().st_size > 0
    backbone = ort.InferenceSession(str(tiny_onnx / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in backbone.get_outputs()] == [
        "logits",
        "token_num",
        "us_alphas",
        "us_cif_peak",
        "decoder_logits",
    ]
    embedder = ort.InferenceSession(str(tiny_onnx / "model_eb.onnx"), providers=["CPUExecutionProvider"])
    assert not isinstance(embedder.get_inputs()[0].shape[1], int)  # hotwords of any length
    assert not list(tiny_models.asr.glob("*.onnx"))  # the model folder itself is left alone


@pytest.mark.parametrize("name", ["model.onnx", "model_quant.onnx"])
def test_graph_rewrite_keeps_the_outputs_bit_for_bit(engine, onnx_engine, tiny_onnx, name):
    """asr.onnx.graph's claim: the rewritten backbone gives exactly the outputs of the exported one, here on a
    padded batch of two utterances, with and without hotwords, in sessions opened as the engine opens them."""
    import torch
    from funasr.utils.load_utils import extract_fbank

    rewrites = json.loads((tiny_onnx / UNREWRITTEN / "rewrites.json").read_text(encoding="utf-8"))[name]
    assert rewrites["attention"] > 0 and sum(rewrites["loops"].values()) > 0, rewrites  # the rewrites fired
    clips = [torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in (UTTERANCE, UTTERANCES[1])]
    speech, lengths = extract_fbank(clips, data_type="sound", frontend=engine._model.kwargs["frontend"])
    assert len(set(lengths.tolist())) == 2  # the shorter one is padded: masks and CIF loops see padding
    tokenizer, onnx_model = engine._model.kwargs["tokenizer"], onnx_engine._model.model
    hotwords = [tokenizer.tokens2ids(list(w)) for w in HOTWORDS.split(",")] + [[onnx_model.sos]]
    before = _session(tiny_onnx / UNREWRITTEN / name, 1)
    after = _session(tiny_onnx / name, 1)
    for bias in (onnx_model._bias_embed([[onnx_model.sos]]), onnx_model._bias_embed(hotwords)):
        feed = {
            "speech": speech.numpy(),
            "speech_lengths": lengths.numpy().astype(np.int32),
            "bias_embed": np.repeat(bias[None], len(clips), axis=0),
        }
        outputs = zip(before.get_outputs(), before.run(None, feed), after.run(None, feed), strict=True)
        for output, expected, got in outputs:
            np.testing.assert_array_equal(got, expected, err_msg=f"{name}: {output.name} changed")


def test_the_torch_fixture_engine_stays_on_torch(engine):
    # ENGINE_BACKEND=auto and no export next to the tiny model: the rest of the suite tests PyTorch.
    assert engine.backend == "torch" and engine.info()["backend"] == "torch", "ONNX files next to models/tiny-seaco?"


@pytest.mark.parametrize("path", UTTERANCES, ids=lambda p: p.stem[:30])
@pytest.mark.parametrize("hotwords", ["", HOTWORDS])
def test_fp32_text_is_the_torch_text(engine, onnx_engine, path, hotwords):
    assert_same(engine.transcribe(path, hotwords=hotwords), onnx_engine.transcribe(path, hotwords=hotwords))


def test_two_minute_file_with_vad_and_hotwords(engine, onnx_engine, long_wav):
    expected = engine.transcribe(long_wav, hotwords=HOTWORDS)
    got = onnx_engine.transcribe(long_wav, hotwords=HOTWORDS)
    assert len(got.sentences) > 10  # VAD split it, punctuation made sentences
    assert_same(expected, got)
    assert got.duration == pytest.approx(120.0)


def test_streamed_segments_on_onnx_give_the_torch_text(engine, onnx_engine, long_wav):
    reported = []
    streamed = onnx_engine.transcribe(long_wav, on_segment=reported.append)
    assert streamed.text == engine.transcribe(long_wav).text
    assert [s.index for s in reported] == list(range(len(reported))) and len(reported) > 5


def test_many_and_long_hotwords_match_torch(engine, onnx_engine):
    # Over 50 hotwords PyTorch keeps the 50 best plus <s>; the export reproduces that filter. Hotwords
    # longer than FunASR's fixed 10-token embedder input work too.
    tokens = engine._model.kwargs["token_list"]
    many = ",".join(tokens[100 + 2 * i] + tokens[101 + 2 * i] for i in range(60))
    long = "欢迎大家来体验达摩院推出的语音识别模型"
    for words in (many, long):
        assert_same(engine.transcribe(UTTERANCE, hotwords=words), onnx_engine.transcribe(UTTERANCE, hotwords=words))


def test_int8_runs_and_its_agreement_with_fp32_is_reported(onnx_engine, int8_engine, long_wav, record_property):
    assert int8_engine._model.model.options.files.quantized
    matched = total = 0
    for path in [*UTTERANCES, long_wav]:
        fp32 = onnx_engine.transcribe(path, hotwords=HOTWORDS).text
        int8 = int8_engine.transcribe(path, hotwords=HOTWORDS)
        assert 0.0 <= int8.confidence <= 1.0 and int8.sentences
        blocks = difflib.SequenceMatcher(None, fp32, int8.text, autojunk=False).get_matching_blocks()
        matched += sum(b.size for b in blocks)
        total += max(len(fp32), len(int8.text))
    agreement = matched / total
    record_property("int8_token_agreement", round(agreement, 4))
    print(f"\nint8 vs fp32 character agreement on {len(UTTERANCES) + 1} inputs: {agreement:.1%}")


def test_backend_follows_the_setting(tiny_models, tiny_onnx, tmp_path):
    asr = str(tiny_models.asr)
    assert resolve_backend("auto", "cpu", asr, tiny_onnx, False)[0] == "onnx"
    assert resolve_backend("auto", "cpu", asr, tiny_onnx, True)[1].backbone.name == "model_quant.onnx"
    assert resolve_backend("auto", "cpu", asr, None, False) == ("torch", None)  # nothing exported next to it
    assert resolve_backend("auto", "cuda:0", asr, tiny_onnx, False) == ("torch", None)  # GPU: PyTorch
    assert resolve_backend("torch", "cpu", asr, tiny_onnx, False) == ("torch", None)
    with pytest.raises(ModelLoadError, match="python -m asr.onnx.export --model-dir"):
        resolve_backend("onnx", "cpu", asr, tmp_path, False)
    assert find_asr_onnx(tmp_path, quantize=False) is None

    eng = Engine(make_settings(tiny_models, tmp_path, onnx_model_dir=tiny_onnx, ncpu=1).engine_config())
    assert eng.info()["backend"] == "onnx"  # what load() will pick, before it runs
    eng.load()
    assert eng.backend == "onnx" and eng.info()["backend"] == "onnx"
    assert eng._model.model.options.threads == 1  # intra_op_num_threads from NCPU
    assert eng.transcribe(UTTERANCE).text

    failing = Engine(make_settings(tiny_models, tmp_path, engine_backend="onnx").engine_config())
    with pytest.raises(ModelLoadError, match="ENGINE_BACKEND=onnx"):
        failing.load()
    assert failing.state == "error" and "asr.onnx.export" in failing.load_error


def test_health_reports_the_backend(onnx_engine, engine, tmp_path):
    from app import health_payload

    assert health_payload(service_settings(onnx_engine, tmp_path), onnx_engine, 0.0)[1]["backend"] == "onnx"
    assert health_payload(service_settings(engine, tmp_path), engine, 0.0)[1]["backend"] == "torch"


BAD = ["empty.wav", "not_audio.wav", "image_renamed.wav", "video_no_audio.mp4", "50ms.wav", "header_only.wav"]


@pytest.mark.parametrize("bad", BAD)
def test_bad_inputs_give_the_same_errors_on_both_backends(engine, onnx_engine, bad):
    errors = []
    for eng in (engine, onnx_engine):
        with pytest.raises(InputError) as caught:
            eng.transcribe(DATA / "bad" / bad)
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1]
    assert onnx_engine.transcribe(UTTERANCE).text == engine.transcribe(UTTERANCE).text  # nothing poisoned


def test_bad_hotwords_and_silence_behave_the_same(engine, onnx_engine):
    for eng in (engine, onnx_engine):
        with pytest.raises(HotwordError, match="'字{21}' has 21 characters; the limit is 20 "):
            eng.transcribe(UTTERANCE, hotwords="字" * 21)
    silence = [eng.transcribe(DATA / "bad" / "silence_10s.wav") for eng in (engine, onnx_engine)]
    assert [(r.text, r.sentences, r.confidence) for r in silence] == [("", [], 0.0)] * 2
    noise = np.random.default_rng(0).normal(0, 0.3, 3 * 16000).astype(np.float32)
    assert_same(engine.transcribe(noise, sample_rate=16000), onnx_engine.transcribe(noise, sample_rate=16000))


def test_concurrent_calls_match_sequential_calls(onnx_engine):
    sequential = {p.name: onnx_engine.transcribe(p, hotwords=HOTWORDS).text for p in UTTERANCES}
    barrier = threading.Barrier(6)

    def run(path: Path) -> tuple[str, str]:
        barrier.wait()
        return path.name, onnx_engine.transcribe(path, hotwords=HOTWORDS).text

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(run, [UTTERANCES[i % len(UTTERANCES)] for i in range(6)]))
    assert all(text == sequential[name] for name, text in results)
    assert onnx_engine.waiting == 0 and not onnx_engine.busy


def test_batched_onnx_calls_give_the_unbatched_text(tiny_models, tiny_onnx, onnx_engine, long_wav, tmp_path):
    """Cross-request batching on ONNX Runtime: each request's text is its text alone.

    Sentence times may move by one timestamp step at a segment's end: the exported timestamp head's
    backward LSTM runs over the padded batch (PyTorch runs it per segment, see asr.batching).
    """
    batched_engine = Engine(
        make_settings(
            tiny_models, tmp_path, engine_backend="onnx", onnx_model_dir=tiny_onnx, batch_max_requests=4
        ).engine_config()
    )
    batched_engine.load()
    work = [(p, HOTWORDS if i % 2 else None) for i, p in enumerate(UTTERANCES)] + [(long_wav, HOTWORDS)]
    alone = {item: onnx_engine.transcribe(item[0], hotwords=item[1]) for item in work}
    with ThreadPoolExecutor(4) as pool:
        batched = list(pool.map(lambda item: batched_engine.transcribe(item[0], hotwords=item[1]), work))
    for item, result in zip(work, batched, strict=False):
        assert_same(alone[item], result)
    assert batched_engine.batcher.stats.largest_jobs > 1


@pytest.mark.server
def test_a_served_onnx_model_writes_nothing_to_the_home_folder(tiny_models, tiny_onnx, tmp_path):
    """No telemetry: ONNX Runtime's device id and event queue (`~/.cache/Microsoft/DeveloperTools/`), Gradio's
    analytics or anything else; the process's HOME is an empty folder and stays empty."""
    home = tmp_path / "home"
    home.mkdir()
    server = start_server(
        tiny_models, tmp_path, ENGINE_BACKEND="onnx", ONNX_MODEL_DIR=str(tiny_onnx), HOME=str(home), XDG_CACHE_HOME=""
    )
    try:
        answer = httpx.post(server.url + "/v1/audio/transcriptions", files={"file": UTTERANCE.open("rb")}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert httpx.get(server.url + "/health", timeout=10).json()["backend"] == "onnx"
    finally:
        stop_server(server)
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
