"""Generative models (chapter 12): density fitting, GANs, WGANs, minimum Kantorovich estimators, auto-encoders.

- :func:`gaussian_mle`, :func:`gaussian_log_likelihood`, :func:`kde_log_likelihood`: maximum likelihood
  and the densities whose likelihood is computed (a push-forward model has none);
- :func:`ring_of_gaussians`, :func:`ring_centers`, :func:`modes_covered`: the 2-D benchmark of eight
  Gaussians on a circle, and the count of the modes a generator covers;
- :func:`mlp`, :func:`gan_step`, :func:`train_gan`: the adversarial min-max problem and its
  alternating algorithm;
- :func:`clip_weights`, :func:`gradient_penalty`, :func:`lipschitz_estimate`,
  :func:`lipschitz_upper_bound`, :func:`train_wgan`: Wasserstein GANs, with a weight-clipped or a
  gradient-penalized critic;
- :func:`wasserstein_1d`, :func:`random_projections`, :func:`sliced_wasserstein`,
  :func:`train_minimum_kantorovich`: Wasserstein distances computed exactly by sorting, with no
  Sinkhorn, and a generator fitted by minimizing one;
- :func:`interpolate_latent`: paths in the latent space;
- :func:`pca_subspace`, :func:`principal_angles`, :class:`LinearAutoencoder`, :class:`Autoencoder`:
  auto-encoders, and the principal subspace that a linear one recovers.

The training loops show a text progress bar (``tqdm.std``, which needs no browser widget) and take
a seed; the networks are ordinary ``torch.nn`` modules, and the optimizers those of chapter 11
(:mod:`ad_lib.optim`).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn
from tqdm.std import tqdm

from ad_lib import optim

__all__ = [
    "gaussian_mle", "gaussian_log_likelihood", "kde_log_likelihood",
    "ring_centers", "ring_of_gaussians", "modes_covered",
    "mlp", "gan_step", "train_gan",
    "clip_weights", "gradient_penalty", "lipschitz_estimate", "lipschitz_upper_bound", "train_wgan",
    "wasserstein_1d", "random_projections", "sliced_wasserstein", "train_minimum_kantorovich",
    "interpolate_latent", "pca_subspace", "principal_angles", "LinearAutoencoder", "Autoencoder",
]


# -- argument checks --------------------------------------------------------------------------------

def _check_tensor(name, x, dim=None, min_dim=None, finite=True):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if dim is not None and x.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimension(s), got shape {tuple(x.shape)}")
    if min_dim is not None and x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if finite and not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{name} must be finite, got {int((~torch.isfinite(x.detach())).sum())} NaN or infinite "
                         f"entries (of {x.numel()})")


def _check_like(name, x, reference_name, reference):
    """x must have the dtype and the device of reference."""
    if x.dtype != reference.dtype or x.device != reference.device:
        raise ValueError(f"{name} must have the dtype and device of {reference_name} ({reference.dtype} on "
                         f"{reference.device}), got {x.dtype} on {x.device}")


def _check_scalar_output(name, out, n):
    """A critic's or a discriminator's output on n points must be one value per point: shape (n,) or (n, 1)."""
    if not isinstance(out, torch.Tensor) or tuple(out.shape) not in ((n,), (n, 1)):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name} must return one value per sample, shape ({n},) or ({n}, 1), got {shape}")


def _check_real(name, value, low=None, low_open=False, high=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low)) or \
            (high is not None and value > high):
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            bounds.append(f"<= {high}")
        raise ValueError(f"{name} must be a finite number {' and '.join(bounds)}, got {value}")
    return value


def _check_int(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_generator(generator, device=None):
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator is not None and device is not None and generator.device.type != torch.device(device).type:
        raise ValueError(f"generator must be a torch.Generator on the device of the samples ({torch.device(device)}), "
                         f"got one on {generator.device}")


def _check_dtype(dtype):
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype or None, got {dtype}")


def _check_activation(name, activation):
    if isinstance(activation, nn.Module) or not callable(activation):
        raise TypeError(f"{name} must be a module class such as torch.nn.ReLU (called once per layer), "
                        f"got {activation!r}")


def _check_module(name, module):
    if not isinstance(module, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(module).__name__}")


def _check_same_feature_dim(x, y, y_name="y"):
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and {y_name} must have the same dimension d (shape (n, d) and (m, d)), "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")


# -- maximum likelihood -----------------------------------------------------------------------------

def gaussian_mle(x):
    r"""The maximum-likelihood Gaussian of samples x (n, d): ``(mean (d,), covariance (d, d))``.

    The mean is the sample mean and the covariance the *biased* sample covariance
    ``(1/n) sum_i (x_i - m)(x_i - m)^T`` (dividing by n, not n - 1: that is the maximizer of the
    likelihood). It is the KL projection of the empirical measure onto the Gaussians, see chapter 12,
    section "Maximum likelihood as a KL projection", :eq:`eq-ch12-gaussian-mle`.
    """
    _check_tensor("x", x, dim=2)
    mean = x.mean(0)
    centred = x - mean
    return mean, centred.T @ centred / x.shape[0]


def gaussian_log_likelihood(x, mean, covariance):
    r"""The log densities ``log N(x_i; m, S)`` of the rows of x (n, d): a tensor (n,).

    Computed with the Cholesky factor of S (d, d), which must be symmetric positive definite: a
    singular covariance, as the maximum-likelihood fit of points on a line, has no density, and a
    ``ValueError`` says so. See chapter 12, section "Maximum likelihood as a KL projection",
    :eq:`eq-ch12-mle`.
    """
    _check_tensor("x", x, dim=2)
    _check_tensor("mean", mean, dim=1)
    _check_tensor("covariance", covariance, dim=2)
    d = x.shape[1]
    if mean.shape[0] != d or covariance.shape != (d, d):
        raise ValueError(f"mean must have shape ({d},) and covariance ({d}, {d}) for x of shape {tuple(x.shape)}, "
                         f"got {tuple(mean.shape)} and {tuple(covariance.shape)}")
    _check_like("mean", mean, "x", x)
    _check_like("covariance", covariance, "x", x)
    asymmetry = float((covariance - covariance.T).detach().abs().max())
    if asymmetry > 1e3 * torch.finfo(x.dtype).eps * float(covariance.detach().abs().max()):
        raise ValueError(f"covariance must be symmetric, got max |S - S^T| = {asymmetry:.3g}")
    factor, info = torch.linalg.cholesky_ex(covariance)
    if int(info) != 0:
        raise ValueError("covariance must be symmetric positive definite (its Cholesky factorization failed at "
                         f"column {int(info)}): a singular covariance has no density; add a multiple of the identity")
    solved = torch.linalg.solve_triangular(factor, (x - mean).T, upper=False)       # L^{-1} (x - m), (d, n)
    log_det = 2 * torch.log(torch.diagonal(factor)).sum()
    return -0.5 * (solved ** 2).sum(0) - 0.5 * log_det - 0.5 * d * math.log(2 * math.pi)


def kde_log_likelihood(x, samples, bandwidth):
    r"""The log of the Gaussian kernel density estimate of samples (m, d) at the rows of x (n, d): (n,).

    ``log (1/m) sum_j N(x_i; s_j, h^2 I)``, computed with ``logsumexp``. The density that a
    push-forward model's samples suggest: as the bandwidth h shrinks it goes to zero off the model's
    support and to infinity on it. See chapter 12, section "Why density fitting fails for push-forward
    models", :eq:`eq-ch12-kde`.
    """
    _check_tensor("x", x, dim=2)
    _check_tensor("samples", samples, dim=2)
    _check_same_feature_dim(x, samples, "samples")
    _check_like("samples", samples, "x", x)
    h = _check_real("bandwidth", bandwidth, low=0.0, low_open=True)
    d, m = x.shape[1], samples.shape[0]
    squared = torch.cdist(x, samples) ** 2
    return torch.logsumexp(-squared / (2 * h * h), dim=1) - math.log(m) - 0.5 * d * math.log(2 * math.pi * h * h)


# -- the ring of Gaussians --------------------------------------------------------------------------

def ring_centers(modes=8, radius=2.0, dtype=None, device=None):
    """The centres of the ring benchmark: ``modes`` points evenly spaced on a circle, a tensor (modes, 2).

    The k-th centre is ``radius * (cos(2 pi k / modes), sin(2 pi k / modes))``. See chapter 12,
    section "Generative adversarial networks".
    """
    modes = _check_int("modes", modes)
    radius = _check_real("radius", radius, low=0.0, low_open=True)
    _check_dtype(dtype)
    angles = 2 * math.pi * torch.arange(modes, dtype=dtype or torch.get_default_dtype(), device=device) / modes
    return radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)


def ring_of_gaussians(n, modes=8, radius=2.0, std=0.02, generator=None, dtype=None, device=None):
    """n samples of the equal-weight mixture of ``modes`` Gaussians N(c_k, std^2 I): ``(samples (n, 2), labels (n,))``.

    The centres are :func:`ring_centers`; labels are the mixture components drawn. ``generator`` (a
    ``torch.Generator`` on ``device``) makes the draw repeatable. See chapter 12, section
    "Generative adversarial networks".
    """
    n = _check_int("n", n)
    std = _check_real("std", std, low=0.0, low_open=True)
    _check_generator(generator, device or "cpu")
    centers = ring_centers(modes, radius, dtype=dtype, device=device)
    labels = torch.randint(centers.shape[0], (n,), generator=generator, device=device)
    noise = torch.randn(n, 2, generator=generator, dtype=centers.dtype, device=device)
    return centers[labels] + std * noise, labels


def modes_covered(samples, centers, std, radius_in_std=3.0, min_fraction=0.02):
    """How many modes of a mixture the samples cover: ``(modes covered (int), fraction of high-quality samples)``.

    A sample (row of samples (n, d)) is *high quality* when it lies within ``radius_in_std * std`` of
    its nearest centre (row of centers (k, d)); a mode is *covered* when at least ``min_fraction`` of
    all the samples are high-quality samples of it. A generator that has collapsed onto a few modes
    covers few; one that spreads between the modes has few high-quality samples. See chapter 12,
    section "Mode collapse".
    """
    _check_tensor("samples", samples, dim=2)
    _check_tensor("centers", centers, dim=2)
    if samples.shape[1] != centers.shape[1]:
        raise ValueError(f"samples and centers must have the same dimension, "
                         f"got {tuple(samples.shape)} and {tuple(centers.shape)}")
    std = _check_real("std", std, low=0.0, low_open=True)
    radius_in_std = _check_real("radius_in_std", radius_in_std, low=0.0, low_open=True)
    min_fraction = _check_real("min_fraction", min_fraction, low=0.0, low_open=True, high=1.0)
    distances = torch.cdist(samples.detach(), centers.to(device=samples.device, dtype=samples.dtype))
    nearest_distance, nearest = distances.min(dim=1)
    good = nearest_distance <= radius_in_std * std
    counts = torch.bincount(nearest[good], minlength=centers.shape[0])
    covered = int((counts >= min_fraction * samples.shape[0]).sum())
    return covered, float(good.double().mean())


# -- networks and the adversarial game --------------------------------------------------------------

def mlp(sizes, activation=nn.ReLU, final_activation=None):
    """A multi-layer perceptron ``Linear(sizes[0], sizes[1]), activation(), ..., Linear(sizes[-2], sizes[-1])``.

    ``activation`` is a module class (or any callable returning a module) placed between the linear
    layers; ``final_activation``, if given, after the last one. Returns a ``torch.nn.Sequential``.
    See chapter 12, section "Generative adversarial networks".
    """
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"sizes must be a list of layer widths such as [2, 64, 64, 1], got {sizes!r}")
    sizes = list(sizes)
    _check_activation("activation", activation)
    if final_activation is not None:
        _check_activation("final_activation", final_activation)
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least two layer widths (input and output), got {sizes}")
    for s in sizes:
        _check_int("sizes (each width)", s)
    layers = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if k < len(sizes) - 2:
            layers.append(activation())
    if final_activation is not None:
        layers.append(final_activation())
    return nn.Sequential(*layers)


_GAN_LOSSES = ("non-saturating", "minimax")


def gan_step(generator, discriminator, real, z, g_optimizer, d_optimizer, loss="non-saturating"):
    r"""One step of the alternating GAN algorithm: a discriminator step, then a generator step.

    ``discriminator`` returns a logit ``a(x)``, with ``D(x) = sigmoid(a(x))`` the probability that x
    is real. Discriminator: descend ``-[mean log D(real) + mean log(1 - D(G(z)))]`` (a logistic
    regression of real against fake). Generator, with a fresh pass through the updated
    discriminator: descend ``mean log(1 - D(G(z)))`` for ``loss="minimax"`` or ``-mean log D(G(z))``
    for ``loss="non-saturating"`` (same fixed points, gradients that do not vanish when D rejects
    the fakes). real (b, d), z (b, latent); returns ``(d_loss, g_loss)`` as floats. See chapter 12,
    section "Generative adversarial networks", :eq:`eq-ch12-gan`.
    """
    _check_module("generator", generator)
    _check_module("discriminator", discriminator)
    _check_tensor("real", real, dim=2)
    _check_tensor("z", z, dim=2)
    if loss not in _GAN_LOSSES:
        raise ValueError(f"loss must be one of {_GAN_LOSSES}, got {loss!r}")
    for name, optimizer in (("g_optimizer", g_optimizer), ("d_optimizer", d_optimizer)):
        if not (callable(getattr(optimizer, "zero_grad", None)) and callable(getattr(optimizer, "step", None))):
            raise TypeError(f"{name} must be an optimizer (with zero_grad() and step()), "
                            f"got {type(optimizer).__name__}")
    bce = nn.functional.binary_cross_entropy_with_logits
    fake = _generate(generator, z)
    if fake.shape[1:] != real.shape[1:]:
        raise ValueError(f"generator(z) must have the shape of the data, (b, {real.shape[1]}), got {tuple(fake.shape)}")
    real_logit, fake_logit = _call("discriminator", discriminator, real, "data"), discriminator(fake.detach())
    _check_scalar_output("discriminator", real_logit, real.shape[0])
    d_loss = bce(real_logit, torch.ones_like(real_logit)) + bce(fake_logit, torch.zeros_like(fake_logit))
    d_optimizer.zero_grad()
    d_loss.backward()
    d_optimizer.step()

    fake_logit = discriminator(fake)
    if loss == "non-saturating":
        g_loss = bce(fake_logit, torch.ones_like(fake_logit))               # -log D(G(z))
    else:
        g_loss = -bce(fake_logit, torch.zeros_like(fake_logit))             # log(1 - D(G(z)))
    g_optimizer.zero_grad()
    g_loss.backward()
    g_optimizer.step()
    return float(d_loss.detach()), float(g_loss.detach())


def _call(name, module, x, what="inputs"):
    """module(x), with a shape mismatch between x and the module's first layer as a ValueError naming both."""
    try:
        return module(x)
    except RuntimeError as error:
        if "shape" not in str(error) and "size" not in str(error):
            raise
        raise ValueError(f"{name} does not accept {what} of shape {tuple(x.shape)}: {error}") from None


