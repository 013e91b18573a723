"""Meetings benchmark: what speaker labels and word timestamps cost, and how the labels line up with true turns.

    python -m bench.meetings --audio-dir ../shared/audio          # full-size random-weight models (built if missing)
    python -m bench.meetings --audio-dir ../shared/audio --quick  # the 2-min file instead of the 10-min one

One run, one process, in this order:
1. The engine (PyTorch, speakers loaded) on the 10-min file with speakers. Diarization cost = the labelling
   time (CAM++ windows, clustering, assignment: measured apart inside the request) over the rest of the
   request's processing time. Word timestamps: the time spent turning FunASR's token times into words, over
   the same time (the timestamp head runs in every request anyway). The text is compared with a bare FunASR
   `AutoModel.generate` on the same file: where no segment lost its tokens the text must be the same.
2. Two speakers, alternating turns with known times (AISHELL speaker S0150's clips against FireRedASR's
   BAC009S0764 clip, 0.8 s apart), with 2 speakers asked: how many sentences (and seconds of speech) get
   the true speaker under the best matching of labels. Random CAM++ weights cannot tell voices apart, so this
   is reported, not asserted: expect chance (about 50 %) until a real model is used (`--spk-model-dir`).
3. The `openai` client against the service (`python app.py`, same models, ENABLE_SPK=true) on the 2-min
   file with verbose_json, word + segment granularities and diarize=true: segments with speakers, words with
   times that are monotonic, inside their segment and inside the audio.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import testmodels  # noqa: E402
from asr.engine import Engine, Transcription, _to_transcription  # noqa: E402
from asr.speakers import Span  # noqa: E402
from bench.engine import bare_model, save  # noqa: E402
from bench.harness import project_path  # noqa: E402
from config.settings import Settings  # noqa: E402

SR = 16000


def model_folders(args: argparse.Namespace) -> dict[str, Path]:
    if args.model_dir:
        return {
            "asr": Path(args.model_dir),
            "punc": Path(args.punc_model_dir),
            "spk": Path(args.spk_model_dir) if args.spk_model_dir else testmodels.build_full_campplus(),
            "vad": Path(args.vad_model_dir) if args.vad_model_dir else testmodels.fetch_vad(),
        }
    asr, punc = testmodels.build_full()
    return {
        "asr": asr,
        "punc": punc,
        "vad": testmodels.fetch_vad(),
        "spk": Path(args.spk_model_dir) if args.spk_model_dir else testmodels.build_full_campplus(),
    }


def load_engine(models: dict[str, Path], device: str, work: Path) -> Engine:
    settings = Settings(
        _env_file=None,
        model_dir=models["asr"],
        vad_model_dir=models["vad"],
        punc_model_dir=models["punc"],
        spk_model_dir=models["spk"],
        enable_spk=True,
        device=device,
        engine_backend="torch",
        temp_dir=work / "uploads",
        output_dir=work / "outputs",
        max_audio_seconds=7200,
    )
    engine = Engine(settings.engine_config())
    engine.load()
    return engine


def costs(engine: Engine, path: Path) -> dict[str, Any]:
    """One run with speakers (its labelling time apart), the word-building time, and the text against bare FunASR."""
    audio = engine.decode(path, name=path.name)
    generate = engine._model.generate
    kept: list[Any] = []

    def generate_and_keep(*args: Any, **kwargs: Any) -> Any:  # FunASR's merged result, to time the word building
        kept.append(generate(*args, **kwargs))
        return kept[-1]

    engine._model.generate = generate_and_keep
    try:
        labelled = engine.transcribe(audio, diarize=True)
    finally:
        engine._model.generate = generate
    transcription_s = labelled.processing_time - labelled.speaker_time
    # The same labelling with FunASR's half-overlapping windows (0.75 s apart), for comparison.
    labeller, shift = engine._speakers, engine._speakers.window_shift_s
    labeller.window_shift_s = 0.75
    started = time.perf_counter()
    labeller.label(audio.samples, [Span(s.start, s.end) for s in labelled.sentences])
    overlapping_s = time.perf_counter() - started
    labeller.window_shift_s = shift
    started = time.perf_counter()
    rebuilt = _to_transcription(kept[-1][0], audio, [], 0.0, 0.0, 0.0)
    words_s = time.perf_counter() - started
    bare = bare_model(engine).generate(input=audio.samples, sentence_timestamp=True)
    bare_text = str(bare[0]["text"]).strip() if bare else ""
    return {
        "file": path.name,
        "duration_s": round(audio.duration, 1),
        "transcription_s": round(transcription_s, 2),
        "speaker_labelling_s": round(labelled.speaker_time, 2),
        "diarization_share": round(labelled.speaker_time / transcription_s, 4),
        "labelling_funasr_windows_s": round(overlapping_s, 2),
        "diarization_share_funasr_windows": round(overlapping_s / transcription_s, 4),
        "word_building_s": round(words_s, 4),
        "word_share": round(words_s / transcription_s, 5),
        "words": len(labelled.words),
        "sentences": len(labelled.sentences),
        "speakers_found": labelled.speakers,
        "same_text_with_speakers": rebuilt.text == labelled.text,
        "text_equals_bare_funasr": labelled.text == bare_text,
        "bare_text_empty": bare_text == "",
    }


def two_speakers(audio_dir: Path) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """A-B-A-B... turns with their true times; A: AISHELL S0150's clips, B: BAC009S0764 (FireRedASR's example)."""
    utterances = audio_dir / "utterances"
    a_clips = sorted(utterances.glob("BAC009S0150*.wav"))[:6]
    b_clip = utterances / "firered_BAC009S0764W0121.wav"
    if not a_clips or not b_clip.exists():
        raise SystemExit(
            f"{project_path(utterances)} lacks the AISHELL S0150 clips or firered_BAC009S0764W0121.wav: "
            f"pass --audio-dir ../shared/audio"
        )
    pause = np.zeros(int(0.8 * SR), np.float32)
    pieces, truth, at = [], [], 0.0
    for a_clip in a_clips:
        for speaker, clip in (("A", a_clip), ("B", b_clip)):
            samples = sf.read(clip, dtype="float32")[0]
            pieces += [samples, pause]
            truth.append((at, at + len(samples) / SR, speaker))
            at += len(samples) / SR + len(pause) / SR
    return np.concatenate(pieces), truth


def alignment(result: Transcription, truth: list[tuple[float, float, str]]) -> dict[str, Any]:
    """Sentences (and speech seconds) whose label matches the true speaker, under the best label matching."""

    def true_speaker(start: float, end: float) -> str:
        overlaps = {s: 0.0 for _, _, s in truth}
        for a, b, s in truth:
            overlaps[s] += max(0.0, min(end, b) - max(start, a))
        return max(overlaps, key=overlaps.get)

    pairs = [(true_speaker(s.start, s.end), s.speaker, s.end - s.start) for s in result.sentences]
    labels = sorted({p[1] for p in pairs})
    names = sorted({t for _, _, t in truth})
    best = (0, 0.0)
    for perm in itertools.permutations(names + [None] * max(0, len(labels) - len(names)), len(labels)):
        mapping = dict(zip(labels, perm, strict=False))
        hits = sum(1 for t, label, _ in pairs if mapping[label] == t)
        seconds = sum(d for t, label, d in pairs if mapping[label] == t)
        best = max(best, (hits, seconds))
    total_s = sum(d for *_, d in pairs)
    return {
        "sentences": len(pairs),
        "turns": len(truth),
        "labels_found": len(labels),
        "sentences_right": best[0],
        "sentence_accuracy": round(best[0] / len(pairs), 3) if pairs else 0.0,
        "speech_s_right": round(best[1], 1),
        "speech_accuracy": round(best[1] / total_s, 3) if total_s else 0.0,
    }


def openai_client_check(models: dict[str, Path], device: str, path: Path, work: Path) -> dict[str, Any]:
    """Start `python app.py` with the same models and speakers on, and ask it as the openai client does."""
    import socket

    import httpx
    from openai import OpenAI

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_", "MODEL", "API_KEYS", "WEBUI_"))}
    env.update(
        ENV_FILE=str(work / "no.env"),
        MODEL_DIR=str(models["asr"]),
        VAD_MODEL_DIR=str(models["vad"]),
        PUNC_MODEL_DIR=str(models["punc"]),
        SPK_MODEL_DIR=str(models["spk"]),
        ENABLE_SPK="true",
        ENGINE_BACKEND="torch",
        DEVICE=device,
        TEMP_DIR=str(work / "uploads"),
        LOG_DIR=str(work / "logs"),
        OUTPUT_DIR=str(work / "outputs"),
    )
    log = open(work / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).json().get("status") == "ok":
                    break
            except (httpx.HTTPError, ValueError):
                time.sleep(1)
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
        started = time.perf_counter()
        with open(path, "rb") as audio:
            verbose = client.audio.transcriptions.create(
                model="whisper-1",
                file=audio,
                response_format="verbose_json",
                timestamp_granularities=["word", "segment"],
                extra_body={"diarize": True},
            )
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    duration = sf.info(path).duration
    words = verbose.words or []
    segments = verbose.segments or []
    starts = [w.start for w in words]
    inside_segment = all(
        s.start <= w["start"] <= w["end"] <= s.end for s in segments for w in s.model_extra.get("words", [])
    )
    return {
        "file": path.name,
        "seconds": round(elapsed, 1),
        "segments": len(segments),
        "words": len(words),
        "speakers": verbose.model_extra.get("speakers"),
        "every_segment_has_a_speaker": all("speaker" in s.model_extra for s in segments),
        "words_monotonic": starts == sorted(starts),
        "words_inside_their_segment": inside_segment,
        "words_inside_the_audio": all(0 <= w.start <= w.end <= duration for w in words),
        "first_segments": [
            {
                "speaker": s.model_extra.get("speaker"),
                "start": s.start,
                "end": s.end,
                "words": len(s.model_extra.get("words", [])),
            }
            for s in segments[:3]
        ],
    }


def to_markdown(report: dict[str, Any]) -> str:
    c, a, o = report["costs"], report["two_speakers"], report["openai_client"]
    lines = [
        f"### Meetings ({report['when']}, {report['machine']}, device {report['device']})",
        "",
        f"Models: {report['models']}. Audio: `{report['audio_dir']}`.",
        "",
        "| file | transcription | speaker labelling | diarization share | with FunASR's overlapping windows | "
        "word building | word share |",
        "|---|---|---|---|---|---|---|",
        f"| {c['file']} ({c['duration_s']} s) | {c['transcription_s']} s | {c['speaker_labelling_s']} s | "
        f"**{c['diarization_share']:.1%}** | {c['labelling_funasr_windows_s']} s "
        f"({c['diarization_share_funasr_windows']:.1%}) | {c['word_building_s']} s | **{c['word_share']:.3%}** |",
        "",
        f"{c['sentences']} sentences, {c['words']} words, {c['speakers_found']} speakers found; text rebuilt "
        f"without speakers is the same: {c['same_text_with_speakers']}; text = bare FunASR `generate`: "
        f"{c['text_equals_bare_funasr']} (bare text empty: {c['bare_text_empty']}).",
        "",
        f"Two speakers, {a['turns']} alternating turns, 2 speakers asked: {a['labels_found']} labels; "
        f"{a['sentences_right']}/{a['sentences']} sentences ({a['sentence_accuracy']:.0%}) and "
        f"{a['speech_accuracy']:.0%} of the speech time carry the true speaker under the best label matching "
        f"(random CAM++ weights: chance level is the expectation, not a finding).",
        "",
        f"openai client, {o['file']}, verbose_json + word/segment + diarize: {o['segments']} segments, "
        f"{o['words']} words, {o['speakers']} speakers in {o['seconds']} s; every segment has a speaker: "
        f"{o['every_segment_has_a_speaker']}; words monotonic: {o['words_monotonic']}, inside their segment: "
        f"{o['words_inside_their_segment']}, inside the audio: {o['words_inside_the_audio']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio-dir", required=True, help="the shared audio folder (long/, utterances/)")
    parser.add_argument("--model-dir", help="a real SeACo-Paraformer folder (default: the full-size test model)")
    parser.add_argument("--punc-model-dir", help="CT-punctuation folder (with --model-dir)")
    parser.add_argument("--vad-model-dir", help="FSMN-VAD folder (default: models/fsmn-vad)")
    parser.add_argument("--spk-model-dir", help="CAM++ folder (default: the full-size random-weight test model)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--quick", action="store_true", help="the 2-min file instead of the 10-min one")
    args = parser.parse_args(argv)
    if args.model_dir and not args.punc_model_dir:
        parser.error("--model-dir needs --punc-model-dir")
    audio_dir = Path(args.audio_dir).resolve()
    long_file = audio_dir / "long" / ("long_2min.wav" if args.quick else "long_10min.wav")
    if not long_file.exists():
        parser.error(f"{long_file.name} not found under {args.audio_dir}/long")
    models = model_folders(args)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        engine = load_engine(models, args.device, work)
        print(f"models loaded in {engine.load_seconds:.1f} s; measuring {long_file.name} ...", flush=True)
        cost = costs(engine, long_file)
        print(json.dumps(cost, ensure_ascii=False), flush=True)
        samples, truth = two_speakers(audio_dir)
        turns = alignment(engine.transcribe(samples, sample_rate=SR, diarize=True, num_speakers=2), truth)
        print(json.dumps(turns), flush=True)
        del engine
        client = openai_client_check(models, args.device, audio_dir / "long" / "long_2min.wav", work)
        print(json.dumps(client, ensure_ascii=False), flush=True)
    report = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "device": args.device,
        "models": "real" if args.model_dir else "full-size random-weight SeACo-Paraformer, CT-punc and CAM++",
        "audio_dir": project_path(audio_dir),
        "costs": cost,
        "two_speakers": turns,
        "openai_client": client,
    }
    save(f"meetings-{datetime.now().strftime('%Y%m%d-%H%M%S')}", report, to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
