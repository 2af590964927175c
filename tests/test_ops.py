"""Each primitive's forward and reverse rules, checked against torch.autograd in float64."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ad_lib import ops
from ad_lib.forward import Dual, jvp
from ad_lib.reverse import vjp

F64 = torch.float64


def _inputs(shapes, device, positive=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(s, dtype=F64, generator=g) for s in shapes]
    if positive:
        xs = [x.abs() + 0.5 for x in xs]
    return [x.to(device) for x in xs]


# (primitive, input shapes, params, needs positive inputs)
CASES = [
    ("add", [(3, 4), (4,)], {}, False),
    ("sub", [(3, 1), (1, 4)], {}, False),
    ("mul", [(2, 3), (2, 3)], {}, False),
    ("div", [(3,), (2, 3)], {}, True),
    ("neg", [(5,)], {}, False),
    ("pow", [(4,), (4,)], {}, True),
    ("exp", [(2, 2)], {}, False),
    ("log", [(6,)], {}, True),
    ("sin", [(6,)], {}, False),
    ("cos", [(6,)], {}, False),
    ("tanh", [(6,)], {}, False),
    ("sqrt", [(6,)], {}, True),
    ("relu", [(7,)], {}, False),
    ("mask_positive", [(7,), (7,)], {}, False),
    ("mask_positive", [(5,), (4, 5)], {}, False),  # x broadcast against a: the cotangent sums back
    ("sum", [(3, 4)], {}, False),
    ("sum", [(3, 4, 2)], {"dim": 1}, False),
    ("sum", [(3, 4, 2)], {"dim": (0, 2), "keepdim": True}, False),
    ("matmul", [(3, 4), (4, 2)], {}, False),
    ("matmul", [(4,), (4, 2)], {}, False),
    ("matmul", [(3, 4), (4,)], {}, False),
    ("matmul", [(4,), (4,)], {}, False),
    ("matmul", [(5, 3, 4), (4, 2)], {}, False),
    ("matmul", [(4,), (5, 4, 2)], {}, False),
    ("matmul", [(5, 3, 4), (4,)], {}, False),
    ("reshape", [(3, 4)], {"target": (2, 6)}, False),
    ("transpose", [(3, 4)], {"dim0": 0, "dim1": 1}, False),
    ("broadcast_to", [(3, 1)], {"target": (2, 3, 4)}, False),
    ("sum_to", [(2, 3, 4)], {"target": (3, 1)}, False),
]


def _ids(case):
    return f"{case[0]}{case[1]}{case[2] or ''}"


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_forward_and_reverse_rules_match_torch(case, device):
    name, shapes, params, positive = case
    primitive = ops.PRIMITIVES[name]
    xs = _inputs(shapes, device, positive)
    f = lambda *a: primitive(*a, **params)  # noqa: E731
    out = f(*xs)
    # forward: one tangent per input
    tangents = _inputs(shapes, device, seed=1)
    _, ours = jvp(f, tuple(xs), tuple(tangents))
    _, theirs = torch.func.jvp(f, tuple(xs), tuple(tangents))
    torch.testing.assert_close(ours, theirs)
    # reverse: one cotangent shaped like the output
    u = torch.randn(out.shape, dtype=F64, generator=torch.Generator().manual_seed(2)).to(device)
    _, vjp_fn = vjp(f, *xs)
    _, torch_vjp_fn = torch.func.vjp(f, *xs)
    for mine, reference in zip(vjp_fn(u), torch_vjp_fn(u)):
        assert mine.shape == reference.shape
        torch.testing.assert_close(mine, reference)


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_adjoint_identity(case):
    """<u, J v> = <J^T u, v>: the two modes agree on every primitive."""
    name, shapes, params, positive = case
    f = lambda *a: ops.PRIMITIVES[name](*a, **params)  # noqa: E731
    xs = _inputs(shapes, "cpu", positive)
    vs = _inputs(shapes, "cpu", seed=3)
    out, Jv = jvp(f, tuple(xs), tuple(vs))
    u = torch.randn(out.shape, dtype=F64, generator=torch.Generator().manual_seed(4))
    _, vjp_fn = vjp(f, *xs)
    lhs = (u * Jv).sum()
    rhs = sum((JTu * v).sum() for JTu, v in zip(vjp_fn(u), vs))
    torch.testing.assert_close(lhs, rhs)


def test_plain_tensors_go_straight_to_torch():
    x = torch.randn(3, dtype=F64)
    torch.testing.assert_close(ops.exp(x), torch.exp(x))
    torch.testing.assert_close(ops.sum(x, 0), x.sum(0))
    assert ops.mask_positive(torch.tensor([5.0, 6.0, 7.0]), torch.tensor([-1.0, 0.0, 2.0])).tolist() == [0.0, 0.0, 7.0]



@pytest.mark.parametrize("x_shape, a_shape, x_dtype, a_dtype", [
    ((4, 5), (4, 5), torch.float32, torch.float32),  # the fused kernel
    ((5,), (4, 5), F64, F64),  # broadcast
    ((4, 5), (4, 5), F64, torch.float32),  # mixed dtypes: torch.where, x's dtype kept
])
def test_mask_positive_is_where_a_is_positive(x_shape, a_shape, x_dtype, a_dtype, device):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(x_shape, generator=g).to(device, x_dtype)
    a = torch.randn(a_shape, generator=g).to(device, a_dtype)
    a.view(-1)[0] = 0.0  # zero is not positive
    expected = torch.where(a > 0, x, torch.zeros((), dtype=x_dtype, device=device))
    out = ops.mask_positive(x, a)
    assert out.dtype == x_dtype
    torch.testing.assert_close(out, expected, rtol=0, atol=0)

def test_operators_with_boxes_on_either_side():
    x = torch.tensor([1.0, 2.0], dtype=F64)
    t = torch.tensor([1.0, 0.0], dtype=F64)

    def f(d):
        return (2.0 - d) + (x * d) / (1 + d) - d ** 2 + 2.0 ** d + x @ d + (-d) + d.reshape(1, 2).T.sum()

    def f_torch(z):
        return (2.0 - z) + (x * z) / (1 + z) - z**2 + 2.0**z + x @ z + (-z) + z.reshape(1, 2).T.sum()

    out, tangent = jvp(f, (x,), (t,))
    reference = torch.func.jvp(f_torch, (x,), (t,))
    torch.testing.assert_close(out, reference[0])
    torch.testing.assert_close(tangent, reference[1])


def test_plain_torch_functions_on_boxes_are_refused_by_name():
    d = Dual(torch.ones(2), torch.ones(2), ops.new_level())
    with pytest.raises(TypeError, match=r"torch\.exp.*ad_lib\.ops\.exp"):
        torch.exp(d)
    with pytest.raises(TypeError, match="truth value"):
        if d:
            pass


def test_bad_calls_name_the_primitive():
    with pytest.raises(TypeError, match="ops.exp takes 1 input"):
        ops.exp(torch.ones(1), torch.ones(1))
    with pytest.raises(TypeError, match="ops.add takes tensors"):
        ops.add(torch.ones(1), "two")
    with pytest.raises(TypeError, match="parameters"):
        ops.sum(torch.ones(2), 0, True, "extra")


def test_a_primitive_with_no_rule_is_reported_by_name():
    opaque = ops.Primitive("opaque", torch.sin, jvp=[ops.MISSING], vjp=[ops.MISSING])
    with pytest.raises(NotImplementedError, match="opaque.*forward"):
        jvp(lambda x: opaque(x), (torch.ones(2),), (torch.ones(2),))
    with pytest.raises(NotImplementedError, match="opaque.*reverse"):
        vjp(lambda x: opaque(x), torch.ones(2))[1](torch.ones(2))


@settings(max_examples=30, deadline=None)
@given(shape_a=st.sampled_from([(3,), (2, 3), (1, 3), (2, 1)]), shape_b=st.sampled_from([(3,), (2, 3), (2, 1), ()]))
def test_broadcasting_reverse_partials_sum_back_to_each_shape(shape_a, shape_b):
    a = torch.randn(shape_a, dtype=F64)
    b = torch.randn(shape_b, dtype=F64)
    f = lambda a, b: a * b + a - b  # noqa: E731
    out, vjp_fn = vjp(f, a, b)
    u = torch.randn(out.shape, dtype=F64)
    for mine, reference in zip(vjp_fn(u), torch.func.vjp(f, a, b)[1](u)):
        assert mine.shape == reference.shape
        torch.testing.assert_close(mine, reference)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_pow_derivatives_at_base_zero_follow_torch(mode):
    """torch's conventions: exponent 0 -> d/da = 0; base 0 with exponent >= 0 -> d/db = 0 (no NaN)."""
    cases = [
        (lambda x: ops.sum(x**0), lambda x: (x**0).sum(), torch.tensor([0.0, 1.0], dtype=F64)),
        (lambda x: ops.sum(x ** torch.zeros(2, dtype=F64)), lambda x: (x ** torch.zeros(2, dtype=F64)).sum(),
         torch.tensor([0.0, 1.0], dtype=F64)),
        (lambda b: 0 ** b, lambda b: 0 ** b, torch.tensor(2.0, dtype=F64)),
        (lambda b: ops.sum(torch.tensor([0.0, 0.0, 2.0], dtype=F64) ** b),
         lambda b: (torch.tensor([0.0, 0.0, 2.0], dtype=F64) ** b).sum(), torch.tensor([2.0, 0.0, 1.5], dtype=F64)),
    ]
    for f, f_torch, x in cases:
        expected = torch.func.grad(f_torch)(x)
        assert not expected.isnan().any()
        if mode == "reverse":
            mine = vjp(f, x)[1](torch.tensor(1.0, dtype=F64))[0]
        else:
            mine = torch.stack([jvp(f, (x,), (e.reshape(x.shape),))[1] for e in torch.eye(x.numel(), dtype=F64)])
            mine = mine.reshape(x.shape)
        torch.testing.assert_close(mine, expected)


def test_every_primitive_says_what_it_computes():
    """help(ops.exp) and the library reference show the primitive's own docstring, not Primitive's."""
    for name, primitive in ops.PRIMITIVES.items():
        assert primitive.__doc__ and primitive.__doc__ != ops.Primitive.__doc__, name
        assert primitive.__doc__.startswith(f"``{name}("), name
