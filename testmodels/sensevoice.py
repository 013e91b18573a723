"""SenseVoice-Small folders with random weights, laid out like ModelScope's `iic/SenseVoiceSmall`.

The published folder holds config.yaml, configuration.json (which names the SentencePiece model and am.mvn),
model.pt, am.mvn and `chn_jpn_yue_eng_ko_spectok.bpe.model`. The SentencePiece model cannot be downloaded
here, so one is trained on the spot from a generated corpus (Chinese characters, English words, kana, hangul);
for the full-size folder it is then laid out like the published one: 25055 pieces, `<unk> <s> </s>` first and
the rich tags (`<|zh|>`, `<|HAPPY|>`, `<|Speech|>`, `<|woitn|>`, ...) at the ids the published vocabulary
gives them (the ids FunASR's `SenseVoiceSmall` hard-codes for its language and emotion queries).

    python -m testmodels --tiny-sensevoice   # models/tiny-sensevoice (tests; a few MB, seconds)
    python -m testmodels --full-sensevoice   # models/full-sensevoice (benchmarks; ~900 MB)

Deterministic: the same corpus, a single-threaded trainer and a fixed weight seed build identical folders.
"""

from __future__ import annotations

import copy
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

BPE_MODEL = "chn_jpn_yue_eng_ko_spectok.bpe.model"
FULL_VOCAB_SIZE = 25055
TINY_VOCAB_SIZE = 400

#: The rich tags at their ids in the published vocabulary. The tags of languages and events this service
#: does not name keep placeholder pieces at their places, so the vocabulary's size and every named id match.
SPECIAL_IDS: dict[int, str] = {
    24884: "<|zh|>",
    24885: "<|en|>",
    24888: "<|yue|>",
    24892: "<|ja|>",
    24896: "<|ko|>",
    24992: "<|nospeech|>",
    24993: "<|Speech|>",
    24995: "<|BGM|>",
    24997: "<|Laughter|>",
    24999: "<|Applause|>",
    25001: "<|HAPPY|>",
    25002: "<|SAD|>",
    25003: "<|ANGRY|>",
    25004: "<|NEUTRAL|>",
    25005: "<|FEARFUL|>",
    25006: "<|DISGUSTED|>",
    25007: "<|SURPRISED|>",
    25008: "<|OTHER|>",
    25009: "<|EMO_UNKNOWN|>",
    25010: "<|Cry|>",
    25011: "<|Sneeze|>",
    25012: "<|Breath|>",
    25013: "<|Cough|>",
    25014: "<|Sing|>",
    25015: "<|Speech_Noise|>",
    25016: "<|withitn|>",
    25017: "<|woitn|>",
    25018: "<|GBG|>",
    25019: "<|Event_UNK|>",
}
#: Where the tag block starts in the published vocabulary (ids below it are text pieces).
FIRST_TAG_ID = 24884

# SenseVoice-Small as published (iic/SenseVoiceSmall config.yaml); training-only sections left out.
SENSEVOICE_FULL: dict[str, Any] = {
    "model": "SenseVoiceSmall",
    "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
    "encoder": "SenseVoiceEncoderSmall",
    "encoder_conf": {
        "output_size": 512,
        "attention_heads": 4,
        "linear_units": 2048,
        "num_blocks": 50,
        "tp_blocks": 20,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "attention_dropout_rate": 0.1,
        "input_layer": "pe",
        "pos_enc_class": "SinusoidalPositionEncoder",
        "normalize_before": True,
        "kernel_size": 11,
        "sanm_shfit": 0,
        "selfattention_layer_type": "sanm",
    },
    "tokenizer": "SentencepiecesTokenizer",
    "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
    "frontend": "WavFrontend",
    # dither 0: WavFrontend defaults to 1.0 (training noise), which would make two runs of one file differ.
    "frontend_conf": {
        "fs": 16000,
        "window": "hamming",
        "n_mels": 80,
        "frame_length": 25,
        "frame_shift": 10,
        "lfr_m": 7,
        "lfr_n": 6,
        "dither": 0.0,
    },
}


def tiny_config() -> dict[str, Any]:
    """The published architecture shrunk to a few MB: the same classes, fewer and narrower layers."""
    conf = copy.deepcopy(SENSEVOICE_FULL)
    conf["encoder_conf"].update(output_size=64, linear_units=128, num_blocks=2, tp_blocks=1)
    return conf


_ENGLISH = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by word "
    "but not what all were we when your can said there use an each which she do how their if will up other about "
    "out many then them these so some her would make like him into time has look two more write go see number no "
    "way could people my than first water been call who oil its now find long down day did get come made may part "
    "meeting customer service order price account payment delivery refund support manager please thank hello"
).split()


