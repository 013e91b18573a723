"""SenseVoice-Small: the random-weight test folders (testmodels.sensevoice) and the engine's second recognizer."""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile as sf

from asr.engine import Engine
from asr.errors import HotwordsUnsupportedError, LanguageUnsupportedError, UnknownModelError
from asr.sensevoice import SegmentResult, Tags, parse_tags, strip_tags, to_sentences
from asr.subtitles import tag_label
from conftest import UTTERANCE, make_settings, service_settings
from testmodels import sensevoice as svmodels


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_folder_has_the_published_layout_and_loads_with_funasr(tiny_sensevoice):
    from funasr import AutoModel

    names = {p.name for p in tiny_sensevoice.iterdir()}
    assert {"config.yaml", "configuration.json", "model.pt", "am.mvn", svmodels.BPE_MODEL} <= names
    metas = json.loads((tiny_sensevoice / "configuration.json").read_text())["file_path_metas"]
    assert metas["tokenizer_conf"] == {"bpemodel": svmodels.BPE_MODEL}
    model = AutoModel(
        model=str(tiny_sensevoice), device="cpu", disable_update=True, disable_pbar=True, disable_log=True
    )
    assert type(model.model).__name__ == "SenseVoiceSmall"
    tokenizer = model.kwargs["tokenizer"]
    # The rich tags are single pieces, so the model can emit them and they decode back whole.
    for tag in ("<|zh|>", "<|ANGRY|>", "<|Laughter|>", "<|woitn|>"):
        assert tokenizer.text2tokens(tag)[-1] == tag


def test_tiny_build_is_deterministic(tiny_sensevoice, tmp_path):
    again = svmodels.build_sensevoice(
        tmp_path / "again", svmodels.tiny_config(), svmodels.TINY_VOCAB_SIZE, None, full=False
    )
    assert digest(again / svmodels.BPE_MODEL) == digest(tiny_sensevoice / svmodels.BPE_MODEL)
    import torch

    first = torch.load(tiny_sensevoice / "model.pt", map_location="cpu")
    second = torch.load(again / "model.pt", map_location="cpu")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_full_vocabulary_has_the_published_size_and_tag_ids(tmp_path):
    import sentencepiece as spm

    path = svmodels.train_tokenizer(tmp_path / "full.model", svmodels.FULL_VOCAB_SIZE, published_layout=True)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert sp.get_piece_size() == svmodels.FULL_VOCAB_SIZE == 25055
    assert [sp.id_to_piece(i) for i in (0, 1, 2)] == ["<unk>", "<s>", "</s>"]
    # The ids FunASR's SenseVoiceSmall hard-codes (lid_int_dict, emo_dict, textnorm_int_dict) name these tags.
    for index, tag in {
        24884: "<|zh|>",
        24885: "<|en|>",
        24888: "<|yue|>",
        24892: "<|ja|>",
        24896: "<|ko|>",
        25004: "<|NEUTRAL|>",
        25009: "<|EMO_UNKNOWN|>",
        25016: "<|withitn|>",
        25017: "<|woitn|>",
    }.items():
        assert sp.id_to_piece(index) == tag
    assert sp.encode("<|zh|><|NEUTRAL|><|Speech|><|woitn|>", out_type=int)[-4:] == [24884, 25004, 24993, 25017]


# ------------------------------------------------------------------------------------------ tags
def test_tags_become_fields_and_never_stay_in_the_text():
    text, tags = parse_tags("<|yue|><|ANGRY|><|Laughter|><|woitn|>你好 world")
    assert (text, tags) == ("你好 world", Tags("yue", "angry", ("laughter",)))
    # Speech is the ordinary case (no event); unknown and repeated tags go too; the first of a kind wins.
    text, tags = parse_tags("<|en|><|NEUTRAL|><|Speech|><|withitn|>Hi <|BGM|>there<|ja|><|made_up|> <|BGM|>")
    assert (text, tags) == ("Hi there", Tags("en", "neutral", ("music",)))
    assert parse_tags("") == ("", Tags())


