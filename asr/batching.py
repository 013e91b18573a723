"""Cross-request batching: the ASR network calls of concurrent requests run as one batched call.

Each request runs FunASR's own pipeline (VAD, decoding segment by segment, merging, punctuation,
sentence timestamps) in its caller's thread, holding the engine's model lock. The batcher replaces the
ASR model's `inference`: a request that reaches it leaves its segment(s) there and waits, which releases
the lock, so the next request can run its own pipeline up to its next segment. The waiting segments run
as one call when every request inside the engine has one waiting (those that arrived while the batch was
gathering included), or when the cap is reached:

- at most `max_requests` requests per call, and at most `max_seconds` of padded audio (longest segment
  times the number of segments), but always at least one request;
- only segments with the same decoding options share a call (hotword list above all), so each request
  keeps its own hotwords; the oldest waiting segment's group goes first.

The gathering window is therefore "until the others have reached the model", with no fixed timer: a
timer would add its length to every segment of a request that is alone. A request alone, or a batcher
with `max_requests=1`, calls the model directly.

What a request gets back is what the model would have returned for its segments alone: its own slice of
the results. Segments are padded to the longest one in the call; the tests check that the text does not
change.

Every answer has one result per segment: a segment for which the predictor emits no token gets an empty
result (`empty_result`), where FunASR's model returns `([],)` for a call whose segments all predict none.
`AutoModel.inference_with_vad` would then find fewer results than segments and return an empty text for the
whole file (funasr 1.4.16, the `len(results_sorted) != n` branch); on CPU each segment is its own call, so
one cough or noise burst cut as its own segment was enough to lose a meeting's transcript.

Urgent work goes first: a request marked urgent (`urgent()`: a live stream's closed sentence, which someone is
waiting to read) that is waiting for the model lock makes every other request stop at its next model call and
wait there, lock released, until no urgent request is waiting; the urgent one runs its whole (short) pipeline
alone, never batched. A file therefore gives way between two of its segments, instead of making the sentence
wait for the whole file, and it continues where it stopped with its own results unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from .audio import SAMPLE_RATE
from .progress import before_model_call

logger = logging.getLogger(__name__)

#: Key a model's `inference` sets on each result: how many tokens the predictor gave the segment (read, then removed).
PREDICTED_TOKENS = "predicted_tokens"
#: Options that change how FunASR groups segments, not what the model returns for them.
_NOT_DECODING_OPTIONS = frozenset({"batch_size", "batch_size_s", "batch_size_threshold_s"})
#: SeACo-Paraformer keeps every hotword (plus its `<s>` entry) up to this many; above it, it keeps the best ones
#: by the first segment of the call, so a batched request's choice would depend on its neighbours: it runs alone.
HOTWORD_FILTER = 50
#: A waiting segment re-checks this often; a safety net only (a notify wakes it when something changes).
_RECHECK_S = 1.0

_urgent: ContextVar[bool] = ContextVar("asr_urgent", default=False)


@contextmanager
def urgent() -> Iterator[None]:
    """Mark this thread's transcriptions inside the block as urgent (see the module docstring)."""
    token = _urgent.set(True)
    try:
        yield
    finally:
        _urgent.reset(token)


def is_urgent() -> bool:
    return _urgent.get()


@dataclass(eq=False)  # identity: jobs are told apart by who submitted them, never by content
class _Job:
    """One request's call to the model: its segments and options, and, once run, its answer."""

    data_in: list
    key: list
    kwargs: dict[str, Any]
    group: tuple
    submitted: float = field(default_factory=time.perf_counter)
    done: bool = False
    result: Any = None
    error: BaseException | None = None

    @property
    def longest_s(self) -> float:
        return max((len(x) for x in self.data_in), default=0) / SAMPLE_RATE


@dataclass
class BatchStats:
    """What the batcher did since start: calls, segments per call, the largest call."""

    calls: int = 0
    jobs: int = 0
    segments: int = 0
    largest_jobs: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "jobs": self.jobs,
            "segments": self.segments,
            "largest_jobs": self.largest_jobs,
            "jobs_per_call": round(self.jobs / self.calls, 3) if self.calls else 0.0,
        }


