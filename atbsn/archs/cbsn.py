"""C-BSN network (Jang et al., ICCV 2023): one weight set, run blind or non-blind.

Two branches see the input through a centre-masked first convolution (3x3 then dilation-2
modules; 5x5 then dilation-3 modules). In blind mode the centre taps are masked on the fly, so
the union of the branches excludes exactly the centre pixel; in non-blind mode the same weights
run unmasked. Module and parameter names follow the official TensorFlow variables (``DBSN/B1/
DCM0/conv1/kernel`` -> ``B1.DCM0.conv1.weight``) so the converter is a rename plus a transpose.
"""
from __future__ import annotations

import functools
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from .common import same_conv


def _tf_he_init(conv: nn.Conv2d) -> None:
    """TF 1.x ``variance_scaling_initializer(2.0)``: truncated normal at +-2 std, with the std
    rescaled so the truncated distribution has variance 2 / fan_in; zero bias."""
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
    nn.init.trunc_normal_(conv.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(conv.bias)


_conv = functools.partial(same_conv, init=_tf_he_init)


class ConditionalMaskedConv2d(nn.Conv2d):
    """A conv whose centre tap is masked only when ``blind``; the stored weight is never zeroed,
    so the centre taps keep learning from the non-blind pass."""

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__(cin, cout, k, padding=k // 2)
        mask = torch.ones(1, 1, k, k)
        mask[..., k // 2, k // 2] = 0
        self.register_buffer("blind_mask", mask, persistent=False)
        nn.init.normal_(self.weight, std=math.sqrt(2.0) / math.sqrt(k * k * cin))
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, blind: bool = False) -> torch.Tensor:
        weight = self.weight * self.blind_mask if blind else self.weight
        return F.conv2d(x, weight, self.bias, padding=self.padding)


class DilatedConvModule(nn.Module):
    """u + ReLU(conv1x1(ReLU(dilated conv3x3(u)))): the released graph has the second ReLU."""

    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.conv1 = _conv(width, width, 3, dilation)
        self.conv2 = _conv(width, width, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u + F.relu(self.conv2(F.relu(self.conv1(u))))


class CBSNBranch(nn.Module):
    def __init__(self, width: int, mask_size: int, dilation: int, num_modules: int):
        super().__init__()
        self.conv1 = ConditionalMaskedConv2d(width, width, mask_size)
        self.conv2 = _conv(width, width)
        self.conv3 = _conv(width, width)
        self.num_modules = num_modules
        for i in range(num_modules):
            self.add_module(f"DCM{i}", DilatedConvModule(width, dilation))
        self.conv4 = _conv(width, width)

    def forward(self, x: torch.Tensor, blind: bool) -> torch.Tensor:
        x = F.relu(self.conv1(x, blind))
        x = F.relu(self.conv3(F.relu(self.conv2(x))))
        for i in range(self.num_modules):
            x = getattr(self, f"DCM{i}")(x)
        return F.relu(self.conv4(x))


class CBSN(nn.Module):
    """``net(x, blind)``: standardised image in, standardised denoised image out (no global residual).

    ``blind=False`` (the default) is the inference mode; training also runs ``blind=True``.
    """

    input_multiple = 1

    def __init__(self, in_channels: int = 3, out_channels: int = 3, width: int = 128, num_modules: int = 9,
                 output_init_scale: float = 1.0):
        super().__init__()
        self.conv0 = _conv(in_channels, width)
        self.B1 = CBSNBranch(width, 3, 2, num_modules)
        self.B2 = CBSNBranch(width, 5, 3, num_modules)
        self.conv1 = _conv(2 * width, width)
        self.conv2 = _conv(width, width // 2)
        self.conv3 = _conv(width // 2, width // 2)
        self.conv4 = _conv(width // 2, out_channels)
        # The official init's outputs are ~100x the standardised input at width 128 (~38x at 32: He
        # init through 2 x 9 modules and their concatenations); Adam at 1e-4 needs thousands of steps
        # to undo that. A short schedule starts closer with e.g. 0.02 (1.0, the official init, is the default).
        with torch.no_grad():
            self.conv4.weight.mul_(output_init_scale)
        self.in_channels = in_channels
        self.receptive_radius = max(1 + 2 * num_modules, 2 + 3 * num_modules)  # B2 decides: 29 by default

    def forward(self, x: torch.Tensor, blind: bool = False) -> torch.Tensor:
        x = F.relu(self.conv0(x))
        x = torch.cat([self.B1(x, blind), self.B2(x, blind)], dim=1)  # fusion input: B1 channels first
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.conv4(F.relu(self.conv3(x)))


def read_tf_variables(path: str) -> dict:
    """TF variables from the official checkpoint bundle (prefix, ``.index`` or ``.data-*`` path) or
    from a ``torch.save``d dict of TF-named arrays (the layout of ``cbsn_weights_tf.pt``)."""
    from ..errors import CheckpointError
    from ..utils.tf_bundle import is_bundle, read_bundle

    if is_bundle(path):
        return read_bundle(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"C-BSN weights '{path}' not found: give the TF checkpoint prefix "
                              f"(e.g. 'pretrained/CBSN_SIDDtrain.ckpt', with its .index and .data-* files) or a .pt "
                              f"dict of TF-named arrays")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is the same user error
        raise CheckpointError(f"cannot read '{path}' as a TF checkpoint or a torch file of TF arrays: {e}") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"'{path}' is not a dict of TF-named arrays")
    return obj


def cbsn_state_dict_from_tf(variables: dict, width: int = 128, num_modules: int = 9, prefix: str = "DBSN/") -> dict:
    """Official TF variables ({name: HWIO array}) -> ``CBSN`` state dict. Kernels go HWIO -> OIHW
    (``permute(3, 2, 0, 1)``, no flip: both frameworks cross-correlate); ``W1``/``b1`` are the masked
    convs, stored unmasked. Names that do not map onto the network are all listed in one error."""
    from ..errors import CheckpointError

    with torch.device("meta"):  # names and shapes only: no memory, no initialisation cost
        expected = CBSN(width=width, num_modules=num_modules).state_dict()
    out, unexpected = {}, []
    for name, value in variables.items():
        parts = name[len(prefix):].split("/") if name.startswith(prefix) else []
        leaf = {"kernel": "weight", "W1": "weight", "bias": "bias", "b1": "bias"}.get(parts[-1] if parts else "")
        key = ".".join(parts[:-1] + [leaf]) if leaf else None
        if key not in expected:
            unexpected.append(name)
            continue
        t = torch.as_tensor(value).float()
        if leaf == "weight" and t.dim() == 4:
            t = t.permute(3, 2, 0, 1)
        if t.shape != expected[key].shape:
            want = expected[key].permute(2, 3, 1, 0) if expected[key].dim() == 4 else expected[key]
            raise CheckpointError(f"TF variable '{name}' has shape {tuple(value.shape)}; C-BSN with width {width} "
                                  f"expects {tuple(want.shape)}")
        out[key] = t.contiguous()
    if unexpected:
        raise CheckpointError(f"{len(unexpected)} unexpected variable name(s) for C-BSN (expected 'DBSN/...'): "
                              f"{', '.join(sorted(unexpected))}")
    missing = sorted(set(expected) - set(out))
    if missing:
        raise CheckpointError(f"C-BSN variables missing from the TF checkpoint: {', '.join(missing)}")
    return out
