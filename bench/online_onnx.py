"""The streaming Paraformer on ONNX Runtime against PyTorch, on a model folder with its export: token parity, int8
agreement and the time per 600 ms chunk, in one run.

    python -m asr.onnx.export --model-dir models/full-online --quantize   # once
    python -m bench.online_onnx --model-dir models/full-online [--audio tests/data/utterances/*.wav]

    python -m bench.online_onnx --model-dir models/full-online --batched   # also: all clips at once, batched
    python -m bench.online_onnx --model-dir models/full-online --int8-before DIR   # also an older int8 export

Each clip goes through FunASR's chunk loop (chunk_size 5,10,5, look-back 4/1, one `step` per 600 ms, `is_final`
on the last) on four models: PyTorch fp32 (the reference), ONNX fp32, PyTorch int8 (ONLINE_QUANTIZE) and ONNX int8,
each with one thread. Reported: whether ONNX fp32's step texts equal PyTorch fp32's, step by step; the character
agreement of each int8 with its fp32 (1 - edit distance / length); each ONNX int8 encoder's relative error against
ONNX fp32's on the same inputs (the quantization's own error, where the text also counts random weights' near
ties); the median time per chunk of each model,
models interleaved clip by clip so that a noisy neighbour slows all of them alike. With `--batched`, the clips
then run as concurrent streams on one ONNX model with one call slot (so the chunks that queue share calls), fp32
and int8: whether each stream's step texts equal its texts alone, the character agreement, the mean streams per
call, and the wall time against the clips one after the other. With `--int8-before DIR`, DIR's int8 pair (an
export from before per-row quantization: one activation scale per call) runs as a fifth model beside the others,
so that its agreement with ONNX fp32 and its time per chunk are measured in the same run. With `--call-batches`,
one mid-stream chunk's encoder and decoder inputs are stacked for 1, 2, 4 and 8 streams and each int8 graph's
time per stream is reported: what a batched call saves.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from asr.onnx.online import OnnxOnlineModel, find_online_onnx
from asr.stream_models import OnlineModel

CHUNK = (5, 10, 5)


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]


def run(model, samples: np.ndarray, times: list[float]) -> list[str]:
    stride = CHUNK[1] * 960
    count = (samples.size - 1) // stride + 1
    cache: dict = {}
    texts = []
    for i in range(count):
        started = time.perf_counter()
        texts.append(
            model.step(
                samples[i * stride : (i + 1) * stride],
                cache,
                is_final=i == count - 1,
                chunk_size=CHUNK,
                encoder_look_back=4,
                decoder_look_back=1,
            )
        )
        if i < count - 1:  # full chunks only
            times.append(time.perf_counter() - started)
    return texts


class _Recorder:
    """Wraps an ONNX Runtime session: keeps the feeds of every call (the fp32 encoder's, to replay them)."""

    def __init__(self, session):
        self.session = session
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, names, feeds):
        self.feeds.append(feeds)
        return self.session.run(names, feeds)


def encoder_error(reference: _Recorder, int8: dict[str, OnnxOnlineModel]) -> dict[str, float]:
    """Each int8 encoder on the fp32 encoder's own inputs: the median relative L2 error of its output (the
    encoder states) against fp32's, over every chunk; a measure of the quantization itself, where the token
    agreement also counts the near ties of random weights."""
    errors: dict[str, list[float]] = {name: [] for name in int8}
    for feeds in reference.feeds:
        exact = reference.session.run(None, feeds)[0]
        for name, model in int8.items():
            got = model._encoder.session.run(None, feeds)[0]
            errors[name].append(float(np.linalg.norm(got - exact) / np.linalg.norm(exact)))
    return {name: statistics.median(e) for name, e in errors.items()}


def call_batches(int8: dict[str, OnnxOnlineModel], encoder_feeds: dict, decoder_feeds: dict, repeats: int = 15) -> None:
    """One mid-stream chunk's inputs stacked 1, 2, 4 and 8 times: ms per stream of an encoder and a decoder call
    (median of `repeats`, the int8 models interleaved)."""
    print("| graph | streams per call | " + " | ".join(f"{name}: ms per stream" for name in int8) + " |")
    print("|---|---|" + "---|" * len(int8))
    for graph, feeds in (("encoder", encoder_feeds), ("decoder", decoder_feeds)):
        for n in (1, 2, 4, 8):
            stacked = {k: np.concatenate([v] * n, axis=0) for k, v in feeds.items()}
            times: dict[str, list[float]] = {name: [] for name in int8}
            for _ in range(repeats):
                for name, model in int8.items():
                    session = (model._encoder if graph == "encoder" else model._decoder).session
                    started = time.perf_counter()
                    session.run(None, stacked)
                    times[name].append(time.perf_counter() - started)
            cells = " | ".join(f"{1000 * statistics.median(t) / n:.1f}" for t in times.values())
            print(f"| {graph} | {n} | {cells} |")