def test_word_times_only_where_the_alignment_spells_the_text():
    found = SegmentResult(2.0, 4.0, {"text": "x", "timestamp": [[0, 300], [300, 900]], "words": ["▁hello", "世"]})
    (sentence,) = to_sentences([replace(found, result={**found.result, "text": "<|en|>hello 世"})], duration=10.0)
    assert [(w.text, w.start, w.end) for w in sentence.words] == [("hello", 2.0, 2.3), ("世", 2.3, 2.9)]
    assert (sentence.start, sentence.end, sentence.language) == (2.0, 4.0, "en")
    (other,) = to_sentences([replace(found, result={**found.result, "text": "another text"})], duration=10.0)
    assert other.words == [] and (other.start, other.end) == (2.0, 4.0)
    # A segment that says nothing but its tags (music alone) gives no sentence.
    assert to_sentences([replace(found, result={"text": "<|nospeech|><|BGM|>"})], duration=10.0) == []


# ------------------------------------------------------------------------------------------ engine
@pytest.fixture(scope="module")
def sv_engine(tiny_models, tiny_sensevoice, tmp_path_factory):
    settings = make_settings(
        tiny_models,
        tmp_path_factory.mktemp("sv"),
        enable_sensevoice=True,
        sensevoice_model_dir=tiny_sensevoice,
        enable_spk=True,
        spk_model_dir=tiny_models.spk,
        default_hotwords="达摩院",
    )
    engine = Engine(settings.engine_config())
    engine.load()
    return engine


@pytest.fixture(scope="module")
def sv_bare(tiny_models, tiny_sensevoice, sv_engine):
    """FunASR's own pipeline on the same folders: SenseVoice-Small with the same VAD, nothing of the engine."""
    from funasr import AutoModel

    return AutoModel(
        model=str(tiny_sensevoice),
        vad_model=str(tiny_models.vad),
        device="cpu",
        disable_update=True,
        disable_pbar=True,
        disable_log=True,
        ncpu=sv_engine._sensevoice.kwargs["ncpu"],
    )


@pytest.fixture(scope="module")
def vad(tiny_models):
    from funasr import AutoModel

    return AutoModel(model=str(tiny_models.vad), disable_update=True, disable_pbar=True, disable_log=True)


@pytest.mark.parametrize("language", [None, "yue", "en"])
def test_engine_text_equals_bare_automodel(sv_engine, sv_bare, language):
    samples, _ = sf.read(UTTERANCE, dtype="float32")
    bare = sv_bare.generate(input=samples, language=language or "auto", use_itn=False, batch_size_s=300)[0]
    r = sv_engine.transcribe(UTTERANCE, model="sensevoice", language=language)
    assert r.text and r.text == strip_tags(bare["text"])
    assert r.model == "sensevoice" and r.hotwords == []  # the default hotwords are SeACo's only
    assert "<|" not in r.text and all("<|" not in s.text for s in r.sentences)


def test_long_file_sentences_are_the_vad_segments(sv_engine, sv_bare, vad, long_wav):
    samples, _ = sf.read(long_wav, dtype="float32")
    r = sv_engine.transcribe(long_wav, model="sensevoice")
    assert r.text == strip_tags(sv_bare.generate(input=samples, use_itn=False, batch_size_s=300)[0]["text"])
    segments = [(a / 1000, b / 1000) for a, b in vad.generate(input=samples)[0]["value"]]
    assert len(r.sentences) > 10
    spans = [(s.start, s.end) for s in r.sentences]
    # each sentence spans one VAD segment (ms on FunASR's grid, in seconds here)
    assert all(any(abs(a - x) < 1e-6 and abs(b - y) < 1e-6 for x, y in segments) for a, b in spans), spans
    assert spans == sorted(spans)
    assert " ".join(s.text for s in r.sentences) == r.text
    assert 0.0 < r.confidence <= 1.0


