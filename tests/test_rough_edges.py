"""The rough edges of Part I's API (issue 11, item 7), each against an independent truth.

Truths: torch.func (grad, jvp, vjp, hessian) and torch.autograd in float64,
closed forms, and the errors torch.func itself raises.
"""

import math
import re

import pytest
import torch

import ad_lib
from ad_lib import finite_diff, ops
from ad_lib.forward import Dual, derivative, jacfwd, jvp
from ad_lib.graph import trace
from ad_lib.reverse import Value, grad, hvp, jacrev, vjp

F64 = torch.float64


def _randn(*shape, seed=0, device="cpu"):
    return torch.randn(tuple(shape), dtype=F64, generator=torch.Generator().manual_seed(seed)).to(device)


def rosenbrock(x):  # chapter 1's Rosenbrock function, as a reader writes it
    return (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(dim=-1)


# ---------------------------------------------------------------------------
# 1. indexing, slicing and the tensor methods
# ---------------------------------------------------------------------------

KEYS = [0, -1, slice(1, None), slice(None, -1), slice(None, None, 2), (slice(None), 2), (Ellipsis, slice(1, None)),
        (Ellipsis, slice(None, -1)), (1, Ellipsis), (None, slice(1, 3)), (-2, slice(None, None, 3), None)]


@pytest.mark.parametrize("key", KEYS, ids=[repr(k) for k in KEYS])
def test_indexing_rules_match_torch(key, device):
    x, t = _randn(3, 4, 5, device=device), _randn(3, 4, 5, seed=1, device=device)
    f = lambda v: v[key] * 1.5  # noqa: E731
    _, ours = jvp(f, (x,), (t,))
    _, theirs = torch.func.jvp(f, (x,), (t,))
    torch.testing.assert_close(ours, theirs)
    u = _randn(*f(x).shape, seed=2, device=device)
    torch.testing.assert_close(vjp(f, x)[1](u)[0], torch.func.vjp(f, x)[1](u)[0])
    # the scatter itself, its own rules: forward and reverse of the adjoint
    target = tuple(x.shape)
    scatter = lambda g: ops.scatter_index(g, key, target)  # noqa: E731
    reference = lambda g: torch.func.vjp(lambda z: z[key], torch.zeros(target, dtype=F64, device=device))[1](g)[0]  # noqa: E731
    torch.testing.assert_close(scatter(u), reference(u))
    torch.testing.assert_close(jvp(scatter, (u,), (u,))[1], reference(u))
    torch.testing.assert_close(vjp(scatter, u)[1](x)[0], x[key])


def test_rosenbrock_as_a_reader_writes_it_differentiates_in_every_mode(device):
    x, v = _randn(6, device=device), _randn(6, seed=1, device=device)
    gradient, hessian = torch.func.grad(rosenbrock)(x), torch.func.hessian(rosenbrock)(x)
    torch.testing.assert_close(grad(rosenbrock)(x), gradient)
    torch.testing.assert_close(jacfwd(rosenbrock)(x), gradient)
    torch.testing.assert_close(jacfwd(rosenbrock, vectorize=False)(x), gradient)
    torch.testing.assert_close(jacrev(rosenbrock)(x), gradient)
    torch.testing.assert_close(hvp(rosenbrock, x, v), hessian @ v)  # second derivatives through the scatter
    # a batch of points: (4, 6) -> (4,)
    X = _randn(4, 6, seed=3, device=device)
    torch.testing.assert_close(jacrev(rosenbrock)(X), torch.func.jacrev(rosenbrock)(X))
    # and the graph of chapter 2 records it
    graph = trace(rosenbrock, x)
    assert "index" in {n.operation for n in graph.nodes}
    torch.testing.assert_close(graph.evaluate(X[0]), rosenbrock(X[0]))


METHODS = {
    "sum()": lambda v: v.sum(), "sum(dim=-1)": lambda v: v.sum(dim=-1), "sum(0, keepdim)": lambda v: v.sum(0, True),
    "mean()": lambda v: v.mean(), "mean(dim=0)": lambda v: v.mean(dim=0), "exp": lambda v: v.exp(),
    "log": lambda v: (v * v + 1).log(), "sin": lambda v: v.sin(), "cos": lambda v: v.cos(), "tanh": lambda v: v.tanh(),
    "sqrt": lambda v: (v * v + 1).sqrt(), "relu": lambda v: v.relu(), "T": lambda v: v.T, "reshape": lambda v: v.reshape(6, 2),
    "reshape tuple": lambda v: v.reshape((2, 6)), "transpose": lambda v: v.transpose(0, 1), "iter": lambda v: sum(r * i for i, r in enumerate(v)),
    "pow": lambda v: v.pow(2), "matmul": lambda v: v.matmul(v.T), "add": lambda v: v.add(v[0]),
}


@pytest.mark.parametrize("jacobian", [jacfwd, jacrev], ids=["jacfwd", "jacrev"])
def test_the_jacobian_of_a_constant_is_zero(jacobian):
    """vjp, jvp and grad take a Python number returned by f as a constant; the Jacobians do too."""
    x = _randn(3)
    torch.testing.assert_close(jacobian(lambda v: 3.0)(x), torch.func.jacrev(lambda v: torch.tensor(3.0, dtype=F64))(x))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_tensor_methods_match_torch(name):
    f, x, u = METHODS[name], _randn(3, 4), None
    torch.testing.assert_close(jvp(f, (x,), (x,))[1], torch.func.jvp(f, (x,), (x,))[1])
    out = f(x)
    u = _randn(*out.shape, seed=5)
    torch.testing.assert_close(vjp(f, x)[1](u)[0], torch.func.vjp(f, x)[1](u)[0])


def test_shape_queries_on_every_kind_of_box():
    x = _randn(3, 4)
    seen = []

    def probe(v):
        assert (v.shape, v.dim(), v.ndim, v.numel(), len(v), v.size(), v.size(1)) == (x.shape, 2, 2, 12, 3, x.shape, 4)
        assert (v.dtype, v.device) == (x.dtype, x.device)
        seen.append(type(v).__name__)
        return v.sum()

    jvp(probe, (x,), (x,))
    vjp(probe, x)
    trace(probe, x)
    assert seen == ["Dual", "Traced", "GraphNode"]
    with pytest.raises(TypeError, match="0-d"):
        vjp(lambda v: len(v.sum()), x)


@pytest.mark.parametrize("call, name", [
    (lambda v: v.cumsum(0), "cumsum"), (lambda v: v.abs(), "abs"), (lambda v: torch.cumsum(v, 0), "cumsum"),
    (lambda v: v.max(), "max"),
])
def test_an_operation_without_a_rule_is_named_and_points_to_ops(call, name):
    x = _randn(4)
    for run in (lambda: grad(lambda v: call(v).sum() if name != "max" else call(v))(x), lambda: jvp(call, (x,), (x,))):
        with pytest.raises(ops.NoRuleError) as info:
            run()
        message = str(info.value)
        assert name in message and "ad_lib.ops.PRIMITIVES" in message and "has no attribute" not in message
    with pytest.raises(ops.NoRuleError, match="use the primitive ad_lib.ops.exp"):  # a torch function with a primitive
        grad(lambda v: torch.exp(v).sum())(x)
    with pytest.raises(AttributeError):  # private names stay plain AttributeErrors (copy, pickle, IPython probe them)
        vjp(lambda v: v._repr_html_, x)


def test_python_operators_without_a_rule_say_why():
    """abs(x), x > 0 and float(x) on a value being differentiated: a NoRuleError that says what to do,
    not Python's "bad operand type"; and hasattr answers False for a tensor attribute a box lacks."""
    x = _randn(3)
    cases = [(lambda v: abs(v), "abs"), (lambda v: v if v > 0 else -v, "ad_lib.ops.raw(x) >"),
             (lambda v: v * (v <= 1), "ad_lib.ops.raw(x) <="), (lambda v: math.exp(v[0]), "float(x)")]
    for f, words in cases:
        for run in (lambda: grad(lambda v: f(v).sum())(x), lambda: jvp(f, (x,), (x,))):
            with pytest.raises(ops.NoRuleError, match=re.escape(words)):
                run()
    seen = []
    vjp(lambda v: seen.append((hasattr(v, "grad"), hasattr(v, "shape"))) or v.sum(), x)
    assert seen == [(False, True)]


def test_advanced_indexing_is_refused_with_a_message():
    x = _randn(4)
    with pytest.raises(TypeError, match="basic indexing"):
        grad(lambda v: v[torch.tensor([0, 0])].sum())(x)
    with pytest.raises(ValueError, match="positive int"):
        grad(lambda v: v[::-1].sum())(x)


# ---------------------------------------------------------------------------
# 2. repeated argnums
# ---------------------------------------------------------------------------


def test_repeated_argnums_are_refused_as_torch_func_does():
    x = torch.tensor(3.0, dtype=F64)
    with pytest.raises(RuntimeError, match="unique"):  # the behaviour we match
        torch.func.grad(lambda a, b: a * b, argnums=(0, 0))(x, x)
    with pytest.raises(ValueError, match="more than once"):
        grad(lambda a, b: a * b, argnums=(0, 0))
    with pytest.raises(ValueError, match="more than once"):  # -2 and 0 are the same of two arguments
        grad(lambda a, b: a * b, argnums=(0, -2))(x, x)
    with pytest.raises(ValueError, match="empty"):
        grad(lambda a: a, argnums=())
    ga, gb = grad(lambda a, b: a * a * b, argnums=(0, 1))(x, x + 1)
    assert (ga.item(), gb.item()) == (24.0, 9.0)  # 2ab, a^2


# ---------------------------------------------------------------------------
# 3. derivative of a function of a vector
# ---------------------------------------------------------------------------


def test_derivative_refuses_a_vector_and_points_elsewhere():
    x = _randn(5)
    f = lambda v: (v**2).sum()  # noqa: E731  (J 1 would be the sum of the gradient, 2 sum(x))
    with pytest.raises(ValueError, match=r"x has shape \(5,\).*vmap.*jacfwd.*grad"):
        derivative(f)(x)
    torch.testing.assert_close(torch.func.vmap(derivative(ops.sin))(x), torch.cos(x))  # the elementwise way
    assert derivative(ops.exp)(torch.tensor([0.5], dtype=F64)).item() == pytest.approx(math.exp(0.5), rel=1e-15)
    assert derivative(lambda v: v * v)(3.0) == 6.0
    curve = derivative(lambda s: ops.reshape(s, (1,)) * torch.tensor([1.0, 2.0], dtype=F64))  # R -> R^2
    torch.testing.assert_close(curve(torch.tensor(0.3, dtype=F64)), torch.tensor([1.0, 2.0], dtype=F64))


# ---------------------------------------------------------------------------
# 4. sum_to
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("source, target", [((3, 4), (5,)), ((3, 4), (3,)), ((4,), (2, 4)), ((2, 3), (2, 2))])
def test_sum_to_refuses_a_shape_that_does_not_broadcast(source, target):
    x = torch.ones(source, dtype=F64)
    with pytest.raises(RuntimeError):  # the rule it enforces is broadcasting's: torch cannot broadcast back either
        torch.broadcast_to(torch.ones(target), source)
    with pytest.raises(ValueError, match=rf"shape \({source[0]},.*cannot be summed to shape.*broadcasts"):
        ops.sum_to(x, target)


def test_sum_to_sums_what_broadcasting_repeated():
    x = _randn(2, 3, 4)
    for target in [(3, 1), (4,), (1, 3, 4), (), (2, 1, 1)]:
        # the adjoint of broadcasting: <sum_to(x), y> = <x, broadcast(y)>, with torch's broadcast
        y = _randn(*target, seed=1)
        assert ops.sum_to(x, target).shape == torch.Size(target)
        torch.testing.assert_close((ops.sum_to(x, target) * y).sum(), (x * torch.broadcast_to(y, x.shape)).sum())


# ---------------------------------------------------------------------------
# 5. Value.backward on a long chain
# ---------------------------------------------------------------------------


def test_scalar_engine_backward_on_a_chain_of_100000_nodes():
    x = Value(1.0)
    y, n = x, 100_000
    for _ in range(n):
        y = y * 1.00001  # a chain 100000 products deep: y = 1.00001^n x
    y.backward()  # a recursive depth-first search stopped near 1000
    assert x.grad == pytest.approx(1.00001**n, rel=1e-9)  # the closed form dy/dx
    y.zero_grad()
    assert x.grad == 0.0 and y.grad == 0.0


def test_scalar_engine_order_is_topological_on_a_diamond():
    a = Value(2.0)
    b, c = a * 3.0, a.exp()
    d = b * c + b
    d.backward()
    assert a.grad == pytest.approx(3 * math.exp(2) + 3 * 2 * math.exp(2) + 3, rel=1e-14)


# ---------------------------------------------------------------------------
# 6. what f returns
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("returned", [None, "loss", {"loss": 1}, True], ids=["None", "str", "dict", "bool"])
def test_jvp_and_vjp_refuse_what_is_not_a_tensor(returned):
    x = _randn(3)
    name = type(returned).__name__
    with pytest.raises(TypeError, match=f"returned {name}"):
        jvp(lambda v: returned, (x,), (x,))
    with pytest.raises(TypeError, match=f"returned {name}"):
        vjp(lambda v: returned, x)
    with pytest.raises(TypeError, match=f"output 1 returned {name}|f's output 1"):
        jvp(lambda v: (v, returned), (x,), (x,))
    with pytest.raises(TypeError, match="one output"):
        vjp(lambda v: (v, v), x)


def test_a_constant_python_number_has_a_zero_derivative():
    x = _randn(3)
    with pytest.raises(RuntimeError, match="only tensors"):  # torch.func refuses it; we take it as a constant
        torch.func.jvp(lambda v: 2.5, (x,), (x,))
    assert jvp(lambda v: 2.5, (x,), (x,)) == (2.5, 0.0)
    value, vjp_fn = vjp(lambda v: 2.5, x)
    assert value == 2.5
    torch.testing.assert_close(vjp_fn(1.0)[0], torch.zeros(3, dtype=F64))
    torch.testing.assert_close(grad(lambda v: 2.5)(x), torch.zeros(3, dtype=F64))
    assert derivative(lambda v: 2.5)(1.0) == 0.0
    (a, b), (ta, tb) = jvp(lambda v: (v * 2, 1.0), (x,), (x,))  # a tuple may hold one
    torch.testing.assert_close(ta, 2 * x)
    assert (b, tb) == (1.0, 0.0)


# ---------------------------------------------------------------------------
# 7. complex inputs
# ---------------------------------------------------------------------------

HOLOMORPHIC = {
    "exp": ops.exp, "log": ops.log, "sin": ops.sin, "cos": ops.cos, "tanh": ops.tanh, "sqrt": ops.sqrt,
    "polynomial": lambda z: z * z * z - 2 * z + 1, "quotient": lambda z: (z + 1) / (z * z + 2), "power": lambda z: z**3, "complex exponent": lambda z: z**z,
    "matmul": lambda z: torch.tensor([[1.0, 2j], [0.5, -1.0]], dtype=torch.complex128) @ z,
    "index and sum": lambda z: (z[1:] * z[:-1]).sum(),
}


@pytest.mark.parametrize("name", sorted(HOLOMORPHIC))
def test_jvp_on_complex_inputs_agrees_with_torch_func(name):
    f = HOLOMORPHIC[name]
    z = torch.tensor([0.3 + 0.4j, -0.7 + 1.1j], dtype=torch.complex128)
    t = torch.tensor([1.0 - 0.5j, 0.2 + 2.0j], dtype=torch.complex128)
    out, tangent = jvp(f, (z,), (t,))
    reference_out, reference_tangent = torch.func.jvp(f, (z,), (t,))
    torch.testing.assert_close(out, reference_out)
    torch.testing.assert_close(tangent, reference_tangent)


def test_reverse_mode_refuses_complex_values():
    z = torch.tensor([0.3 + 0.4j, -0.7 + 1.1j], dtype=torch.complex128)
    x = torch.tensor([0.3, -0.7], dtype=F64)
    # without the conjugate, the cotangent would differ from torch.func.vjp's:
    u = torch.ones(2, dtype=torch.complex128)
    conjugated = torch.func.vjp(lambda v: v * z, z)[1](u)[0]
    assert not torch.allclose(conjugated, u * z)  # u * z is what an unconjugated rule would return
    for run in (
        lambda: vjp(ops.exp, z),
        lambda: grad(lambda v: (v * v).sum())(z),
        lambda: jacrev(ops.exp)(z),
        lambda: hvp(lambda v: (v * v).sum(), z, z),
        lambda: vjp(lambda v: v * z, x),  # a complex value on the tape of a real input
        lambda: vjp(lambda v: v * 2, x)[1](u),  # a complex cotangent
    ):
        with pytest.raises(TypeError, match="real values only"):
            run()


# ---------------------------------------------------------------------------
# 8. nested Jacobians
# ---------------------------------------------------------------------------

A = torch.tensor([[2.0, -1.0, 0.5], [0.3, 1.0, -2.0], [1.5, 0.2, 0.7]], dtype=F64)
SCALAR_FUNCTIONS = {
    "rosenbrock": rosenbrock,
    "quadratic form with matmul": lambda v: v @ (A @ v) + ops.sin(v).sum(),
    "tanh network": lambda v: ops.tanh(A @ ops.tanh(A @ v)).sum() * v[0],
    "scalar input": lambda v: ops.exp(v) * ops.sin(v),
}


@pytest.mark.parametrize("outer", [jacfwd, jacrev], ids=["jacfwd", "jacrev"])
@pytest.mark.parametrize("inner", [jacfwd, jacrev], ids=["jacfwd", "jacrev"])
@pytest.mark.parametrize("name", sorted(SCALAR_FUNCTIONS))
def test_all_four_nestings_are_the_hessian(outer, inner, name):
    f = SCALAR_FUNCTIONS[name]
    x = torch.tensor(0.4, dtype=F64) if name == "scalar input" else _randn(3)
    torch.testing.assert_close(outer(inner(f))(x), torch.func.hessian(f)(x))


def test_vector_valued_nesting_matches_torch_func():
    f = lambda v: ops.tanh(A @ v) * v  # noqa: E731  R^3 -> R^3: the Jacobian of the Jacobian is (3, 3, 3)
    x = _randn(3)
    reference = torch.func.jacfwd(torch.func.jacrev(f))(x)
    for outer in (jacfwd, jacrev):
        for inner in (jacfwd, jacrev):
            torch.testing.assert_close(outer(inner(f))(x), reference)


# ---------------------------------------------------------------------------
# 9. finite differences: derivative_estimates and measured_optimal_step check as the gradients do
# ---------------------------------------------------------------------------


def test_derivative_estimates_refuses_non_finite_values_like_the_gradients():
    steps = torch.logspace(-8, 0, 9, dtype=F64)
    with pytest.raises(ValueError, match="not finite") as gradient_error:
        finite_diff.central_difference(lambda v: torch.log(v - 0.5).sum(), torch.tensor([1.0], dtype=F64), h=0.6)
    with pytest.raises(ValueError, match=r"not finite at x - h with h = 1") as estimate_error:
        finite_diff.derivative_estimates(lambda v: torch.log(v - 0.5), 1.0, steps, "central")
    assert "outside f's domain" in str(gradient_error.value) and "outside f's domain" in str(estimate_error.value)


def test_derivative_estimates_refuses_a_lower_precision_f_like_the_gradients():
    steps = torch.logspace(-8, -1, 8, dtype=F64)
    f32 = lambda v: torch.sin(v.float())  # noqa: E731
    with pytest.raises(ValueError, match="more coarsely"):
        finite_diff.central_difference(lambda v: f32(v).sum(), torch.ones(2, dtype=F64))
    for method in ("forward", "central"):
        with pytest.raises(ValueError, match="more coarsely"):
            finite_diff.derivative_estimates(f32, 1.0, steps, method)
    # the same f in the steps' precision is fine, and matches cos(1) at a good step
    estimate = finite_diff.derivative_estimates(torch.sin, 1.0, steps, "central")
    assert abs(estimate[-4].item() - math.cos(1.0)) < 1e-9


def test_measured_optimal_step_refuses_steps_not_evenly_spaced_in_log10():
    errors = torch.ones(20, dtype=F64)
    with pytest.raises(ValueError, match="evenly spaced in log10"):
        finite_diff.measured_optimal_step(torch.linspace(1e-3, 1.0, 20, dtype=F64), errors)
    with pytest.raises(ValueError, match="increasing"):
        finite_diff.measured_optimal_step(torch.logspace(0, -3, 20, dtype=F64), errors)
    for dtype in (torch.float32, F64):  # torch.logspace passes in either precision, and float32 steps made float64
        finite_diff.measured_optimal_step(torch.logspace(-12, 0, 200, dtype=dtype), torch.ones(200, dtype=dtype))
    finite_diff.measured_optimal_step(torch.logspace(-7, 0, 141, dtype=torch.float32).double(), torch.ones(141, dtype=F64))


# ---------------------------------------------------------------------------
# 10. anomaly mode
# ---------------------------------------------------------------------------


def test_log_of_minus_one_is_silent_outside_the_mode_and_stops_inside():
    assert math.isnan(ops.log(-1.0))  # unchanged outside the mode
    assert grad(ops.log)(-1.0).item() == -1.0
    assert not ops.anomaly_mode_enabled()
    with ad_lib.detect_anomaly():
        assert ops.anomaly_mode_enabled()
        with pytest.raises(ops.AnomalyError, match=r"ad_lib\.ops\.log: its value is nan") as info:
            ops.log(-1.0)
        assert "input 0: the number -1.0" in str(info.value)
        with pytest.raises(FloatingPointError, match="log: its value is nan"):
            grad(ops.log)(-1.0)
    assert not ops.anomaly_mode_enabled()


def test_anomaly_names_the_reverse_partial_and_the_inputs():
    x = torch.tensor([1.0, 0.0, 4.0], dtype=F64)
    torch.testing.assert_close(ops.sqrt(x), torch.sqrt(x))  # the value is finite; the derivative at 0 is not
    with ad_lib.detect_anomaly():
        with pytest.raises(ops.AnomalyError) as info:
            grad(lambda v: ops.sqrt(v).sum())(x)
    message = str(info.value)
    # torch agrees that the reverse partial is where it goes wrong: d sqrt(0) = inf
    assert torch.isinf(torch.func.grad(lambda v: torch.sqrt(v).sum())(x)[1])
    assert "ad_lib.ops.div (inside the reverse partial of input 0 of sqrt): its value is inf" in message
    assert "index (1,)" in message and "shape (3,)" in message


def test_anomaly_in_forward_mode_and_in_a_rule_without_primitives():
    x = torch.tensor([1.0, 0.0], dtype=F64)
    with ad_lib.detect_anomaly():
        # sqrt(0) = 0 is finite, its forward partial t / (2 sqrt(0)) is not
        with pytest.raises(ops.AnomalyError, match=r"div \(inside the forward partial of input 0 of sqrt\)"):
            jvp(lambda v: ops.sqrt(v) * 2.0, (x,), (torch.ones(2, dtype=F64),))
        # a primitive whose rule returns its seed unchanged: the contribution itself is checked
        passthrough = ops.Primitive("passthrough", lambda a: a * 1.0, jvp=[lambda t, out, a: t], vjp=[lambda g, out, a: g])
        with pytest.raises(ops.AnomalyError, match="passthrough: its forward partial of input 0 is nan"):
            jvp(passthrough, (x,), (torch.tensor([1.0, math.nan], dtype=F64),))
        with pytest.raises(ops.AnomalyError, match="passthrough: its reverse partial of input 0 is inf"):
            vjp(passthrough, x)[1](torch.tensor([1.0, math.inf], dtype=F64))


def test_anomaly_nested_in_hvp_and_in_the_jacobians():
    x = torch.tensor([0.5, 0.0], dtype=F64)
    f = lambda v: (v**1.5).sum()  # noqa: E731  a finite gradient at 0 (1.5 sqrt(v)), an infinite Hessian
    assert torch.isinf(torch.func.hessian(f)(x)[1, 1])
    with ad_lib.detect_anomaly():
        torch.testing.assert_close(grad(f)(x), torch.func.grad(f)(x))
        with pytest.raises(ops.AnomalyError, match=r"pow.*inside the forward partial of input 0 of pow"):
            hvp(f, x, torch.ones(2, dtype=F64))
        with pytest.raises(ops.AnomalyError, match="log"):
            jacfwd(ops.log)(torch.tensor([1.0, -1.0], dtype=F64))  # vmap is bypassed under the mode
        with pytest.raises(ops.AnomalyError, match="log"):
            jacrev(lambda v: ops.log(v) * 2.0)(torch.tensor([1.0, 0.0], dtype=F64))
        with pytest.raises(ops.AnomalyError, match="vmap"):
            torch.func.vmap(ops.log)(torch.tensor([-1.0], dtype=F64))


def test_anomaly_mode_leaves_finite_computations_alone():
    x = _randn(6)
    with ad_lib.detect_anomaly():
        torch.testing.assert_close(grad(rosenbrock)(x), torch.func.grad(rosenbrock)(x))
        torch.testing.assert_close(hvp(rosenbrock, x, x), torch.func.hessian(rosenbrock)(x) @ x)
        torch.testing.assert_close(jacfwd(rosenbrock)(x), torch.func.grad(rosenbrock)(x))


def test_anomaly_mode_is_restored_after_an_error():
    with pytest.raises(ops.AnomalyError):
        with ad_lib.detect_anomaly():
            ops.log(torch.tensor(-1.0, dtype=F64))
    assert not ops.anomaly_mode_enabled()
    assert math.isnan(ops.log(-1.0))


def test_dual_numbers_index_too():
    d = Dual(torch.tensor([1.0, 2.0, 3.0], dtype=F64), torch.tensor([0.1, 0.2, 0.3], dtype=F64), ops.new_level())
    assert d[1:].tangent.tolist() == [0.2, 0.3]
