"""This service next to FunASR's own Python WebSocket server (`funasr_wss_server.py`, the oracle), both on the
tiny models, both driven by FunASR's reference client on the same audio; a relay between client and server
records each server's raw answers. What may differ, and why, is docs/streaming.md's "Differences from
FunASR's Python server"; everything else must agree.

FunASR's programs are not copied into this repository: they come from ../shared/clients/funasr/ (see its
SOURCE.md), and the test skips without them (a fresh clone), and fails in CI (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import soundfile as sf
import websockets

from conftest import ROOT, UTTERANCE, Server, TinyModels, free_port, require_file, start_server, stop_server

pytestmark = pytest.mark.server

#: A plain string of hotwords, which both servers read as words separated by spaces. (With none, the client sends
#: an empty string, which FunASR's server hands to SeACo as is: see the differences.)
HOTWORDS = "达摩院 语音识别"
FUNASR = ROOT.parent / "shared" / "clients" / "funasr"

#: FunASR's server calls `websockets.serve` the way websockets < 14 served (a two-argument handler, outside a
#: running loop); the project's websockets still ships that implementation as `websockets.legacy`. The server's
#: own file runs unmodified.
LEGACY_SERVE = (
    "import runpy, sys, warnings\n"
    "warnings.simplefilter('ignore', DeprecationWarning)\n"
    "import websockets, websockets.legacy.server\n"
    "websockets.serve = websockets.legacy.server.serve\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


@dataclass
class FunasrServer:
    port: int
    proc: subprocess.Popen
    log: Path


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"FunASR's server exited:\n{log.read_text(errors='replace')[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"FunASR's server never listened:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def funasr_server(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FunasrServer]:
    script = require_file(FUNASR / "funasr_wss_server.py", "FunASR's funasr_wss_server.py (../shared/clients/funasr)")
    port = free_port()
    log = tmp_path_factory.mktemp("funasr-server") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LEGACY_SERVE,
                str(script),
                *("--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--ngpu", "0", "--ncpu", "1"),
                *("--asr_model", str(tiny_models.asr), "--asr_model_online", str(tiny_models.online)),
                *("--vad_model", str(tiny_models.vad), "--punc_model", str(tiny_models.punc)),
                *("--certfile", "", "--keyfile", ""),
            ],
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc, log)
        yield FunasrServer(port, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def service(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This service set up as FunASR's server runs its models: the offline model on the whole utterance (no VAD
    inside it), the streaming model in fp32, spoken text."""
    srv = start_server(
        tiny_models,
        tmp_path_factory.mktemp("service"),
        ENABLE_VAD="false",  # (2pass's streaming VAD is still VAD_MODEL_DIR's)
        ONLINE_QUANTIZE="false",
        ITN="false",
    )
    try:
        yield srv
    finally:
        stop_server(srv)


@dataclass
class Run:
    printed: str  # the client's stdout
    answers: list[dict]  # the server's text messages, as the relay saw them
    events: list[dict]  # the client's own log of what it understood (events.jsonl)


async def _relay_client_run(upstream: str, args: list[str], cwd: Path) -> tuple[str, list[dict]]:
    """Run the reference client against a relay on a free port that forwards to `upstream` and keeps every text
    message the server sends."""
    answers: list[dict] = []

    async def relay(client: websockets.ServerConnection) -> None:
        async with websockets.connect(upstream, subprotocols=["binary"], ping_interval=None, max_size=None) as server:

            async def up() -> None:
                try:
                    async for message in client:
                        await server.send(message)
                finally:
                    await server.close()

            async def down() -> None:
                try:
                    async for message in server:
                        if isinstance(message, str):
                            answers.append(json.loads(message))
                        await client.send(message)
                finally:
                    await client.close()

            await asyncio.gather(up(), down(), return_exceptions=True)

    async with websockets.serve(
        relay, "127.0.0.1", 0, subprotocols=["binary"], ping_interval=None, max_size=None
    ) as relay_server:
        port = relay_server.sockets[0].getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *args[:1],
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args[1:],
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        printed, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    return printed.decode(errors="replace"), answers


def reference_run(upstream_port: int, mode: str, audio: Path, tmp_path: Path, result_timeout: float) -> Run:
    client = require_file(FUNASR / "funasr_wss_client.py", "FunASR's funasr_wss_client.py (../shared/clients/funasr)")
    cwd = tmp_path / f"{mode}-{upstream_port}"
    cwd.mkdir()
    args = [
        str(client),
        *("--ssl", "0", "--mode", mode, "--audio_in", str(audio), "--send_without_sleep", "--use_itn", "0"),
        *("--result_timeout", str(result_timeout), "--log_dir", str(cwd / "logs"), "--hotword", HOTWORDS),
    ]
    printed, answers = asyncio.run(_relay_client_run(f"ws://127.0.0.1:{upstream_port}", args, cwd))
    events = [json.loads(line) for f in (cwd / "logs").rglob("events.jsonl") for line in f.read_text().splitlines()]
    return Run(printed, answers, events)


