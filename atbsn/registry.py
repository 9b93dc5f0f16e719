"""Explicit registries: a YAML ``type:`` name -> a class or function.

Every entry is registered by an explicit import in the registry's package ``__init__``:
nothing scans directories, nothing imports optional dependencies.
"""
from __future__ import annotations

import collections.abc
import difflib
import inspect
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Dict, Iterable, Literal, Optional, Union

from .errors import OptionsError


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate nearest to ``name`` (case-insensitive), or None."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[match[0]] if match else None


# --------------------------------------------------------------------------- value types
@dataclass(frozen=True)
class Range:
    """A constraint on a number, declared with its option's type (``Annotated[int, Range(1)]``):
    finite, at least ``low`` (above it when ``open_low``), at most ``high``."""

    low: Optional[float] = None
    high: Optional[float] = None
    open_low: bool = False

    def admits(self, value: Any) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self, base: str) -> str:
        base = base if base == "integer" else f"finite {base}"
        if self.low is not None and self.high is not None:
            return f"{'an' if base[0] in 'aeiou' else 'a'} {base} in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{'an' if base[0] in 'aeiou' else 'a'} {base} {'>' if self.open_low else '>='} {self.low:g}"
        return f"{'an' if base[0] in 'aeiou' else 'a'} {base} <= {self.high:g}"


# The constrained types options declare; the error names the key and the allowed range.
PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, open_low=True)]
NonNegativeFloat = Annotated[float, Range(0)]
Probability = Annotated[float, Range(0, 1)]


def type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *extras = typing.get_args(tp)
        ranges = [e for e in extras if isinstance(e, Range)]
        name = {"int": "integer", "float": "number"}.get(type_name(base), type_name(base))
        return ranges[0].describe(name) if ranges else type_name(base)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> bool:
    if tp in (Any, inspect.Parameter.empty) or isinstance(tp, str) or tp is object:
        return True
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *extras = typing.get_args(tp)
        return _matches(value, base) and all(e.admits(value) for e in extras if isinstance(e, Range))
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is type(None) or tp is None:
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:  # YAML writes 3e-4 as a string unless it has a dot; accept ints too
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if origin is tuple and len(args) > 1 and Ellipsis not in typing.get_args(tp):
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if isinstance(tp, type):
        if tp.__module__.startswith("torch"):  # e.g. Tensor in torch.optim signatures: numbers suffice
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        return isinstance(value, tp)
    return True


def check_type(value: Any, tp: Any, where: str) -> None:
    if not _matches(value, tp):
        raise OptionsError(f"'{where}' must be {type_name(tp)}, got {value!r} ({type(value).__name__})")


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Callable] = {}

    def register(self, obj: Callable | None = None, *, name: str | None = None):
        """Use as ``@REG.register()``, ``@REG.register(name='x')`` or ``REG.register(obj)``."""

        def add(o: Callable) -> Callable:
            key = name or o.__name__
            if key in self._entries and self._entries[key] is not o:
                raise KeyError(f"{self.kind} '{key}' is already registered")
            self._entries[key] = o
            return o

        return add(obj) if obj is not None else add

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str, where: str = "type") -> Callable:
        if name in self._entries:
            return self._entries[name]
        near = closest(str(name), self._entries)
        hint = f"; did you mean '{near}'?" if near else ""
        raise OptionsError(
            f"{where}: unknown {self.kind} '{name}'{hint} Known {self.kind}s: {', '.join(self.names())}"
        )

    def build(self, cfg: Dict[str, Any], where: str = "", **extra) -> Any:
        """``cfg`` is ``{'type': NAME, **kwargs}``; ``extra`` are arguments the caller supplies."""
        if not isinstance(cfg, dict) or "type" not in cfg:
            raise OptionsError(f"{where or self.kind}: expected a mapping with a 'type' key, got {cfg!r}")
        kwargs = {k: v for k, v in cfg.items() if k != "type"}
        target = self.get(cfg["type"], where=f"{where}.type" if where else "type")
        check_kwargs(target, kwargs, where or self.kind, supplied=extra)
        return target(**kwargs, **extra)


def signature_params(target: Callable) -> Dict[str, inspect.Parameter]:
    fn = target.__init__ if inspect.isclass(target) else target
    params = dict(inspect.signature(fn).parameters)
    params.pop("self", None)
    return params


def type_hints(target: Callable) -> Dict[str, Any]:
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable annotations: fall back to no type check for them
        return {}


def check_kwargs(target: Callable, kwargs: Dict[str, Any], where: str, supplied: Dict[str, Any] | None = None,
                 also: Iterable[str] = ()):
    """Validate YAML kwargs against the constructor signature: it is the schema.

    ``also`` are further valid keys that the caller consumes itself (e.g. loader settings)."""
    params = signature_params(target)
    hints = type_hints(target)
    supplied = supplied or {}
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {n: p for n, p in params.items()
             if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
    allowed = [n for n in named if n not in supplied] + list(also)
    for key, value in kwargs.items():
        if key not in named or key in supplied:
            if accepts_any:
                continue
            near = closest(key, allowed)
            hint = f"; did you mean '{near}'?" if near else ""
            raise OptionsError(f"unknown key '{where}.{key}'{hint} Valid keys: {', '.join(['type'] + allowed)}")
        check_type(value, hints.get(key, named[key].annotation), f"{where}.{key}")
    for n, p in named.items():
        if p.default is inspect.Parameter.empty and n not in kwargs and n not in supplied:
            raise OptionsError(f"missing required key '{where}.{n}'")