class CrossRequestBatcher:
    """Stands in for `model.inference`; see the module docstring. Call `install(model)` once after loading."""

    def __init__(
        self,
        condition: threading.Condition,
        requests_inside: Callable[[], int],
        *,
        max_requests: int,
        max_seconds: float,
        urgent_waiting: Callable[[], int] = lambda: 0,
    ):
        self._condition = condition  # the engine's model lock: held by whoever runs FunASR code
        self._requests_inside = requests_inside
        self._urgent_waiting = urgent_waiting
        #: Requests stopped at a model call for urgent work: inside the engine, but bringing no segment now.
        self._giving_way = 0
        self.max_requests = max(1, int(max_requests))
        self.max_seconds = float(max_seconds)
        self._inference: Callable[..., Any] | None = None
        self._pending: list[_Job] = []
        self.stats = BatchStats()

    def install(self, model: Any) -> None:
        """Route `model.inference` through the batcher (the original is kept and called by it)."""
        self._inference = model.inference
        model.inference = self

    # Called by FunASR with the model lock held.
    def __call__(self, data_in: Any, data_lengths: Any = None, key: Sequence | None = None, **kwargs: Any) -> Any:
        assert self._inference is not None, "install() first"
        before_model_call(_seconds_of(data_in))  # a job's progress and cancel point, before any state changes
        urgent_call = is_urgent()
        if not urgent_call:
            self._give_way()
        batchable = (
            data_lengths is None
            and isinstance(data_in, list)
            and key is not None
            and len(str(kwargs.get("hotword") or "").split()) + 1 <= HOTWORD_FILTER
        )
        if self.max_requests == 1 or not batchable or urgent_call or self._requests_inside() - self._giving_way <= 1:
            output = self._call_model(data_in, key, data_lengths, kwargs)
            return _one_result_per_segment(output, list(key or []), 0)[0]
        job = _Job(list(data_in), list(key), kwargs, _group_of(kwargs))
        self._pending.append(job)
        self._condition.notify_all()
        while not job.done:
            batch = self._ready_batch()
            if batch:
                self._run(batch)
            else:
                self._condition.wait(_RECHECK_S)
        if job.error is not None:
            raise job.error
        return job.result

    def _give_way(self) -> None:
        """Wait here, the model lock released, while an urgent request is waiting for it."""
        if not self._urgent_waiting():
            return
        self._giving_way += 1
        self._condition.notify_all()  # batched segments waiting for this request must not wait for it now
        try:
            while self._urgent_waiting():
                self._condition.wait(_RECHECK_S)
        finally:
            self._giving_way -= 1

    def _ready_batch(self) -> list[_Job]:
        """The jobs to run now, or [] while other requests inside the engine may still bring a segment."""
        if not self._pending:
            return []
        oldest = self._pending[0]
        group = [j for j in self._pending if j.group == oldest.group]
        chosen = _cap(group, self.max_requests, self.max_seconds)
        everyone_waiting = len(self._pending) >= self._requests_inside() - self._giving_way
        overdue = time.perf_counter() - oldest.submitted > 30 * _RECHECK_S  # never expected; keeps a stall bounded
        if everyone_waiting or len(chosen) < len(group) or len(chosen) >= self.max_requests or overdue:
            return chosen
        return []

    def _run(self, jobs: list[_Job]) -> None:
        for job in jobs:
            self._pending.remove(job)
        data_in = [x for job in jobs for x in job.data_in]
        keys = [k for job in jobs for k in job.key]
        try:
            output = self._call_model(data_in, keys, None, jobs[0].kwargs)
            offset = 0
            for job in jobs:
                job.result, offset = self._own_answer(output, job.key, offset)
        except Exception as exc:
            if len(jobs) == 1:
                jobs[0].error = exc
            else:
                # One request's segment must not sink the others: run each alone.
                logger.warning(
                    "batched model call failed (%s: %s); running its %d requests one by one",
                    type(exc).__name__,
                    exc,
                    len(jobs),
                )
                for job in jobs:
                    try:
                        job.result = self._own_answer(
                            self._call_model(job.data_in, job.key, None, job.kwargs), job.key, 0
                        )[0]
                    except Exception as single_exc:
                        job.error = single_exc
        finally:
            for job in jobs:
                job.done = True
            self.stats.calls += 1
            self.stats.jobs += len(jobs)
            self.stats.segments += len(data_in)
            self.stats.largest_jobs = max(self.stats.largest_jobs, len(jobs))
            self._condition.notify_all()

    def _call_model(self, data_in: Any, key: Any, data_lengths: Any, kwargs: dict[str, Any]) -> Any:
        assert self._inference is not None
        if data_lengths is not None:
            return self._inference(data_in, data_lengths=data_lengths, key=key, **kwargs)
        return self._inference(data_in, key=key, **kwargs)

    @staticmethod
    def _own_answer(output: Any, keys: list, offset: int) -> tuple[Any, int]:
        """(the answer for the segments `keys` starting at `offset` of a batched call, the next offset)."""
        return _one_result_per_segment(output, keys, offset)


