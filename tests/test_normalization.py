"""Dropout, batch normalization and group normalization of chapter 11 (ad_lib.normalization) against
torch.nn.functional (outputs, gradients, running statistics), gradcheck in float64 for the hand-written
backward, seeded statistics for dropout's scaling, and bad input."""

import pytest
import torch
import torch.nn.functional as F

from ad_lib.normalization import BatchNorm, BatchNormFunction, Dropout, GroupNorm, batch_norm, dropout, group_norm

F64 = torch.float64
SHAPES = [(8, 3), (4, 3, 5), (2, 3, 4, 5), (2, 3, 2, 2, 3)]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def inputs(shape, device, seed=0):
    g = gen(seed)
    C = shape[1]
    x = (2 * torch.randn(*shape, generator=g, dtype=F64) + 1).to(device).requires_grad_()
    w = (torch.rand(C, generator=g, dtype=F64) + 0.5).to(device).requires_grad_()
    b = torch.randn(C, generator=g, dtype=F64).to(device).requires_grad_()
    return x, w, b


# -- dropout --------------------------------------------------------------------------------------

def test_dropout_zeroes_a_fraction_p_and_scales_the_rest(device):
    x = torch.ones(200_000, dtype=F64, device=device)
    y = dropout(x, p=0.3, generator=torch.Generator(device=device).manual_seed(0))
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.7), rtol=0, atol=1e-15)
    # the fraction dropped is 0.3 within 5 standard deviations sqrt(p (1-p) / n) ~ 1e-3
    assert abs((~kept).double().mean().item() - 0.3) < 5 * (0.3 * 0.7 / x.numel()) ** 0.5


def test_dropout_preserves_the_mean():
    g = gen(1)
    x = torch.randn(1000, dtype=F64, generator=g).exp()
    masks = torch.stack([dropout(x, p=0.5, generator=g) for _ in range(400)])
    mean = masks.mean(0)
    # each entry's average of 400 draws has standard deviation x sqrt(p / (1 - p) / 400) = x / 20
    z = (mean - x) / (x / 20)
    assert abs(z.mean().item()) < 5 / 1000 ** 0.5 and 0.8 < z.std().item() < 1.2


def test_dropout_in_eval_mode_or_with_p_zero_is_the_identity():
    x = torch.randn(5, 4)
    assert dropout(x, p=0.5, training=False) is x and dropout(x, p=0.0) is x
    layer = Dropout(0.5).eval()
    assert layer(x) is x


def test_dropout_gradient_is_the_scaled_mask_and_the_generator_repeats_it():
    x = torch.randn(50, dtype=F64, requires_grad=True)
    y = dropout(x, p=0.25, generator=gen(3))
    g, = torch.autograd.grad(y.sum(), x)
    assert torch.equal(g, (y.detach() != 0).double() / 0.75)
    assert torch.equal(dropout(x, 0.25, generator=gen(3)), y) and not torch.equal(dropout(x, 0.25, generator=gen(4)), y)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_probability_outside_the_unit_interval_is_named(p):
    with pytest.raises(ValueError, match="p must be in"):
        dropout(torch.ones(3), p=p)
    with pytest.raises(ValueError, match="p must be in"):
        Dropout(p)


def test_dropout_bad_types_are_named():
    with pytest.raises(TypeError, match="x"):
        dropout([1.0, 2.0])
    with pytest.raises(TypeError, match="generator"):
        dropout(torch.ones(3), generator=0)