def test_choosing_the_model_and_what_each_refuses(sv_engine):
    assert sv_engine.models == ["paraformer", "sensevoice"]
    seaco = sv_engine.transcribe(UTTERANCE, model="whisper-1")  # OpenAI clients' default name: the default model
    assert seaco.model == "paraformer" and seaco.hotwords == ["达摩院"]
    assert sv_engine.transcribe(UTTERANCE).text == seaco.text
    with pytest.raises(HotwordsUnsupportedError) as refused:
        sv_engine.transcribe(UTTERANCE, model="sensevoice", hotwords="达摩院")
    assert refused.value.code == "hotwords_unsupported" and "热词" in refused.value.message("zh")
    with pytest.raises(LanguageUnsupportedError):
        sv_engine.transcribe(UTTERANCE, model="sensevoice", language="fr")
    with pytest.raises(UnknownModelError) as unknown:
        sv_engine.transcribe(UTTERANCE, model="gpt-9")
    assert "paraformer, sensevoice" in str(unknown.value)
    assert sv_engine.transcribe(UTTERANCE, model="SenseVoice", hotwords="").model == "sensevoice"


def test_an_engine_without_sensevoice_says_so(engine):
    assert engine.models == ["paraformer"]
    with pytest.raises(UnknownModelError):
        engine.transcribe(UTTERANCE, model="sensevoice")


def test_itn_and_speakers_work_with_sensevoice(sv_engine, long_wav):
    spoken = sv_engine.transcribe(long_wav, model="sensevoice")
    written = sv_engine.transcribe(long_wav, model="sensevoice", itn=True, diarize=True)
    assert written.text_spoken == spoken.text
    assert written.speakers >= 1 and all(s.speaker is not None for s in written.sentences)
    assert [(s.start, s.end, s.language) for s in written.sentences] == [
        (s.start, s.end, s.language) for s in spoken.sentences
    ]


def test_both_models_at_once_give_what_each_gives_alone(sv_engine):
    alone = {m: sv_engine.transcribe(UTTERANCE, model=m, hotwords="") for m in ("paraformer", "sensevoice")}
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(sv_engine.transcribe, UTTERANCE, model=m, hotwords="") for m in list(alone) * 3]
        together = [f.result() for f in futures]
    for r in together:
        assert (r.text, r.sentences) == (alone[r.model].text, alone[r.model].sentences)


def test_streamed_segments_carry_no_tags(sv_engine, long_wav):
    seen = []
    r = sv_engine.transcribe(long_wav, model="sensevoice", on_segment=seen.append)
    assert seen and all("<|" not in s.text for s in seen)
    assert [s.text for s in seen if s.text] == [s.text for s in r.sentences]


# ------------------------------------------------------------------------------------------ files, UI, jobs
def test_tags_in_subtitles_are_opt_in():
    from asr.engine import Sentence
    from asr.subtitles import to_srt, to_txt, to_vtt

    sentences = [
        Sentence("你好", 0.0, 1.0, language="yue", emotion="angry", events=["laughter"]),
        Sentence("hello there", 1.5, 2.0, language="en", emotion="neutral"),
    ]
    assert "[" not in to_srt(sentences) + to_vtt(sentences)
    assert to_txt(sentences) == "你好 hello there\n"
    assert "[yue · angry · laughter] 你好" in to_srt(sentences, tags=True)
    assert "[en] hello there" in to_vtt(sentences, tags=True)
    assert to_txt(sentences, tags=True) == "[yue · angry · laughter] 你好\n[en] hello there\n"


