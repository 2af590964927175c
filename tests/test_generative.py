"""The generative-model tools of chapter 12 (ad_lib.generative) against independent truths.

Maximum likelihood against numpy's covariance and torch.distributions; the kernel density against a
direct sum; the exact 1-D Wasserstein distance against scipy.stats.wasserstein_distance and POT's
ot.wasserstein_1d; the sliced distance against ot.sliced_wasserstein_distance with the same
projections; gradients against torch.autograd.gradcheck in float64; the gradient penalty and the
Lipschitz bounds against closed forms for linear critics; principal angles against
scipy.linalg.subspace_angles; the linear auto-encoder's decoder against the PCA subspace; and bad input.
"""

import inspect
import math

import numpy as np
import ot
import pytest
import scipy.linalg
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ad_lib
from ad_lib import generative as gen

F64 = torch.float64


def rng(seed, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def randn(*shape, seed=0, device="cpu"):
    return torch.randn(*shape, generator=rng(seed), dtype=F64).to(device)


# -- maximum likelihood ------------------------------------------------------------------------------

def test_gaussian_mle_is_the_sample_mean_and_biased_covariance(device):
    x = randn(500, 3, device=device) @ randn(3, 3, seed=1, device=device) + 2.0
    mean, cov = gen.gaussian_mle(x)
    data = x.cpu().numpy()
    np.testing.assert_allclose(mean.cpu().numpy(), data.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov.cpu().numpy(), np.cov(data.T, bias=True), rtol=0, atol=1e-12)
    assert mean.device == x.device and cov.dtype == F64


def test_gaussian_log_likelihood_against_torch_distributions(device):
    x = randn(50, 4, device=device)
    a = randn(4, 4, seed=2, device=device)
    mean, cov = randn(4, seed=3, device=device), a @ a.T + 0.5 * torch.eye(4, dtype=F64, device=device)
    ours = gen.gaussian_log_likelihood(x, mean, cov)
    theirs = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)


def test_the_mle_is_a_stationary_point_of_the_log_likelihood():
    x = randn(300, 2) @ torch.tensor([[1.0, 0.3], [0.0, 0.5]], dtype=F64)
    mean, cov = gen.gaussian_mle(x)
    mean, cov = mean.clone().requires_grad_(), cov.clone().requires_grad_()
    grads = torch.autograd.grad(gen.gaussian_log_likelihood(x, mean, cov).mean(), (mean, cov))
    assert all(g.abs().max() < 1e-10 for g in grads)


def test_points_on_a_line_have_no_gaussian_density():
    t = randn(100)
    x = torch.stack([t, 2 * t], dim=1)                                    # a line in R^2
    mean, cov = gen.gaussian_mle(x)
    with pytest.raises(ValueError, match="covariance"):
        gen.gaussian_log_likelihood(x, mean, cov + torch.tensor([[0.0, 0.0], [0.0, -1e-9]], dtype=F64))
    values = [gen.gaussian_log_likelihood(x, mean, cov + eps * torch.eye(2, dtype=F64)).mean().item()
              for eps in (1e-2, 1e-4, 1e-6, 1e-8)]
    # the likelihood grows like -log(eps) / 2: by log(100) / 2 per factor 100, without bound
    assert all(b - a > 0.9 * math.log(10) for a, b in zip(values, values[1:]))


def test_kde_against_a_direct_sum_and_its_divergence(device):
    x, s = randn(7, 2, device=device), randn(5, 2, seed=1, device=device)
    h = 0.7
    kernel = h * h * torch.eye(2, dtype=F64, device=device)
    density = [torch.stack([torch.distributions.MultivariateNormal(sj, kernel).log_prob(xi).exp() for sj in s]).mean()
               for xi in x]
    direct = torch.stack(density).log()
    torch.testing.assert_close(gen.kde_log_likelihood(x, s, h), direct, rtol=0, atol=1e-10)
    # on a sample the density diverges as h -> 0, off the samples it vanishes
    on = [gen.kde_log_likelihood(s[:1], s, h).item() for h in (1e-1, 1e-2, 1e-3)]
    off = [gen.kde_log_likelihood(s[:1] + 0.1, s, h).item() for h in (1e-1, 1e-2, 1e-3)]
    assert on[0] < on[1] < on[2] and off[0] > off[1] > off[2] and off[2] < -1000


# -- the ring and the modes ---------------------------------------------------------------------------