# -- batch normalization --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_training_matches_torch_outputs_gradients_and_running_stats(shape, device):
    x, w, b = inputs(shape, device)
    C = shape[1]
    stats = [(torch.rand(C, dtype=F64, generator=gen(5)).to(device), torch.rand(C, dtype=F64, generator=gen(6)).to(device) + 0.5)
             for _ in range(2)]
    ours = batch_norm(x, *stats[0], w, b, training=True, momentum=0.3, eps=1e-3)
    theirs = F.batch_norm(x, *stats[1], w, b, training=True, momentum=0.3, eps=1e-3)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-12)
    up = torch.randn(shape, dtype=F64, generator=gen(7)).to(device)
    for a, c in zip(torch.autograd.grad(ours, (x, w, b), up), torch.autograd.grad(theirs, (x, w, b), up)):
        assert torch.allclose(a, c, rtol=0, atol=1e-12)
    for a, c in zip(stats[0], stats[1]):
        assert torch.allclose(a, c, rtol=0, atol=1e-14)


def test_running_var_takes_the_unbiased_variance():
    x = torch.tensor([[1.0], [2.0], [4.0]], dtype=F64)
    rm, rv = torch.zeros(1, dtype=F64), torch.zeros(1, dtype=F64)
    batch_norm(x, rm, rv, training=True, momentum=1.0)
    assert torch.allclose(rm, torch.tensor([7 / 3], dtype=F64)) and torch.allclose(rv, x.var(0, unbiased=True))


@pytest.mark.parametrize("shape", SHAPES[:3])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_hand_written_backward_passes_gradcheck(shape, affine):
    x, w, b = inputs(shape, "cpu", seed=1)
    if affine:
        assert torch.autograd.gradcheck(lambda x, w, b: batch_norm(x, None, None, w, b, training=True), (x, w, b))
    else:
        assert torch.autograd.gradcheck(lambda x: batch_norm(x, None, None, training=True, eps=0.1), (x,))


def test_batch_norm_backward_is_the_hand_written_function():
    x, w, b = inputs((4, 3), "cpu")
    y = batch_norm(x, None, None, w, b, training=True)
    assert "BatchNormFunction" in type(y.grad_fn).__name__
    y2, mean, var = BatchNormFunction.apply(x, w, b, 1e-5)
    assert torch.allclose(mean, x.mean(0)) and torch.allclose(var, x.var(0, unbiased=False))
    assert not mean.requires_grad


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_batch_norm_eval_matches_torch(shape, device):
    x, w, b = inputs(shape, device)
    rm = torch.randn(shape[1], dtype=F64, generator=gen(2)).to(device)
    rv = torch.rand(shape[1], dtype=F64, generator=gen(3)).to(device) + 0.1
    ours, theirs = batch_norm(x, rm, rv, w, b), F.batch_norm(x, rm, rv, w, b)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-12)
    for a, c in zip(torch.autograd.grad(ours.sum(), (x, w, b)), torch.autograd.grad(theirs.sum(), (x, w, b))):
        assert torch.allclose(a, c, rtol=0, atol=1e-12)


def test_batch_norm_module_matches_torchs_over_a_few_steps():
    torch.manual_seed(0)
    ours, theirs = BatchNorm(3, momentum=0.2).double(), torch.nn.BatchNorm2d(3, momentum=0.2).double()
    for step in range(5):
        x = torch.randn(4, 3, 2, 2, dtype=F64, generator=gen(step))
        assert torch.allclose(ours(x), theirs(x), atol=1e-12)
    assert torch.allclose(ours.running_mean, theirs.running_mean) and torch.allclose(ours.running_var, theirs.running_var)
    ours.eval(), theirs.eval()
    assert torch.allclose(ours(x), theirs(x), atol=1e-12)


def test_batch_norm_one_value_per_channel_in_training_is_refused():
    with pytest.raises(ValueError, match="more than one value per channel"):
        batch_norm(torch.randn(1, 3), torch.zeros(3), torch.ones(3), training=True)
    with pytest.raises(ValueError, match="more than one value per channel"):
        batch_norm(torch.randn(1, 3, 1, 1), None, None, training=True)
    batch_norm(torch.randn(1, 3), torch.zeros(3), torch.ones(3), training=False)  # fine in evaluation


