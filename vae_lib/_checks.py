"""Input checks shared by the public functions (private).

Each check raises a ``ValueError`` or ``TypeError`` whose message names the argument, what was expected
and what was given. Two kinds:

- static checks (types, shapes, dtypes, hyper-parameters): they read no array values, cost nothing and
  behave the same eagerly and under ``jax.jit``; the maths layers (distributions, objectives) use only
  these, so a function gives the same answer eagerly and jitted, also on bad values;
- value checks (``finite``, ``in_domain``, ``labels``): they read the data once, on the host, where user
  data enters the library: ``fit``, the evaluation functions, the data loaders, the checkpoint reader
  (through ``vae_lib._inputs.model_data`` for everything that takes a model and data).

Dtype rule for arrays that must hold real numbers (``floating=True``, the default): the array (NumPy, JAX,
or a nested list, converted with ``np.asarray``) must have a floating dtype; integer and boolean arrays
raise ``TypeError`` whatever their origin, so a uint8 image or a 0/1 integer mask is never silently taken
for data. A bare Python ``int`` or ``float`` scalar is accepted (as JAX treats it: weakly typed).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def array(
    name: str,
    x,
    *,
    ndim: int | Sequence[int] | None = None,
    min_ndim: int | None = None,
    floating: bool = True,
    finite: bool = False,
) -> jax.Array:
    """Check an array argument statically and return it as a JAX array (see the module docstring for dtypes).

    ``finite=True`` adds the value check ``finite`` (for the edges only)."""
    if x is None or isinstance(x, (str, bytes, dict, set)) or callable(x) and not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    if isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)) and not hasattr(x, "dtype"):
        x = np.asarray(x, dtype=np.float32 if floating else None)  # a Python scalar: weakly typed
    if not hasattr(x, "dtype"):
        try:
            x = np.asarray(x)
        except Exception as e:
            raise TypeError(f"{name} must be an array, got {type(x).__name__} (not convertible)") from e
        if x.dtype == object:
            raise TypeError(f"{name} must be a numeric array, got an object array (ragged or mixed input?)")
    dtype = x.dtype
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        raise TypeError(f"{name} must be a numeric array, got a PRNG key array (dtype {dtype})")
    if floating and not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a floating dtype (float32 or float64), got {dtype}; "
            f"convert it with {name}.astype('float32') (and scale pixels to [0, 1] if they are 0-255)"
        )
    if not floating and not (jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)):
        raise TypeError(f"{name} must be a numeric array, got dtype {dtype}")
    shape = tuple(x.shape)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if len(shape) not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have rank {want}, got shape {shape} (rank {len(shape)})")
    if min_ndim is not None and len(shape) < min_ndim:
        raise ValueError(f"{name} must have rank >= {min_ndim}, got shape {shape}")
    if any(s == 0 for s in shape):
        raise ValueError(f"{name} must not be empty, got shape {shape}")
    if finite:
        check_finite(name, x)
        check_fits_float32(name, x)
    return jnp.asarray(x)


def check_fits_float32(name: str, x) -> None:
    """Value check: a wider float array that JAX will compute in float32 (``jax_enable_x64`` off) holds no
    value beyond float32's range, where it would become ``inf`` on conversion."""
    a = np.asarray(x)
    if jax.config.jax_enable_x64 or not np.issubdtype(a.dtype, np.floating) or a.dtype.itemsize <= 4:
        return
    top, limit = float(np.max(np.abs(a))), float(np.finfo(np.float32).max)
    if top > limit:
        raise ValueError(
            f"{name} must fit in float32, in which JAX computes here (jax_enable_x64 is off): it holds "
            f"|values| up to {top:.3g} > {limit:.3g}, which would become inf; rescale it"
        )


def check_finite(name: str, x) -> None:
    """Value check: every entry of a floating array is finite."""
    a = np.asarray(x)
    if np.issubdtype(a.dtype, np.inexact):
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            raise ValueError(f"{name} must be finite, got {bad} NaN or infinite value(s) of {a.size}")


