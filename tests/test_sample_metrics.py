"""vae_lib.sample_metrics against independent truths.

Truths: the closed forms of the Fréchet distance between Gaussians (diagonal, proportional and 1-D
covariances); the usual ``scipy.linalg.sqrtm(cov_a @ cov_b)`` formula of the FID code; large samples from
known Gaussians; constructed point sets whose precision and recall are known exactly; brute-force nearest
neighbours with ``scipy.spatial.distance.cdist``; ``scipy.ndimage`` for the augmentation's geometry.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from numpy.testing import assert_allclose
from scipy import linalg, ndimage
from scipy.spatial.distance import cdist

from vae_lib import sample_metrics as sm


def _random_cov(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d)


# --- Fréchet distance ------------------------------------------------------------------------------


def test_gaussian_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    mean_a, mean_b = rng.normal(size=5), rng.normal(size=5)
    # diagonal covariances: |mean_a - mean_b|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    va, vb = rng.uniform(0.1, 3.0, 5), rng.uniform(0.1, 3.0, 5)
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2)
    assert_allclose(
        sm.gaussian_frechet_distance(mean_a, np.diag(va), mean_b, np.diag(vb)), expected, rtol=1e-10
    )
    # proportional covariances, cov_b = c^2 cov_a: |mean_a - mean_b|^2 + (1 - c)^2 tr(cov_a)
    cov = _random_cov(rng, 5)
    expected = np.sum((mean_a - mean_b) ** 2) + (1 - 1.7) ** 2 * np.trace(cov)
    assert_allclose(sm.gaussian_frechet_distance(mean_a, cov, mean_b, 1.7**2 * cov), expected, rtol=1e-10)
    # one dimension: (m_a - m_b)^2 + (s_a - s_b)^2
    got = sm.gaussian_frechet_distance([1.0], [[4.0]], [-2.0], [[0.25]])
    assert_allclose(got, 9.0 + 1.5**2, rtol=1e-12)
    # a distance to itself is 0
    assert sm.gaussian_frechet_distance(mean_a, cov, mean_a, cov) == pytest.approx(0.0, abs=1e-10)


def test_gaussian_frechet_distance_matches_the_sqrtm_formula():
    """The FID code's formula: tr(A) + tr(B) - 2 tr(sqrtm(A B)), for covariances that do not commute."""
    rng = np.random.default_rng(1)
    for d in (2, 7, 40):
        cov_a, cov_b = _random_cov(rng, d), _random_cov(rng, d)
        mean_a, mean_b = rng.normal(size=d), rng.normal(size=d)
        assert np.abs(cov_a @ cov_b - cov_b @ cov_a).max() > 1e-3  # a case the closed forms do not cover
        covmean = linalg.sqrtm(cov_a @ cov_b).real
        expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean)
        got = sm.gaussian_frechet_distance(mean_a, cov_a, mean_b, cov_b)
        assert_allclose(got, expected, rtol=1e-8)
        assert_allclose(
            sm.gaussian_frechet_distance(mean_b, cov_b, mean_a, cov_a), got, rtol=1e-8
        )  # symmetric


def test_frechet_distance_of_large_gaussian_samples_approaches_the_closed_form():
    rng = np.random.default_rng(2)
    va, vb = np.array([1.0, 2.0, 0.5]), np.array([0.3, 2.0, 1.5])
    a = rng.normal(size=(200_000, 3)) * np.sqrt(va)
    b = rng.normal(size=(200_000, 3)) * np.sqrt(vb) + np.array([1.0, 0.0, -0.5])
    expected = 1.25 + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2)  # 1.25 = |mean difference|^2
    # sampling error of the moments at n = 200,000 is about 0.01 here
    assert sm.frechet_distance(a, b) == pytest.approx(expected, abs=0.03)


def test_frechet_distance_matches_a_numpy_scipy_rederivation():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 10)) @ rng.normal(size=(10, 10))
    b = rng.normal(size=(500, 10)) @ rng.normal(size=(10, 10)) + 0.3
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = (
        np.sum((a.mean(0) - b.mean(0)) ** 2)
        + np.trace(ca)
        + np.trace(cb)
        - 2 * np.trace(linalg.sqrtm(ca @ cb).real)
    )
    assert_allclose(sm.frechet_distance(a, b), expected, rtol=1e-8)
    assert_allclose(sm.frechet_distance(a.astype(np.float32), b.astype(np.float32)), expected, rtol=1e-4)