@pytest.mark.parametrize("name, kwargs", [
    ("running_mean", dict(running_mean=torch.zeros(4))), ("running_var", dict(running_var=torch.ones(3, 1))),
    ("weight", dict(weight=torch.ones(2))), ("bias", dict(bias=torch.ones(5))),
])
def test_batch_norm_statistics_of_the_wrong_shape_are_named(name, kwargs):
    args = dict(running_mean=torch.zeros(3), running_var=torch.ones(3)) | kwargs
    with pytest.raises(ValueError, match=name):
        batch_norm(torch.randn(4, 3), training=True, **args)


def test_batch_norm_other_bad_input_is_named():
    with pytest.raises(ValueError, match="running_mean"):
        batch_norm(torch.randn(4, 3), None, torch.ones(3), training=False)
    with pytest.raises(ValueError, match="momentum"):
        batch_norm(torch.randn(4, 3), None, None, training=True, momentum=-0.1)
    with pytest.raises(ValueError, match="eps"):
        batch_norm(torch.randn(4, 3), None, None, training=True, eps=-1.0)
    with pytest.raises(ValueError, match="x"):
        batch_norm(torch.randn(4), None, None, training=True)
    with pytest.raises(TypeError, match="x"):
        batch_norm(torch.ones(4, 3, dtype=torch.long), None, None, training=True)


# -- group normalization --------------------------------------------------------------------------

@pytest.mark.parametrize("shape, groups", [((2, 6), 3), ((2, 6, 5), 2), ((3, 4, 3, 3), 4), ((1, 6, 2, 3), 1)])
def test_group_norm_matches_torch(shape, groups, device):
    x, w, b = inputs(shape, device)
    ours, theirs = group_norm(x, groups, w, b, eps=1e-4), F.group_norm(x, groups, w, b, eps=1e-4)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-12)
    up = torch.randn(shape, dtype=F64, generator=gen(9)).to(device)
    for a, c in zip(torch.autograd.grad(ours, (x, w, b), up), torch.autograd.grad(theirs, (x, w, b), up)):
        assert torch.allclose(a, c, rtol=0, atol=1e-12)
    assert torch.allclose(group_norm(x, groups), F.group_norm(x, groups), atol=1e-12)


def test_group_norm_gradcheck_and_module():
    x, w, b = inputs((2, 4, 3), "cpu")
    assert torch.autograd.gradcheck(lambda x, w, b: group_norm(x, 2, w, b), (x, w, b))
    layer = GroupNorm(2, 4).double()
    assert torch.allclose(layer(x), torch.nn.GroupNorm(2, 4).double()(x), atol=1e-12)


def test_group_norm_bad_input_is_named():
    with pytest.raises(ValueError, match="num_groups=4 must divide"):
        group_norm(torch.randn(2, 6), 4)
    with pytest.raises(ValueError, match="num_groups"):  # a bad value (was a TypeError before the review)
        group_norm(torch.randn(2, 6), 0)
    with pytest.raises(TypeError, match="num_groups"):
        group_norm(torch.randn(2, 6), 2.0)
    with pytest.raises(ValueError, match="weight"):
        group_norm(torch.randn(2, 6), 3, weight=torch.ones(3))
    with pytest.raises(ValueError, match="num_groups"):
        GroupNorm(4, 6)


# -- review (rev11) ---------------------------------------------------------------------------------

@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (1, 3, 4, 4)])
def test_batch_norm_module_follows_nn_batchnorm_with_momentum_none_and_state_dicts(shape, momentum):
    """momentum=None: cumulative averages, as nn.BatchNorm's; num_batches_tracked makes state_dicts load
    both ways (before the review momentum=None was refused and torch's state_dict did not load)."""
    torch.manual_seed(0)
    ours = BatchNorm(3, momentum=momentum).double()
    theirs = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}[len(shape)](
        3, momentum=momentum).double()
    g = gen(4)
    for _ in range(4):
        x = 3 * torch.randn(*shape, generator=g, dtype=F64) - 1
        assert torch.allclose(ours(x), theirs(x), rtol=0, atol=1e-12)
    for name in ("running_mean", "running_var"):
        assert torch.allclose(getattr(ours, name), getattr(theirs, name), rtol=0, atol=1e-12)
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 4
    ours.eval(), theirs.eval()
    assert torch.allclose(ours(x), theirs(x), rtol=0, atol=1e-12)
    fresh = BatchNorm(3, momentum=momentum).double()
    fresh.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())