def event_arrays(*, equal_shapes: bool = False, **arrays) -> tuple[jax.Array, ...]:
    """Static checks of a density's or divergence's arrays, given by name, the values first.

    Every array must have a floating dtype; the first has rank >= 1 and its last axis is the event axis.
    The others must be scalars or have that event axis exactly, and all must broadcast together; with
    ``equal_shapes=True`` they must all have the first's shape. Returns them as JAX arrays, in order.
    """
    names = tuple(arrays)
    checked = tuple(
        array(name, a, min_ndim=1 if i == 0 else None) for i, (name, a) in enumerate(arrays.items())
    )
    if equal_shapes:
        same_shape(names, *checked)
    broadcastable(names, *checked)
    same_event(names[0], checked[0], **dict(zip(names[1:], checked[1:], strict=True)))
    return checked


def same_event(x_name: str, x, **params) -> None:
    """Check that each parameter is a scalar or has ``x``'s event (last) axis exactly (no broadcasting of
    a size-1 event axis: a ``(N, 1)`` output against 784 pixels is a bug, not a broadcast)."""
    d = x.shape[-1]
    for name, p in params.items():
        if p.ndim and p.shape[-1] != d:
            raise ValueError(
                f"{name} must have the event (last) axis of {x_name}, {d}, got shape {tuple(p.shape)} "
                f"against {x_name} {tuple(x.shape)}"
            )


def same_shape(names: Sequence[str], *xs) -> None:
    """Check that arrays have the same shape."""
    shapes = [tuple(x.shape) for x in xs]
    if len(set(shapes)) > 1:
        given = ", ".join(f"{n} {s}" for n, s in zip(names, shapes, strict=True))
        raise ValueError(f"{' and '.join(names)} must have the same shape, got {given}")


def broadcastable(names: Sequence[str], *xs) -> None:
    """Check that arrays broadcast together (NumPy rules)."""
    shapes = [tuple(x.shape) for x in xs]
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        given = ", ".join(f"{n} {s}" for n, s in zip(names, shapes, strict=True))
        raise ValueError(f"{', '.join(names)} must have broadcastable shapes, got {given}") from None


def same_batch(names: Sequence[str], *xs) -> None:
    """Check that arrays agree on their leading (batch) dimension."""
    sizes = [x.shape[0] for x in xs]
    if len(set(sizes)) > 1:
        given = ", ".join(f"{n} has {s}" for n, s in zip(names, sizes, strict=True))
        raise ValueError(f"{' and '.join(names)} must have the same batch size, got {given}")


def in_unit_interval(name: str, x, *, why: str = "for a Bernoulli likelihood") -> None:
    """Value check: 0 <= x <= 1 (Bernoulli targets or probabilities)."""
    a = np.asarray(x)
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{name} must lie in [0, 1] {why}, got values in [{lo:g}, {hi:g}]; "
            "scale the data to [0, 1] (for pixels, divide by 255)"
        )


def positive_int(name: str, n, *, minimum: int = 1) -> int:
    """Check an integer size argument (``n >= minimum``)."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(n).__name__} {n!r}")
    if n < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {n}")
    return int(n)


def seed(name: str, s) -> int:
    """Check a seed for ``np.random.default_rng`` (an int >= 0)."""
    return positive_int(name, s, minimum=0)


def int_sequence(name: str, ns, *, allow_empty: bool = True) -> tuple[int, ...]:
    """Check a sequence of positive layer sizes (a single int is one layer)."""
    if isinstance(ns, numbers.Integral) and not isinstance(ns, (bool, np.bool_)):
        ns = (ns,)
    if not isinstance(ns, Sequence) or isinstance(ns, str):
        raise TypeError(f"{name} must be a sequence of positive ints, got {type(ns).__name__}")
    if not allow_empty and len(ns) == 0:
        raise ValueError(f"{name} must have at least one entry, got an empty sequence")
    return tuple(positive_int(f"{name}[{i}]", n) for i, n in enumerate(ns))


def real(name: str, v, *, minimum: float | None = None, strict: bool = False) -> float:
    """Check a real scalar hyper-parameter, optionally bounded below."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if minimum is not None:
        if strict and not v > minimum:
            raise ValueError(f"{name} must be > {minimum:g}, got {v:g}")
        if not strict and not v >= minimum:
            raise ValueError(f"{name} must be >= {minimum:g}, got {v:g}")
    return v