def test_frechet_distance_is_invariant_to_rotations_and_translations():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(400, 6)), rng.normal(size=(300, 6)) * 1.3 + 0.2
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    shift = rng.normal(size=6)
    assert_allclose(sm.frechet_distance(a @ q + shift, b @ q + shift), sm.frechet_distance(a, b), rtol=1e-9)
    assert sm.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_with_singular_covariances():
    """Dead features (always 0) and fewer rows than features make the covariances singular."""
    rng = np.random.default_rng(5)
    a, b = np.maximum(rng.normal(size=(20, 8)), 0), np.maximum(rng.normal(size=(30, 8)) + 0.5, 0)
    a_dead, b_dead = np.concatenate([a, np.zeros((20, 40))], 1), np.concatenate([b, np.zeros((30, 40))], 1)
    got = sm.frechet_distance(a_dead, b_dead)  # 48 features, 20 and 30 rows: both covariances singular
    assert np.isfinite(got) and got > 0
    assert_allclose(got, sm.frechet_distance(a, b), rtol=1e-9)  # the dead features add nothing
    rank_one = np.outer(np.arange(4.0), np.arange(4.0))  # PSD, rank 1
    assert sm.gaussian_frechet_distance(np.zeros(4), rank_one, np.zeros(4), rank_one) == pytest.approx(
        0, abs=1e-9
    )


# --- precision and recall --------------------------------------------------------------------------


def test_knn_radii_match_brute_force():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(57, 4))
    d = cdist(x, x)
    np.fill_diagonal(d, np.inf)
    for k in (1, 3, 5):
        assert_allclose(sm.knn_radii(x, k=k, chunk=10), np.sort(d, axis=1)[:, k - 1], rtol=1e-10)


def _brute_force_precision_recall(real, fake, k):
    def radii(x):
        d = cdist(x, x)
        np.fill_diagonal(d, np.inf)
        return np.sort(d, axis=1)[:, k - 1]

    precision = np.mean((cdist(fake, real) <= radii(real)[None, :]).any(axis=1))
    recall = np.mean((cdist(real, fake) <= radii(fake)[None, :]).any(axis=1))
    return precision, recall


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_recall_matches_brute_force(k):
    rng = np.random.default_rng(7 + k)
    real = rng.normal(size=(120, 5))
    fake = rng.normal(size=(90, 5)) + 1.0
    got = sm.precision_recall(real, fake, k=k, chunk=17)
    expected = _brute_force_precision_recall(real, fake, k)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0.1 < got[0] < 0.99 and 0.1 < got[1] < 0.99  # a case where neither is trivially 0 or 1


def test_precision_recall_on_constructed_cases():
    rng = np.random.default_rng(8)
    real = rng.normal(size=(200, 3))
    assert sm.precision_recall(real, real) == (1.0, 1.0)  # the same set
    assert sm.precision_recall(real, real + 100.0) == (0.0, 0.0)  # nothing in common
    # the real points plus 50 far outliers: precision 200 / 250, recall 1
    outliers = rng.normal(size=(50, 3)) + 50.0
    assert sm.precision_recall(real, np.concatenate([real, outliers])) == (0.8, 1.0)
    # mode dropping: real data in 4 far-apart clusters, samples from 2 of them -> precision 1, recall 1/2
    centres = 100.0 * np.eye(4)
    clusters = [c + rng.normal(size=(100, 4)) for c in centres]
    real4 = np.concatenate(clusters)
    fake2 = np.concatenate([c + rng.normal(size=(100, 4)) for c in centres[:2]])
    precision, recall = sm.precision_recall(real4, fake2)
    assert precision > 0.9 and recall == pytest.approx(0.5, abs=0.05)
    assert recall <= 0.5  # no real point of the two dropped clusters can be covered


# --- the classifier ---------------------------------------------------------------------------------


def test_random_affine_geometry_matches_scipy_ndimage():
    rng = np.random.default_rng(9)
    x = rng.uniform(size=(4, 784)).astype(np.float32)
    key = jax.random.key(3)
    got = np.asarray(sm.random_affine(key, jnp.asarray(x), max_shift=2.0, max_rotation=15.0, max_scale=0.2))
    # the same random transforms, drawn as the function draws them, applied with scipy
    k_angle, k_scale, k_shift = jax.random.split(key, 3)
    angle = np.asarray(jax.random.uniform(k_angle, (4,), minval=-15.0, maxval=15.0)) * np.pi / 180
    scale = np.exp(np.asarray(jax.random.uniform(k_scale, (4,), minval=-0.2, maxval=0.2)))
    shift = np.asarray(jax.random.uniform(k_shift, (4, 2), minval=-2.0, maxval=2.0))
    centre = np.array([13.5, 13.5])
    for i in range(4):
        c, s = np.cos(angle[i]) / scale[i], np.sin(angle[i]) / scale[i]
        inverse = np.array([[c, -s], [s, c]])  # output pixel -> input pixel, about the centre
        offset = centre - inverse @ centre - shift[i]
        expected = ndimage.affine_transform(
            x[i].reshape(28, 28).astype(np.float64), inverse, offset, order=1, mode="grid-constant"
        )
        assert_allclose(got[i].reshape(28, 28), expected, atol=1e-5)
    # no movement is the identity; the same key gives the same images, another key others
    still = sm.random_affine(key, jnp.asarray(x), max_shift=0.0, max_rotation=0.0, max_scale=0.0)
    assert_allclose(np.asarray(still), x, atol=1e-6)
    again = sm.random_affine(key, jnp.asarray(x), max_shift=2.0, max_rotation=15.0, max_scale=0.2)
    other = sm.random_affine(
        jax.random.key(4), jnp.asarray(x), max_shift=2.0, max_rotation=15.0, max_scale=0.2
    )
    assert np.array_equal(np.asarray(again), got) and not np.allclose(np.asarray(other), got)


