"""Sample-quality metrics for digit generators (layer 4): a small digit classifier, the Fréchet distance
in its feature space, and k-nearest-neighbour precision and recall.

A log-likelihood scores a model on held-out data; it does not say whether the model's *samples* look like
the data, and a GAN has no likelihood at all. These tools score samples instead, all in the feature space of
a classifier trained on real digits:

- ``train_digit_classifier``: a two-convolution network trained with Optax on given digits, each batch
  moved by ``random_affine`` (about 98% on the 1,000 held-out digits of ``load_mnist5k`` at the
  defaults), and ``classify``, which returns its features and logits for a batch of images.
- ``frechet_distance``: the Fréchet distance (the squared 2-Wasserstein distance) between Gaussians
  fitted to two feature sets (Heusel et al., 2017, with the Inception network replaced by this
  classifier, so the numbers are not FIDs and are comparable only with each other);
  ``gaussian_frechet_distance`` from the moments.
- ``precision_recall``: the share of samples that fall inside the real data's k-nearest-neighbour balls
  (precision: quality) and the share of real data inside the samples' balls (recall: diversity), as
  defined by Kynkäänniemi et al. (2019), with ``knn_radii`` for the balls.

The distances are computed in NumPy float64 on the host: they are evaluated once per feature set, and the
Fréchet distance subtracts traces of similar size, which float32 would round away.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vae_lib import _checks, _cpu_conv

NUM_CLASSES = 10


class DigitClassifier(nnx.Module):
    """A small convolutional classifier of 28x28 digits given as 784-vectors in [0, 1].

    Two stride-2 convolutions (5x5 to ``channels[0]``, 3x3 to ``channels[1]``; 28 -> 14 -> 7 pixels), a
    dense layer of ``hidden`` units whose ReLU outputs are the *features*, and a linear layer to 10 logits.

    Shapes: ``features: x (N, 784) -> (N, hidden)``; ``__call__: x (N, 784) -> logits (N, 10)``.
    """

    def __init__(self, *, channels: tuple[int, int] = (16, 32), hidden: int = 128, rngs: nnx.Rngs):
        channels = _checks.int_sequence("channels", channels)
        if len(channels) != 2:
            raise ValueError(f"channels must be two ints (the two convolutions' widths), got {channels}")
        c1, c2 = channels
        hidden = _checks.positive_int("hidden", hidden)
        self.conv1 = nnx.Conv(1, c1, (5, 5), strides=2, rngs=rngs)
        self.conv2 = nnx.Conv(c1, c2, (3, 3), strides=2, rngs=rngs)
        self.dense = nnx.Linear(7 * 7 * c2, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, NUM_CLASSES, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        h = x.reshape(x.shape[0], 28, 28, 1)  # (N, 784) -> (N, 28, 28, 1)
        h = jax.nn.relu(_cpu_conv.apply(self.conv1, h))  # -> (N, 14, 14, C1)
        h = jax.nn.relu(_cpu_conv.apply(self.conv2, h))  # -> (N, 7, 7, C2)
        return jax.nn.relu(self.dense(h.reshape(x.shape[0], -1)))  # -> (N, hidden)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(self.features(x))  # (N, hidden) -> (N, 10)


def random_affine(
    key: jax.Array, x: jax.Array, *, max_shift: float, max_rotation: float, max_scale: float
) -> jax.Array:
    """Move each 28x28 image by its own random rotation, scaling and shift (data augmentation).

    Each image gets an angle uniform in ``[-max_rotation, max_rotation]`` degrees, a scale factor
    ``exp(u)`` with ``u`` uniform in ``[-max_scale, max_scale]``, and a shift uniform in
    ``[-max_shift, max_shift]`` pixels along each axis, about the image centre; pixels are read by bilinear
    interpolation, with 0 outside the image. Shapes: ``x (N, 784) -> (N, 784)``.
    """
    n = x.shape[0]
    k_angle, k_scale, k_shift = jax.random.split(key, 3)
    angle = jax.random.uniform(k_angle, (n,), minval=-max_rotation, maxval=max_rotation) * (jnp.pi / 180)
    scale = jnp.exp(jax.random.uniform(k_scale, (n,), minval=-max_scale, maxval=max_scale))
    shift = jax.random.uniform(k_shift, (n, 2), minval=-max_shift, maxval=max_shift)
    cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
    inverse = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)  # (N, 2, 2)
    rows, cols = jnp.meshgrid(jnp.arange(28.0), jnp.arange(28.0), indexing="ij")
    grid = jnp.stack([rows.ravel(), cols.ravel()], -1) - 13.5  # (784, 2), about the centre
    source = jnp.einsum("nij,pj->npi", inverse, grid) + 13.5 - shift[:, None, :]  # (N, 784, 2)

    def warp(image, coords):  # (28, 28), (784, 2) -> (784,): bilinear, 0 outside the image
        return jax.scipy.ndimage.map_coordinates(image, list(coords.T), order=1, mode="constant")

    return jax.vmap(warp)(x.reshape(n, 28, 28), source)


def _check_images(name: str, x) -> jax.Array:
    x = _checks.array(name, x, ndim=2, finite=True)
    if x.shape[1] != 784:
        raise ValueError(f"{name} must have shape (N, 784) (28x28 images as vectors), got {tuple(x.shape)}")
    _checks.in_unit_interval(name, x, why="(pixel intensities)")
    return x


def train_digit_classifier(
    key: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    epochs: int = 20,
    batch_size: int = 128,
    learning_rate: float = 4e-3,
    augment: tuple[float, float, float] | None = (2.0, 10.0, 0.1),
    channels: tuple[int, int] = (16, 32),
    hidden: int = 128,
) -> DigitClassifier:
    """Train a ``DigitClassifier`` on labelled digits and return it.

    Minimizes the softmax cross-entropy (mean over the batch) with Adam and a cosine-decaying step size.
    Every batch is moved at random (``random_affine``), which is what lets 4,000 digits reach about 98%
    test accuracy. The whole run (shuffles, augmentation, every step) is one ``jax.lax.scan``.

    Args:
      key: PRNG key (initialization, shuffling, augmentation); the same key gives the same classifier.
      x: images, shape ``(N, 784)``, values in [0, 1].
      y: integer labels in ``0..9``, shape ``(N,)``.
      epochs: passes over the data; the last partial batch of each is dropped.
      batch_size: examples per step.
      learning_rate: Adam's initial step size.
      augment: ``(max_shift, max_rotation, max_scale)`` of ``random_affine`` (pixels, degrees, log
        scale), or ``None`` for no augmentation.
      channels, hidden: sizes of the network (see ``DigitClassifier``).

    Returns:
      The trained classifier.
    """
    key = _checks.key("key", key)
    x = _check_images("x", x)
    y = _checks.array("y", y, ndim=1, floating=False)
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(f"y must hold integer labels, got dtype {y.dtype}")
    _checks.same_batch(("x", "y"), x, y)
    y_host = np.asarray(y)
    if y_host.min() < 0 or y_host.max() >= NUM_CLASSES:
        raise ValueError(f"y must hold labels in 0..9, got values in [{y_host.min()}, {y_host.max()}]")
    epochs = _checks.positive_int("epochs", epochs)
    batch_size = _checks.positive_int("batch_size", batch_size)
    if batch_size > x.shape[0]:
        raise ValueError(f"batch_size must be <= the number of examples ({x.shape[0]}), got {batch_size}")
    learning_rate = _checks.real("learning_rate", learning_rate, minimum=0.0, strict=True)
    if augment is not None:
        if not isinstance(augment, (tuple, list)) or len(augment) != 3:
            raise TypeError(f"augment must be (max_shift, max_rotation, max_scale) or None, got {augment!r}")
        augment = tuple(_checks.real(f"augment[{i}]", a, minimum=0.0) for i, a in enumerate(augment))

    key_init, key_train = jax.random.split(key)
    model = DigitClassifier(channels=channels, hidden=hidden, rngs=nnx.Rngs(key_init))
    steps = epochs * (x.shape[0] // batch_size)
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    graphdef, params = nnx.split(model)
    params = _train(graphdef, tx, params, key_train, x, jnp.asarray(y, jnp.int32),
                    epochs=epochs, batch_size=batch_size, augment=augment)  # fmt: skip
    nnx.update(model, params)
    return model


@functools.partial(jax.jit, static_argnames=("graphdef", "tx", "epochs", "batch_size", "augment"))
def _train(graphdef, tx, params, key, x, y, *, epochs, batch_size, augment):
    num_batches = x.shape[0] // batch_size
    key_perm, key_steps = jax.random.split(key)
    perms = jax.vmap(lambda k: jax.random.permutation(k, x.shape[0]))(jax.random.split(key_perm, epochs))
    batches = perms[:, : num_batches * batch_size].reshape(epochs * num_batches, batch_size)  # (S, B)

    def loss_fn(params, xb, yb):
        logits = nnx.merge(graphdef, params)(xb)  # (B, 10)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def step(carry, inputs):
        params, opt_state = carry
        idx, k = inputs
        xb = x[idx]  # (B, 784)
        if augment is not None:
            shift, rotation, scale = augment
            xb = random_affine(k, xb, max_shift=shift, max_rotation=rotation, max_scale=scale)
        grads = jax.grad(loss_fn)(params, xb, y[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    keys = jax.random.split(key_steps, batches.shape[0])
    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), (batches, keys))
    return params


@functools.partial(jax.jit, static_argnames="graphdef")
def _classify_batch(graphdef, state, xb):
    model = nnx.merge(graphdef, state)
    h = model.features(xb)
    return h, model.out(h)


def classify(
    classifier: DigitClassifier, x: jax.Array, *, batch_size: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Features and logits of a ``DigitClassifier`` for images ``x``, computed in chunks.

    Every chunk has ``batch_size`` rows (the last one padded), so the function compiles once per
    classifier and chunk size, whatever the number of images.

    Args:
      classifier: a trained ``DigitClassifier``.
      x: images, shape ``(N, 784)``, values in [0, 1].
      batch_size: images per chunk (memory and compilation only, not the result).

    Returns:
      ``(features (N, hidden), logits (N, 10))`` as float32 NumPy arrays; the predicted labels are
      ``logits.argmax(1)``.
    """
    if not isinstance(classifier, DigitClassifier):
        raise TypeError(f"classifier must be a DigitClassifier, got {type(classifier).__name__}")
    x = _check_images("x", x)
    batch_size = _checks.positive_int("batch_size", batch_size)
    n = x.shape[0]
    xp = jnp.concatenate([x, jnp.zeros(((-n) % batch_size, 784), x.dtype)])
    graphdef, state = nnx.split(classifier)
    outs = [_classify_batch(graphdef, state, xp[i : i + batch_size]) for i in range(0, n, batch_size)]
    features, logits = (np.concatenate([np.asarray(o[j]) for o in outs])[:n] for j in (0, 1))
    return features, logits