def test_batch_norm_float32_and_a_large_offset_match_torch():
    g = gen(7)
    x = (torch.randn(64, 5, 6, generator=g) * 0.01 + 100).requires_grad_()
    w, b, up = torch.rand(5, generator=g) + 0.5, torch.randn(5, generator=g), torch.randn(64, 5, 6, generator=g)
    """float32, |mean| = 1e4 std: the corrected two-pass statistics keep ours as accurate as torch's
    (errors against float64; before the review ours were 5-10 times torch's)."""
    x64 = x.detach().double().requires_grad_()
    y64 = F.batch_norm(x64, None, None, w.double(), b.double(), training=True)
    g64 = torch.autograd.grad(y64, x64, up.double())[0]
    errors = []
    for norm in (batch_norm, F.batch_norm):
        y = norm(x, None, None, w, b, training=True)
        assert y.dtype == torch.float32
        gx = torch.autograd.grad(y, x, up)[0]
        errors.append(((y.double() - y64).abs().max().item(), (gx.double() - g64).abs().max().item()))
    assert errors[0][0] <= 2 * errors[1][0] + 1e-6 and errors[0][1] <= 2 * errors[1][1] + 1e-6, errors


def test_batch_norm_eval_backward_is_the_affine_maps():
    """In evaluation mode batch norm is x -> w (x - r_mu) / sqrt(r_var + eps) + b: its gradient is that
    constant scale, with no flow through the statistics."""
    x, w, b = inputs((5, 3, 2), "cpu")
    rm, rv = torch.randn(3, dtype=F64), torch.rand(3, dtype=F64) + 0.5
    up = torch.randn(5, 3, 2, dtype=F64)
    ours = torch.autograd.grad(batch_norm(x, rm, rv, w, b), (x, w, b), up)
    theirs = torch.autograd.grad(F.batch_norm(x, rm, rv, w, b), (x, w, b), up)
    assert all(torch.allclose(o, t, rtol=0, atol=1e-12) for o, t in zip(ours, theirs))
    assert torch.allclose(ours[0], up * (w / torch.sqrt(rv + 1e-5)).view(1, 3, 1), rtol=0, atol=1e-14)
    assert torch.autograd.gradcheck(lambda x, w, b: batch_norm(x, rm, rv, w, b), (x, w, b))


def test_batch_norm_weight_none_bias_given_and_running_stats_none_in_training():
    x, _, b = inputs((4, 3, 5), "cpu")
    up = torch.randn(4, 3, 5, dtype=F64)
    ours = torch.autograd.grad(batch_norm(x, None, None, None, b, training=True), (x, b), up)
    theirs = torch.autograd.grad(F.batch_norm(x, None, None, None, b, training=True), (x, b), up)
    assert all(torch.allclose(o, t, rtol=0, atol=1e-12) for o, t in zip(ours, theirs))
    with pytest.raises(ValueError, match="running_mean"):
        batch_norm(x, None, None, training=False)


def test_dropout_near_one_and_the_generator_are_as_documented():
    x = torch.ones(10000, dtype=F64)
    y = dropout(x, 0.999, generator=gen(1))
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1000.0), rtol=1e-12, atol=0)
    assert torch.equal(dropout(x, 0.3, generator=gen(2)), dropout(x, 0.3, generator=gen(2)))
    assert not torch.equal(dropout(x, 0.3, generator=gen(2)), dropout(x, 0.3, generator=gen(3)))