def test_ring_samples_and_modes_covered(device):
    centers = gen.ring_centers(8, 2.0, dtype=F64, device=device)
    torch.testing.assert_close(centers.norm(dim=1), torch.full((8,), 2.0, dtype=F64, device=device))
    x, labels = gen.ring_of_gaussians(4000, std=0.05, generator=rng(0, device), dtype=F64, device=device)
    assert x.shape == (4000, 2) and labels.shape == (4000,) and x.device.type == device.type
    assert (x - centers[labels]).norm(dim=1).max() < 0.05 * 6
    covered, quality = gen.modes_covered(x, centers, 0.05)
    assert covered == 8 and quality > 0.98                               # 3 std in 2-D holds 98.9 %
    three = x[labels < 3]
    assert gen.modes_covered(three, centers, 0.05)[0] == 3
    spread = torch.randn(4000, 2, generator=rng(1, device), dtype=F64, device=device) * 3
    covered, quality = gen.modes_covered(spread, centers, 0.05)
    assert quality < 0.05
    x2, _ = gen.ring_of_gaussians(10, generator=rng(0, device), device=device)
    x3, _ = gen.ring_of_gaussians(10, generator=rng(0, device), device=device)
    assert torch.equal(x2, x3)


# -- the exact 1-D Wasserstein distance --------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:The use of `x.T`:UserWarning")       # POT on 1-D torch tensors
@pytest.mark.parametrize("n, m", [(9, 9), (9, 4), (5, 12), (1, 6)])
@pytest.mark.parametrize("p", [1, 1.5, 2, 3])
def test_wasserstein_1d_against_pot_and_scipy(device, n, m, p):
    x, y = randn(n, seed=n, device=device), 2 * randn(m, seed=100 + m, device=device) + 0.5
    ours = gen.wasserstein_1d(x, y, p)
    pot = ot.wasserstein_1d(x, y, p=p) ** (1 / p)                        # POT returns W_p^p
    torch.testing.assert_close(ours, pot, rtol=1e-12, atol=1e-12)
    if p == 1:
        assert abs(ours.item() - scipy.stats.wasserstein_distance(x.cpu().numpy(), y.cpu().numpy())) < 1e-12


@pytest.mark.filterwarnings("ignore:The use of `x.T`:UserWarning")
@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=1, max_size=12), st.lists(st.floats(-10, 10), min_size=1, max_size=12),
       st.floats(-5, 5), st.sampled_from([1.0, 2.0, 3.0]))
def test_wasserstein_1d_laws(xs, ys, shift, p):
    x, y = torch.tensor(xs, dtype=F64), torch.tensor(ys, dtype=F64)
    w = gen.wasserstein_1d(x, y, p)
    assert abs(w - gen.wasserstein_1d(y, x, p)) < 1e-9                  # symmetric
    assert abs(gen.wasserstein_1d(x + shift, x, p) - abs(shift)) < 1e-9   # a translation moves everything by |shift|
    assert gen.wasserstein_1d(x, x, p) < 1e-12
    z = torch.cat([x, x])                                                # the same measure, each point twice
    assert abs(gen.wasserstein_1d(z, y, p) - w) < 1e-9
    assert abs(w - ot.wasserstein_1d(x, y, p=p) ** (1 / p)) < 1e-9


def test_wasserstein_gradients_by_gradcheck():
    x = randn(7, seed=1).requires_grad_()
    y = randn(4, seed=2).requires_grad_()
    for p in (1, 1.5, 2, 3):
        assert torch.autograd.gradcheck(lambda a, b: gen.wasserstein_1d(a, b, p), (x, y))
    projections = gen.random_projections(3, 6, generator=rng(3), dtype=F64)
    a, b = randn(8, 3, seed=4).requires_grad_(), randn(5, 3, seed=5).requires_grad_()
    for p in (1, 1.5, 2):
        assert torch.autograd.gradcheck(lambda u, v: gen.sliced_wasserstein(u, v, p=p, projections=projections), (a, b))


@pytest.mark.filterwarnings("ignore:The use of `x.T`:UserWarning")
@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=15), st.lists(st.integers(-3, 3), min_size=1, max_size=15),
       st.sampled_from([1.0, 1.5, 2.0, 2.7, 4.0]))
def test_wasserstein_1d_with_ties_against_pot_and_scipy(xs, ys, p):
    # integer samples: many ties within x, within y and between them
    x, y = torch.tensor(xs, dtype=F64), torch.tensor(ys, dtype=F64)
    w = gen.wasserstein_1d(x, y, p)
    assert abs(w - ot.wasserstein_1d(x, y, p=p) ** (1 / p)) < 1e-12
    if p == 1:
        assert abs(w.item() - scipy.stats.wasserstein_distance(xs, ys)) < 1e-12
    # float32: the same value to float32's rounding
    assert abs(gen.wasserstein_1d(x.float(), y.float(), p).item() - w.item()) < 1e-5 * max(1.0, w.item())