def test_classify_shapes_and_chunking():
    clf = sm.DigitClassifier(rngs=nnx.Rngs(0))
    x = np.random.default_rng(10).uniform(size=(37, 784)).astype(np.float32)
    features, logits = sm.classify(clf, x)
    assert features.shape == (37, 128) and logits.shape == (37, 10)
    assert features.dtype == np.float32 and (features >= 0).all()  # ReLU features
    f16, l16 = sm.classify(clf, x, batch_size=16)  # another chunking (the last chunk padded), same numbers
    assert_allclose(f16, features, rtol=1e-5, atol=1e-6)
    assert_allclose(l16, logits, rtol=1e-5, atol=1e-6)
    module = nnx.jit(lambda model, x: model(x))(clf, jnp.asarray(x))  # the module itself
    assert_allclose(logits, np.asarray(module), rtol=1e-5, atol=1e-5)


def test_digit_classifier_reaches_97_percent(digits_grey):
    """The contract the chapters rely on: >= 97% on the 1,000 held-out digits at the defaults."""
    x_train, y_train, x_test, y_test = digits_grey
    clf = sm.train_digit_classifier(jax.random.key(0), x_train, y_train)
    _, logits = sm.classify(clf, x_test)
    accuracy = np.mean(logits.argmax(1) == y_test)
    assert accuracy >= 0.97, accuracy


def test_train_digit_classifier_same_key_same_model(digits_grey):
    x, y = digits_grey.x_train[:256], digits_grey.y_train[:256]
    a = sm.train_digit_classifier(jax.random.key(1), x, y, epochs=1, batch_size=64)
    b = sm.train_digit_classifier(jax.random.key(1), x, y, epochs=1, batch_size=64)
    c = sm.train_digit_classifier(jax.random.key(2), x, y, epochs=1, batch_size=64)
    xs = digits_grey.x_test[:50]
    assert np.array_equal(sm.classify(a, xs)[1], sm.classify(b, xs)[1])
    assert not np.allclose(sm.classify(a, xs)[1], sm.classify(c, xs)[1])


# --- bad input ---------------------------------------------------------------------------------------


def test_bad_inputs_name_the_argument(digits_grey):
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=(10, 3)), rng.normal(size=(10, 4))
    with pytest.raises(ValueError, match="features_a and features_b"):
        sm.frechet_distance(a, b)
    with pytest.raises(ValueError, match="at least 2 rows"):
        sm.frechet_distance(a[:1], a)
    with pytest.raises(ValueError, match="features_a"):
        sm.frechet_distance(np.full((5, 3), np.nan), a)
    with pytest.raises(ValueError, match="cov_b"):
        sm.gaussian_frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="real_features and fake_features"):
        sm.precision_recall(a, b)
    with pytest.raises(ValueError, match="more than k = 3 rows"):
        sm.precision_recall(a[:3], a)
    clf = sm.DigitClassifier(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 784\)"):
        sm.classify(clf, np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="x must lie in"):
        sm.classify(clf, np.full((2, 784), 255.0, np.float32))
    with pytest.raises(ValueError, match="channels must be two ints"):
        sm.DigitClassifier(channels=(8, 8, 8), rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="classifier"):
        sm.classify(object(), np.zeros((2, 784), np.float32))
    x, y = digits_grey.x_train[:100], digits_grey.y_train[:100]
    with pytest.raises(ValueError, match="labels in 0..9"):
        sm.train_digit_classifier(jax.random.key(0), x, y + 10)
    with pytest.raises(TypeError, match="y must hold integer labels"):
        sm.train_digit_classifier(jax.random.key(0), x, y.astype(np.float32))
    with pytest.raises(ValueError, match="same batch size"):
        sm.train_digit_classifier(jax.random.key(0), x, y[:50])
    with pytest.raises(TypeError, match="augment"):
        sm.train_digit_classifier(jax.random.key(0), x, y, batch_size=50, augment=(1.0, 2.0))
    with pytest.raises(ValueError, match="batch_size must be <= the number of examples"):
        sm.train_digit_classifier(jax.random.key(0), x, y, batch_size=128)


@pytest.fixture(scope="module")
def digits_grey():
    from vae_lib.data import load_mnist5k

    return load_mnist5k()
