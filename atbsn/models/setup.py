"""One way to get a model ready: build it from options, load its weights, place it and configure
it, for training (the loop) and for inference (valid.py, test.py, the Denoiser) alike."""
from __future__ import annotations

import logging
from typing import Optional

import torch

from ..errors import OptionsError
from ..weights import load_pretrained
from . import build_model
from .base_model import DenoisingModel, check_train_crop

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}
log = logging.getLogger("atbsn")


def native_cpu_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively here (AVX512-BF16 / AMX); without it a bf16
    conv falls back to a reference kernel (0.3 GFLOP/s measured, against 70-120 in fp32)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and native_cpu_bf16()


def autocast_dtype(amp: Optional[str], device: torch.device) -> Optional[torch.dtype]:
    """``train.amp`` for this device: bf16 on a CPU without native bf16 runs in fp32, said once;
    ``auto`` is bf16 where it is native and fp32 elsewhere, and says which in one line."""
    if amp == "auto":
        if native_bf16(device):
            log.warning("train.amp: auto: bf16 autocast (native bf16 on this %s)", device.type.upper())
            return torch.bfloat16
        log.warning("train.amp: auto: fp32 (this %s has no native bf16)", device.type.upper())
        return None
    if amp == "bf16" and device.type == "cpu" and not native_cpu_bf16():
        log.warning("train.amp: bf16 requested, but this CPU has no native bf16 (autocast would run 5-65x slower "
                    "than fp32 here): running in fp32")
        return None
    return AMP_DTYPES[amp]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionsError(f"device '{name}' was requested but CUDA is not available; use 'cpu' or 'auto'")
    return dev


def setup_model(opt: dict, device: torch.device, training: bool = False) -> DenoisingModel:
    """Build, check (training), load ``path.pretrain_network``, move to ``device`` and configure:
    padding, channels_last (weights and input) and the autocast dtype from ``train.amp``."""
    model = build_model(opt)
    if training:
        check_train_crop(model, opt)
        model.check_options(opt)
    load_pretrained(model, opt["path"]["pretrain_network"], opt["path"]["strict_load"], opt["networks"])
    if training:
        model.init_training()
    model.to(device)
    tcfg = opt.get("train") or {}
    model.padding_mode = opt["val"]["padding"]["mode"]
    model.pad_square = opt["val"]["padding"]["square"]
    model.channels_last = bool(tcfg.get("channels_last", False))
    choice = opt["val"].get("channels_last", "auto")
    if not training:  # val.channels_last: true/false force it; auto adds CPUs, where it measured faster
        model.channels_last = (model.channels_last or device.type == "cpu") if choice == "auto" else bool(choice)
    if model.channels_last:
        for net in model.networks.values():
            net.to(memory_format=torch.channels_last)
    model.amp_dtype = autocast_dtype(tcfg.get("amp"), device)
    model.strength = dict(opt["val"]["strength"])
    model.train(training)
    return model