def test_ui_single_and_batch_with_sensevoice(sv_engine, tmp_path):
    import csv
    import secrets
    from types import SimpleNamespace

    from results.access import OWNER_COOKIE, ResultAccess
    from webui.batch import CSV_NAME, transcribe_batch
    from webui.single import transcribe_file

    settings = service_settings(sv_engine, tmp_path)
    access = ResultAccess.from_settings(settings)
    browser = SimpleNamespace(headers={"cookie": f"{OWNER_COOKIE}={secrets.token_urlsafe(32)}"})
    # The hotword box is hidden for SenseVoice: whatever it held is not sent.
    text, _, details, table, files = transcribe_file(
        sv_engine, settings, access, str(UTTERANCE), "达摩院", 1, browser, model="sensevoice", tags=True
    )
    assert text == sv_engine.transcribe(UTTERANCE, model="sensevoice").text
    assert table["headers"][2:5] == ["Language", "Emotion", "Events"] or table["headers"][2:5] == [
        "语种",
        "情绪",
        "事件",
    ]
    assert len(table["data"][0]) == len(table["headers"]) and "SenseVoice" in details
    srt = next(p for p in files if p.endswith(".srt"))
    first_cue = Path(srt).read_text(encoding="utf-8").split("\n")[2]
    label = tag_label(sv_engine.transcribe(UTTERANCE, model="sensevoice").sentences[0])
    assert first_cue.startswith(label) if label else "<|" not in first_cue
    *_, last = transcribe_batch(sv_engine, settings, access, [str(UTTERANCE)], "", 1, browser, model="sensevoice")
    csv_file = next(p for p in last[2] if p.endswith(CSV_NAME))
    with open(csv_file, encoding="utf-8-sig") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["model"] == "sensevoice" and row["status"] == "ok" and "languages" in row


def test_a_job_with_sensevoice(sv_engine, tmp_path):
    from fastapi.testclient import TestClient

    from app import create_app

    app = create_app(service_settings(sv_engine, tmp_path, job_lease_s=3.0), sv_engine, load=False)
    try:
        with TestClient(app) as client:
            with open(UTTERANCE, "rb") as f:
                refused = client.post(
                    "/v1/jobs", files=[("file", (UTTERANCE.name, f))], data={"model": "sensevoice", "hotwords": "x"}
                )
            assert refused.status_code == 400 and refused.json()["error"]["code"] == "hotwords_unsupported"
            with open(UTTERANCE, "rb") as f:
                response = client.post(
                    "/v1/jobs",
                    files=[("file", (UTTERANCE.name, f))],
                    data={"model": "sensevoice", "response_format": "verbose_json", "language": "en"},
                )
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            deadline = time.time() + 60
            while (view := client.get(f"/v1/jobs/{job_id}").json())["status"] not in ("done", "failed"):
                assert time.time() < deadline
                time.sleep(0.05)
            assert view["status"] == "done" and view["model"] == "sensevoice"
            body = client.get(f"/v1/jobs/{job_id}/result", params={"file": 0}).json()
            direct = sv_engine.transcribe(UTTERANCE, model="sensevoice", language="en")
            assert body["text"] == direct.text and body["model"] == "sensevoice"
            assert [s["language"] for s in body["segments"]] == [s.language for s in direct.sentences]
    finally:
        sv_engine.remove_observer(app.state.api.metrics.observe_transcription)


