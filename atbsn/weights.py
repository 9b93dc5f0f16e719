"""Network weights: reading ``.pth`` files, finding a network's state dict in the layouts people
ship (training checkpoints, BasicSR ``params``, DataParallel prefixes, a method's official release)
and loading it with errors that say what does not fit."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from torch import nn

from .errors import CheckpointError, OptionsError

# A model's hook: (loaded object, role, path) -> the role's state dict if the object is in its
# method's official layout, else None.
OfficialLayout = Callable[[Dict[str, Any], str, str], Optional[Dict[str, torch.Tensor]]]


def load_file(path: str, map_location="cpu") -> Dict[str, Any]:
    """``torch.load(weights_only=True)`` with one clear error for missing/truncated/foreign files."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: '{path}'")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, pickle with code, not a torch file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint '{path}': {first[:300]}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint '{path}' holds a {type(obj).__name__}, expected a dict")
    return obj


def extract_state_dict(obj: Dict[str, Any], role: str, path: str,
                       official: Optional[OfficialLayout] = None) -> Dict[str, torch.Tensor]:
    """Accept a training checkpoint, ``{'params': sd}`` (BasicSR), ``{'state_dict': sd}`` or a plain
    state dict; strip a ``module.`` / ``_orig_mod.`` prefix. ``official`` (a model's
    ``official_state_dict``) first gets to recognise its method's released layout."""
    sd = official(obj, role, path) if official else None
    if sd is None:
        sd = _container_state_dict(obj, role, path)
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"'{path}' does not hold a state dict of tensors for network '{role}'")
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def _container_state_dict(obj: Dict[str, Any], role: str, path: str) -> Dict[str, Any]:
    if "networks" in obj and isinstance(obj["networks"], dict):
        nets = obj["networks"]
        if role in nets:
            return nets[role]
        if len(nets) == 1:  # e.g. a stage-1 checkpoint ('net') loaded as the distillation teacher
            return next(iter(nets.values()))
        raise CheckpointError(f"checkpoint '{path}' has networks {sorted(nets)}, not '{role}'")
    for key in ("params", "state_dict"):  # BasicSR, Lightning and most releases
        if isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def load_network(net: nn.Module, sd: Dict[str, torch.Tensor], strict: bool, source: str) -> None:
    """Load with a message that lists missing / unexpected / mis-shaped keys."""
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs network {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if shapes or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}"
                         f"{' ...' if len(unexpected) > 8 else ''}")
        if shapes:
            parts.append(f"shape mismatches: {'; '.join(shapes[:5])}")
        raise CheckpointError(
            f"'{source}' does not fit {type(net).__name__} (is it a checkpoint of another architecture?): "
            + "; ".join(parts)
        )
    net.load_state_dict(sd, strict=strict)


def load_pretrained(model, spec: Union[None, str, Dict[str, str]], strict: bool = True,
                    networks_options: Optional[Dict[str, dict]] = None) -> None:
    """``path.pretrain_network``: one path for the inference network, or ``{role: path}``.

    ``networks_options`` (the config's ``networks``) lets a checkpoint that does not fit be explained
    by the option that differs, when the checkpoint carries the options it was trained with."""
    if not spec:
        return
    items = {model.inference_role: spec} if isinstance(spec, str) else dict(spec)
    for role, path in items.items():
        if path is None:  # {student: null}: that network keeps its initialisation
            continue
        if role not in model.networks:
            raise OptionsError(f"path.pretrain_network: unknown network '{role}' (model has {sorted(model.networks)})")
        state = load_file(path)
        sd = extract_state_dict(state, role, path, model.official_state_dict)
        try:
            load_network(model.networks[role], sd, strict, path)
        except CheckpointError:
            differing = option_differences(state, role, (networks_options or {}).get(role))
            if differing:
                raise CheckpointError(f"'{path}' does not fit {type(model.networks[role]).__name__}: it was trained "
                                      f"with other options, {'; '.join(differing)} (make the config match, or "
                                      f"point path.pretrain_network at a checkpoint of this network)") from None
            raise


def option_differences(state: dict, role: str, config: Optional[dict]) -> List[str]:
    """``networks.<role>.<key>: checkpoint A, config B`` for each arch option that differs, from the
    options a training checkpoint embeds (constructor defaults fill keys either side leaves out)."""
    trained = ((state.get("options") or {}).get("networks") or {}) if isinstance(state, dict) else {}
    if role not in trained and len(trained) == 1:  # e.g. a stage-1 'net' loaded as the teacher
        trained = {role: next(iter(trained.values()))}
    if not config or not isinstance(trained.get(role), dict):
        return []
    theirs = trained[role]
    if theirs.get("type") != config.get("type"):
        return [f"networks.{role}.type: checkpoint {theirs.get('type')}, config {config.get('type')}"]
    from .archs import ARCH_REGISTRY
    from .registry import signature_params

    defaults = {n: p.default for n, p in signature_params(ARCH_REGISTRY.get(config["type"])).items()}
    keys = sorted((set(theirs) | set(config)) - {"type"})
    return [f"networks.{role}.{k}: checkpoint {theirs.get(k, defaults.get(k))}, config {config.get(k, defaults.get(k))}"
            for k in keys if theirs.get(k, defaults.get(k)) != config.get(k, defaults.get(k))]
