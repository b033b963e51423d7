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
    return ax


def image_grid(images, *, ncols: int = 10, image_shape: tuple[int, int] = (28, 28), ax=None, title: str | None = None):
    """Show ``(N, H * W)`` images in a grid of ``ncols`` columns (grey, 0 = black, 1 = white)."""
    images = np.asarray(images)
    if images.ndim != 2 or images.shape[1] != image_shape[0] * image_shape[1]:
        raise ValueError(f"images must have shape (N, {image_shape[0] * image_shape[1]}), got {images.shape}")
    ncols = _checks.positive_int("ncols", ncols)
    n = images.shape[0]
    nrows = -(-n // ncols)
    h, w = image_shape
    canvas = np.ones((nrows * (h + 1) + 1, ncols * (w + 1) + 1))
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = img.reshape(h, w)
    ax = _ax(ax)
    ax.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def latent_scatter(z, labels=None, *, ax=None, title: str = "Latent space", s: float = 4.0):
    """Scatter ``(N, 2)`` latent points, coloured by integer ``labels`` if given, with a legend."""
    z = np.asarray(z)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"z must have shape (N, 2), got {z.shape}")
    ax = _ax(ax)
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], s=s, alpha=0.5)
    else:
        labels = np.asarray(labels)
        cmap = plt.get_cmap("tab10")
        for c in np.unique(labels):
            sel = labels == c
            ax.scatter(z[sel, 0], z[sel, 1], s=s, alpha=0.6, color=cmap(int(c) % 10), label=str(c))
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
    num_points = _checks.positive_int("num_points", num_points)
    axis = np.linspace(-bound, bound, num_points)
    zz = np.array([[a, b] for b in axis[::-1] for a in axis], dtype=np.float32)
    images = np.asarray(decode_mean(zz))
    h, w = image_shape
    canvas = images.reshape(num_points, num_points, h, w).transpose(0, 2, 1, 3).reshape(num_points * h, num_points * w)
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
    """Filled contours of ``exp(log_density)`` over a 2-D box, with optional ``(N, 2)`` points on top."""
    xs = np.linspace(*xlim, num_points)
    ys = np.linspace(*ylim, num_points)
    gx, gy = np.meshgrid(xs, ys)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=-1).astype(np.float32)
    dens = np.exp(np.asarray(log_density(grid))).reshape(gx.shape)
    ax = _ax(ax)
    ax.contourf(gx, gy, dens, levels=levels, cmap="viridis")
    if points is not None:
        points = np.asarray(points)
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
    """Plot per-epoch entries of a ``fit`` history against the epoch number."""
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
