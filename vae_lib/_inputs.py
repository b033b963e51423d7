"""The one check where user data meets a model (private): ``fit``, evaluation and diagnostics use it.

``model_data`` checks the model protocol (a ``vae_lib.VAE``), then the data's rank, width and values
(finite, and in the domain of the model's likelihood: binary for a Bernoulli decoder), then the
conditioning labels of a conditional model. The values are read once, on the host, here; the maths layers
only check shapes and dtypes.
"""

from __future__ import annotations

import jax
import numpy as np

from vae_lib import _checks
from vae_lib.likelihoods import LIKELIHOODS
from vae_lib.models import VAE


def model_data(
    model,
    x,
    y=None,
    *,
    x_name: str = "x",
    y_name: str = "y",
    domain: str | None = None,
    why: str | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """Check ``model`` and its data ``x (N, D)`` (and labels ``y``); return them as JAX arrays.

    Args:
      model: must be a ``vae_lib.VAE``.
      x: data of shape ``(N, D)``, ``D`` the model's data dimension; finite, and in ``domain``.
      y: for a conditional model, integer labels ``(N,)`` or one-hot rows ``(N, C)``; else ``None``.
      x_name, y_name: the argument names used in error messages.
      domain: ``"binary"``, ``"unit"`` or ``"real"``; default: the model's likelihood's ``data``.
      why: the reason for ``domain`` given in error messages (default: the likelihood).

    Returns:
      ``(x, y)``, ``y`` as float one-hot rows ``(N, C)`` or ``None``.
    """
    if not isinstance(model, VAE):
        raise TypeError(f"model must be a vae_lib VAE (e.g. mlp_vae(...)), got {type(model).__name__}")
    x = _checks.array(x_name, x, ndim=2, finite=True)
    if model.data_dim is not None and x.shape[1] != model.data_dim:
        raise ValueError(
            f"{x_name} must have shape (N, {model.data_dim}) for this model, got {tuple(x.shape)}"
        )
    domain = domain or LIKELIHOODS[model.likelihood].data
    if domain in ("binary", "unit"):
        _checks.in_unit_interval(x_name, x, why=why or f"for a {model.likelihood} likelihood")
    if domain == "binary" and not _checks.is_binary(x):
        raise ValueError(
            f"{x_name} must be binary (0 or 1) for a {model.likelihood} decoder, whose likelihood is not "
            "defined on grey levels: binarize it once with a fixed key "
            "(vae_lib.data.binarize(jax.random.key(0), x)), or pass binarize=True to fit for training data"
        )
    if model.num_classes == 0:
        if y is not None:
            raise ValueError(f"{y_name} was given but the model is not conditional (num_classes=0)")
        return x, None
    if y is None:
        raise ValueError(
            f"the model is conditional (num_classes={model.num_classes}): pass {y_name}, its labels"
        )
    return x, _checks.labels(y_name, np.asarray(y), num_classes=model.num_classes, num_rows=x.shape[0])