def _corpus(lines: int, seed: int, *, small: bool) -> list[str]:
    """Generated text in the model's five languages: each line one language, as an utterance is.

    `small`: few distinct characters, so a tiny vocabulary can hold every one of them."""
    from testmodels import token_list

    rng = random.Random(seed)
    hanzi = [t for t in token_list(3000) if len(t) == 1 and "\u4e00" <= t <= "\u9fff"][: 150 if small else None]
    kana = ([chr(c) for c in range(0x3041, 0x3097)] + [chr(c) for c in range(0x30A1, 0x30FB)])[:: 6 if small else 1]
    hangul = [chr(0xAC00 + 28 * i) for i in range(30 if small else 400)]
    out = []
    for _ in range(lines):
        kind = rng.random()
        if kind < 0.5:
            # Frequent characters more often, so the trainer merges common pairs first.
            out.append("".join(hanzi[min(int(rng.expovariate(1 / 300)), len(hanzi) - 1)] for _ in range(12)))
        elif kind < 0.75:
            out.append(" ".join(rng.choice(_ENGLISH) for _ in range(8)))
        elif kind < 0.9:
            out.append("".join(rng.choice(kana) for _ in range(10)))
        else:
            out.append("".join(rng.choice(hangul) for _ in range(6)))
    return out


def train_tokenizer(path: Path, vocab_size: int, *, published_layout: bool, seed: int = 0) -> Path:
    """Train a BPE SentencePiece model at `path`.

    `published_layout`: `vocab_size` pieces with the rich tags at their published ids (SPECIAL_IDS); the
    trained pieces fill the ids below the tag block, topped up with single characters (CJK in code-point
    order) where the corpus gave fewer. Otherwise a small model with the rich tags as user-defined symbols.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    tags = list(SPECIAL_IDS.values())
    trained_size = min(vocab_size, 8000) if published_layout else vocab_size
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text(
            "\n".join(_corpus(30000 if published_layout else 3000, seed, small=not published_layout)) + "\n",
            encoding="utf-8",
        )
        prefix = str(Path(tmp) / "spm")
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=prefix,
            model_type="bpe",
            vocab_size=trained_size,
            character_coverage=1.0,
            num_threads=1,  # one thread: the same pieces every build
            user_defined_symbols=[] if published_layout else tags,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            hard_vocab_limit=False,  # a generated corpus may offer fewer merges than asked for
            minloglevel=2,
        )
        proto = pb.ModelProto()
        proto.ParseFromString(Path(prefix + ".model").read_bytes())
    # The trainer records where it read and wrote (a temporary folder): keep the file the same every build.
    del proto.trainer_spec.input[:]
    proto.trainer_spec.model_prefix = ""
    if published_layout:
        _lay_out_like_published(proto, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return path


def _lay_out_like_published(proto: Any, vocab_size: int) -> None:
    """Top the trained pieces up to FIRST_TAG_ID with single characters, then the tag block, to `vocab_size`."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    pieces = list(proto.pieces)
    if len(pieces) > FIRST_TAG_ID:
        raise ValueError(f"{len(pieces)} trained pieces do not fit below the tag block at {FIRST_TAG_ID}")
    seen = {p.piece for p in pieces}
    lowest = min(p.score for p in pieces if p.type == pb.ModelProto.SentencePiece.NORMAL)
    code_point = 0x4E00
    while len(pieces) < FIRST_TAG_ID:
        char = chr(code_point)
        code_point += 1
        if char in seen:
            continue
        piece = pb.ModelProto.SentencePiece(piece=char, score=lowest - 1.0, type=pb.ModelProto.SentencePiece.NORMAL)
        pieces.append(piece)
        seen.add(char)
    for index in range(FIRST_TAG_ID, vocab_size):
        name = SPECIAL_IDS.get(index, f"<|unused_{index}|>")
        pieces.append(pb.ModelProto.SentencePiece(piece=name, score=0.0, type=pb.ModelProto.SentencePiece.USER_DEFINED))
    del proto.pieces[:]
    proto.pieces.extend(pieces)
    proto.trainer_spec.vocab_size = vocab_size


def build_sensevoice(out_dir: Path, conf: dict[str, Any], vocab_size: int, vad_dir: Path | None, *, full: bool) -> Path:
    """A SenseVoice-Small folder at `out_dir` (built beside it, then moved in place: never half-built)."""
    from testmodels import FBANK_DIM, LFR_M, _write_am_mvn, _write_model_folder

    building = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    bpe = train_tokenizer(building / BPE_MODEL, vocab_size, published_layout=full)
    _write_am_mvn(building / "am.mvn", FBANK_DIM, LFR_M, vad_dir)
    metas = {"tokenizer_conf": {"bpemodel": BPE_MODEL}, "frontend_conf": {"cmvn_file": "am.mvn"}}
    size = _piece_count(bpe)
    _write_model_folder(
        building, conf, None, "auto-speech-recognition", metas, FBANK_DIM * LFR_M, seed=0, vocab_size=size
    )
    building.rename(out_dir)
    return out_dir


def _piece_count(bpe: Path) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(bpe)).get_piece_size()


def build_tiny_sensevoice(models_dir: Path) -> Path:
    """models_dir/tiny-sensevoice (tests); skipped when present."""
    out = models_dir / "tiny-sensevoice"
    if not (out / "model.pt").exists():
        build_sensevoice(out, tiny_config(), TINY_VOCAB_SIZE, models_dir / "fsmn-vad", full=False)
    return out


def build_full_sensevoice(models_dir: Path) -> Path:
    """models_dir/full-sensevoice: the published architecture and vocabulary size (benchmarks); skipped when present."""
    out = models_dir / "full-sensevoice"
    if not (out / "model.pt").exists():
        build_sensevoice(out, SENSEVOICE_FULL, FULL_VOCAB_SIZE, models_dir / "fsmn-vad", full=True)
    return out