# ------------------------------------------------------------------------------------------ WebSocket
def test_funasr_websocket_2pass_finals_with_svs_lang(sv_engine, tmp_path):
    import numpy as np
    from fastapi.testclient import TestClient

    from app import create_app
    from test_funasr_ws import expect_error, send_utterance

    app = create_app(service_settings(sv_engine, tmp_path, max_streams=2), sv_engine, load=False)
    clip, rate = sf.read(UTTERANCE, dtype="int16")
    audio = np.concatenate([clip, np.zeros(int(2.5 * rate), dtype=np.int16)]).tobytes()
    try:
        client = TestClient(app)
        with client.websocket_connect("/", subprotocols=["binary"]) as ws:
            answers = send_utterance(
                ws, {"mode": "2pass", "wav_name": "svs", "svs_lang": "yue", "svs_itn": False, "hotwords": ""}, audio
            )
            finals = [a for a in answers if a["mode"] == "2pass-offline" and a["text"]]
            assert finals and any(a["mode"] == "2pass-online" for a in answers)  # partials still stream
            # SenseVoice's sentences (they carry its fields), cut by the streaming VAD, no tags in the text
            assert all("<|" not in a["text"] and "language" in a["stamp_sents"][0] for a in finals)
        with client.websocket_connect("/", subprotocols=["binary"]) as ws:
            # Without svs_lang the finals are SeACo's (FunASR's runtime ignores the fields for a Paraformer).
            answers = send_utterance(ws, {"mode": "2pass", "wav_name": "seaco"}, audio)
            seaco = [a for a in answers if a["mode"] == "2pass-offline" and a["text"]]
            assert seaco and all("language" not in s for a in seaco for s in a["stamp_sents"])
        with client.websocket_connect("/", subprotocols=["binary"]) as ws:
            ws.send_text(json.dumps({"mode": "2pass", "svs_lang": "auto", "hotwords": '{"达摩院": 20}'}))
            ws.send_bytes(audio[:3200])
            expect_error(ws, "hotwords_unsupported", 1008)
    finally:
        sv_engine.remove_observer(app.state.api.metrics.observe_transcription)


def test_health_and_system_info_name_sensevoice_without_its_path(sv_engine, tmp_path):
    from fastapi.testclient import TestClient

    from app import create_app
    from webui.sysinfo import info_markdown, system_info

    settings = service_settings(sv_engine, tmp_path)
    app = create_app(settings, sv_engine, load=False)
    try:
        public = TestClient(app).get("/health").json()
    finally:
        sv_engine.remove_observer(app.state.api.metrics.observe_transcription)
    folder = str(Path(sv_engine.spec.sensevoice).parent)
    assert public["models"] == ["paraformer", "sensevoice"] and public["sensevoice_model"] == "tiny-sensevoice"
    assert folder not in str(public)
    data = system_info(sv_engine, settings)
    assert data["sensevoice_model"] == "tiny-sensevoice" and "tiny-sensevoice" in info_markdown(data, "en")
    assert folder not in info_markdown(data, "en")


# ------------------------------------------------------------------------------------------ ONNX
def test_onnx_encoder_gives_the_torch_text(sv_engine, tiny_models, tiny_sensevoice, tmp_path, long_wav):
    import shutil

    from asr.onnx.sensevoice import export_encoder

    folder = tmp_path / "tiny-sensevoice"
    shutil.copytree(tiny_sensevoice, folder)
    export_encoder(folder)
    settings = make_settings(
        tiny_models, tmp_path, enable_sensevoice=True, sensevoice_model_dir=folder, engine_backend="auto"
    )
    engine = Engine(settings.engine_config())
    engine.load()
    assert engine.sensevoice_backend == "onnx" and sv_engine.sensevoice_backend == "torch"
    for path in (UTTERANCE, long_wav):
        onnx = engine.transcribe(path, model="sensevoice")
        torch = sv_engine.transcribe(path, model="sensevoice")
        assert onnx.text == torch.text and [(s.start, s.end) for s in onnx.sentences] == [
            (s.start, s.end) for s in torch.sentences
        ]
        assert onnx.confidence == pytest.approx(torch.confidence, abs=1e-4)


def test_benchmark_table_has_a_row_per_run():
    from bench.sensevoice import markdown

    runs = {"paraformer": {"audio_s": 120.0, "wall_s": 10.0, "x_realtime": 12.0, "sentences": 5, "rss_after_mib": 9}}
    summary = {
        "reports": [
            {"config": "paraformer", "backend": "torch", "rss_loaded_mib": 3000, "runs": {}},
            {"config": "both", "backend": "torch", "rss_loaded_mib": 4000, "runs": runs},
        ]
    }
    table = markdown(summary).splitlines()
    assert len(table) == 4 and "(load only)" in table[2] and "| 12.0 |" in table[3]