def real_or_scalar_array(name: str, v, *, minimum: float | None = None):
    """A real hyper-parameter: a Python number (checked as by ``real``) or a scalar floating array, such as
    a schedule's value inside a compiled training step (shape and dtype checked only)."""
    if hasattr(v, "dtype") and not isinstance(v, numbers.Real):
        if tuple(v.shape) != () or not jnp.issubdtype(v.dtype, jnp.floating):
            raise TypeError(f"{name} must be a real number or a scalar float array, got {v.dtype} {v.shape}")
        return v
    return real(name, v, minimum=minimum)


def boolean(name: str, v) -> bool:
    """Check a flag (``True`` or ``False``; a truthy string like ``"no"`` is refused)."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(v).__name__} {v!r}")
    return bool(v)


def function(name: str, f) -> Callable:
    """Check a callable argument."""
    if not callable(f):
        raise TypeError(f"{name} must be callable, got {type(f).__name__} {f!r:.60}")
    return f


def path(name: str, p) -> str | os.PathLike:
    """Check a file or folder path (``str`` or ``os.PathLike``)."""
    if not isinstance(p, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(p).__name__} {p!r:.60}")
    if isinstance(p, str) and not p:
        raise ValueError(f"{name} must be a non-empty path, got ''")
    return p


def choice(name: str, value, options: Sequence) -> None:
    """Check that ``value`` is one of ``options``."""
    try:
        ok = value in options
    except TypeError:  # unhashable value
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {', '.join(repr(o) for o in options)}; got {value!r}")


def key(name: str, k) -> jax.Array:
    """Check a JAX PRNG key (typed or raw uint32[2])."""
    if isinstance(k, numbers.Integral):
        raise TypeError(f"{name} must be a JAX PRNG key, got the int {k}; use jax.random.key({k})")
    if not hasattr(k, "dtype"):
        raise TypeError(f"{name} must be a JAX PRNG key (jax.random.key(seed)), got {type(k).__name__}")
    if jnp.issubdtype(k.dtype, jax.dtypes.prng_key):
        if k.ndim != 0:
            raise ValueError(f"{name} must be a single PRNG key, got a key array of shape {k.shape}")
        return k
    if k.dtype == jnp.uint32 and k.shape == (2,):
        return k
    raise TypeError(
        f"{name} must be a JAX PRNG key (jax.random.key(seed)), got dtype {k.dtype} shape {k.shape}"
    )


def is_binary(x) -> bool:
    """Whether every entry of a concrete array is exactly 0 or 1."""
    a = np.asarray(x)
    return bool(np.all((a == 0) | (a == 1)))


def labels(name: str, y, *, num_classes: int, num_rows: int) -> jax.Array:
    """Value check of conditioning labels: integer class labels ``(N,)`` in ``[0, num_classes)`` become
    one-hot rows; a float array must be ``(N, num_classes)`` and finite (one-hot or soft labels).

    Returns:
      float32 one-hot (or given) labels of shape ``(num_rows, num_classes)``.
    """
    if y is None or not hasattr(y, "dtype") and not isinstance(y, (list, tuple)):
        raise TypeError(
            f"{name} must be labels (an int array (N,) or one-hot rows (N, C)), got {type(y).__name__}"
        )
    a = np.asarray(y)
    if np.issubdtype(a.dtype, np.integer):
        if a.shape != (num_rows,):
            raise ValueError(f"{name} must have shape ({num_rows},) (one label per row), got {a.shape}")
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name} must hold class labels in [0, {num_classes}), got values in [{lo}, {hi}]"
            )
        return jax.nn.one_hot(a, num_classes, dtype=jnp.float32)
    y = array(name, a, ndim=2, finite=True)
    if y.shape != (num_rows, num_classes):
        raise ValueError(
            f"{name} must have shape ({num_rows}, {num_classes}) (one-hot rows), got {tuple(y.shape)}"
        )
    return y


def image_shape(name: str, shape) -> tuple[int, int, int]:
    """Check an image shape ``(height, width, channels)`` of positive ints."""
    if not isinstance(shape, Sequence) or isinstance(shape, str) or len(shape) != 3:
        raise ValueError(f"{name} must be (height, width, channels), three positive ints; got {shape!r}")
    return tuple(positive_int(f"{name}[{i}]", s) for i, s in enumerate(shape))
