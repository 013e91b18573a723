"""FunASR's filterbank features, computed in pieces so that other threads keep running meanwhile.

Without torchaudio (which must not be installed next to FunASR), FunASR computes filterbanks with
kaldi-native-fbank, handing it the whole waveform in one call. That C++ call holds the GIL throughout:
for a 3-minute file the VAD's features took 0.45-0.65 s on 2 shared cores, during which no other thread
ran: not the event loop, so /health, the API and the UI all stalled behind the model. The online
filterbank is built to take audio piece by piece and gives the same frames either way (checked in
tests/test_engine.py), so each call is fed `PIECE_SAMPLES` at a time and the GIL changes hands between.
"""

from __future__ import annotations

import logging
import types
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: 0.5 s at 16 kHz: a few milliseconds of C++ per call, about Python's thread switch interval.
PIECE_SAMPLES = 8000


class PiecewiseOnlineFbank:
    """`kaldi_native_fbank.OnlineFbank` whose `accept_waveform` feeds the waveform in pieces."""

    def __init__(self, opts: Any, online_fbank: type):
        self._fbank = online_fbank(opts)

    def accept_waveform(self, sample_rate: float, waveform: np.ndarray) -> None:
        for start in range(0, len(waveform), PIECE_SAMPLES):
            self._fbank.accept_waveform(sample_rate, waveform[start : start + PIECE_SAMPLES])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fbank, name)


def install_piecewise_fbank() -> bool:
    """Make FunASR's kaldi-native-fbank path feed audio in pieces (idempotent). False when FunASR uses
    another path (torchaudio, or a FunASR without it), which is left as it is."""
    try:
        from funasr.utils import fbank as funasr_fbank
    except ImportError:
        return False
    knf = getattr(funasr_fbank, "_knf", None)
    if knf is None or getattr(funasr_fbank, "_HAS_TORCHAUDIO", False):
        return False
    if getattr(knf, "piecewise", False):
        return True
    online_fbank = knf.OnlineFbank
    # A copy of the module's namespace, so kaldi_native_fbank itself stays untouched for other users.
    patched = types.SimpleNamespace(**{k: getattr(knf, k) for k in dir(knf) if not k.startswith("__")})
    patched.OnlineFbank = lambda opts: PiecewiseOnlineFbank(opts, online_fbank)
    patched.piecewise = True
    funasr_fbank._knf = patched
    logger.debug("FunASR filterbanks: fed to kaldi-native-fbank in %d-sample pieces", PIECE_SAMPLES)
    return True
