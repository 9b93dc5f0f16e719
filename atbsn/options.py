"""YAML options -> validated, fully resolved options.

* Loaded with ``yaml.safe_load``; ``_base_: other.yml`` (relative to the file) is deep-merged first.
* ``--set a.b.c=value`` overrides are parsed as YAML scalars (never eval'ed).
* Every key is checked. Fixed sections use the schema below; ``type:``-keyed sections
  (networks, model, datasets, losses, optimizers, schedulers) are checked against the signature
  of the registered class, so the constructor is the single source of truth for its options.
* Errors name the file, the dotted key path and the nearest valid key.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from typing import Annotated, Any, Dict, List, Literal, Optional, Union

import yaml

from .errors import OptionsError
from .registry import (NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability,  # noqa: F401
                       Range, check_type, closest)

# --------------------------------------------------------------------------- type checks


# --------------------------------------------------------------------------- schema


@dataclass
class Opt:
    """A leaf option: its type, default and whether it must be given."""

    tp: Any
    default: Any = None
    required: bool = False


@dataclass
class Typed:
    """A ``type:``-keyed section built from a registry; ``extra`` names further keys the caller
    consumes (``loader``: the data loader settings of ``atbsn.data.LOADER_KEYS``)."""

    registry: str
    extra: str = ""
    required: bool = False


@dataclass
class MapOf:
    """A mapping whose keys the user names (e.g. validation sets), each checked by ``spec``."""

    spec: Any
    required: bool = False



SCHEMA: Dict[str, Any] = {
    "name": Opt(str, required=True),
    "seed": Opt(int, 0),
    "device": Opt(str, "auto"),
    "model": Typed("model", required=True),
    "networks": MapOf(Typed("arch"), required=True),
    "datasets": {
        "train": Typed("dataset", extra="loader"),
        "val": MapOf(Typed("dataset", extra="loader")),
        "test": Typed("dataset", extra="loader"),
    },
    "train": {
        "total_iter": Opt(Optional[PositiveInt], None),  # required by train.py (checked there)
        "optimizer": Typed("optimizer"),
        "scheduler": Typed("scheduler"),
        "grad_clip": Opt(Optional[PositiveFloat], None),
        # auto: bf16 where it runs natively (CUDA with bf16, a CPU with AVX512-BF16/AMX), else fp32
        "amp": Opt(Optional[Literal["auto", "bf16", "fp16"]], None),
        "channels_last": Opt(bool, False),
        "compile": Opt(bool, False),
        "save_freq": Opt(PositiveInt, 5000),
        "keep_checkpoints": Opt(PositiveInt, 3),
        "deterministic": Opt(bool, True),
    },
    "val": {
        "val_freq": Opt(PositiveInt, 5000),
        "metrics": Opt(List[str], ["basicsr_rgb"]),
        "best_metric": Opt(str, "psnr"),
        "save_images": Opt(NonNegativeInt, 0),
        # inference in channels_last (weights and input): "auto" = on a CPU, where it measured 1.06-1.8x faster
        "channels_last": Opt(Union[bool, Literal["auto"]], "auto"),
        "padding": {
            "mode": Opt(Literal["reflect", "replicate", "constant"], "reflect"),
            "square": Opt(bool, False),
        },
        "tile": {
            "size": Opt(Optional[PositiveInt], None),
            "overlap": Opt(Optional[NonNegativeInt], None),  # None: twice the receptive radius (blend: half the tile)
            "blend": Opt(bool, False),  # cross-fade full-size tiles (for nets that know only their crop size)
            "memory_limit_gb": Opt(Optional[PositiveFloat], None),  # untiled above this: tile anyway (None: RAM / 2)
        },
        # full: the network's output; adaptive: kept only as far as each photo's own noise explains it
        # (atbsn/strength.py), with a per-image estimate of the gain
        "strength": {
            "mode": Opt(Literal["full", "adaptive"], "full"),
            "window": Opt(PositiveInt, 7),
            "min_gain_db": Opt(float, 0.0),  # below this estimated gain the input is written unchanged
            # the shrinkage fades out from mild_sigma to heavy_sigma (estimated noise, 8-bit levels)
            "mild_sigma": Opt(NonNegativeFloat, 8.0),
            "heavy_sigma": Opt(NonNegativeFloat, 14.0),
            "classical_mix": Opt(Probability, 0.0),  # weight of NL-means in mild-noise outputs
            "nlm_strength": Opt(PositiveFloat, 1.25),  # NL-means h = nlm_strength x estimated sigma
            # > 0: NL-means averaged with its DCT-domain Wiener refinement at sigma x wiener_refine
            "wiener_refine": Opt(NonNegativeFloat, 0.0),
        },
    },
    "test": {
        "bit_depth": Opt(Literal["same", 8, 16], "same"),
        "suffix": Opt(str, ""),
        "format": Opt(Literal["png", "jpg", "tif", "same"], "png"),  # same: the input's own format
        "jpeg_quality": Opt(Annotated[int, Range(1, 100)], 95),
        "skip_existing": Opt(bool, False),  # inputs whose output exists are skipped (rerun what is missing)
    },
    "logger": {
        "print_freq": Opt(PositiveInt, 100),
        "use_tensorboard": Opt(bool, True),
        "progress_bar": Opt(Literal["auto", "always", "never"], "auto"),
    },
    "path": {
        "experiments_root": Opt(str, "experiments"),
        "results_root": Opt(str, "results"),
        "pretrain_network": Opt(Optional[Union[str, Dict[str, str]]], None),
        "strict_load": Opt(bool, True),
    },
    "dist": {
        "backend": Opt(Optional[str], None),
        "timeout_s": Opt(PositiveInt, 1800),
        # after a checkpoint on SIGTERM/SIGINT/SIGUSR1: scontrol requeue $SLURM_JOB_ID (rank 0)
        "slurm_requeue": Opt(bool, False),
    },
}


def _registry(kind: str):
    """Registries are imported on use, so loading options stays light."""
    if kind == "arch":
        from .archs import ARCH_REGISTRY as r
    elif kind == "model":
        from .models import MODEL_REGISTRY as r
    elif kind == "dataset":
        from .data import DATASET_REGISTRY as r
    elif kind == "loss":
        from .losses import LOSS_REGISTRY as r
    elif kind in ("optimizer", "scheduler"):
        from .train.optim import OPTIMIZER_REGISTRY, SCHEDULER_REGISTRY

        r = OPTIMIZER_REGISTRY if kind == "optimizer" else SCHEDULER_REGISTRY
    else:
        raise KeyError(kind)
    return r


def _extra_keys(name: str) -> Dict[str, tuple]:
    if not name:
        return {}
    if name == "loader":
        from .data import LOADER_KEYS

        return LOADER_KEYS
    raise KeyError(name)


# Arguments the framework itself passes when it builds each kind (not user options).
SUPPLIED = {"model": ("networks",), "optimizer": ("params",), "scheduler": ("optimizer", "total_iter")}


def _unknown(where: str, key: str, valid: List[str]) -> OptionsError:
    near = closest(key, valid)
    hint = f"; did you mean '{near}'?" if near else ""
    path = f"{where}.{key}" if where else key
    return OptionsError(f"unknown key '{path}'{hint} Valid keys here: {', '.join(sorted(valid))}")


def _validate(value: Any, spec: Any, where: str) -> Any:
    from .registry import check_kwargs

    if isinstance(spec, Opt):
        check_type(value, spec.tp, where)
        return value
    if isinstance(spec, dict):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise OptionsError(f"'{where}' must be a mapping, got {value!r}")
        out = {}
        for key, sub in value.items():
            if key not in spec:
                raise _unknown(where, str(key), list(spec))
            out[key] = _validate(sub, spec[key], f"{where}.{key}" if where else key)
        for key, sub in spec.items():
            if key in out:
                continue
            path = f"{where}.{key}" if where else key
            if getattr(sub, "required", False):
                raise OptionsError(f"missing required key '{path}'")
            if isinstance(sub, Opt):
                out[key] = copy.deepcopy(sub.default)
            elif isinstance(sub, dict):
                out[key] = _validate({}, sub, path)
            elif isinstance(sub, Typed):
                out[key] = None
            elif isinstance(sub, MapOf):
                out[key] = {}
        return out
    if value is None and isinstance(spec, (MapOf, Typed)) and not spec.required:
        return None
    if isinstance(spec, MapOf):
        if not isinstance(value, dict):
            raise OptionsError(f"'{where}' must be a mapping of name -> section, got {value!r}")
        # A named entry set to null is dropped: e.g. ``--set datasets.val.set14=null`` skips that set.
        return {k: _validate(v, spec.spec, f"{where}.{k}") for k, v in value.items() if v is not None}
    if isinstance(spec, Typed):
        if not isinstance(value, dict) or "type" not in value:
            raise OptionsError(f"'{where}' must be a mapping with a 'type' key, got {value!r}")
        registry = _registry(spec.registry)
        target = registry.get(value["type"], where=f"{where}.type")
        out = dict(value)
        extra = _extra_keys(spec.extra)
        for key, (tp, default) in extra.items():
            if key in out:
                check_type(out[key], tp, f"{where}.{key}")
            else:
                out[key] = copy.deepcopy(default)
        kwargs = {k: v for k, v in value.items() if k != "type" and k not in extra}
        supplied = {n: None for n in SUPPLIED.get(spec.registry, ())}
        check_kwargs(target, kwargs, where, supplied=supplied, also=extra)
        return out
    raise TypeError(spec)


def strength_settings(value: Optional[dict]) -> Dict[str, Any]:
    """``val.strength`` checked and completed with its defaults (for the Python API)."""
    return _validate(value or {}, SCHEMA["val"]["strength"], "val.strength")


# --------------------------------------------------------------------------- loading


def _deep_merge(base: Dict, over: Dict) -> Dict:
    """Merge ``over`` into ``base``; a mapping with ``_replace_: true`` replaces instead of merging."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and v.get("_replace_", False):
            out[k] = _deep_merge({}, {kk: vv for kk, vv in v.items() if kk != "_replace_"})
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``3e-4`` as a float (YAML 1.1 needs ``3.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def safe_load(text):
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no object construction


def load_yaml(path: str, _seen: tuple = ()) -> Dict[str, Any]:
    path = os.path.abspath(path)
    if path in _seen:
        raise OptionsError(f"{path}: '_base_' inheritance loops back to itself")
    if not os.path.isfile(path):
        raise OptionsError(f"options file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = safe_load(f)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise OptionsError(f"{path}: malformed YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise OptionsError(f"{path}: the top level must be a mapping of option names, got {type(data).__name__}")
    base = data.pop("_base_", None)
    if base is not None:
        bases = base if isinstance(base, list) else [base]
        merged: Dict[str, Any] = {}
        for b in bases:
            merged = _deep_merge(merged, load_yaml(os.path.join(os.path.dirname(path), b), _seen + (path,)))
        data = _deep_merge(merged, data)
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise OptionsError(f"--set '{item}': expected KEY=VALUE, e.g. train.total_iter=2000")
    key, raw = item.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise OptionsError(f"--set '{item}': empty key in '{key}'")
    try:
        value = safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return keys, value


def apply_overrides(opt: Dict[str, Any], items: List[str]) -> Dict[str, Any]:
    opt = copy.deepcopy(opt)
    for item in items or []:
        keys, value = parse_override(item)
        node = opt
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise OptionsError(f"--set '{item}': '{'.'.join(keys[: i + 1])}' is not a section")
            node = nxt
        node[keys[-1]] = value
    return opt


def validate(opt: Dict[str, Any], source: str = "<options>") -> Dict[str, Any]:
    try:
        out = _validate(opt, SCHEMA, "")
    except OptionsError as err:
        raise OptionsError(f"{source}: {err}") from None
    return out


def load_options(path: str, overrides: Optional[List[str]] = None) -> Dict[str, Any]:
    """Load, merge ``_base_``, apply ``--set`` overrides and validate."""
    own = load_yaml(path)
    raw = apply_overrides(own, overrides or [])
    try:
        opt = validate(raw, source=path)
    except OptionsError as merged:
        if not overrides:
            raise
        try:  # the file alone validates or fails differently: the fault is in --set
            validate(own, source=path)
            blame = True
        except OptionsError as alone:
            blame = str(alone) != str(merged)
        if not blame:
            raise
        inner = str(merged)[len(path) + 2:]
        named = [o for o in overrides if o.split("=", 1)[0].strip() in inner] or overrides
        raise OptionsError(f"--set {' '.join(named)}: {inner}") from None
    opt["_source"] = os.path.abspath(path)
    return opt


def dump_options(opt: Dict[str, Any]) -> str:
    return yaml.safe_dump({k: v for k, v in opt.items() if not k.startswith("_")}, sort_keys=False)