def make_batches_exact(model: Any) -> None:
    """Make a padded segment decode as it does alone (PyTorch SeACo-Paraformer); a batch of one is untouched.

    Two parts of the model see past a segment's end when it is padded in a batch:
    - the CIF predictor's convolution reads one frame past the end: alone that frame is zero, in a batch
      it is the encoder's output for a padding frame (not zero after the final layer norm), which moves
      the last token boundaries, so the padding frames are zeroed (`asr.onnx.export` builds the same step into
      the ONNX graph);
    - the timestamp head's backward LSTM starts from the end of the padded batch, so it runs per segment.
    """
    import torch

    encode = model.encode
    timestamps = model.calc_predictor_timestamp

    def encode_with_zeroed_padding(speech: Any, speech_lengths: Any, *args: Any, **kwargs: Any) -> Any:
        encoder_out, encoder_out_lens = encode(speech, speech_lengths, *args, **kwargs)
        hidden = encoder_out[0] if isinstance(encoder_out, tuple) else encoder_out
        if hidden.shape[0] > 1:
            padding = torch.arange(hidden.shape[1], device=hidden.device)[None, :] >= encoder_out_lens[:, None]
            hidden = hidden.masked_fill(padding[..., None], 0.0)
            encoder_out = (hidden, *encoder_out[1:]) if isinstance(encoder_out, tuple) else hidden
        return encoder_out, encoder_out_lens

    def timestamps_per_segment(encoder_out: Any, encoder_out_lens: Any, token_num: Any) -> tuple:
        if encoder_out.shape[0] == 1:
            return timestamps(encoder_out, encoder_out_lens, token_num)
        parts = [
            timestamps(encoder_out[i : i + 1, : int(n)], encoder_out_lens[i : i + 1], token_num[i : i + 1])
            for i, n in enumerate(encoder_out_lens)
        ]
        return tuple(_pad_cat([part[k] for part in parts]) for k in range(len(parts[0])))

    model.encode = encode_with_zeroed_padding
    model.calc_predictor_timestamp = timestamps_per_segment


def _pad_cat(tensors: list) -> Any:
    """Stack [1, T_i, ...] tensors into [B, max T, ...], zero-padded (the model reads only each segment's part)."""
    import torch

    width = max(t.shape[1] for t in tensors)
    return torch.cat([torch.nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, width - t.shape[1])) for t in tensors])


def _seconds_of(data_in: Any) -> float:
    """Audio seconds in a model call's input: a list of segments, or one array of samples."""
    try:
        if isinstance(data_in, (list, tuple)):
            return sum(len(x) for x in data_in) / SAMPLE_RATE
        return float(getattr(data_in, "shape", (len(data_in),))[-1]) / SAMPLE_RATE
    except TypeError:
        return 0.0


def empty_result(key: Any) -> dict[str, Any]:
    """The result of a segment without tokens: it adds nothing to the text, the timestamps or the confidence."""
    return {"key": key, "text": "", "timestamp": [], "token_probs": []}


def _one_result_per_segment(output: Any, keys: list, offset: int) -> tuple[Any, int]:
    """(one result for each of `keys`, from `offset` in the model's answer; the next offset).

    FunASR's `([],)` (no segment of the call predicted a token) becomes an empty result per segment, and so
    does a segment whose predictor gave no token inside a call that others made non-empty: both read the same
    as that segment alone. The predicted-token counts the models add are removed.
    """
    count = len(keys)
    results = output[0] if isinstance(output, tuple) and output else output
    meta = output[1] if isinstance(output, tuple) and len(output) > 1 else {}
    if not isinstance(results, list) or not results:
        return ([empty_result(k) for k in keys], meta), offset + count
    own = results[offset : offset + count] if count else results
    answer = []
    for i, result in enumerate(own):
        predicted = result.pop(PREDICTED_TOKENS, None) if isinstance(result, dict) else None
        answer.append(
            empty_result(result.get("key", keys[i] if i < count else None))
            if predicted is not None and predicted < 1
            else result
        )
    return (answer, meta), offset + (count or len(own))


def _group_of(kwargs: dict[str, Any]) -> tuple:
    """Segments share a call only when every plain option (hotword above all) is the same."""
    return tuple(
        sorted(
            (k, v)
            for k, v in kwargs.items()
            if k not in _NOT_DECODING_OPTIONS and isinstance(v, (str, int, float, bool, type(None)))
        )
    )


def _cap(group: list[_Job], max_requests: int, max_seconds: float) -> list[_Job]:
    """The oldest jobs of a group that fit the caps (padded audio seconds, requests); at least one."""
    chosen: list[_Job] = []
    longest, segments = 0.0, 0
    for job in group[:max_requests]:
        new_longest, new_segments = max(longest, job.longest_s), segments + len(job.data_in)
        if chosen and new_longest * new_segments > max_seconds:
            break
        chosen.append(job)
        longest, segments = new_longest, new_segments
    return chosen
