"""Who spoke each sentence: CAM++ speaker embeddings and FunASR's own clustering.

The steps are FunASR's speaker pipeline (`AutoModel(spk_model=...)`): cut the speech into 1.5 s windows
(as `sv_chunk` does), embed each window with CAM++, cluster the embeddings (`ClusterBackend`: spectral clustering,
k-means for many windows with a known speaker count, UMAP + HDBSCAN without one), merge the labelled windows
into turns (`postprocess`) and give each sentence the speaker it overlaps most (`distribute_spk`).

What differs: it runs after recognition, on the stretches of speech the recognised sentences cover (touching
sentences merged), instead of inside `AutoModel.inference_with_vad`. So the ASR path is the same on both
backends and under cross-request batching, a request that does not ask for speakers pays nothing, and one
loaded model serves every request. Thread safety is the engine's job: it calls `label()` under its model lock.

Three departures from FunASR's defaults:
- Windows follow each other (1.5 s long, 1.5 s apart) where FunASR overlaps them by half (0.75 s apart).
  CAM++ is nearly all of the cost (its convolutions: 90 % of the labelling time; the filterbank 9 %), so
  this halves it: on the 10-min file, from 28 % of the transcription time to about half that
  (docs/benchmarks.md). The overlap buys turn boundaries finer than 0.75 s; here the boundaries are the
  recognised sentences', so it would buy little. `window_shift_s=0.75` gives FunASR's windows back.
- With fewer than 20 windows (about 30 s of speech) FunASR labels everything as one speaker. When the user
  gives the number of speakers, the windows are clustered into that many with FunASR's k-means instead.
- Windows are embedded in batches of equal length only, so a window's embedding never depends on padding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE

logger = logging.getLogger(__name__)

#: FunASR's ClusterBackend labels fewer windows than this as one speaker.
MIN_WINDOWS_TO_CLUSTER = 20
#: SpectralCluster's default upper bound; a larger requested count would be ignored by it.
MAX_SPEAKERS = 15
#: Sentences closer than this are one stretch of speech (touching sentences of one VAD segment).
_JOIN_GAP_S = 0.05
#: Windows embedded per CAM++ call (memory stays small; the result does not depend on it).
_WINDOWS_PER_CALL = 64
#: CAM++'s window, as FunASR's sv_chunk cuts it.
WINDOW_S = 1.5
#: How far apart windows start: WINDOW_S (no overlap) here; FunASR's sv_chunk uses 0.75.
WINDOW_SHIFT_S = 1.5


@dataclass(frozen=True)
class Span:
    """A stretch of time in seconds."""

    start: float
    end: float


class SpeakerLabeller:
    """CAM++ embeddings and FunASR's clustering, loaded once. Not thread-safe: callers serialise `label()`."""

    def __init__(self, source: str, device: str, *, ncpu: int = 1, window_shift_s: float = WINDOW_SHIFT_S):
        from funasr import AutoModel
        from funasr.models.campplus.cluster_backend import ClusterBackend

        loaded = AutoModel(
            model=source, device=device, disable_update=True, disable_pbar=True, disable_log=True, ncpu=ncpu
        )
        if type(loaded.model).__name__ != "CAMPPlus":
            raise ValueError(f"'{source}' is a {type(loaded.model).__name__}, not a CAM++ speaker model")
        self.model = loaded.model
        self.kwargs = loaded.kwargs
        self.device = device
        self.window_shift_s = window_shift_s
        self.clusterer = ClusterBackend().to("cpu")

    def label(self, samples: np.ndarray, spans: Sequence[Span], num_speakers: int | None = None) -> list[int]:
        """A speaker number (1 = the first to speak) for each span, in the order given."""
        if not spans:
            return []
        stretches = _speech_stretches(spans, len(samples) / SAMPLE_RATE)
        windows = self._windows(samples, stretches)
        if not windows:
            return [1] * len(spans)
        embeddings = self._embed([w[2] for w in windows])
        labels = self._cluster(embeddings, num_speakers)
        return _assign(spans, windows, labels, embeddings)

    def _windows(self, samples: np.ndarray, stretches: list[Span]) -> list[list]:
        """[start s, end s, samples] windows over the stretches, cut as FunASR's sv_chunk does (shift aside)."""
        length, shift = int(WINDOW_S * SAMPLE_RATE), int(self.window_shift_s * SAMPLE_RATE)
        windows = []
        for stretch in stretches:
            first, last = int(stretch.start * SAMPLE_RATE), int(stretch.end * SAMPLE_RATE)
            if last - first < SAMPLE_RATE // 10:  # CAM++ needs a few frames; shorter slivers carry no voice
                continue
            data, previous_end = samples[first:last], 0
            for begin in range(0, len(data), shift):
                end = min(begin + length, len(data))
                if end <= previous_end:
                    break
                previous_end, begin = end, max(0, end - length)  # the last window ends at the stretch's end
                windows.append(
                    [stretch.start + begin / SAMPLE_RATE, stretch.start + end / SAMPLE_RATE, data[begin:end]]
                )
        return windows

    def _embed(self, audio: list[np.ndarray]) -> np.ndarray:
        """[windows, 192]: each window alone, batched only with windows of its own length."""
        import torch

        out: list[np.ndarray | None] = [None] * len(audio)
        by_length: dict[int, list[int]] = {}
        for i, window in enumerate(audio):
            by_length.setdefault(len(window), []).append(i)
        with torch.no_grad():
            for indexes in by_length.values():
                for begin in range(0, len(indexes), _WINDOWS_PER_CALL):
                    part = indexes[begin : begin + _WINDOWS_PER_CALL]
                    batch = [torch.from_numpy(np.ascontiguousarray(audio[i], dtype=np.float32)) for i in part]
                    result = self.model.inference(batch, key=[str(i) for i in part], device=self.kwargs["device"])
                    vectors = result[0][0]["spk_embedding"].detach().cpu().numpy()
                    for i, vector in zip(part, vectors, strict=False):
                        out[i] = vector
        return np.stack(out)  # type: ignore[arg-type]

    def _cluster(self, embeddings: np.ndarray, num_speakers: int | None) -> np.ndarray:
        import torch

        if num_speakers and len(embeddings) < MIN_WINDOWS_TO_CLUSTER:
            if num_speakers == 1 or len(embeddings) <= num_speakers:
                return np.arange(len(embeddings)) if num_speakers > 1 else np.zeros(len(embeddings), dtype=int)
            return np.asarray(self.clusterer.kmeans_cluster(embeddings, num_speakers))
        return np.asarray(self.clusterer(torch.from_numpy(embeddings), oracle_num=num_speakers))


def _speech_stretches(spans: Sequence[Span], duration: float) -> list[Span]:
    stretches: list[Span] = []
    for span in sorted(spans, key=lambda s: s.start):
        start, end = max(0.0, span.start), min(duration, span.end)
        if end <= start:
            continue
        if stretches and start - stretches[-1].end <= _JOIN_GAP_S:
            stretches[-1] = Span(stretches[-1].start, max(stretches[-1].end, end))
        else:
            stretches.append(Span(start, end))
    return stretches


def _assign(spans: Sequence[Span], windows: list[list], labels: np.ndarray, embeddings: np.ndarray) -> list[int]:
    from funasr.models.campplus.utils import distribute_spk, postprocess

    turns = postprocess(windows, None, np.asarray(labels, dtype=int), embeddings)
    sentences = [{"start": s.start * 1000.0, "end": s.end * 1000.0} for s in spans]
    distribute_spk(sentences, turns)
    # postprocess numbers speakers by first appearance from 0; people count from 1.
    return [int(s["spk"]) + 1 for s in sentences]