def speech_from_the_first_sample(tmp: Path) -> Path:
    """The test utterance without its first 0.6 s of silence. FunASR's server decodes an offline utterance from
    where its streaming VAD heard speech start (in whole 60 ms messages); this service, set up as above, decodes
    all of it. With speech from the first sample the two are the same audio."""
    samples, rate = sf.read(UTTERANCE, dtype="int16")
    path = tmp / "speech_from_0.wav"
    sf.write(path, samples[int(0.6 * rate) :], rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def runs(funasr_server: FunasrServer, service: Server, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("runs")
    audio = speech_from_the_first_sample(tmp)
    port = int(service.url.rsplit(":", 1)[1])
    found = {}
    for mode in ("offline", "online", "2pass"):
        # FunASR's server never says is_end, which this client waits for after the last audio: it gives up
        # after --result_timeout. 2 s is ample for the tiny models' last answer.
        found[mode] = (
            reference_run(funasr_server.port, mode, audio, tmp, result_timeout=2),
            reference_run(port, mode, audio, tmp, result_timeout=60),
        )
    return found


#: Keys this service adds to FunASR's answers (docs/streaming.md): the end of input, where in the audio an
#: answer reaches, and the C++ runtime's timestamp, stamp_sents (offline answers) with a confidence.
OUR_KEYS = {"is_end", "end_ms", "timestamp", "stamp_sents", "confidence"}


@pytest.mark.parametrize("mode", ["offline", "online", "2pass"])
def test_every_answer_of_funasrs_server_is_ours_too(runs: dict, mode: str) -> None:
    """Answer by answer: the same mode, text and wav_name, and every key FunASR's server sends with the same
    JSON type; the answers' count differs only where online mode's tail is concerned."""
    theirs, ours = runs[mode]
    assert theirs.answers and ours.answers
    # FunASR's server drops the audio after the last whole chunk in online mode (never decoded with
    # is_final): this service decodes it and says so in one last answer.
    extra = 1 if mode == "online" else 0
    assert len(ours.answers) == len(theirs.answers) + extra, (theirs.answers, ours.answers)
    for their, our in zip(theirs.answers, ours.answers, strict=False):
        assert (our["mode"], our["text"], our["wav_name"]) == (their["mode"], their["text"], their["wav_name"])
        assert {k: type(v) for k, v in our.items() if k in their} == {k: type(v) for k, v in their.items()}
        assert set(our) - set(their) <= OUR_KEYS, set(our) - set(their)
    assert any(a["text"] for a in theirs.answers)  # a comparison of empty answers would prove little


@pytest.mark.parametrize("mode", ["offline", "online", "2pass"])
def test_is_final_is_the_last_answer_here_and_is_speaking_there(runs: dict, mode: str) -> None:
    theirs, ours = runs[mode]
    # FunASR's Python server sends `is_final: is_speaking`: true while audio comes, false after the end.
    speaking = [a["mode"] in ("online", "2pass-online") for a in theirs.answers]
    assert [a["is_final"] for a in theirs.answers] == speaking
    # This service (as FunASR's C++ runtime and its protocol document): false, and true on the last answer, which
    # says is_end too; the reference client waits for that.
    assert [a["is_final"] for a in ours.answers] == [False] * (len(ours.answers) - 1) + [True]
    assert [a.get("is_end", False) for a in ours.answers] == [False] * (len(ours.answers) - 1) + [True]
    assert "connection closed normally" in ours.printed and "Exception" not in ours.printed, ours.printed
    assert "did not acknowledge end of input" in theirs.printed, theirs.printed[-2000:]


def test_final_answers_carry_funasrs_runtime_timestamps(runs: dict) -> None:
    """FunASR's Python server sends no times (its punctuation pass drops them); this service sends the C++
    runtime's: `timestamp`, a JSON string of [start, end] ms per word, and `stamp_sents`."""
    for mode in ("offline", "2pass"):
        theirs, ours = runs[mode]
        final = ours.answers[-1]
        assert not {"timestamp", "stamp_sents"} & {k for a in theirs.answers for k in a}
        stamps = json.loads(final["timestamp"])
        units = [c for c in final["text"].replace("<unk>", "") if c.isalnum()]
        assert len(stamps) == len(units) and all(isinstance(t, int) for span in stamps for t in span), stamps
        assert all(0 <= a < b for a, b in stamps) and stamps == sorted(stamps)
        sents = final["stamp_sents"]
        assert all(set(s) == {"text_seg", "punc", "start", "end", "ts_list"} for s in sents), sents
        assert [span for s in sents for span in s["ts_list"]] == stamps
