"""Computational graphs: a program as a directed acyclic graph (chapter 2).

A program computes variables ``x_1, ..., x_t`` one after the other: the first
``s`` are its inputs, and each later one is ``x_k = f_k(x_parents)`` for a
primitive ``f_k`` of :mod:`ad_lib.ops` applied to earlier variables, its
*parents* (the notes' "fathers"); the variables that use ``x_k`` are its
*children* ("sons"). :func:`trace` runs a function written with
:mod:`ad_lib.ops` once on example inputs, recording each primitive it calls,
and returns the :class:`ComputationalGraph`, with its nodes in the order the
program computed them, which is a topological order of the graph.

The graph can be evaluated again on other inputs (a forward traversal),
printed as an evaluation trace in the style of the slides' tables, and drawn.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from ad_lib import ops
from ad_lib.ops import Box, new_level

__all__ = ["GraphNode", "Node", "ComputationalGraph", "trace"]


@dataclass(eq=False)
class Node:
    """One variable of the program: an input, or a primitive applied to earlier variables.

    ``arguments`` lists, for each input of the primitive, either a parent
    :class:`Node` or a constant (a number or a tensor that does not depend on
    the inputs), in the primitive's order.
    """

    index: int
    primitive: Optional[ops.Primitive]  # None for an input
    arguments: tuple = ()
    params: dict = field(default_factory=dict)
    value: object = None
    name: str = ""

    @property
    def parents(self) -> list[int]:
        """Indices of the nodes this one is computed from (each once, in order)."""
        seen = []
        for a in self.arguments:
            if isinstance(a, Node) and a.index not in seen:
                seen.append(a.index)
        return seen

    @property
    def operation(self) -> str:
        return "input" if self.primitive is None else self.primitive.name

    def __repr__(self) -> str:
        return f"Node({self.index}: {self.name} = {self.operation}, parents={self.parents})"


class GraphNode(Box):
    """A value being traced into a graph: it knows which node computed it."""

    __slots__ = ("value", "node", "graph", "_level")

    def __init__(self, value, node: Node, graph: "ComputationalGraph", level: int):
        self.value = value
        self.node = node
        self.graph = graph
        self._level = level

    def _unbox(self):
        return self.value

    @classmethod
    def apply(cls, primitive, args, params, level):
        mine = [isinstance(a, GraphNode) and a._level == level for a in args]
        values = tuple(a.value if m else a for a, m in zip(args, mine))
        out = primitive(*values, **params)
        graph = next(a.graph for a, m in zip(args, mine) if m)
        arguments = tuple(a.node if m else a for a, m in zip(args, mine))
        node = graph._add(primitive, arguments, params, out)
        return GraphNode(out, node, graph, level)


def _show(value) -> str:
    v = ops.raw(value)
    if isinstance(v, numbers.Number):
        return f"{v:.4f}" if isinstance(v, float) else str(v)
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return f"{v.item():.4f}"
    if isinstance(v, torch.Tensor):
        return f"tensor of shape {tuple(v.shape)}"
    return repr(v)


class ComputationalGraph:
    """The directed acyclic graph of a traced program (chapter 2).

    ``nodes[k]`` is the variable ``x_{k+1}`` of the notes; the first
    ``n_inputs`` nodes are the inputs, the last one is the output.
    """

    def __init__(self):
        self.nodes: list[Node] = []
        self.n_inputs = 0
        self.output: Optional[int] = None

    def _add(self, primitive, arguments, params, value, name=None) -> Node:
        node = Node(len(self.nodes), primitive, tuple(arguments), dict(params), value)
        node.name = name or f"v{len(self.nodes) - self.n_inputs + 1}"
        self.nodes.append(node)
        return node

    def __len__(self) -> int:
        return len(self.nodes)

    def parents(self, k: int) -> list[int]:
        """The parents ("fathers") of node ``k``: the nodes it is computed from."""
        return self.nodes[k].parents

    def children(self, k: int) -> list[int]:
        """The children ("sons") of node ``k``: the nodes computed from it."""
        return [n.index for n in self.nodes if k in n.parents]

    def edges(self) -> list[tuple[int, int]]:
        """All edges ``(parent, child)``; every edge goes from a lower to a higher index."""
        return [(p, n.index) for n in self.nodes for p in n.parents]

    def evaluate(self, *inputs):
        """Run the graph forward on new inputs (a forward traversal) and return the output's value."""
        if len(inputs) != self.n_inputs:
            raise ValueError(f"the graph has {self.n_inputs} input(s), got {len(inputs)}")
        values = list(inputs)
        for node in self.nodes[self.n_inputs :]:
            args = [values[a.index] if isinstance(a, Node) else a for a in node.arguments]
            values.append(node.primitive(*args, **node.params))
        return values[self.output]

    def definition(self, k: int) -> str:
        """How node ``k`` is computed, e.g. ``log(x1)`` or ``v1 + v2``."""
        node = self.nodes[k]
        if node.primitive is None:
            return "input"
        names = [a.name if isinstance(a, Node) else _show(a) for a in node.arguments]
        infix = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**", "matmul": "@"}
        if node.primitive.name in infix and len(names) == 2:
            return f"{names[0]} {infix[node.primitive.name]} {names[1]}"
        names += [f"{k}={v}" for k, v in node.params.items()]
        return f"{node.primitive.name}({', '.join(names)})"

    def trace_table(self) -> str:
        """The evaluation trace, one line per variable, as in the slides' tables."""
        width = max(len(self.definition(k)) for k in range(len(self.nodes)))
        lines = []
        for node in self.nodes:
            lines.append(f"{node.name:>5} = {self.definition(node.index):<{width}} = {_show(node.value)}")
        return "\n".join(lines)

    def depths(self) -> list[int]:
        """The length of the longest path from an input to each node."""
        depth = []
        for node in self.nodes:
            depth.append(0 if not node.parents else 1 + max(depth[p] for p in node.parents))
        return depth

    def _bend(self, parent: int, child: int, position: dict) -> float:
        """0 for a straight edge; an arc bending away from a node the straight line would cross."""
        (x0, y0), (x1, y1) = position[parent], position[child]
        for k, (x, y) in position.items():
            if k in (parent, child) or not x0 < x < x1:
                continue
            y_line = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            if abs(y_line - y) < 0.3:  # the straight edge would run through node k
                return -0.35 if y_line >= y else 0.35  # bend up (negative) or down, away from it
        return 0.0

    def draw(self, ax=None, *, show_values: bool = True):
        """Draw the graph with matplotlib: inputs on the left, each node one column right of its deepest parent.

        Each node is a box with its name, its primitive and (``show_values``)
        its value, in the font size of matplotlib's settings (``font.size``;
        the book's ``chapters/matplotlibrc``), and each edge an arrow from the
        edge of the parent's box to the edge of the child's. Without ``ax``,
        a new figure no wider than matplotlib's default. Returns the axes.
        Chapter 2, section "A program is a sequence of operations".
        """
        import matplotlib.pyplot as plt

        if ax is None:
            width = min(1.9 * (max(self.depths()) + 1) + 1, plt.rcParams["figure.figsize"][0])
            _, ax = plt.subplots(figsize=(width, 0.9 * len(self.nodes) / 1.5 + 1.5))
        depth = self.depths()
        columns: dict[int, list[int]] = {}
        for k, d in enumerate(depth):
            columns.setdefault(d, []).append(k)
        position = {}
        for d, members in columns.items():
            for i, k in enumerate(members):
                position[k] = (d, (len(members) - 1) / 2 - i)
        boxes = {}
        for node in self.nodes:
            x, y = position[node.index]
            color = "#cfe3f7" if node.primitive is None else ("#f7d9b0" if node.index == self.output else "#eeeeee")
            label = node.name if node.primitive is None else f"{node.name}\n{node.primitive.name}"
            if show_values:
                label += f"\n{_show(node.value)}"
            text = ax.text(x, y, label, ha="center", va="center", fontsize="medium",
                           bbox=dict(boxstyle="round,pad=0.4", fc=color, ec="0.3"))
            boxes[node.index] = text.get_bbox_patch()
        for parent, child in self.edges():  # from box edge to box edge, whatever the boxes' size
            ax.annotate(
                "", xy=position[child], xytext=position[parent],
                arrowprops=dict(arrowstyle="-|>", color="0.4", lw=1.2, shrinkA=1, shrinkB=1,
                                patchA=boxes[parent], patchB=boxes[child],
                                connectionstyle=f"arc3,rad={self._bend(parent, child, position)}"),
            )
        xs = [p[0] for p in position.values()]
        ys = [p[1] for p in position.values()]
        ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
        ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
        ax.axis("off")
        return ax