def batched(folder: Path, audio: list[Path], alone: list[list[str]], quantize: bool) -> None:
    clips = [sf.read(p, dtype="float32")[0] for p in audio]
    clips = [x if x.ndim == 1 else x.mean(axis=1) for x in clips]
    sequential = OnnxOnlineModel(str(folder), find_online_onnx(folder, quantize=quantize), ncpu=1, workers=1)
    started = time.perf_counter()
    for x in clips:
        run(sequential, x, [])
    one_by_one = time.perf_counter() - started
    model = OnnxOnlineModel(str(folder), find_online_onnx(folder, quantize=quantize), ncpu=1, workers=1, max_batch=8)
    together: dict[int, list[str]] = {}
    barrier = threading.Barrier(len(clips))

    def stream(i: int) -> None:
        barrier.wait()
        together[i] = run(model, clips[i], [])

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(clips))]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    same = sum(together[i] == alone[i] for i in range(len(clips)))
    a = ["".join(t) for t in alone]
    b = ["".join(together[i]) for i in range(len(clips))]
    changed = sum(edit_distance(x, y) for x, y in zip(a, b, strict=True))
    stats = model.batch_stats()
    print(
        f"onnx {'int8' if quantize else 'fp32'}, {len(clips)} streams at once on one call slot: {same}/{len(clips)} "
        f"streams with their alone step texts, {1 - changed / max(sum(map(len, a)), 1):.1%} of the characters; "
        f"{stats['encoder_mean_batch']:.2f} streams per encoder call, {stats['decoder_mean_batch']:.2f} per decoder "
        f"call; {wall:.1f} s against {one_by_one:.1f} s one after the other"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--audio", type=Path, nargs="+", default=sorted(Path("tests/data/utterances").glob("*.wav")))
    parser.add_argument("--batched", action="store_true", help="also run the clips as concurrent batched streams")
    parser.add_argument(
        "--call-batches",
        action="store_true",
        help="also time one recorded chunk's encoder and decoder calls at batch 1, 2, 4 and 8, per stream",
    )
    parser.add_argument(
        "--int8-before", type=Path, help="a folder with an older int8 export (*_quant.onnx) to time beside the others"
    )
    args = parser.parse_args(argv)
    folder = args.model_dir
    models = {
        "torch fp32": OnlineModel(str(folder), "cpu", 1, quantize=False),
        "onnx fp32": OnnxOnlineModel(str(folder), find_online_onnx(folder, quantize=False), ncpu=1),
        "torch int8": OnlineModel(str(folder), "cpu", 1, quantize=True),
        "onnx int8": OnnxOnlineModel(str(folder), find_online_onnx(folder, quantize=True), ncpu=1),
    }
    if args.int8_before:
        before = find_online_onnx(args.int8_before, quantize=True)
        if before is None:
            parser.error(f"{args.int8_before} holds no encoder_chunk_quant.onnx + decoder_chunk_quant.onnx")
        # The folder's int8 graphs with this model's own frontend and tokens (the same weights, exported before).
        models["onnx int8 before"] = OnnxOnlineModel(str(folder), before, ncpu=1)
    recorder = _Recorder(models["onnx fp32"]._encoder.session)
    models["onnx fp32"]._encoder.session = recorder
    decoder_recorder = _Recorder(models["onnx fp32"]._decoder.session)
    if args.call_batches:  # its feeds are only for --call-batches
        models["onnx fp32"]._decoder.session = decoder_recorder
    times: dict[str, list[float]] = {name: [] for name in models}
    texts: dict[str, list[list[str]]] = {name: [] for name in models}
    for path in args.audio:
        x = sf.read(path, dtype="float32")[0]
        x = x if x.ndim == 1 else x.mean(axis=1)
        for name, model in models.items():
            texts[name].append(run(model, x, times[name]))
    steps = sum(len(t) for t in texts["torch fp32"])
    same = sum(
        a == b
        for ta, tb in zip(texts["torch fp32"], texts["onnx fp32"], strict=True)
        for a, b in zip(ta, tb, strict=True)
    )
    print(f"{len(args.audio)} clips, {steps} steps; ONNX fp32 step texts equal to PyTorch fp32's: {same}/{steps}")
    pairs = [("torch fp32", "torch int8"), ("onnx fp32", "onnx int8")]
    if "onnx int8 before" in models:
        pairs.append(("onnx fp32", "onnx int8 before"))
    for fp32, int8 in pairs:
        a = ["".join(t) for t in texts[fp32]]
        b = ["".join(t) for t in texts[int8]]
        changed = sum(edit_distance(x, y) for x, y in zip(a, b, strict=True))
        total = sum(len(x) for x in a)
        print(f"{int8} vs {fp32}: {1 - changed / total:.1%} of {total} characters agree ({changed} edits)")
    models["onnx fp32"]._encoder.session = recorder.session
    models["onnx fp32"]._decoder.session = decoder_recorder.session
    int8 = {name: model for name, model in models.items() if name.startswith("onnx int8")}
    for name, error in encoder_error(recorder, int8).items():
        print(
            f"{name}: encoder output vs onnx fp32's on its inputs, relative L2 error {error:.4f} (median of "
            f"{len(recorder.feeds)} chunks)"
        )
    if args.call_batches:
        call_batches(
            int8, recorder.feeds[len(recorder.feeds) // 2], decoder_recorder.feeds[len(decoder_recorder.feeds) // 2]
        )
    if args.batched:
        for precision in ("fp32", "int8"):
            batched(folder, args.audio, texts[f"onnx {precision}"], precision == "int8")
    print("| model | median s per 600 ms chunk (1 thread) | vs torch int8 |")
    print("|---|---|---|")
    base = statistics.median(times["torch int8"])
    for name in models:
        median = statistics.median(times[name])
        print(f"| {name} | {median:.3f} | {median / base:.2f} |")
    if "onnx int8 before" in models:
        ratio = statistics.median(times["onnx int8"]) / statistics.median(times["onnx int8 before"])
        print(f"onnx int8 (per-row) / onnx int8 before (per call): {ratio:.3f} per chunk alone")
    return 0 if same == steps else 1


if __name__ == "__main__":
    sys.exit(main())