@pytest.mark.filterwarnings("ignore:The use of `x.T`:UserWarning")
def test_sliced_wasserstein_float32_and_ties_against_pot(device):
    x = torch.round(randn(30, 2, device=device))                         # ties in every projection onto an axis
    y = torch.round(randn(17, 2, seed=1, device=device))
    axes = torch.eye(2, dtype=F64, device=device)
    for p in (1, 1.5, 2):
        ours = gen.sliced_wasserstein(x, y, p=p, projections=axes)
        torch.testing.assert_close(ours, ot.sliced_wasserstein_distance(x, y, p=p, projections=axes), rtol=1e-12, atol=1e-12)
        single = gen.sliced_wasserstein(x.float(), y.float(), p=p, projections=axes.float())
        assert single.dtype == torch.float32
        torch.testing.assert_close(single.double(), ours, rtol=1e-5, atol=1e-6)


def test_wasserstein_gradient_at_a_tie_is_one_sided(device):
    # x = (0, 0), y = (-1, 1): W_1 = 1, and every move of one point of x lowers it (a kink, no gradient);
    # autograd returns the gradient of the piece where the tied points keep the sort's order
    x = torch.zeros(2, dtype=F64, device=device, requires_grad=True)
    y = torch.tensor([-1.0, 1.0], dtype=F64, device=device)
    for p in (1, 2):
        grad, = torch.autograd.grad(gen.wasserstein_1d(x, y, p) ** p, x)
        first, second = torch.sort(x.detach()).indices.tolist()
        h = 1e-7
        move = torch.zeros(2, dtype=F64, device=device)
        move[first], move[second] = -h, h                                  # keeps the order: on that piece
        one_sided = (gen.wasserstein_1d(move, y, p) ** p - 1) / h
        assert abs((grad * move).sum() / h - one_sided) < 1e-6
        assert abs(grad.sum()) < 1e-15                                     # moving both together: exact, 0
        for e in ([h, 0.0], [-h, 0.0], [0.0, h], [0.0, -h]):
            assert gen.wasserstein_1d(torch.tensor(e, dtype=F64, device=device), y, p) < 1


@pytest.mark.parametrize("p", [1, 1.5, 2, 3])
def test_wasserstein_gradient_at_zero_distance_is_zero_not_nan(device, p):
    x = randn(6, device=device).requires_grad_()
    grad, = torch.autograd.grad(gen.wasserstein_1d(x, x.detach(), p), x)
    assert torch.equal(grad, torch.zeros_like(grad))
    a = randn(6, 3, device=device).requires_grad_()
    grad, = torch.autograd.grad(gen.sliced_wasserstein(a, a.detach(), p=p, n_projections=4,
                                                       generator=rng(0, device)), a)
    assert torch.equal(grad, torch.zeros_like(grad))
    # and the exact gradient away from zero is unchanged (gradcheck passes above)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 25), st.integers(1, 25), st.integers(0, 10_000))
def test_wasserstein_1_is_the_area_between_the_cdfs(n, m, seed):
    # the exercise "The 1-D distance as an integral of the CDFs", with its solution's code
    x, y = randn(n, seed=seed), 2 * randn(m, seed=seed + 1)
    u = torch.sort(torch.cat([x, y])).values

    def cdf(s, t):
        return torch.searchsorted(torch.sort(s).values, t, right=True).to(s.dtype) / len(s)
    area = ((u[1:] - u[:-1]) * (cdf(x, u[:-1]) - cdf(y, u[:-1])).abs()).sum()
    assert abs(area - gen.wasserstein_1d(x, y)) < 1e-12


def test_sliced_wasserstein_against_pot(device):
    x, y = randn(40, 3, device=device), randn(25, 3, seed=1, device=device) + 0.7
    projections = gen.random_projections(3, 30, generator=rng(2, device), dtype=F64, device=device)
    assert projections.shape == (3, 30)
    torch.testing.assert_close(projections.norm(dim=0), torch.ones(30, dtype=F64, device=device))
    for p in (1, 2, 3):
        ours = gen.sliced_wasserstein(x, y, p=p, projections=projections)
        theirs = ot.sliced_wasserstein_distance(x, y, p=p, projections=projections)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    # in one dimension, with the direction (1), it is the 1-D distance
    one = torch.ones(1, 1, dtype=F64, device=device)
    torch.testing.assert_close(gen.sliced_wasserstein(x[:, :1], y[:, :1], p=2, projections=one),
                               gen.wasserstein_1d(x[:, 0], y[:, 0], 2))
    # a seeded generator makes the random projections repeatable
    a = gen.sliced_wasserstein(x, y, generator=rng(5, device))
    assert a == gen.sliced_wasserstein(x, y, generator=rng(5, device))


