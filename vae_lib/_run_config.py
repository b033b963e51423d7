"""A training run's configuration as JSON, stored in ``fit``'s checkpoints and compared on resume (private).

``describe`` turns a setting into a canonical, process-independent string: numbers and strings as their
``repr``; functions by module and qualified name (looking through ``jax.jit``, ``custom_jvp`` and
``functools.partial``) followed by the numbers captured in their closures, so that ``optax.adam(1e-3)``
and ``optax.adam(3e-3)``, or ``adam`` and ``adamw``, differ. A model is described by its modules and their
static attributes (sizes, activations, likelihood); its array shapes are checked by the checkpoint reader.
Data are fingerprinted by a SHA-256 of their shape, dtype and bytes. Anything else (an arbitrary object
in a closure) is described by its type only, and large arrays by shape, dtype and digest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import numbers
import types
from typing import Any

import jax
import numpy as np
from flax import nnx

_MAX_DEPTH = 8
_MAX_ITEMS = 64


def _callable_name(f) -> str:
    """``module.qualname`` of a function, looking through jit, custom derivatives and partials."""
    for _ in range(_MAX_DEPTH):
        inner = getattr(f, "fun", None) or getattr(f, "__wrapped__", None)
        if inner is None or inner is f:
            break
        f = inner
    if isinstance(f, functools.partial):
        return f"partial({_callable_name(f.func)})"
    module = getattr(f, "__module__", None) or ""
    name = getattr(f, "__qualname__", None) or type(f).__qualname__
    if "<lambda>" in name or "<locals>" in name:  # not unique by name: add a digest of its code
        code = getattr(f, "__code__", None)
        if code is not None:
            name += f"#{_code_digest(code)}"
    return f"{module}.{name}" if module else name


def _code_digest(code: types.CodeType) -> str:
    """A digest of a function's bytecode and constants that is the same in every Python process.

    (The ``repr`` of a nested code object holds its memory address, and a frozenset's order depends on
    the process's hash seed, so both are replaced by stable forms.)
    """

    def stable(c):
        if isinstance(c, types.CodeType):
            return f"code:{c.co_name}:{_code_digest(c)}"
        if isinstance(c, frozenset):
            return "frozenset" + repr(sorted(repr(a) for a in c))
        if isinstance(c, tuple):
            return tuple(stable(a) for a in c)
        return c

    return hashlib.sha256(code.co_code + repr(stable(code.co_consts)).encode()).hexdigest()[:8]


def _unwrap(f):
    for _ in range(_MAX_DEPTH):
        inner = getattr(f, "fun", None) or getattr(f, "__wrapped__", None)
        if inner is None or inner is f:
            return f
        f = inner
    return f


def describe(v: Any, depth: int = 0) -> str:
    """A canonical string for a setting (see the module docstring)."""
    if depth > _MAX_DEPTH:
        return "..."
    if v is None or isinstance(v, (bool, np.bool_, str)):
        return repr(v if not isinstance(v, np.bool_) else bool(v))
    if isinstance(v, numbers.Number):
        return (
            repr(float(v)) if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral) else repr(v)
        )
    if isinstance(v, np.dtype):
        return str(v)
    if isinstance(v, type):
        return f"{v.__module__}.{v.__qualname__}"
    if hasattr(v, "shape") and hasattr(v, "dtype"):  # an array: small ones by value, others by shape
        a = np.asarray(jax.random.key_data(v) if jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key) else v)
        if a.size <= 16:
            return f"array({a.tolist()!r}, {a.dtype})"
        return f"array(shape={a.shape}, dtype={a.dtype}, sha256={fingerprint(a)})"
    if isinstance(v, tuple) and hasattr(v, "_fields"):  # NamedTuples such as optax transformations
        return f"{type(v).__name__}({describe(tuple(v), depth + 1)})"
    if isinstance(v, (tuple, list)):
        items = [describe(a, depth + 1) for a in list(v)[:_MAX_ITEMS]]
        return f"{type(v).__name__}({', '.join(items)})"
    if isinstance(v, dict):
        items = [f"{k!s}: {describe(a, depth + 1)}" for k, a in list(sorted(v.items(), key=str))[:_MAX_ITEMS]]
        return "{" + ", ".join(items) + "}"
    if callable(v):
        return _describe_function(v, depth)
    return type(v).__qualname__


def _describe_function(f, depth: int) -> str:
    name = _callable_name(f)
    if isinstance(f, functools.partial):
        args = [describe(a, depth + 1) for a in f.args] + [
            f"{k}={describe(a, depth + 1)}" for k, a in sorted(f.keywords.items())
        ]
        return f"{name}({', '.join(args)})"
    g = _unwrap(f)
    code, closure = getattr(g, "__code__", None), getattr(g, "__closure__", None)
    parts = []
    if code is not None and closure:
        for var, cell in zip(code.co_freevars, closure, strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            parts.append(f"{var}={describe(value, depth + 1)}")
    defaults = getattr(g, "__defaults__", None)
    if defaults:
        parts.append(f"defaults={describe(tuple(defaults), depth + 1)}")
    return f"{name}({', '.join(parts)})" if parts else name


def model_description(model) -> str:
    """Each module of ``model`` (by path) with its type and static attributes (activations, sizes, ...)."""
    lines = []
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Module):
            continue
        attrs = []
        for name, v in sorted(vars(node).items()):
            if name.startswith("_") or isinstance(v, (nnx.Module, nnx.Variable)):
                continue
            if isinstance(v, (list, tuple)) and any(isinstance(a, (nnx.Module, nnx.Variable)) for a in v):
                continue
            if type(v).__name__ in ("List", "Dict", "Sequential"):  # nnx containers: their items are nodes
                continue
            attrs.append(f"{name}={describe(v)}")
        where = "/".join(str(p) for p in path) or "."
        lines.append(f"{where}: {type(node).__qualname__}({', '.join(attrs)})")
    return "\n".join(lines)


def fingerprint(a) -> str:
    """SHA-256 (first 16 hex digits) of an array's shape, dtype and bytes; ``None`` stays ``None``."""
    if a is None:
        return None
    a = np.ascontiguousarray(np.asarray(a))
    h = hashlib.sha256(f"{a.shape}|{a.dtype}|".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


def normalized(config: dict) -> dict:
    """``config`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(config))


def differences(stored: dict, given: dict) -> list[str]:
    """One line per differing setting: ``name: stored ..., given ...`` (of a long text, where it differs)."""
    lines = []
    for name in sorted(set(stored) | set(given)):
        a, b = stored.get(name, "<not stored>"), given.get(name, "<not given>")
        if a == b:
            continue
        if (
            isinstance(a, str) and isinstance(b, str) and ("\n" in a or "\n" in b)
        ):  # the first line that differs
            la, lb = a.splitlines(), b.splitlines()
            i = next(
                (i for i, (p, q) in enumerate(zip(la, lb, strict=False)) if p != q), min(len(la), len(lb))
            )
            a, b = (lines[i] if i < len(lines) else "<no line>" for lines in (la, lb))
        if isinstance(a, str) and isinstance(b, str) and max(len(a), len(b)) > 120:
            i = next((i for i, (p, q) in enumerate(zip(a, b, strict=False)) if p != q), min(len(a), len(b)))
            start = max(0, i - 60)
            a, b = ("..." + t[start : i + 60] + ("..." if len(t) > i + 60 else "") for t in (a, b))
        lines.append(f"{name}: stored {_short(a)}, given {_short(b)}")
    return lines


def _short(v, limit: int = 200) -> str:
    s = repr(v) if isinstance(v, str) else json.dumps(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."