# --- Fréchet distance ----------------------------------------------------------------------------------


def _host_float64(name: str, x, ndim: int) -> np.ndarray:
    """Check an array argument (rank, floating dtype, finite) and return it as a NumPy float64 array."""
    _checks.array(name, x, ndim=ndim, finite=True)
    return np.asarray(x, np.float64)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative round-off
    eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gaussian_frechet_distance(mean_a, cov_a, mean_b, cov_b) -> float:
    """The squared Fréchet (2-Wasserstein) distance between ``N(mean_a, cov_a)`` and ``N(mean_b, cov_b)``.

    ``|mean_a - mean_b|^2 + tr(cov_a) + tr(cov_b) - 2 tr((cov_a^(1/2) cov_b cov_a^(1/2))^(1/2))``
    (Dowson & Landau, 1982). The trace term is computed from the eigenvalues of the symmetric positive
    semi-definite matrix ``cov_a^(1/2) cov_b cov_a^(1/2)``, so it is real and finite also for singular
    covariances (where the usual ``sqrtm(cov_a @ cov_b)`` can return complex values or fail).

    Args:
      mean_a, mean_b: shape ``(F,)``.
      cov_a, cov_b: symmetric positive semi-definite, shape ``(F, F)``.

    Returns:
      A float >= 0 (in squared feature units), computed in float64.
    """
    mean_a, mean_b = _host_float64("mean_a", mean_a, 1), _host_float64("mean_b", mean_b, 1)
    cov_a, cov_b = _host_float64("cov_a", cov_a, 2), _host_float64("cov_b", cov_b, 2)
    f = mean_a.shape[0]
    for name, a, shape in (("mean_b", mean_b, (f,)), ("cov_a", cov_a, (f, f)), ("cov_b", cov_b, (f, f))):
        if a.shape != shape:
            raise ValueError(f"{name} must have shape {shape} to match mean_a {(f,)}, got {a.shape}")
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a  # (F, F), symmetric PSD
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = mean_a - mean_b
    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root
    return float(max(value, 0.0))


