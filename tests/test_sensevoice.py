"""SenseVoice-Small: the random-weight test folders (testmodels.sensevoice) and the engine's second recognizer."""

from __future__ import annotations

import hashlib
import json

import pytest

from testmodels import sensevoice as svmodels


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def tiny_sensevoice(tiny_models):
    return svmodels.build_tiny_sensevoice(tiny_models.vad.parent)


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
