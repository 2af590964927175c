"""Forward mode (ad_lib.forward) against torch.func, closed forms and the slides' trace table."""

import math

import pytest
import torch
from expressions import evaluate, expressions
from hypothesis import given, settings
from hypothesis import strategies as st

from ad_lib import ops
from ad_lib.forward import Dual, derivative, jacfwd, jvp

F64 = torch.float64


def slides_function(x1, x2):
    """y = ln(x1) + x1 x2 - sin(x2), the example of the slides' trace tables."""
    return ops.log(x1) + x1 * x2 - ops.sin(x2)


def test_the_slides_forward_trace_at_2_5():
    y, dy_dx1 = jvp(slides_function, (2.0, 5.0), (1.0, 0.0))
    assert y.item() == pytest.approx(math.log(2) + 10 - math.sin(5), rel=1e-15)
    assert round(y.item(), 4) == 11.6521  # the table's value
    assert dy_dx1.item() == pytest.approx(5.5, rel=1e-15)  # 1/x1 + x2
    _, dy_dx2 = jvp(slides_function, (2.0, 5.0), (0.0, 1.0))
    assert dy_dx2.item() == pytest.approx(2 - math.cos(5), rel=1e-15)


def test_the_notes_example_one_pass_per_input():
    # f(x, y) = y log x + sqrt(y log x), eq. (1) of the notes
    f = lambda x, y: y * ops.log(x) + ops.sqrt(y * ops.log(x))  # noqa: E731
    x, y = 2.0, 3.0
    b = y * math.log(x)
    _, dfdx = jvp(f, (x, y), (1.0, 0.0))
    _, dfdy = jvp(f, (x, y), (0.0, 1.0))
    assert dfdx.item() == pytest.approx(y / x * (1 + 1 / (2 * math.sqrt(b))), rel=1e-15)
    assert dfdy.item() == pytest.approx(math.log(x) * (1 + 1 / (2 * math.sqrt(b))), rel=1e-15)


@settings(max_examples=60, deadline=None)
@given(expression=expressions, seed=st.integers(0, 2**31 - 1))
def test_random_programs_match_torch_func_jvp(expression, seed):
    g = torch.Generator().manual_seed(seed)
    x, y, tx, ty = (torch.randn(3, dtype=F64, generator=g) for _ in range(4))
    program = lambda a, b: evaluate(expression, a, b)  # noqa: E731
    out, tangent = jvp(program, (x, y), (tx, ty))
    reference_out, reference_tangent = torch.func.jvp(program, (x, y), (tx, ty))
    torch.testing.assert_close(out, reference_out)
    torch.testing.assert_close(tangent, reference_tangent)


def test_nested_derivatives_do_not_confuse_perturbations():
    one = torch.tensor(1.0, dtype=F64)
    # d/dx [ x * d/dy (x + y) ] at x = y = 1 is 1 (the inner derivative is 1), not 2
    result = derivative(lambda x: x * derivative(lambda y: x + y)(one))(one)
    assert result.item() == 1.0
    # and a case where the inner derivative depends on x: d/dx [ x * d/dy (x * y) ] = d/dx x^2 = 2x
    x0 = torch.tensor(3.0, dtype=F64)
    assert derivative(lambda x: x * derivative(lambda y: x * y)(one))(x0).item() == 6.0


def test_higher_derivatives_by_nesting(device):
    x = torch.linspace(-2, 2, 7, dtype=F64, device=device)
    third = derivative(derivative(derivative(ops.sin)))
    torch.testing.assert_close(torch.func.vmap(third)(x), -torch.cos(x))  # at many points: vmap
    torch.testing.assert_close(torch.func.vmap(derivative(derivative(lambda z: z**4)))(x), 12 * x**2)
    torch.testing.assert_close(third(x[2]), -torch.cos(x[2]))  # and at one point


@pytest.mark.parametrize("vectorize", [True, False])
def test_jacfwd_matches_torch(device, vectorize):
    W = torch.randn(4, 6, dtype=F64, device=device)

    def f(X):  # R^{2x3} -> R^{4}
        return ops.tanh(W @ X.reshape(6)) * ops.sum(X * X)

    def f_torch(X):
        return torch.tanh(W @ X.reshape(6)) * (X * X).sum()

    X = torch.randn(2, 3, dtype=F64, device=device)
    J = jacfwd(f, vectorize=vectorize)(X)
    assert J.shape == (4, 2, 3)
    torch.testing.assert_close(J, torch.func.jacfwd(f_torch)(X))


def test_jacfwd_with_respect_to_another_argument():
    f = lambda a, b: ops.exp(a) * b  # noqa: E731
    a, b = torch.randn(3, dtype=F64), torch.randn(3, dtype=F64)
    torch.testing.assert_close(jacfwd(f, argnums=1)(a, b), torch.diag(torch.exp(a)))


def test_tuple_outputs_and_constant_outputs():
    (u, v), (tu, tv) = jvp(lambda x: (x * 2, ops.sin(x)), (torch.tensor([0.5], dtype=F64),), (torch.ones(1, dtype=F64),))
    torch.testing.assert_close(tu, torch.tensor([2.0], dtype=F64))
    torch.testing.assert_close(tv, torch.cos(torch.tensor([0.5], dtype=F64)))
    out, tangent = jvp(lambda x: torch.ones(2, dtype=F64), (torch.ones(2, dtype=F64),), (torch.ones(2, dtype=F64),))
    torch.testing.assert_close(tangent, torch.zeros(2, dtype=F64))


def test_a_dual_number_shows_its_parts():
    d = Dual(torch.tensor(2.0), torch.tensor(1.0), 7)
    assert "primal" in repr(d) and "tangent" in repr(d) and d.shape == ()


def test_bad_input_is_explained():
    x = torch.ones(3, dtype=F64)
    with pytest.raises(ValueError, match=r"tangents\[0\] has shape \(2,\) but primals\[0\] has shape \(3,\)"):
        jvp(ops.exp, (x,), (torch.ones(2, dtype=F64),))
    with pytest.raises(ValueError, match=r"tangents\[0\] has dtype torch.float32.*primals\[0\]"):
        jvp(ops.exp, (x,), (torch.ones(3, dtype=torch.float32),))
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"tangents\[0\].*device"):
            jvp(ops.exp, (x,), (torch.ones(3, dtype=F64, device="cuda"),))
    with pytest.raises(ValueError, match="one tangent per primal"):
        jvp(ops.exp, (x,), ())
    with pytest.raises(TypeError, match="tuples"):
        jvp(ops.exp, x, x)
    with pytest.raises(TypeError, match="floating-point"):
        jvp(ops.exp, (torch.ones(3, dtype=torch.int64),), (torch.ones(3, dtype=torch.int64),))
    with pytest.raises(TypeError, match="callable"):
        jvp("exp", (x,), (x,))
    with pytest.raises(TypeError, match=r"torch\.exp"):
        jvp(torch.exp, (x,), (x,))
    with pytest.raises(ValueError, match="argnums"):
        jacfwd(ops.exp, argnums=2)(x)