def frechet_distance(features_a, features_b) -> float:
    """The Fréchet distance between two feature sets: ``gaussian_frechet_distance`` of their means and
    covariances (divisor ``N - 1``), as in the FID (Heusel et al., 2017).

    The estimate is biased upwards by roughly ``tr(cov)/N_a + tr(cov)/N_b`` for finite sets, so two samples
    of the same distribution are not at distance 0: compare only numbers computed with the same set sizes
    (e.g. against the distance between two real sets of those sizes).

    Args:
      features_a: shape ``(N_a, F)``, ``N_a >= 2``.
      features_b: shape ``(N_b, F)``, ``N_b >= 2``.

    Returns:
      A float >= 0, computed in float64.
    """
    a, b = _host_float64("features_a", features_a, 2), _host_float64("features_b", features_b, 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_a and features_b must have the same width, got {a.shape} and {b.shape}")
    if min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(f"each feature set needs at least 2 rows, got {a.shape[0]} and {b.shape[0]}")
    return gaussian_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


# --- precision and recall (Kynkäänniemi et al., 2019) ------------------------------------------------


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a_i - b_j|^2`` for rows of ``a (N, F)`` and ``b (M, F)``, shape ``(N, M)``, float64."""
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d2, 0.0)


def knn_radii(features, *, k: int = 3, chunk: int = 1024) -> np.ndarray:
    """Distance from each row to its ``k``-th nearest *other* row of the same set.

    Args:
      features: shape ``(N, F)``, ``N > k``.
      k: which neighbour (1: the nearest).
      chunk: rows per block of the distance matrix (memory only).

    Returns:
      Shape ``(N,)``, float64.
    """
    x = _host_float64("features", features, 2)
    k = _checks.positive_int("k", k)
    if x.shape[0] <= k:
        raise ValueError(f"features needs more than k = {k} rows, got {x.shape[0]}")
    radii = []
    for start in range(0, x.shape[0], chunk):
        d2 = _squared_distances(x[start : start + chunk], x)  # (n, N)
        d2[np.arange(d2.shape[0]), np.arange(start, start + d2.shape[0])] = np.inf  # not itself
        radii.append(np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1]))
    return np.concatenate(radii)


def _inside_any_ball(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int) -> np.ndarray:
    """For each point, whether ``|point - centre_j| <= radius_j`` for some ``j``: shape ``(N,)`` bool."""
    r2 = radii[None, :] ** 2
    inside = [
        (_squared_distances(points[i : i + chunk], centres) <= r2).any(axis=1)
        for i in range(0, points.shape[0], chunk)
    ]
    return np.concatenate(inside)


def precision_recall(real_features, fake_features, *, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall of generated samples (Kynkäänniemi et al., 2019).

    Each set's manifold is estimated as the union of balls around its points, each ball reaching to that
    point's ``k``-th nearest neighbour in its own set. Then

    - precision = share of fake points inside the real manifold (are the samples realistic?),
    - recall = share of real points inside the fake manifold (is the data's variety covered?).

    Both are in [0, 1]; two large samples of the same distribution give values near 1 (they are not exactly
    1 for finite sets, so compare with two real sets of the same sizes).

    Args:
      real_features: shape ``(N, F)``, ``N > k``.
      fake_features: shape ``(M, F)``, ``M > k``.
      k: the neighbour that sets each ball's radius (the paper uses 3).
      chunk: rows per block of the distance matrices (memory only).

    Returns:
      ``(precision, recall)`` as floats.
    """
    real = _host_float64("real_features", real_features, 2)
    fake = _host_float64("fake_features", fake_features, 2)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real_features and fake_features must have the same width, got {real.shape} and {fake.shape}"
        )
    k = _checks.positive_int("k", k)
    chunk = _checks.positive_int("chunk", chunk)
    precision = _inside_any_ball(fake, real, knn_radii(real, k=k, chunk=chunk), chunk).mean()
    recall = _inside_any_ball(real, fake, knn_radii(fake, k=k, chunk=chunk), chunk).mean()
    return float(precision), float(recall)