def test_wasserstein_gradient_is_the_sorted_formula(device):
    x, y = randn(8, seed=1, device=device).requires_grad_(), randn(8, seed=2, device=device)
    p = 3
    grad, = torch.autograd.grad(gen.wasserstein_1d(x, y, p) ** p, x)
    order_x, order_y = torch.argsort(x.detach()), torch.argsort(y)
    gap = x.detach()[order_x] - y[order_y]                               # the i-th smallest to the i-th smallest
    expected = torch.empty_like(grad)
    expected[order_x] = p / 8 * gap.abs() ** (p - 1) * gap.sign()
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 15), st.integers(2, 15), st.integers(1, 4), st.integers(0, 10_000))
def test_sliced_wasserstein_is_symmetric_and_below_the_exact_distance(n, m, d, seed):
    x, y = randn(n, d, seed=seed), randn(m, d, seed=seed + 1) + 0.3
    thetas = gen.random_projections(d, 16, generator=rng(seed), dtype=F64)
    sw = gen.sliced_wasserstein(x, y, p=2, projections=thetas)
    assert abs(sw - gen.sliced_wasserstein(y, x, p=2, projections=thetas)) < 1e-12
    a, b = torch.full((n,), 1 / n, dtype=F64), torch.full((m,), 1 / m, dtype=F64)
    exact = ot.emd2(a, b, torch.cdist(x, y) ** 2) ** 0.5
    assert sw <= exact + 1e-9                                            # each projection is 1-Lipschitz


def test_training_on_the_device(device):
    torch.manual_seed(0)
    g_net = gen.mlp([2, 8, 2]).to(device)
    history = gen.train_minimum_kantorovich(g_net, data_sampler(device=device), 2, steps=3, batch_size=16,
                                            n_projections=4, snapshot_z=torch.randn(5, 2, device=device),
                                            snapshot_every=1, progress=False)
    assert len(history["loss"]) == 3 and history["snapshots"][-1][1].device.type == device.type
    critic = gen.mlp([2, 8, 1]).to(device)
    history = gen.train_wgan(g_net, critic, data_sampler(device=device), 2, steps=2, n_critic=1, batch_size=16,
                             progress=False)
    assert len(history["w_estimate"]) == 2


# -- GANs and Wasserstein GANs -----------------------------------------------------------------------

def linear_critic(w, device):
    critic = nn.Linear(len(w), 1).to(device=device, dtype=F64)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([w], dtype=F64))
    return critic


def test_gradient_penalty_of_a_linear_critic_is_closed_form(device):
    critic = linear_critic([3.0, 4.0], device)                          # gradient norm 5 everywhere
    real, fake = randn(16, 2, device=device), randn(16, 2, seed=1, device=device)
    penalty = gen.gradient_penalty(critic, real, fake, generator=rng(0, device))
    torch.testing.assert_close(penalty, torch.tensor(16.0, dtype=F64, device=device))
    grad, = torch.autograd.grad(penalty, critic.weight)                  # differentiable in the parameters
    torch.testing.assert_close(grad, 2 * (5 - 1) * critic.weight / 5)


class _FunctionalCritic(nn.Module):
    """A critic whose parameters are given from outside, so that gradcheck can vary them."""

    def __init__(self, net, names, values):
        super().__init__()
        self.net, self.state = net, dict(zip(names, values))

    def forward(self, x):
        return torch.func.functional_call(self.net, self.state, (x,))


def test_gradient_penalty_by_gradcheck_in_the_critic_parameters():
    torch.manual_seed(0)
    net = gen.mlp([2, 5, 1], activation=nn.Tanh).double()
    names = [n for n, _ in net.named_parameters()]
    real, fake = randn(6, 2), randn(6, 2, seed=1)

    def penalty(*values):
        return gen.gradient_penalty(_FunctionalCritic(net, names, values), real, fake, generator=rng(0))
    values = tuple(p.detach().clone().requires_grad_() for p in net.parameters())
    assert torch.autograd.gradcheck(penalty, values)


def test_lipschitz_estimates_and_bounds(device):
    critic = linear_critic([3.0, -4.0], device)
    x, y = randn(10, 2, device=device), randn(10, 2, seed=1, device=device)
    torch.testing.assert_close(gen.lipschitz_estimate(critic, x), torch.tensor(5.0, dtype=F64, device=device))
    torch.testing.assert_close(gen.lipschitz_upper_bound(critic), torch.tensor(5.0, dtype=F64, device=device))
    torch.manual_seed(0)
    net = gen.mlp([2, 16, 16, 1]).to(device=device, dtype=F64)
    low, high = gen.lipschitz_estimate(net, x, y), gen.lipschitz_upper_bound(net)
    assert 0 < low <= high
    c = 0.01
    gen.clip_weights(net, c)
    assert all(p.abs().max() <= c for p in net.parameters())
    clipped_bound = math.prod(c * math.sqrt(layer.in_features * layer.out_features)
                              for layer in net.modules() if isinstance(layer, nn.Linear))
    assert gen.lipschitz_estimate(net, x, y) <= gen.lipschitz_upper_bound(net) <= clipped_bound * (1 + 1e-12)


