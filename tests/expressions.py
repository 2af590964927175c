"""Random programs made of ad_lib's primitives, for property tests (hypothesis).

An expression is a nested tuple: ``("x",)``, ``("y",)``, ``("const", c)``,
``(unary_name, e)`` or ``(binary_name, e1, e2)``. :func:`evaluate` runs it
with ``ad_lib.ops``; on plain tensors that is plain torch, so torch.func can
differentiate the very same program as an independent reference.
"""

from hypothesis import strategies as st

from ad_lib import ops

# unary operations kept inside their domains and away from overflow
UNARY = {
    "exp": lambda a: ops.exp(ops.tanh(a)),
    "log": lambda a: ops.log(a * a + 1.0),
    "sin": ops.sin,
    "cos": ops.cos,
    "tanh": ops.tanh,
    "sqrt": lambda a: ops.sqrt(a * a + 0.5),
    "neg": ops.neg,
    "square": lambda a: a**2,
    "sum": lambda a: ops.sum(a) + 0.0 * a,  # a reduction, broadcast back to a's shape
}
BINARY = {
    "add": ops.add,
    "sub": ops.sub,
    "mul": ops.mul,
    "div": lambda a, b: a / (b * b + 1.0),
    "pow": lambda a, b: (a * a + 1.0) ** ops.tanh(b),
}

leaves = st.one_of(
    st.just(("x",)), st.just(("y",)), st.floats(-2, 2, allow_nan=False).map(lambda c: ("const", c))
)


def _extend(children):
    return st.one_of(
        st.tuples(st.sampled_from(sorted(UNARY)), children),
        st.tuples(st.sampled_from(sorted(BINARY)), children, children),
    )


expressions = st.recursive(leaves, _extend, max_leaves=12)


def evaluate(expression, x, y):
    kind = expression[0]
    if kind == "x":
        return x
    if kind == "y":
        return y
    if kind == "const":
        return expression[1] * (x * 0.0 + 1.0)  # a constant shaped like x
    if kind in UNARY:
        return UNARY[kind](evaluate(expression[1], x, y))
    return BINARY[kind](evaluate(expression[1], x, y), evaluate(expression[2], x, y))
