"""Ship a trained denoiser as one ONNX file, and run such a file through onnxruntime.

The exported graph is the model's whole inference step, not only its network: the value scale,
AT-BSN's centering, C-BSN's standardisation and padding go in with it, so the file alone is a
denoiser with the framework's contract, [0, 1] NCHW float32 in and out. Height and width are
dynamic; they must be multiples of ``atbsn.input_multiple`` (metadata), which :class:`OnnxModel`
arranges by padding as the PyTorch path does (reflect at the bottom and right, then crop).

:class:`OnnxModel` has the inference interface of :class:`~atbsn.models.DenoisingModel`, so
``atbsn.inference.denoise`` (tiling, adaptive strength), ``test.py`` and ``Denoiser`` run it
unchanged. onnx / onnxruntime are optional (``pip install -e .[onnx]``) and imported on use.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from types import SimpleNamespace
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from .errors import CheckpointError, OptionsError
from .models.base_model import DenoisingModel, pad_to_multiple

PREFIX = "atbsn."


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise OptionsError(f"ONNX needs the optional '{module}' package: pip install onnx onnxruntime "
                           f"(or pip install -e .[onnx])") from None


def export_refusal(model: DenoisingModel) -> Optional[str]:
    """Why ``model`` cannot be exported, or None."""
    from .models.dbsn import DBSNDistillation, DBSNModel

    if isinstance(model, DBSNModel) and not isinstance(model, DBSNDistillation) and model.stage != "mu_pretrain":
        return ("D-BSN's Bayes posterior combines the network's outputs with image-wide noise statistics "
                "(estimated per image, with data-dependent guards) and is not exported; export its distilled "
                "MWCNN student instead (options/train/dbsn_distill*.yml, model: DBSNDistillation)")
    return None


class InferenceGraph(nn.Module):
    """``model.denoise`` as a module: prepare (whole image), one tile pass, finish."""

    def __init__(self, model: DenoisingModel):
        super().__init__()
        self.model = model
        self.net = model.networks[model.inference_role]  # registered, so its weights are exported

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prepared, context = self.model.prepare(x)
        return self.model.finish(self.model.denoise_tile(prepared), context)


def options_hash(opt: dict) -> str:
    clean = {k: v for k, v in opt.items() if not k.startswith("_")}
    return hashlib.sha256(json.dumps(clean, sort_keys=True, default=str).encode()).hexdigest()[:16]


def export_onnx(model: DenoisingModel, opt: dict, path: str, opset: int = 17,
                training_revision: str = "unknown") -> Dict[str, str]:
    """Write ``model``'s inference step to ``path``; returns the metadata written into it."""
    refusal = export_refusal(model)
    if refusal:
        raise OptionsError(f"{type(model).__name__} cannot be exported to ONNX: {refusal}")
    onnx = _require("onnx")
    from .inference import activation_bytes_per_pixel, default_overlap, tile_alignment

    model.train(False)
    model.to(torch.device("cpu"))
    model.channels_last, model.amp_dtype = False, None
    for net in model.networks.values():
        net.to(memory_format=torch.contiguous_format)
    net = model.networks[model.inference_role]
    channels = int(getattr(net, "in_channels", 3))
    multiple = model.input_multiple()
    side = max(128, 4 * multiple)
    probe = torch.rand(1, channels, side, side + multiple, generator=torch.Generator().manual_seed(0))
    graph = InferenceGraph(model)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic, checked by parity tests
        torch.onnx.export(graph, (probe,), path, input_names=["noisy"], output_names=["denoised"],
                          dynamic_axes={"noisy": {0: "batch", 2: "height", 3: "width"},
                                        "denoised": {0: "batch", 2: "height", 3: "width"}},
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    meta = {
        "arch": type(net).__name__, "model": type(model).__name__,
        "options_sha256": options_hash(opt), "training_revision": training_revision,
        "value_range": "0,1", "layout": "NCHW float32", "in_channels": str(channels),
        "input_multiple": str(multiple), "padding_mode": model.padding_mode, "pad_square": str(model.pad_square),
        "receptive_radius": str(getattr(net, "receptive_radius", 64)), "tile_alignment": str(tile_alignment(model)),
        "default_overlap": str(default_overlap(model)),
        "activation_bytes_per_pixel": f"{activation_bytes_per_pixel(model):.1f}",
        "whole_image_steps": str(type(model).prepare is not DenoisingModel.prepare),
        "options": json.dumps({k: v for k, v in opt.items() if not k.startswith("_")}, default=str),
    }
    proto = onnx.load(path)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = PREFIX + key, value
    proto.producer_name = "atbsn"
    onnx.save(proto, path)
    return meta


def read_metadata(path: str) -> Dict[str, str]:
    ort = _require("onnxruntime")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return _metadata(session, path)


def _metadata(session, path: str) -> Dict[str, str]:
    props = session.get_modelmeta().custom_metadata_map
    meta = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
    if "input_multiple" not in meta:
        raise CheckpointError(f"'{path}' is an ONNX file without atbsn metadata; export it with scripts/export_onnx.py")
    return meta


class OnnxModel:
    """An exported denoiser behind the inference interface of DenoisingModel (CPU tensors in and out)."""

    inference_role = "onnx"

    def __init__(self, path: str, providers: Optional[list] = None):
        if not os.path.isfile(path):
            raise CheckpointError(f"ONNX file not found: '{path}'")
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(path, options, providers=providers or ["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime's errors are of its own types
            raise CheckpointError(f"cannot load ONNX file '{path}': {err}") from None
        self.path = path
        self.meta = _metadata(self.session, path)
        self.multiple = int(self.meta["input_multiple"])
        self.padding_mode, self.pad_square = self.meta["padding_mode"], self.meta["pad_square"] == "True"
        self.networks = {"onnx": SimpleNamespace(
            in_channels=int(self.meta["in_channels"]), input_multiple=self.multiple,
            receptive_radius=int(self.meta["receptive_radius"]), tile_alignment=int(self.meta["tile_alignment"]))}
        self._activation_bytes_per_pixel = float(self.meta["activation_bytes_per_pixel"])
        self.strength: Dict[str, Any] = {"mode": "full"}
        self.device = torch.device("cpu")

    def train(self, mode: bool = False) -> None:
        if mode:
            raise OptionsError("an ONNX file is for inference only; train from its .pth checkpoint")

    def input_multiple(self) -> int:
        return self.multiple

    def prepare(self, noisy: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        return noisy, None

    def denoise_tile(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x.float().cpu(), self.multiple, self.padding_mode, self.pad_square)
        out = self.session.run(None, {"noisy": padded.contiguous().numpy()})[0]
        return torch.from_numpy(out)[..., :h, :w]

    def finish(self, out: torch.Tensor, context: Any) -> torch.Tensor:
        return out

    def denoise(self, noisy: torch.Tensor) -> torch.Tensor:
        return self.denoise_tile(noisy)