def data_sampler(std=0.05, dtype=torch.float32, device="cpu"):
    return lambda n, g: gen.ring_of_gaussians(n, std=std, generator=g, dtype=dtype, device=device)[0]


def test_gan_step_losses_are_the_papers(device):
    torch.manual_seed(0)
    g_net, d_net = gen.mlp([2, 8, 2]).to(device), gen.mlp([2, 8, 1]).to(device)
    real, z = randn(32, 2, device=device).float(), randn(32, 2, seed=1, device=device).float()
    with torch.no_grad():
        d_real, d_fake = torch.sigmoid(d_net(real)), torch.sigmoid(d_net(g_net(z)))
        expected_d = -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean())
    before = [p.detach().clone() for p in g_net.parameters()]
    g_opt, d_opt = torch.optim.SGD(g_net.parameters(), lr=0.0), torch.optim.SGD(d_net.parameters(), lr=0.0)
    for loss, sign in (("non-saturating", -1), ("minimax", 1)):
        d_loss, g_loss = gen.gan_step(g_net, d_net, real, z, g_opt, d_opt, loss=loss)
        assert abs(d_loss - expected_d.item()) < 1e-5
        expected_g = (-torch.log(d_fake) if sign < 0 else torch.log(1 - d_fake)).mean().item()
        assert abs(g_loss - expected_g) < 1e-5
    assert all(torch.equal(a, b) for a, b in zip(before, g_net.parameters()))   # lr = 0: nothing moved
    with pytest.raises(ValueError, match="loss"):
        gen.gan_step(g_net, d_net, real, z, g_opt, d_opt, loss="hinge")


@pytest.mark.parametrize("trainer", ["gan", "wgan-clip", "wgan-penalty", "sliced"])
def test_training_loops_are_seeded_and_record_their_history(trainer):
    def run():
        torch.manual_seed(0)
        g_net, other = gen.mlp([2, 16, 2]), gen.mlp([2, 16, 1])
        z = torch.randn(64, 2, generator=rng(9))
        common = dict(steps=6, batch_size=32, seed=3, snapshot_z=z, snapshot_every=3, progress=False)
        if trainer == "gan":
            return gen.train_gan(g_net, other, data_sampler(), 2, **common), g_net
        if trainer == "sliced":
            return gen.train_minimum_kantorovich(g_net, data_sampler(), 2, n_projections=10, **common), g_net
        return gen.train_wgan(g_net, other, data_sampler(), 2, method=trainer[5:], n_critic=2, **common), g_net
    (h1, g1), (h2, _) = run(), run()
    losses = [k for k in h1 if k != "snapshots"]
    assert all(len(h1[k]) == 6 and h1[k] == h2[k] for k in losses)
    assert [s for s, _ in h1["snapshots"]] == [0, 3, 6]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(h1["snapshots"], h2["snapshots"]))
    with torch.no_grad():
        torch.testing.assert_close(h1["snapshots"][-1][1], g1(torch.randn(64, 2, generator=rng(9))))


def test_weight_clipping_holds_during_wgan_training():
    torch.manual_seed(0)
    g_net, critic = gen.mlp([2, 16, 2]), gen.mlp([2, 16, 1])
    gen.train_wgan(g_net, critic, data_sampler(), 2, steps=3, method="clip", clip=0.02, n_critic=2, batch_size=16,
                   lr=0.1, progress=False)
    assert max(p.abs().max().item() for p in critic.parameters()) <= 0.02


def test_minimum_kantorovich_estimation_moves_a_generator_to_its_target():
    torch.manual_seed(0)
    g_net = gen.mlp([2, 16, 2])
    target = lambda n, g: torch.randn(n, 2, generator=g) * 0.5 + torch.tensor([3.0, -2.0])
    with ad_lib.cpu_threads(1):
        before = gen.sliced_wasserstein(g_net(torch.randn(500, 2)), target(500, rng(1)), generator=rng(2))
        gen.train_minimum_kantorovich(g_net, target, 2, steps=300, batch_size=128, lr=1e-2, progress=False)
        after = gen.sliced_wasserstein(g_net(torch.randn(500, 2)), target(500, rng(1)), generator=rng(2))
    assert after < 0.1 * before