def trace(f: Callable, *example_inputs, names: Optional[Sequence[str]] = None) -> ComputationalGraph:
    """Run ``f`` once on ``example_inputs`` and record its computational graph.

    ``f`` is written with :mod:`ad_lib.ops` and Python's operators. Inputs may
    be tensors or Python numbers (taken as float64 0-d tensors). ``names``
    names the inputs (default ``x1, x2, ...``); the intermediate variables are
    named ``v1, v2, ...`` in the order they are computed, as in the slides.
    The output must depend on the inputs.
    """
    if not callable(f):
        raise TypeError(f"f must be a callable, got {type(f).__name__}")
    if not example_inputs:
        raise ValueError("trace needs at least one example input")
    names = list(names) if names is not None else [f"x{i + 1}" for i in range(len(example_inputs))]
    if len(names) != len(example_inputs):
        raise ValueError(f"got {len(names)} names for {len(example_inputs)} inputs")
    graph = ComputationalGraph()
    level = new_level()
    boxed = []
    for value, name in zip(example_inputs, names):
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = torch.tensor(float(value), dtype=torch.float64)
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"example inputs must be tensors or real numbers, got {type(value).__name__}")
        node = graph._add(None, (), {}, value, name=name)
        boxed.append(GraphNode(value, node, graph, level))
    graph.n_inputs = len(boxed)  # the intermediates are named v1, v2, ... from here on
    out = f(*boxed)
    if not (isinstance(out, GraphNode) and out._level == level):
        raise ValueError("the output of f does not depend on its inputs: there is no graph to record")
    graph.output = out.node.index
    return graph
