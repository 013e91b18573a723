"""The WebSocket's first message fuzzed in every numeric field, with the server's memory watched throughout.

    python -m bench.ws_fuzz --url ws://127.0.0.1:7860 --server-pid "$(cat logs/app.pid)" [--messages 300]

Each connection sends one first message whose `chunk_size` (look-back, chunk, look-ahead),
`encoder_chunk_look_back`, `decoder_chunk_look_back`, `audio_fs` and `chunk_interval` are drawn from values
FunASR's clients send, the bounds and just past them, huge, negative, fractional, non-finite (`1e400`,
`Infinity`, `NaN`) and of the wrong type; then 2 s of speech at 16 kHz and `{"is_speaking": false}` when the
server accepted it. One such message once took a server from 1.3 GB to 14.5 GB (`[0, 10, 20000]`).
One field is odd per message, the others as FunASR's clients send them, so every bound is reached. After a
warm-up (one valid stream per mode: the models' first-use memory is not the fuzz's), the server's RSS is
sampled every 50 ms until after the last answer: target, the peak within 200 MB of that idle figure.
Exit status 1 when the target is missed or a connection got no answer (a timeout, or a close without a JSON error).
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import threading
import time
from pathlib import Path

import psutil
import soundfile as sf
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "tests" / "data" / "utterances" / "funasr_asr_example.wav"
TARGET_MB = 200

# As JSON text, so that 1e400, Infinity and NaN reach the server as a client could send them.
CONTEXT = ["0", "4", "5", "20", "21", "-1", "100000", "1e9", "2.5", "1e400", '"x"', "null", "true"]
CHUNK = ["1", "10", "50", "51", "0", "-5", "1000000", "10.5", "Infinity", '"10"']
LOOK_BACK = ["0", "1", "4", "16", "17", "-3", "100000000", "NaN", "[]"]
AUDIO_FS = ["16000", "8000", "48000", "96000", "0", "-1", "1e300", "1000000000000", "44100.5", '"16k"']
INTERVAL = ["1", "10", "100", "0", "100000", "-7", "1e400"]


VALID = {
    "chunk_size": "[5, 10, 5]",
    "encoder_chunk_look_back": "4",
    "decoder_chunk_look_back": "1",
    "audio_fs": "16000",
    "chunk_interval": "10",
}


def first_message(rng: random.Random, mode: str | None = None) -> str:
    """A first message with one numeric field (or one number of chunk_size) drawn from the odd values, the
    others as FunASR's clients send them; None `mode`: drawn too."""
    fields = {
        "mode": json.dumps(mode or rng.choice(["online", "2pass", "offline"])),
        "wav_name": '"fuzz"',
        "wav_format": '"pcm"',
        "is_speaking": "true",
        **VALID,
    }
    if mode is None:
        field = rng.choice([*VALID, "chunk_size", "chunk_size"])
        if field == "chunk_size":
            sizes = ["5", "10", "5"]
            place = rng.randrange(3)
            sizes[place] = rng.choice(CHUNK if place == 1 else CONTEXT)
            fields["chunk_size"] = f"[{', '.join(sizes)}]"
        else:
            fields[field] = rng.choice(
                {
                    "encoder_chunk_look_back": LOOK_BACK,
                    "decoder_chunk_look_back": LOOK_BACK,
                    "audio_fs": AUDIO_FS,
                    "chunk_interval": INTERVAL,
                }[field]
            )
    return "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"


def sampler(pid: int, stop: threading.Event, peak: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], process.memory_info().rss)
        except psutil.Error:
            return
        time.sleep(0.05)


def one(url: str, text: str, pcm: bytes) -> str:
    """The stream's outcome: "ok", an error code, or "no_answer"."""
    with connect(url, open_timeout=30, close_timeout=5, max_size=None) as ws:
        try:
            ws.send(text)
            for i in range(0, len(pcm), 1920):
                ws.send(pcm[i : i + 1920])
            ws.send('{"is_speaking": false}')
        except ConnectionClosed:
            pass  # refused: the error is waiting to be read
        try:
            while True:
                answer = json.loads(ws.recv(timeout=60))
                if "code" in answer:
                    return answer["code"]
                if answer.get("is_final") and answer.get("is_end", True):
                    return "ok"
        except (ConnectionClosed, TimeoutError):
            return "no_answer"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the service's WebSocket, e.g. ws://127.0.0.1:7860")
    parser.add_argument("--server-pid", type=int, required=True, help="the app's process id (logs/app.pid)")
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--seed", type=int, default=20261202)
    args = parser.parse_args(argv)

    samples, rate = sf.read(CLIP, dtype="int16")
    assert rate == 16000
    pcm = samples[: 2 * rate].tobytes()
    process = psutil.Process(args.server_pid)
    rng = random.Random(args.seed)
    for mode in ("online", "2pass", "offline"):  # warm-up: idle is the server once it has served streams
        assert one(args.url, first_message(rng, mode), pcm) == "ok", f"a valid {mode} stream failed"
    time.sleep(1)
    idle = process.memory_info().rss
    peak = [idle]
    stop = threading.Event()
    watcher = threading.Thread(target=sampler, args=(args.server_pid, stop, peak), daemon=True)
    watcher.start()
    outcomes: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    for index in range(args.messages):
        outcome = one(args.url, first_message(rng), pcm)
        outcomes[outcome] += 1
        if index % 50 == 49:
            print(f"{index + 1} messages, RSS peak {peak[0] / 2**20:,.0f} MB", flush=True)
    time.sleep(1)  # the last stream's memory, if it keeps any
    stop.set()
    watcher.join()
    rise_mb = (peak[0] - idle) / 2**20
    print(f"messages: {args.messages} in {time.monotonic() - started:.0f} s; outcomes: {dict(outcomes.most_common())}")
    print(f"server RSS: idle {idle / 2**20:,.0f} MB, peak {peak[0] / 2**20:,.0f} MB, rise {rise_mb:,.0f} MB")
    met = rise_mb <= TARGET_MB and not outcomes["no_answer"]
    print(f"target: peak within {TARGET_MB} MB of idle, every connection answered: {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