def test_progress_bars_are_text_bars():
    source = inspect.getsource(gen)
    assert "from tqdm.std import tqdm" in source and "tqdm.auto" not in source and "tqdm.notebook" not in source


# -- latent space, PCA and auto-encoders -------------------------------------------------------------

def test_interpolate_latent(device):
    z1, z2 = randn(3, 4, device=device), randn(3, 4, seed=1, device=device)
    path = gen.interpolate_latent(z1, z2, 5)
    assert path.shape == (5, 3, 4)
    torch.testing.assert_close(path[0], z1)
    torch.testing.assert_close(path[-1], z2)
    torch.testing.assert_close(path[2], (z1 + z2) / 2)
    torch.testing.assert_close(path[1], 0.75 * z1 + 0.25 * z2)


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 9), st.integers(1, 3), st.integers(1, 3), st.integers(0, 10_000))
def test_principal_angles_against_scipy(d, k, l, seed):
    a, b = randn(d, k, seed=seed), randn(d, l, seed=seed + 1)
    ours = gen.principal_angles(a, b).numpy()
    # scipy takes an angle near 0 from its cosine when another angle is large (d = 3, two planes: their line),
    # which is accurate to about 1e-8 only; ours takes it from its sine
    np.testing.assert_allclose(ours, scipy.linalg.subspace_angles(a.numpy(), b.numpy()), rtol=0, atol=1e-7)


def test_small_principal_angles_are_accurate(device):
    a = randn(20, 3, device=device)
    for eps in (1e-4, 1e-8, 1e-12):
        b = a @ randn(3, 3, seed=1, device=device) + eps * randn(20, 3, seed=2, device=device)
        ours = gen.principal_angles(a, b).cpu().numpy()
        theirs = scipy.linalg.subspace_angles(a.cpu().numpy(), b.cpu().numpy())
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-15)
        assert 0.01 * eps < ours.max() < 100 * eps                       # arccos alone would give 0 or ~1e-8


def digits(device="cpu"):
    from sklearn.datasets import load_digits
    return torch.tensor(load_digits().data, dtype=F64, device=device) / 16


def test_pca_subspace_against_scipy_eigenvectors(device):
    x = digits(device)
    basis = gen.pca_subspace(x, 4)
    torch.testing.assert_close(basis.T @ basis, torch.eye(4, dtype=F64, device=device))
    cov = np.cov(x.cpu().numpy().T, bias=True)
    _, vectors = scipy.linalg.eigh(cov, subset_by_index=[60, 63])
    assert scipy.linalg.subspace_angles(basis.cpu().numpy(), vectors).max() < 1e-8


def test_linear_autoencoder_recovers_the_pca_subspace(device):
    x = digits(device)
    x = x - x.mean(0)
    k = 3
    torch.manual_seed(0)
    model = gen.LinearAutoencoder(64, k).to(device=device, dtype=F64)
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=1000, tolerance_grad=1e-14, tolerance_change=1e-18,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (model(x) - x).square().sum(1).mean()
        loss.backward()
        return loss
    with ad_lib.cpu_threads(1):
        opt.step(closure)
    angles = gen.principal_angles(model.decoder.weight.detach(), gen.pca_subspace(x, k))
    theirs = scipy.linalg.subspace_angles(model.decoder.weight.detach().cpu().numpy(),
                                          gen.pca_subspace(x, k).cpu().numpy())
    np.testing.assert_allclose(angles.cpu().numpy(), theirs, rtol=1e-6, atol=1e-12)
    assert angles.max() < 1e-3
    # the reconstruction error is PCA's: the sum of the eigenvalues left out
    eigenvalues = torch.linalg.eigvalsh(x.T @ x / len(x)).flip(0)
    assert abs(closure().item() - eigenvalues[k:].sum().item()) < 1e-6


def test_autoencoder_shapes(device):
    model = gen.Autoencoder(64, [32, 16], 2).to(device)
    x = torch.randn(5, 64, device=device)
    assert model.encode(x).shape == (5, 2) and model(x).shape == (5, 64)
    assert model.decode(torch.zeros(3, 2, device=device)).shape == (3, 64)
    assert gen.mlp([3, 4, 5])[-1].out_features == 5


# -- bad input ---------------------------------------------------------------------------------------