def _generate(generator, z):
    """generator(z), with a mismatch between the latent codes z (b, k) and the generator's input as a ValueError."""
    out = _call("the generator", generator, z, f"latent codes (latent_dim = {z.shape[-1]})")
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ValueError(f"generator(z) must return samples of shape (b, d), got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return out


def _sample(sample_data, n, rng, like):
    """sample_data(n, rng), checked: a finite floating tensor (n, d) with the generator's dtype and device."""
    real = sample_data(n, rng)
    _check_tensor("sample_data(n, generator)", real, dim=2)
    if real.shape[0] != n:
        raise ValueError(f"sample_data(n, generator) must return n = {n} samples, got shape {tuple(real.shape)}")
    _check_like("sample_data(n, generator)", real, "the generator's parameters", like)
    return real


def _check_generated(fake, real, step):
    """The generator's samples must have the data's shape and be finite (NaN samples: a diverged run)."""
    if fake.shape[1:] != real.shape[1:]:
        raise ValueError(f"generator(z) must have the shape of the data, (b, {real.shape[1]}), got {tuple(fake.shape)}")
    if not bool(torch.isfinite(fake.detach()).all()):
        raise FloatingPointError(f"the generator's samples are NaN or infinite at step {step}: training diverged; "
                                 "lower the learning rate")


def _check_finite_loss(name, value, step):
    if not math.isfinite(value):
        raise FloatingPointError(f"{name} is {value} at step {step}: training diverged; lower the learning rate")
    return value


def _first_parameter(module):
    try:
        return next(module.parameters())
    except StopIteration:
        raise ValueError("the generator must have parameters") from None


def _check_training(generator, other, other_name, sample_data, latent_dim, steps, batch_size, snapshot_z,
                    snapshot_every, seed):
    _check_module("generator", generator)
    if other is not None:
        _check_module(other_name, other)
    if not callable(sample_data):
        raise TypeError("sample_data must be a callable sample_data(n, generator) -> (n, d), "
                        f"got {type(sample_data).__name__}")
    latent_dim = _check_int("latent_dim", latent_dim)
    _check_int("steps", steps, low=0)
    _check_int("batch_size", batch_size)
    _check_int("snapshot_every", snapshot_every, low=0)
    _check_int("seed", seed, low=0)
    reference = _first_parameter(generator)
    if snapshot_z is not None:
        _check_tensor("snapshot_z", snapshot_z, dim=2)
        if snapshot_z.shape[1] != latent_dim:
            raise ValueError(f"snapshot_z must have shape (n, latent_dim) = (n, {latent_dim}), "
                             f"got {tuple(snapshot_z.shape)}")
        _check_like("snapshot_z", snapshot_z, "the generator's parameters", reference)
    return reference


def _snapshot(history, step, generator, snapshot_z, snapshot_every, steps):
    if snapshot_z is not None and snapshot_every and (step % snapshot_every == 0 or step == steps):
        with torch.no_grad():
            history["snapshots"].append((step, _generate(generator, snapshot_z).detach().clone()))


_BAR_INTERVAL = 30.0      # seconds between redraws of a progress bar


def _bar(steps, progress, description):
    """A text bar over the steps 1..steps. It redraws at most every 30 s: a notebook built to HTML (myst-nb
    turns each redraw into a line of its own) shows a run shorter than that as two lines, the start and the
    final count with its time and rate; a terminal or a live notebook redraws the line in place."""
    return tqdm(range(1, steps + 1), desc=description, disable=not progress, mininterval=_BAR_INTERVAL, ncols=80,
                leave=True)


def train_gan(generator, discriminator, sample_data, latent_dim, steps, batch_size=256, lr=1e-3, betas=(0.5, 0.999),
              loss="non-saturating", seed=0, snapshot_z=None, snapshot_every=0, progress=True):
    """Train a GAN by :func:`gan_step`, with Adam (:class:`ad_lib.optim.Adam`) for both players.

    ``sample_data(n, generator)`` returns n data samples (n, d) drawn with the ``torch.Generator``
    it is passed; latent codes are standard Gaussians (batch_size, latent_dim). All randomness comes
    from ``seed``. Every ``snapshot_every`` steps (and at the first and last), the generator's image
    of the fixed codes ``snapshot_z`` is kept. A text progress bar (``tqdm.std``, redrawn at most every
    30 s) shows when ``progress``. A NaN or infinite loss (a diverged run) raises ``FloatingPointError``.
    Returns ``{"d_loss": [...], "g_loss": [...], "snapshots": [(step, samples)]}``. See chapter 12,
    section "Generative adversarial networks".
    """
    reference = _check_training(generator, discriminator, "discriminator", sample_data, latent_dim, steps, batch_size,
                                snapshot_z, snapshot_every, seed)
    rng = torch.Generator(device=reference.device).manual_seed(seed)
    g_opt = optim.Adam(generator.parameters(), lr=lr, betas=betas)
    d_opt = optim.Adam(discriminator.parameters(), lr=lr, betas=betas)
    history = {"d_loss": [], "g_loss": [], "snapshots": []}
    _snapshot(history, 0, generator, snapshot_z, snapshot_every, steps)
    for step in _bar(steps, progress, f"GAN ({loss})"):
        real = _sample(sample_data, batch_size, rng, reference)
        z = torch.randn(batch_size, latent_dim, generator=rng, dtype=reference.dtype, device=reference.device)
        d_loss, g_loss = gan_step(generator, discriminator, real, z, g_opt, d_opt, loss=loss)
        history["d_loss"].append(_check_finite_loss("the discriminator's loss", d_loss, step))
        history["g_loss"].append(_check_finite_loss("the generator's loss", g_loss, step))
        _snapshot(history, step, generator, snapshot_z, snapshot_every, steps)
    return history


# -- Wasserstein GANs -------------------------------------------------------------------------------

def clip_weights(module, c):
    """Clamp every parameter of module to [-c, c], in place (the WGAN critic's weight clipping); returns module.

    With every entry of a weight matrix W (out, in) in [-c, c], its spectral norm is at most
    ``c * sqrt(in * out)``, so a ReLU network's Lipschitz constant is at most the product of these
    bounds. See chapter 12, section "Wasserstein GANs".
    """
    _check_module("module", module)
    c = _check_real("c", c, low=0.0, low_open=True)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.clamp_(-c, c)
    return module


def gradient_penalty(critic, real, fake, generator=None):
    r"""The WGAN-GP penalty ``mean_i (||grad_x critic(x_hat_i)|| - 1)^2``, a scalar.

    The points ``x_hat_i = e_i real_i + (1 - e_i) fake_i``, with ``e_i ~ U[0, 1]`` (drawn with
    ``generator``), lie on the segments between real (b, d) and fake (b, d) samples. The gradient
    is taken with ``create_graph=True``, so the penalty is differentiable in the critic's parameters
    (a double backward pass); fake is detached. The critic returns one value per point, shape (b,) or
    (b, 1); one constant in x has gradient 0 there, and penalty 1. See chapter 12, section
    "Wasserstein GANs", :eq:`eq-ch12-gp`.
    """
    _check_module("critic", critic)
    _check_tensor("real", real, dim=2)
    _check_tensor("fake", fake, dim=2)
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    _check_like("fake", fake, "real", real)
    _check_generator(generator, real.device)
    e = torch.rand(real.shape[0], 1, generator=generator, dtype=real.dtype, device=real.device)
    x_hat = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    out = _call("critic", critic, x_hat, "points")
    _check_scalar_output("critic", out, real.shape[0])
    if out.requires_grad:
        grad, = torch.autograd.grad(out.sum(), x_hat, create_graph=True, allow_unused=True)
    else:
        grad = None
    if grad is None:                                                       # a critic constant in x: gradient zero
        grad = torch.zeros_like(x_hat)
    return ((grad.norm(dim=1) - 1) ** 2).mean()


def lipschitz_estimate(critic, x, y=None):
    """A lower bound on the Lipschitz constant of a scalar critic: a scalar tensor.

    The largest gradient norm ``||grad critic(x_i)||`` over the rows of x (n, d), and, when y (n, d)
    is given, the largest difference quotient ``|critic(x_i) - critic(y_i)| / ||x_i - y_i||`` over
    the pairs too (the larger of the two). Both are at most the Lipschitz constant; the gradient
    norm reaches it where the critic is steepest. See chapter 12, section "Wasserstein GANs".
    """
    _check_module("critic", critic)
    _check_tensor("x", x, dim=2)
    if y is not None:
        _check_tensor("y", y, dim=2)
        if y.shape != x.shape:
            raise ValueError(f"y must have the shape of x, {tuple(x.shape)}, got {tuple(y.shape)}")
        _check_like("y", y, "x", x)
    points = x.detach().clone().requires_grad_(True)
    out = _call("critic", critic, points, "points")
    _check_scalar_output("critic", out, x.shape[0])
    grad = torch.autograd.grad(out.sum(), points, allow_unused=True)[0] if out.requires_grad else None
    estimate = grad.norm(dim=1).max() if grad is not None else x.new_zeros(())
    if y is not None:
        with torch.no_grad():
            gap = (critic(x) - critic(y)).reshape(x.shape[0]).abs()
            quotient = gap / (x - y).norm(dim=1).clamp_min(torch.finfo(x.dtype).tiny)
        estimate = torch.maximum(estimate, quotient.max())
    return estimate.detach()


def lipschitz_upper_bound(module):
    """An upper bound on the (Euclidean) Lipschitz constant of Linear layers composed with 1-Lipschitz activations.

    The product over the ``nn.Linear`` layers of module of the spectral norms of their weights (the
    largest singular value): each layer is Lipschitz with that constant, each ReLU, leaky ReLU or
    tanh with 1, and constants multiply along a composition. Returns a scalar tensor. The module
    must be an ``nn.Linear`` or an ``nn.Sequential`` (nested or not) of ``nn.Linear`` layers and
    1-Lipschitz activations (ReLU, LeakyReLU and ELU with slope parameter at most 1, ReLU6, Tanh,
    Hardtanh, Sigmoid, Softplus, Identity): any other layer is a ``ValueError``, since the product
    would not bound it. See chapter 12, section "Wasserstein GANs".
    """
    _check_module("module", module)
    for layer in module.modules():
        if isinstance(layer, (nn.Sequential, nn.Linear, nn.ReLU, nn.ReLU6, nn.Tanh, nn.Hardtanh, nn.Sigmoid,
                              nn.Softplus, nn.Identity)):
            continue
        if isinstance(layer, nn.LeakyReLU) and abs(layer.negative_slope) <= 1:
            continue
        if isinstance(layer, nn.ELU) and 0 <= layer.alpha <= 1:
            continue
        raise ValueError(f"module must compose nn.Linear layers and 1-Lipschitz activations only, "
                         f"got a {type(layer).__name__} layer, which the product of spectral norms does not bound")
    bound = None
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            norm = torch.linalg.matrix_norm(layer.weight.detach(), ord=2)
            bound = norm if bound is None else bound * norm
    if bound is None:
        raise ValueError("module has no nn.Linear layer")
    return bound


_WGAN_METHODS = ("clip", "penalty")


def train_wgan(generator, critic, sample_data, latent_dim, steps, method="penalty", n_critic=5, clip=0.01,
               penalty_weight=10.0, batch_size=256, lr=1e-4, betas=(0.5, 0.9), seed=0, snapshot_z=None,
               snapshot_every=0, progress=True):
    r"""Train a Wasserstein GAN: ``n_critic`` critic steps per generator step.

    The critic f ascends ``mean f(real) - mean f(G(z))``, the dual objective of
    :eq:`eq-ch12-kr`, over critics kept (roughly) 1-Lipschitz by ``method``: ``"clip"`` clamps its
    weights to [-clip, clip] after each step (:func:`clip_weights`, with RMSprop as in Arjovsky et
    al.); ``"penalty"`` adds ``penalty_weight`` times :func:`gradient_penalty` to its loss (Adam with
    ``betas``, as in Gulrajani et al.). The generator descends ``-mean f(G(z))``. ``steps`` counts
    generator steps. Returns ``{"critic_loss", "g_loss", "w_estimate", "snapshots"}``, where
    ``w_estimate`` is the last critic's ``mean f(real) - mean f(fake)`` at each step. A diverged run (NaN
    samples or losses) raises ``FloatingPointError``. See chapter 12, section "Wasserstein GANs".
    """
    reference = _check_training(generator, critic, "critic", sample_data, latent_dim, steps, batch_size, snapshot_z,
                                snapshot_every, seed)
    if method not in _WGAN_METHODS:
        raise ValueError(f"method must be one of {_WGAN_METHODS}, got {method!r}")
    _check_int("n_critic", n_critic)
    clip = _check_real("clip", clip, low=0.0, low_open=True)
    penalty_weight = _check_real("penalty_weight", penalty_weight, low=0.0)
    rng = torch.Generator(device=reference.device).manual_seed(seed)
    g_opt = optim.Adam(generator.parameters(), lr=lr, betas=betas)
    if method == "clip":
        c_opt = optim.RMSprop(critic.parameters(), lr=lr)
        clip_weights(critic, clip)
    else:
        c_opt = optim.Adam(critic.parameters(), lr=lr, betas=betas)
    history = {"critic_loss": [], "g_loss": [], "w_estimate": [], "snapshots": []}
    _snapshot(history, 0, generator, snapshot_z, snapshot_every, steps)

    def latent():
        return torch.randn(batch_size, latent_dim, generator=rng, dtype=reference.dtype, device=reference.device)

    for step in _bar(steps, progress, f"WGAN ({method})"):
        for _ in range(n_critic):
            real = _sample(sample_data, batch_size, rng, reference)
            with torch.no_grad():
                fake = _generate(generator, latent())
            _check_generated(fake, real, step)
            real_value = _call("critic", critic, real, "data")
            _check_scalar_output("critic", real_value, batch_size)
            gap = real_value.mean() - critic(fake).mean()
            critic_loss = -gap
            if method == "penalty":
                critic_loss = critic_loss + penalty_weight * gradient_penalty(critic, real, fake, generator=rng)
            c_opt.zero_grad()
            critic_loss.backward()
            c_opt.step()
            if method == "clip":
                clip_weights(critic, clip)
        g_loss = -critic(generator(latent())).mean()
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()
        history["critic_loss"].append(_check_finite_loss("the critic's loss", float(critic_loss.detach()), step))
        history["g_loss"].append(_check_finite_loss("the generator's loss", float(g_loss.detach()), step))
        history["w_estimate"].append(float(gap.detach()))
        _snapshot(history, step, generator, snapshot_z, snapshot_every, steps)
    return history


# -- Wasserstein distances by sorting ---------------------------------------------------------------

def _quantile_pairs(n, m, device, dtype):
    """The indices (i_k, j_k) and lengths w_k of the pieces of [0, 1] on which the quantile functions of
    the uniform measures on n and m sorted points are constant: sorted x[i_k] is coupled to sorted y[j_k]
    with mass w_k. The breakpoints i/n and j/m are compared as the integers i*m and j*n, exactly."""
    breaks = torch.cat([torch.arange(1, n + 1, device=device) * m, torch.arange(1, m + 1, device=device) * n])
    breaks = torch.unique(breaks)                                          # sorted, the last one is n*m
    lengths = torch.diff(breaks, prepend=breaks.new_zeros(1)).to(dtype) / (n * m)        # no float64 on MPS
    # the piece (q_{k-1}, q_k] lies under x's step i with i*m >= q_k > (i-1)*m: i = ceil(q_k / m) - 1 (0-based)
    i = torch.div(breaks + m - 1, m, rounding_mode="floor") - 1
    j = torch.div(breaks + n - 1, n, rounding_mode="floor") - 1
    return i, j, lengths


def _wasserstein_power_sorted(x_sorted, y_sorted, p):
    """W_p^p between uniform measures, column by column: x_sorted (n, L), y_sorted (m, L) sorted along dim 0 -> (L,)."""
    n, m = x_sorted.shape[0], y_sorted.shape[0]
    if n == m:
        return ((x_sorted - y_sorted).abs() ** p).mean(0)
    i, j, lengths = _quantile_pairs(n, m, x_sorted.device, x_sorted.dtype)
    gaps = (x_sorted[i] - y_sorted[j]).abs() ** p
    return (lengths[:, None] * gaps).sum(0)


def _root(power, p):
    """power^(1/p), with the gradient 0 (a subgradient) where power = 0 instead of 0 * inf = NaN.

    W_p = (W_p^p)^(1/p) is, like a norm, not differentiable where it vanishes (x and y the same
    measure): d/dt t^(1/p) is infinite at t = 0 for p > 1, and the chain rule would multiply it by
    the zero gradient of W_p^p."""
    if p == 1:
        return power
    positive = power > 0
    safe = torch.where(positive, power, torch.ones_like(power))
    return torch.where(positive, safe ** (1 / p), torch.zeros_like(power))


def wasserstein_1d(x, y, p=1):
    r"""The exact p-Wasserstein distance ``W_p`` between the uniform empirical measures on x (n,) and y (m,).

    In one dimension the optimal coupling is monotone: ``W_p^p = int_0^1 |F_x^{-1}(t) - F_y^{-1}(t)|^p dt``
    with the quantile functions, which are step functions of the sorted samples; for n = m it is
    ``mean_i |x_(i) - y_(i)|^p``. Returns ``W_p`` itself (a scalar), not ``W_p^p`` (POT's
    ``ot.wasserstein_1d`` returns ``W_p^p``). O((n + m) log(n + m)); p >= 1 (a real number).

    Gradients are autograd's through ``torch.sort``, exact wherever no two points of x (or of y) tie and
    W_p > 0. At a tie the distance generally has a kink (it is not differentiable): the gradient is then
    that of the piece in which the tied points keep the order the sort gave them, a one-sided
    derivative; its sum over the tied points (the derivative for moving them together) is exact. Where
    W_p = 0 (for p > 1) the gradient is 0, a subgradient, rather than NaN. See chapter 12, section
    "Minimum Kantorovich estimators", :eq:`eq-ch12-w1d`.
    """
    _check_tensor("x", x, dim=1)
    _check_tensor("y", y, dim=1)
    p = _check_real("p", p, low=1.0)
    _check_like("y", y, "x", x)
    power = _wasserstein_power_sorted(torch.sort(x).values[:, None], torch.sort(y).values[:, None], p)[0]
    return _root(power, p)


def random_projections(d, n_projections, generator=None, dtype=None, device=None):
    """n_projections directions drawn uniformly on the unit sphere of R^d: a tensor (d, n_projections).

    Normalized standard Gaussian vectors, one per *column*, as POT's ``ot.sliced.get_random_projections``
    lays them out. See chapter 12, section "The sliced Wasserstein distance".
    """
    d = _check_int("d", d)
    n_projections = _check_int("n_projections", n_projections)
    _check_generator(generator, device or "cpu")
    _check_dtype(dtype)
    dtype = dtype or torch.get_default_dtype()
    directions = torch.randn(d, n_projections, generator=generator, dtype=dtype, device=device)
    return directions / directions.norm(dim=0, keepdim=True)


def sliced_wasserstein(x, y, n_projections=50, p=2, projections=None, generator=None):
    r"""The sliced p-Wasserstein distance between the uniform empirical measures on x (n, d) and y (m, d).

    ``SW_p = (mean_l W_p^p(<theta_l, x>, <theta_l, y>))^(1/p)`` over the columns theta_l of
    ``projections`` (d, L), or of ``n_projections`` :func:`random_projections` drawn with
    ``generator`` (on x's device); each 1-D distance is exact, by sorting (:func:`wasserstein_1d`). Given
    projections are used as they are (not normalized). This is the quantity
    ``ot.sliced_wasserstein_distance(x, y, n_projections, p, projections)`` returns. A scalar,
    differentiable in x and y, with :func:`wasserstein_1d`'s caveats at ties and at zero. See chapter 12,
    section "The sliced Wasserstein distance", :eq:`eq-ch12-sw`.
    """
    _check_tensor("x", x, dim=2)
    _check_tensor("y", y, dim=2)
    _check_same_feature_dim(x, y)
    _check_like("y", y, "x", x)
    p = _check_real("p", p, low=1.0)
    if projections is None:
        projections = random_projections(x.shape[1], n_projections, generator=generator, dtype=x.dtype, device=x.device)
    else:
        _check_tensor("projections", projections, dim=2)
        if projections.shape[0] != x.shape[1]:
            raise ValueError(f"projections must have shape (d, n_projections) = ({x.shape[1]}, L), "
                             f"got {tuple(projections.shape)}")
        if projections.dtype != x.dtype or projections.device != x.device:
            raise ValueError(f"projections must have x's dtype and device ({x.dtype} on {x.device}), "
                             f"got {projections.dtype} on {projections.device}")
        if not bool((projections.norm(dim=0) > 0).all()):
            raise ValueError("projections must have nonzero columns (directions), got a zero column")
    x_proj = torch.sort(x @ projections, dim=0).values
    y_proj = torch.sort(y @ projections, dim=0).values
    return _root(_wasserstein_power_sorted(x_proj, y_proj, p).mean(), p)


def train_minimum_kantorovich(generator, sample_data, latent_dim, steps, n_projections=50, p=2, batch_size=256, lr=1e-3,
                              seed=0, snapshot_z=None, snapshot_every=0, progress=True):
    r"""Fit a generator by minimizing the sliced Wasserstein distance to the data (a minimum Kantorovich estimator).

    Each step draws a data batch and a latent batch (batch_size of each), fresh random projections,
    and takes an Adam step (:class:`ad_lib.optim.Adam`) on :func:`sliced_wasserstein` between the
    generated and the data batch: no critic, no min-max. Returns ``{"loss": [...], "snapshots": [...]}``
    (as :func:`train_gan`); a diverged run raises ``FloatingPointError``.
    See chapter 12, section "Minimum Kantorovich estimators", :eq:`eq-ch12-mke`.
    """
    reference = _check_training(generator, None, "", sample_data, latent_dim, steps, batch_size, snapshot_z,
                                snapshot_every, seed)
    _check_int("n_projections", n_projections)
    _check_real("p", p, low=1.0)
    rng = torch.Generator(device=reference.device).manual_seed(seed)
    g_opt = optim.Adam(generator.parameters(), lr=lr)
    history = {"loss": [], "snapshots": []}
    _snapshot(history, 0, generator, snapshot_z, snapshot_every, steps)
    for step in _bar(steps, progress, "sliced Wasserstein"):
        real = _sample(sample_data, batch_size, rng, reference)
        z = torch.randn(batch_size, latent_dim, generator=rng, dtype=reference.dtype, device=reference.device)
        fake = _generate(generator, z)
        _check_generated(fake, real, step)
        loss = sliced_wasserstein(fake, real, n_projections=n_projections, p=p, generator=rng)
        g_opt.zero_grad()
        loss.backward()
        g_opt.step()
        history["loss"].append(_check_finite_loss("the sliced Wasserstein loss", float(loss.detach()), step))
        _snapshot(history, step, generator, snapshot_z, snapshot_every, steps)
    return history


# -- latent space -----------------------------------------------------------------------------------

def interpolate_latent(z1, z2, steps):
    """The points ``(1 - lambda) z1 + lambda z2`` for ``steps`` values of lambda evenly spaced in [0, 1].

    z1 and z2 have the same shape; the result has shape ``(steps, *z1.shape)``, its first entry z1 and
    its last z2. Pushed through a generator, the segment becomes a path in the data space. See
    chapter 12, section "Latent interpolation".
    """
    _check_tensor("z1", z1, min_dim=0)
    _check_tensor("z2", z2, min_dim=0)
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    _check_like("z2", z2, "z1", z1)
    steps = _check_int("steps", steps, low=2)
    lam = torch.linspace(0, 1, steps, dtype=z1.dtype, device=z1.device).reshape((steps,) + (1,) * z1.dim())
    return (1 - lam) * z1 + lam * z2


# -- auto-encoders and PCA --------------------------------------------------------------------------

def pca_subspace(x, k):
    """An orthonormal basis (d, k) of the top-k principal subspace of the rows of x (n, d).

    The k leading right singular vectors of the centred data matrix, i.e. the eigenvectors of the
    sample covariance for its k largest eigenvalues. See chapter 12, section "Linear auto-encoders
    recover PCA".
    """
    _check_tensor("x", x, dim=2)
    k = _check_int("k", k)
    n, d = x.shape
    if k > d:
        raise ValueError(f"k must be at most the dimension d = {d}, got {k}")
    if d > k > n - 1:
        raise ValueError(f"k must be at most n - 1 = {n - 1} (n = {n} centred points span at most n - 1 "
                         f"dimensions, so a larger principal subspace is not determined), got {k}")
    _, _, vh = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    return vh[:k].T


def _orthonormal_basis(name, a):
    u, s, _ = torch.linalg.svd(a, full_matrices=False)
    rank = int((s > s.max() * max(a.shape) * torch.finfo(a.dtype).eps).sum()) if s.numel() else 0
    if rank == 0:
        raise ValueError(f"{name} spans no subspace (it is zero)")
    return u[:, :rank]


def principal_angles(a, b):
    r"""The principal angles (radians) between the column spaces of a (d, k) and b (d, l), largest first.

    With orthonormal bases Q_a, Q_b, the cosines are the singular values of ``Q_a^T Q_b``; small
    angles are taken from the sines (the singular values of ``Q_b - Q_a Q_a^T Q_b``), which are
    accurate there, as ``scipy.linalg.subspace_angles`` does and in its order. Returns min(k, l)
    angles (of the ranks). See chapter 12, section "Linear auto-encoders recover PCA".
    """
    _check_tensor("a", a, dim=2)
    _check_tensor("b", b, dim=2)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must have the same number of rows d, got {tuple(a.shape)} and {tuple(b.shape)}")
    _check_like("b", b, "a", a)
    qa, qb = _orthonormal_basis("a", a), _orthonormal_basis("b", b)
    if qa.shape[1] < qb.shape[1]:
        qa, qb = qb, qa
    cross = qa.T @ qb
    cosines = torch.linalg.svdvals(cross)                                  # descending: angles ascending
    sines = torch.linalg.svdvals(qb - qa @ cross).flip(0)                  # ascending: the same angles
    ascending = torch.where(cosines ** 2 >= 0.5, torch.arcsin(sines.clamp(-1, 1)), torch.arccos(cosines.clamp(-1, 1)))
    return ascending.flip(0)


class _EncoderDecoder(nn.Module):
    """What both auto-encoders share: ``encode`` (the encoder's codes), ``decode``, and ``forward``, their composition."""

    def encode(self, x):
        """The codes (..., k) of x (..., d)."""
        return self.encoder(x)

    def decode(self, z):
        """The reconstructions (..., d) of codes z (..., k)."""
        return self.decoder(z)

    def forward(self, x):
        """decode(encode(x))."""
        return self.decode(self.encode(x))


class LinearAutoencoder(_EncoderDecoder):
    r"""The linear auto-encoder: encode ``z = W_e x + b_e`` (k values), decode ``W_d z + b_d`` (d values).

    Trained on the squared reconstruction error it recovers the top-k principal subspace: the column
    space of ``W_d`` (``decoder.weight``, (d, k)) is the PCA subspace at the optimum (Baldi and Hornik),
    though ``W_d`` itself is any basis of it. See chapter 12, section "Linear auto-encoders recover PCA",
    :eq:`eq-ch12-linear-ae`.
    """

    def __init__(self, d, k, bias=True):
        super().__init__()
        d, k = _check_int("d", d), _check_int("k", k)
        self.encoder = nn.Linear(d, k, bias=bias)
        self.decoder = nn.Linear(k, d, bias=bias)


class Autoencoder(_EncoderDecoder):
    """An auto-encoder of perceptrons: encoder d -> hidden... -> k, decoder k -> reversed(hidden)... -> d.

    ``hidden`` is a width or a list of widths; ``activation`` a module class placed between the
    linear layers (not after the code nor the output). See chapter 12, section "Auto-encoders",
    :eq:`eq-ch12-ae`.
    """

    def __init__(self, d, hidden, k, activation=nn.ReLU):
        super().__init__()
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
            hidden = [hidden]
        elif isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise TypeError(f"hidden must be a width or a list of widths, got {hidden!r}")
        hidden = list(hidden)
        for width in hidden:
            _check_int("hidden (each width)", width)
        d, k = _check_int("d", d), _check_int("k", k)
        self.encoder = mlp([d, *hidden, k], activation)
        self.decoder = mlp([k, *reversed(hidden), d], activation)

