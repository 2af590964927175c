"""The tape keeps only what the reverse rules read (chapter 4, "The price: memory").

Each primitive declares, per input, the values its reverse partial reads
(``reads=``); the tape replaces the others by :class:`ad_lib.ops.StandIn`.
Checked here for every primitive: the rules give the same cotangents with the
undeclared values replaced by stand-ins (a rule that read one would fail),
and the gradients through the tape still match torch.autograd.
"""

import gc
import math

import pytest
import torch

from ad_lib import ops
from ad_lib.reverse import grad, hvp, vjp

from test_ops import CASES, _inputs

F64 = torch.float64

EXTRA = [
    ("index", [(3, 4)], {"key": (slice(None), 2)}, False),
    ("index", [(3, 4, 5)], {"key": (Ellipsis, slice(1, None))}, False),
    ("scatter_index", [(3,)], {"key": (slice(None), 2), "target": (3, 4)}, False),
]
ALL_CASES = CASES + EXTRA


def test_every_primitive_is_covered():
    assert {case[0] for case in ALL_CASES} == set(ops.PRIMITIVES)
    # the declarations of the chapter's example: tanh reads its output, the products the other factor
    assert ops.tanh.reads == (frozenset({"out"}),)
    assert ops.matmul.reads == (frozenset({1}), frozenset({0}))
    assert ops.add.reads == (frozenset(), frozenset())


@pytest.mark.parametrize("case", ALL_CASES, ids=[f"{c[0]}{c[1]}{c[2] or ''}" for c in ALL_CASES])
def test_reverse_rules_read_only_what_they_declare(case):
    name, shapes, params, positive = case
    primitive = ops.PRIMITIVES[name]
    xs = _inputs(shapes, "cpu", positive)
    out = primitive(*xs, **params)
    g = torch.randn(out.shape, dtype=F64, generator=torch.Generator().manual_seed(3))
    for i, rule in enumerate(primitive.vjp):
        if rule is None:
            continue
        read = primitive.reads[i]
        full = rule(g, out, *xs, **params)
        stood_in = rule(
            g, out if "out" in read else ops.StandIn(out), *[x if j in read else ops.StandIn(x) for j, x in enumerate(xs)], **params
        )
        torch.testing.assert_close(stood_in, full)
        # the truth: torch.autograd's cotangent of input i
        leaves = [x.clone().requires_grad_() for x in xs]
        (reference,) = torch.autograd.grad(primitive.value(*leaves, **params), leaves[i], g)
        torch.testing.assert_close(stood_in, reference)


def test_a_wrong_declaration_fails_loudly():
    liar = ops.Primitive("liar", torch.exp, jvp=[lambda t, out, a: t * out], vjp=[lambda g, out, a: ops.mul(g, out)], reads=[""])
    x = torch.tensor([0.5, 1.0], dtype=F64)
    with pytest.raises(TypeError, match="stand-in"):
        vjp(liar, x)[1](torch.ones(2, dtype=F64))
    with pytest.raises(ValueError, match="not 'out' nor an input"):
        ops.Primitive("typo", torch.exp, jvp=[None], vjp=[lambda g, out, a: g], reads=["x"])


def test_a_stand_in_keeps_shape_dtype_and_device_but_no_storage():
    x = torch.randn(3, 4, dtype=torch.float32)
    s = ops.StandIn(x)
    assert (s.shape, s.dtype, s.device) == (x.shape, x.dtype, x.device)
    assert ops.shape(s) == x.shape
    with pytest.raises(TypeError):
        torch.mul(s, 2.0)  # unlike a meta tensor, which torch mixes with 0-d CPU tensors silently
    assert torch.mul(torch.empty(3, device="meta"), torch.tensor(2.0)).device.type == "meta"


def test_the_tanh_network_tape_keeps_one_vector_per_layer():
    width, depth = 16, 5
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(width, width, dtype=F64, generator=g) for _ in range(depth)]

    def net(v):
        for W in weights:
            v = ops.tanh(W @ v)
        return ops.sum(v)

    x = torch.randn(width, dtype=F64, generator=g)
    gc.collect()
    out, vjp_fn = vjp(net, x)
    # walk the tape from the output's node
    out_traced = next(c.cell_contents for c in vjp_fn.__closure__ if type(c.cell_contents).__name__ == "Traced")
    kept, stack, seen = {}, [out_traced.node], set()
    while stack:
        n = stack.pop()
        if id(n) in seen or n.primitive is None:
            continue
        seen.add(id(n))
        for v in (n.value, *n.inputs):
            if isinstance(v, torch.Tensor) and not any(v is W for W in weights):
                kept[v.data_ptr()] = (n.primitive.name, v.numel())
        stack.extend(p for _, p in n.parents)
    assert sorted(kept.values()) == [("tanh", width)] * depth  # tanh's outputs only: not W x, not the sum
    # and the gradient is right (torch.autograd)
    leaf = x.clone().requires_grad_()
    h = leaf
    for W in weights:
        h = torch.tanh(W @ h)
    (reference,) = torch.autograd.grad(h.sum(), leaf)
    torch.testing.assert_close(vjp_fn(torch.ones((), dtype=F64))[0], reference)


def test_stand_ins_of_dual_numbers_in_hvp():
    # forward over reverse: the tape records dual numbers, and stands in for them too
    A = torch.randn(4, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    f = lambda v: (ops.tanh(A @ v) ** 2).sum() + ops.exp(v[0]) * ops.relu(v).sum() / (1 + v @ v)  # noqa: E731
    x = torch.tensor([0.3, -0.2, 0.9, 0.1], dtype=F64)
    v = torch.ones(4, dtype=F64)
    torch_f = lambda u: (torch.tanh(A @ u) ** 2).sum() + torch.exp(u[0]) * torch.relu(u).sum() / (1 + u @ u)  # noqa: E731
    torch.testing.assert_close(hvp(f, x, v), torch.func.hessian(torch_f)(x) @ v)
    torch.testing.assert_close(grad(f)(x), torch.func.grad(torch_f)(x))
    assert math.isfinite(grad(f)(x).sum().item())