def test_bad_input_names_the_argument():
    x1, x2 = randn(5), randn(5, 2)
    with pytest.raises(ValueError, match="x must have 1 dimension"):
        gen.wasserstein_1d(x2, x1)
    with pytest.raises(ValueError, match="p must be"):
        gen.wasserstein_1d(x1, x1, p=0.5)
    with pytest.raises(TypeError, match="y must be a floating-point"):
        gen.wasserstein_1d(x1, torch.arange(3))
    with pytest.raises(ValueError, match="same dimension d"):
        gen.sliced_wasserstein(x2, randn(5, 3))
    with pytest.raises(ValueError, match="projections must have x's dtype"):
        gen.sliced_wasserstein(x2, x2, projections=randn(2, 4).float())
    with pytest.raises(ValueError, match="projections must have shape"):
        gen.sliced_wasserstein(x2, x2, projections=randn(3, 4))
    centers = gen.ring_centers(dtype=F64)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="std"):
            gen.modes_covered(x2, centers, bad)
    with pytest.raises(TypeError, match="std"):
        gen.modes_covered(x2, centers, "0.1")
    with pytest.raises(ValueError, match="c must be"):
        gen.clip_weights(nn.Linear(2, 1), 0)
    with pytest.raises(TypeError, match="module"):
        gen.clip_weights([torch.zeros(2)], 0.1)
    with pytest.raises(ValueError, match="bandwidth"):
        gen.kde_log_likelihood(x2, x2, 0.0)
    with pytest.raises(ValueError, match="real and fake"):
        gen.gradient_penalty(nn.Linear(2, 1).double(), x2, x2[:3])
    with pytest.raises(ValueError, match="z1 and z2"):
        gen.interpolate_latent(x1, x2, 3)
    with pytest.raises(ValueError, match="steps"):
        gen.interpolate_latent(x1, x1, 1)
    with pytest.raises(ValueError, match="k must be at most"):
        gen.pca_subspace(x2, 3)
    with pytest.raises(ValueError, match="same number of rows"):
        gen.principal_angles(x2, randn(4, 2))
    with pytest.raises(ValueError, match="method"):
        gen.train_wgan(gen.mlp([2, 2]), gen.mlp([2, 1]), data_sampler(), 2, 1, method="spectral", progress=False)
    with pytest.raises(TypeError, match="sample_data"):
        gen.train_gan(gen.mlp([2, 2]), gen.mlp([2, 1]), None, 2, 1, progress=False)
    with pytest.raises(ValueError, match="sizes"):
        gen.mlp([3])


