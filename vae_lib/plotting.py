"""Plotting (at the edge of the library): image grids, latent spaces, densities, training curves.

Each function draws on a Matplotlib ``ax`` (created if not given) and returns it, so a notebook can
combine panels with ``fig, axes = plt.subplots(...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np

from vae_lib import _checks


def _ax(ax):
    if ax is None:
        _, ax = plt.subplots()
    elif not isinstance(ax, plt.Axes):
        raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    return ax


def _hw(name: str, shape) -> tuple[int, int]:
    if isinstance(shape, str) or np.shape(shape) != (2,):
        raise ValueError(f"{name} must be (height, width), two positive ints; got {shape!r}")
    return _checks.positive_int(f"{name}[0]", shape[0]), _checks.positive_int(f"{name}[1]", shape[1])


def _limits(name: str, lim) -> tuple[float, float]:
    if isinstance(lim, str) or np.shape(lim) != (2,):
        raise ValueError(f"{name} must be a pair (low, high), got {lim!r}")
    lo, hi = (_checks.real(f"{name}[{i}]", v.item() if hasattr(v, "item") else v) for i, v in enumerate(lim))
    if not lo < hi:
        raise ValueError(f"{name} must have low < high, got {lim!r}")
    return lo, hi


def image_grid(
    images, *, ncols: int = 10, image_shape: tuple[int, int] = (28, 28), ax=None, title: str | None = None
):
    """Show ``(N, H * W)`` images in a grid of ``ncols`` columns (grey, 0 = black, 1 = white)."""
    h, w = _hw("image_shape", image_shape)
    images = np.asarray(_checks.array("images", images, ndim=2, finite=False))
    if images.shape[1] != h * w:
        raise ValueError(f"images must have shape (N, {image_shape[0] * image_shape[1]}), got {images.shape}")
    ncols = _checks.positive_int("ncols", ncols)
    n = images.shape[0]
    nrows = -(-n // ncols)
    canvas = np.ones((nrows * (h + 1) + 1, ncols * (w + 1) + 1))
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = img.reshape(
            h, w
        )
    ax = _ax(ax)
    ax.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def latent_scatter(z, labels=None, *, ax=None, title: str = "Latent space", s: float = 4.0):
    """Scatter ``(N, 2)`` latent points, coloured by ``labels`` if given, with a legend.

    Integer labels ``c`` get colour ``c % 10`` of ``tab10``; other labels (strings, ...) the colours in the
    order of their sorted values."""
    z = np.asarray(_checks.array("z", z, ndim=2, finite=False))
    if z.shape[1] != 2:
        raise ValueError(f"z must have shape (N, 2), got {z.shape}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (z.shape[0],):
            raise ValueError(f"labels must have shape ({z.shape[0]},) like z's rows, got {labels.shape}")
    ax = _ax(ax)
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], s=s, alpha=0.5)
    else:
        cmap = plt.get_cmap("tab10")
        integer = np.issubdtype(labels.dtype, np.integer)
        for i, c in enumerate(np.unique(labels)):
            sel = labels == c
            color = cmap((int(c) if integer else i) % 10)
            ax.scatter(z[sel, 0], z[sel, 1], s=s, alpha=0.6, color=color, label=str(c))
        ax.legend(markerscale=3, fontsize="small", title="label", loc="upper right", framealpha=0.8)
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")
    return ax


def decoded_manifold(
    decode_mean: Callable[[np.ndarray], np.ndarray],
    *,
    num_points: int = 15,
    bound: float = 2.0,
    image_shape: tuple[int, int] = (28, 28),
    ax=None,
    title: str = "Decoded latent grid",
):
    """Decode a ``num_points x num_points`` grid over ``[-bound, bound]^2`` and tile the images.

    ``decode_mean`` maps ``(G, 2)`` latents to ``(G, H * W)`` images in [0, 1] (e.g. ``E[x|z]``). Row 0 of
    the tiling is the top of the plot, at ``z_2 = +bound``.
    """
    _checks.function("decode_mean", decode_mean)
    num_points = _checks.positive_int("num_points", num_points)
    bound = _checks.real("bound", bound, minimum=0.0, strict=True)
    h, w = _hw("image_shape", image_shape)
    axis = np.linspace(-bound, bound, num_points)
    zz = np.array([[a, b] for b in axis[::-1] for a in axis], dtype=np.float32)
    images = np.asarray(decode_mean(zz))
    if images.size != num_points**2 * h * w:
        raise ValueError(
            f"decode_mean must map ({num_points**2}, 2) latents to ({num_points**2}, {h * w}) images, "
            f"returned shape {images.shape}"
        )
    canvas = (
        images.reshape(num_points, num_points, h, w)
        .transpose(0, 2, 1, 3)
        .reshape(num_points * h, num_points * w)
    )
    ax = _ax(ax)
    ax.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0, extent=(-bound, bound, -bound, bound))
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title(title)
    return ax


def density_contours(
    log_density: Callable[[np.ndarray], np.ndarray],
    *,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    num_points: int = 100,
    points=None,
    ax=None,
    title: str = "Density",
    levels: int = 10,
):
    """Filled contours of ``exp(log_density)`` over a 2-D box, with optional ``(N, 2)`` points on top.

    ``log_density`` maps ``(G, 2)`` points to ``(G,)`` log-densities.
    """
    _checks.function("log_density", log_density)
    xlim, ylim = _limits("xlim", xlim), _limits("ylim", ylim)
    num_points = _checks.positive_int("num_points", num_points, minimum=2)
    if points is not None:
        points = np.asarray(_checks.array("points", points, ndim=2, finite=False))
        if points.shape[1] != 2:
            raise ValueError(f"points must have shape (N, 2), got {points.shape}")
    xs = np.linspace(*xlim, num_points)
    ys = np.linspace(*ylim, num_points)
    gx, gy = np.meshgrid(xs, ys)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=-1).astype(np.float32)
    logp = np.asarray(log_density(grid))
    if logp.size != grid.shape[0]:
        raise ValueError(
            f"log_density must map ({grid.shape[0]}, 2) points to shape ({grid.shape[0]},), "
            f"returned {logp.shape}"
        )
    dens = np.exp(logp).reshape(gx.shape)
    ax = _ax(ax)
    ax.contourf(gx, gy, dens, levels=levels, cmap="viridis")
    if points is not None:
        ax.scatter(points[:, 0], points[:, 1], s=2, color="white", alpha=0.4)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(title)
    return ax


def training_curves(
    history: dict[str, Sequence[float]],
    *,
    keys: Sequence[str] = ("train_elbo", "test_elbo"),
    ax=None,
    title: str = "Training curves",
    ylabel: str = "ELBO (nats per example)",
):
    """Plot per-epoch entries of a ``fit`` history against the epoch number (``keys``: a name or several)."""
    if not isinstance(history, dict) or "epoch" not in history:
        got = sorted(history) if isinstance(history, dict) else type(history).__name__
        raise ValueError(f"history must be the dict returned by fit, with an 'epoch' entry; got {got}")
    if isinstance(keys, str):
        keys = (keys,)
    ax = _ax(ax)
    for k in keys:
        if k not in history:
            raise ValueError(f"history has no entry {k!r}; it has {sorted(history)}")
        ax.plot(history["epoch"], history[k], label=k.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return ax
