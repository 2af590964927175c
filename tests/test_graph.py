"""Computational graphs (ad_lib.graph): structure, re-evaluation, the slides' trace, drawing."""

import math

import matplotlib
import pytest
import torch
from expressions import evaluate, expressions
from hypothesis import given, settings
from hypothesis import strategies as st

from ad_lib import ops
from ad_lib.graph import trace

matplotlib.use("Agg")
F64 = torch.float64


def slides_program(x1, x2):
    v1 = ops.log(x1)
    v2 = x1 * x2
    v3 = ops.sin(x2)
    v4 = v1 + v2
    v5 = v4 - v3
    return v5


def test_the_slides_evaluation_trace():
    graph = trace(slides_program, 2.0, 5.0)
    assert len(graph) == 7 and graph.n_inputs == 2 and graph.output == 6
    assert [n.operation for n in graph.nodes] == ["input", "input", "log", "mul", "sin", "add", "sub"]
    expected = [2.0, 5.0, math.log(2), 10.0, math.sin(5), math.log(2) + 10, math.log(2) + 10 - math.sin(5)]
    for node, value in zip(graph.nodes, expected):
        assert node.value.item() == pytest.approx(value, rel=1e-15)
    table = graph.trace_table()
    assert "v5 = v4 - v3" in table and "11.6521" in table and "v1 = log(x1)" in table


def test_parents_and_children_of_the_notes_example():
    def f(x, y):  # y log x + sqrt(y log x), with b = y log x computed once
        a = ops.log(x)
        b = y * a
        c = ops.sqrt(b)
        return b + c

    graph = trace(f, 2.0, 3.0, names=["x", "y"])
    x, y, a, b, c, out = range(6)
    assert graph.parents(b) == [y, a] and graph.parents(out) == [b, c]
    assert graph.children(b) == [c, out] and graph.children(x) == [a] and graph.children(out) == []
    assert graph.evaluate(torch.tensor(2.0, dtype=F64), torch.tensor(3.0, dtype=F64)).item() == pytest.approx(
        3 * math.log(2) + math.sqrt(3 * math.log(2)), rel=1e-15
    )


@settings(max_examples=50, deadline=None)
@given(expression=expressions, seed=st.integers(0, 2**31 - 1))
def test_random_programs_give_a_topologically_ordered_graph_that_evaluates_again(expression, seed):
    g = torch.Generator().manual_seed(seed)
    x, y, x2, y2 = (torch.randn(3, dtype=F64, generator=g) for _ in range(4))
    program = lambda a, b: evaluate(expression, a, b) + 0.0 * a  # noqa: E731  (always depends on the input)
    graph = trace(program, x, y)
    assert all(parent < child for parent, child in graph.edges())
    assert all(len(graph.parents(k)) == 0 for k in range(graph.n_inputs))
    torch.testing.assert_close(graph.evaluate(x2, y2), program(x2, y2))


def test_the_drawing_shows_every_node():
    graph = trace(slides_program, 2.0, 5.0)
    ax = graph.draw()
    labels = [t.get_text() for t in ax.texts if t.get_text()]
    assert len(labels) == len(graph) and any("sub" in label for label in labels)
    assert max(graph.depths()) == 3


def test_tensor_programs_and_parameters_are_recorded():
    W = torch.randn(3, 4, dtype=F64)
    graph = trace(lambda x: ops.sum(ops.relu(W @ x), dim=0), torch.randn(4, dtype=F64))
    assert [n.operation for n in graph.nodes] == ["input", "matmul", "relu", "sum"]
    assert "dim=0" in graph.definition(3) and "shape (3,)" in graph.trace_table()


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="does not depend"):
        trace(lambda x: torch.ones(2), 1.0)
    with pytest.raises(ValueError, match="names"):
        trace(slides_program, 2.0, 5.0, names=["x"])
    with pytest.raises(TypeError, match="callable"):
        trace("f", 1.0)
    with pytest.raises(TypeError, match="tensors or real numbers"):
        trace(slides_program, "2", 5.0)
    with pytest.raises(ValueError, match="2 input"):
        trace(slides_program, 2.0, 5.0).evaluate(torch.tensor(1.0))