def test_more_bad_input_names_the_argument():
    x1, x2 = randn(5), randn(5, 2)
    nan1, nan2 = x1.clone(), x2.clone()
    nan1[0], nan2[1, 1] = float("nan"), float("inf")
    for call, name in ((lambda: gen.wasserstein_1d(nan1, x1), "x must be finite"),
                       (lambda: gen.wasserstein_1d(x1, nan1), "y must be finite"),
                       (lambda: gen.sliced_wasserstein(x2, nan2), "y must be finite"),
                       (lambda: gen.gaussian_mle(nan2), "x must be finite"),
                       (lambda: gen.kde_log_likelihood(nan2, x2, 0.1), "x must be finite"),
                       (lambda: gen.pca_subspace(nan2, 1), "x must be finite"),
                       (lambda: gen.principal_angles(x2, nan2), "b must be finite"),
                       (lambda: gen.modes_covered(nan2, gen.ring_centers(dtype=F64), 0.1), "samples must be finite"),
                       (lambda: gen.wasserstein_1d(torch.empty(0, dtype=F64), x1), "x must not be empty"),
                       (lambda: gen.wasserstein_1d(x1, x1.float()), "y must have the dtype and device of x"),
                       (lambda: gen.sliced_wasserstein(x2, x2.float()), "y must have the dtype and device of x"),
                       (lambda: gen.kde_log_likelihood(x2, x2.float(), 0.1), "samples must have the dtype"),
                       (lambda: gen.principal_angles(x2, x2.float()), "b must have the dtype"),
                       (lambda: gen.interpolate_latent(x1, x1.float(), 3), "z2 must have the dtype"),
                       (lambda: gen.gaussian_log_likelihood(x2, x2[0].float(), torch.eye(2, dtype=F64)), "mean must have"),
                       (lambda: gen.gaussian_log_likelihood(x2, x2[0], torch.tensor([[1.0, 5.0], [0.0, 1.0]], dtype=F64)),
                        "covariance must be symmetric"),
                       (lambda: gen.gradient_penalty(nn.Linear(2, 1).double(), x2, x2.float()), "fake must have the dtype"),
                       (lambda: gen.gradient_penalty(nn.Linear(2, 2).double(), x2, x2), "critic must return one value"),
                       (lambda: gen.gradient_penalty(nn.Linear(3, 1).double(), x2, x2), "critic does not accept"),
                       (lambda: gen.lipschitz_estimate(nn.Linear(2, 2).double(), x2), "critic must return one value"),
                       (lambda: gen.sliced_wasserstein(x2, x2, projections=torch.zeros(2, 3, dtype=F64)),
                        "projections must have nonzero columns"),
                       (lambda: gen.sliced_wasserstein(x2, x2, n_projections=0), "n_projections must be >= 1"),
                       (lambda: gen.lipschitz_upper_bound(nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.Linear(2, 1))),
                        "module must compose nn.Linear layers and 1-Lipschitz activations"),
                       (lambda: gen.lipschitz_upper_bound(gen.mlp([2, 3, 1], activation=nn.GELU)), "GELU"),
                       (lambda: gen.sliced_wasserstein(x2, x2, p=0.5), "p must be"),
                       (lambda: gen.pca_subspace(randn(3, 10), 3), "k must be at most n - 1"),
                       (lambda: gen.pca_subspace(randn(30, 3), 4), "k must be at most the dimension"),
                       (lambda: gen.Autoencoder(4, [0], 2), "hidden"),
                       (lambda: gen.train_minimum_kantorovich(gen.mlp([2, 2]), data_sampler(), 2, 0, p=0.5,
                                                              progress=False), "p must be"),
                       (lambda: gen.train_gan(gen.mlp([3, 2]), gen.mlp([2, 1]), data_sampler(), 2, 1, progress=False),
                        "generator does not accept latent codes"),
                       (lambda: gen.train_gan(gen.mlp([2, 3]), gen.mlp([3, 1]), data_sampler(), 2, 1, progress=False),
                        "generator.z. must have the shape of the data"),
                       (lambda: gen.train_wgan(gen.mlp([2, 2]), gen.mlp([2, 2]), data_sampler(), 2, 1, progress=False),
                        "critic must return one value"),
                       (lambda: gen.train_gan(gen.mlp([2, 2]), gen.mlp([2, 1]), data_sampler(), 2, 1,
                                              snapshot_z=torch.randn(4, 3), snapshot_every=1, progress=False),
                        "snapshot_z must have shape"),
                       (lambda: gen.train_gan(gen.mlp([2, 2]), gen.mlp([2, 1]), data_sampler(dtype=F64), 2, 1,
                                              progress=False), "sample_data.n, generator. must have the dtype")):
        with pytest.raises(ValueError, match=name):
            call()
    for call, name in ((lambda: gen.random_projections(2, 3, dtype=torch.int64), "dtype"),
                       (lambda: gen.mlp(3), "sizes"),
                       (lambda: gen.mlp([2, 3, 1], activation=nn.ReLU()), "activation must be a module class"),
                       (lambda: gen.Autoencoder(4, "8", 2), "hidden"),
                       (lambda: gen.train_gan(gen.mlp([2, 2]), gen.mlp([2, 1]), data_sampler(), 2, 1, seed="a",
                                              progress=False), "seed"),
                       (lambda: gen.gan_step(gen.mlp([2, 2]), gen.mlp([2, 1]), torch.randn(4, 2), torch.randn(4, 2),
                                             None, None), "g_optimizer")):
        with pytest.raises(TypeError, match=name):
            call()


def test_generator_on_the_wrong_device_is_an_error(device):
    other = "cuda" if device.type == "cpu" and torch.cuda.is_available() else None
    with pytest.raises(ValueError, match="generator must be a torch.Generator on the device"):
        gen.ring_of_gaussians(4, generator=rng(0), device="meta")
    if other:
        with pytest.raises(ValueError, match="generator must be a torch.Generator on the device"):
            gen.sliced_wasserstein(randn(4, 2), randn(4, 2), generator=rng(0, other))


def test_diverged_training_is_a_floating_point_error():
    class Exploding(nn.Module):                                           # a generator whose samples are NaN
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)

        def forward(self, z):
            return self.linear(z) * float("nan")
    for train in (lambda g: gen.train_gan(g, gen.mlp([2, 1]), data_sampler(), 2, 2, batch_size=8, progress=False),
                  lambda g: gen.train_wgan(g, gen.mlp([2, 1]), data_sampler(), 2, 2, batch_size=8, progress=False),
                  lambda g: gen.train_minimum_kantorovich(g, data_sampler(), 2, 2, batch_size=8, progress=False)):
        with pytest.raises(FloatingPointError, match="diverged"):
            train(Exploding())


def test_gradient_penalty_of_a_critic_constant_in_x_is_one():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.ones(1, dtype=F64))

        def forward(self, x):
            return self.bias.expand(x.shape[0])
    assert gen.gradient_penalty(Constant(), randn(4, 2), randn(4, 2, seed=1)).item() == 1.0
    assert gen.lipschitz_estimate(Constant(), randn(4, 2)).item() == 0.0
