"""The grader of assignment 5 (feed-forward compositions): hidden checks, run outside the student's kernel.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs
here, in the grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted).
Never released: nbgrader releases only what is in source/05_compositions/.

Tasks 1 and 2 (the costs, the best order) are plain Python: they run in a second sandbox with only
the standard library, so ad_lib.compositions (chain_cost, optimal_order), under any name or as a
copy of its file, cannot be used there. Task 3 runs in a sandbox with torch and without ad_lib
(jacobian_chain, layer_jacobians); its product is watched while it runs: the probe records every
matrix product (torch.matmul, @, torch.mm) with its shapes, so that a product formed in another
order than the one asked for (or by torch.linalg.multi_dot, which chooses its own) does not pass.
The truths are computed here: the costs by the notes' formulas and the grader's own dynamic
program, the Jacobians by torch.func.jacrev.
"""

import torch
from grading import Part, Restricted, Task, Wrong, close, verdict_check

F64 = torch.float64

PLAIN = {"setup": "import math", "without": ["ad_lib", "torch", "numpy", "scipy"],
         "why": "tasks 1 and 2 are written in plain Python, and graded in a Python with only the standard "
                "library (without ad_lib, torch and numpy)"}
TORCH = {"setup": "import math\nimport torch\nF64 = torch.float64", "without": ["ad_lib"],
         "why": "task 3 is written with torch, and graded in a Python without ad_lib"}


# ---------------------------------------------------------------------------------------------
# The grader's truths: the cost of a bracketing, the notes' formulas, the matrix-chain program
# ---------------------------------------------------------------------------------------------

def _forward_cost(widths):  # n_0 sum_{k=1}^{t-1} n_k n_{k+1}
    return widths[0] * sum(widths[k] * widths[k + 1] for k in range(1, len(widths) - 1))


def _reverse_cost(widths):  # n_t sum_{k=0}^{t-2} n_k n_{k+1}
    return widths[-1] * sum(widths[k] * widths[k + 1] for k in range(0, len(widths) - 2))


def _best_cost(widths):
    t = len(widths) - 1
    best = {(i, i): 0 for i in range(1, t + 1)}
    for length in range(2, t + 1):
        for i in range(1, t - length + 2):
            j = i + length - 1
            best[(i, j)] = min(best[(m + 1, j)] + best[(i, m)] + widths[j] * widths[m] * widths[i - 1]
                               for m in range(i, j))
    return best[(1, t)]


def _as_bracketing(order):
    """The student's bracketing as nested tuples of ints, or None if it is not one (lists are accepted)."""
    if type(order) is int:
        return order
    if type(order) in (tuple, list) and len(order) == 2:
        left, right = _as_bracketing(order[0]), _as_bracketing(order[1])
        return None if left is None or right is None else (left, right)
    return None


def _leaves(order):
    return [order] if type(order) is int else _leaves(order[0]) + _leaves(order[1])


def _products(order, widths):
    """(rows, columns, the list of (n, p, q) of its products) of the product that a bracketing describes."""
    if type(order) is int:
        return widths[order], widths[order - 1], []
    n, p, left = _products(order[0], widths)
    _, q, right = _products(order[1], widths)
    return n, q, left + right + [(n, p, q)]


def _cost(order, widths):
    return sum(n * p * q for n, p, q in _products(order, widths)[2])


def _valid(order, t):
    order = _as_bracketing(order)
    return order is not None and _leaves(order) == list(range(t, 0, -1))


def _forward_order(t):  # A_t (A_(t-1) ( ... (A_2 A_1)))
    return 1 if t == 1 else (t, _forward_order(t - 1))


def _reverse_order(t, last=1):  # ((A_t A_(t-1)) ... A_(last+1)) A_last
    return t if last == t else (_reverse_order(t, last + 1), last)


def _random_order(rng, high, low=1):
    """A random bracketing of A_high ... A_low."""
    if high == low:
        return high
    m = rng.randint(low, high - 1)  # (A_high ... A_{m+1}) (A_m ... A_low)
    return (_random_order(rng, high, m + 1), _random_order(rng, m, low))


def _widths(rng, t, low=1, high=30):
    return [rng.randint(low, high) for _ in range(t + 1)]


def _hourglass(rng):
    """Wide-narrow-wide: the cheapest order is neither forward nor reverse mode."""
    wide, narrow = rng.randint(20, 40), rng.randint(1, 4)
    widths = [wide + rng.randint(0, 5), wide + rng.randint(0, 5), narrow, wide + rng.randint(0, 5),
              wide + rng.randint(0, 5)]
    assert _best_cost(widths) < min(_forward_cost(widths), _reverse_cost(widths))
    return widths


def _is_int(value):
    return type(value) is int


# ---------------------------------------------------------------------------------------------
# Task 1: the costs of forward and reverse mode
# ---------------------------------------------------------------------------------------------

def costs(chains):
    results = []
    for widths in chains:
        got = mode_costs(list(widths))
        results.append(list(got) if type(got) in (tuple, list) else got)
    return results


def _check_costs(index, formula, words):
    def check(result, chains):
        if type(result) is not list or len(result) != len(chains):
            raise Wrong("the probe's result has the wrong form")
        for got, widths in zip(result, chains):
            if type(got) is not list or len(got) != 2:
                raise Wrong("mode_costs should return a pair (forward, reverse)")
            if not _is_int(got[index]):
                raise Wrong(f"the cost of {words} should be a Python int (a number of multiply-adds)")
            if got[index] != formula(widths):
                raise Wrong(f"the cost of {words} is wrong for a chain of {len(widths) - 1} Jacobians")
    return check


def _check_edge_costs(result, chains):
    if type(result) is not list or len(result) != len(chains):
        raise Wrong("the probe's result has the wrong form")
    for got, widths in zip(result, chains):
        if type(got) is not list or len(got) != 2 or not all(_is_int(v) for v in got):
            raise Wrong("mode_costs should return a pair of Python ints (forward, reverse)")
        words = "one Jacobian (no product at all)" if len(widths) == 2 else "two Jacobians (one product)"
        if got != [_forward_cost(widths), _reverse_cost(widths)]:
            raise Wrong(f"the costs of a chain of {words} are wrong")


def _cost_chains(rng):
    return {"chains": [_widths(rng, t) for t in (3, rng.randint(4, 6), rng.randint(7, 10))]}


def _edge_chains(rng):
    w = _widths(rng, 2, 2, 30)
    while w[0] == w[2]:  # n_0 != n_2, so that the two products differ if their widths are taken wrong
        w = _widths(rng, 2, 2, 30)
    return {"chains": [_widths(rng, 1), w]}


TASK1 = Task(
    restricted=Restricted(cells=["task1_mode_costs"], **PLAIN),
    parts=[
        Part(0.75, "the cost of forward mode (from the right), a Python int, on chains of 3 to 10 Jacobians", costs,
             _check_costs(0, _forward_cost, "forward mode"), _cost_chains),
        Part(0.75, "the cost of reverse mode (from the left), a Python int, on chains of 3 to 10 Jacobians", costs,
             _check_costs(1, _reverse_cost, "reverse mode"), _cost_chains),
        Part(0.5, "the short chains: one Jacobian (0 and 0) and two (one product)", costs, _check_edge_costs,
             _edge_chains),
    ])


# ---------------------------------------------------------------------------------------------
# Task 2: the best order, by dynamic programming
# ---------------------------------------------------------------------------------------------

def best_orders(chains):
    results = []
    for widths in chains:
        got = best_order(list(widths))
        results.append(list(got) if type(got) in (tuple, list) else got)
    return results


def _pairs(result, chains):
    if type(result) is not list or len(result) != len(chains):
        raise Wrong("the probe's result has the wrong form")
    for got in result:
        if type(got) is not list or len(got) != 2:
            raise Wrong("best_order should return a pair (cost, bracketing)")
        if not _is_int(got[0]):
            raise Wrong("the cost returned by best_order should be a Python int")
    return result


def check_best_costs(result, chains):
    for (cost, _), widths in zip(_pairs(result, chains), chains):
        if cost != _best_cost(widths):
            raise Wrong(f"the cost returned for a chain of {len(widths) - 1} Jacobians is not the smallest cost "
                        "of all the orders")


def check_bracketings(result, chains):
    for (cost, order), widths in zip(_pairs(result, chains), chains):
        t = len(widths) - 1
        if not _valid(order, t):
            raise Wrong(f"the bracketing returned for a chain of {t} Jacobian{'s' if t > 1 else ''} is not a "
                        f"bracketing of A_{t} ... A_1 (nested pairs of the indices {t}, ..., 1, in that order)")
        if _cost(_as_bracketing(order), widths) != cost:
            raise Wrong(f"the bracketing returned for a chain of {t} Jacobians does not cost the cost returned")


def check_long_chain(result, chains):
    check_best_costs(result, chains)
    check_bracketings(result, chains)


def _best_chains(rng):
    return {"chains": [_hourglass(rng)] + [_widths(rng, t) for t in (3, rng.randint(4, 5), rng.randint(6, 7))]}


def _edge_and_random(rng):
    return {"chains": [_widths(rng, 1), _hourglass(rng)] + [_widths(rng, t) for t in (2, rng.randint(3, 7))]}


TASK2 = Task(
    restricted=Restricted(cells=["task2_best_order"], **PLAIN),
    parts=[
        Part(1.5, "the cost is the smallest of all the orders, on chains of 3 to 7 Jacobians, an hourglass among them "
                  "(where neither pure mode is the best)", best_orders, check_best_costs, _best_chains),
        Part(1, "the bracketing is one of A_t ... A_1 (one Jacobian included) and costs the cost returned",
             best_orders, check_bracketings, _edge_and_random),
        Part(0.5, "a chain of 40 Jacobians (too many orders to try them all): the smallest cost, and a bracketing "
                  "that costs it", best_orders, check_long_chain,
             lambda rng: {"chains": [_widths(rng, 40, 1, 60)]}),
    ])


# ---------------------------------------------------------------------------------------------
# Task 3: the product of a chain, in a given order; the layers' Jacobians along the forward pass
# ---------------------------------------------------------------------------------------------

def _recording_products(run):
    """run(), and the shapes (n, p, q) of the matrix products formed meanwhile (sent with the probes)."""
    from torch.overrides import TorchFunctionMode

    seen = []

    class Products(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name in ("matmul", "mm", "__matmul__", "__rmatmul__", "linalg_multi_dot", "multi_dot", "chain_matmul",
                        "einsum", "bmm", "mv", "dot", "addmm", "tensordot", "inner"):
                a, b = (args[1], args[0]) if name == "__rmatmul__" else (args + (None, None))[:2]
                if name in ("matmul", "mm", "__matmul__", "__rmatmul__") and all(
                        isinstance(x, torch.Tensor) and x.dim() == 2 for x in (a, b)):
                    seen.append((int(a.shape[0]), int(a.shape[1]), int(b.shape[1])))
                else:
                    seen.append(name)
            return func(*args, **(kwargs or {}))

    with Products():
        result = run()
    return result, seen


def products(cases):
    results = []
    for jacobians, order in cases:
        before = [a.clone() for a in jacobians]
        product, seen = _recording_products(lambda: chain_product(list(jacobians), order))
        results.append([product, seen, all(torch.equal(a, b) for a, b in zip(jacobians, before))])
    return results


def check_product_values(result, cases):
    if type(result) is not list or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for (product, _, kept), (jacobians, _) in zip(result, cases):
        expected = torch.linalg.multi_dot(jacobians[::-1]) if len(jacobians) > 1 else jacobians[0]
        close(product, expected, rtol=1e-10, atol=1e-12,
              what=f"the product of a chain of {len(jacobians)} Jacobians")
        if not kept:
            raise Wrong("chain_product changed the Jacobians it was given")


def check_product_order(result, cases):
    if type(result) is not list or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for (_, seen, _), (jacobians, order) in zip(result, cases):
        widths = [jacobians[0].shape[1]] + [a.shape[0] for a in jacobians]
        expected = sorted(_products(order, widths)[2])
        if type(seen) is not list or any(type(s) is not tuple for s in seen):
            raise Wrong("chain_product should form its products with @ (torch.matmul) on matrices, and nothing else")
        if sorted(seen) != expected:
            raise Wrong(f"the products chain_product formed for a chain of {len(jacobians)} Jacobians are not those "
                        "of the bracketing it was given (one product of two matrices for each pair of the bracketing)")


def _chain(rng, t):
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    widths = _widths(rng, t, 1, 12)
    return [torch.randn(widths[k], widths[k - 1], generator=generator, dtype=F64) for k in range(1, t + 1)]


def _product_cases(rng):
    cases = []
    for t, kind in ((1, "one"), (rng.randint(3, 5), "forward"), (rng.randint(3, 5), "reverse"),
                    (rng.randint(4, 7), "random"), (rng.randint(5, 8), "random")):
        jacobians = _chain(rng, t)
        named = {"one": 1, "forward": _forward_order(t), "reverse": _reverse_order(t)}
        order = named[kind] if kind in named else _random_order(rng, t)
        cases.append((jacobians, order))
    return {"cases": cases}


def _make_layers(specs):  # sent with the probe: the layers, made in the student's kernel from the grader's weights
    layers = []
    for kind, W, b in specs:
        if kind == "tanh":
            layers.append(lambda v, W=W, b=b: torch.tanh(W @ v + b))
        elif kind == "sin":
            layers.append(lambda v, W=W, b=b: torch.sin(W @ v) * b)
        else:  # a quadratic layer
            layers.append(lambda v, W=W, b=b: (W @ v) ** 2 + b)
    return layers


def jacobians(networks):
    results = []
    for specs, x in networks:
        before = x.clone()
        got = jacobians_along(_make_layers(specs), x)
        results.append([list(got) if type(got) in (list, tuple) else got, bool(torch.equal(x, before))])
    return results


def check_jacobians(result, networks):
    if type(result) is not list or len(result) != len(networks):
        raise Wrong("the probe's result has the wrong form")
    for (got, kept), (specs, x) in zip(result, networks):
        layers = _make_layers(specs)
        if type(got) is not list or len(got) != len(layers):
            raise Wrong(f"jacobians_along should return a list of {len(layers)} matrices for {len(layers)} layers")
        point = x
        for k, (a, layer) in enumerate(zip(got, layers), start=1):
            close(a, torch.func.jacrev(layer)(point), rtol=1e-10, atol=1e-12,
                  what=f"A_{k}, the Jacobian of layer {k} at the point the forward pass reaches it")
            point = layer(point)
        if not kept:
            raise Wrong("jacobians_along changed its input x")


def _networks(rng):
    networks = []
    for t in (1, rng.randint(3, 4), rng.randint(4, 6)):
        generator = torch.Generator().manual_seed(rng.randrange(2**31))
        widths = _widths(rng, t, 2, 7)
        specs = [(rng.choice(["tanh", "tanh", "sin", "square"]),
                  torch.randn(widths[k], widths[k - 1], generator=generator, dtype=F64) / widths[k - 1] ** 0.5,
                  torch.randn(widths[k], generator=generator, dtype=F64)) for k in range(1, t + 1)]
        networks.append((specs, torch.randn(widths[0], generator=generator, dtype=F64)))
    return {"networks": networks}


TASK3 = Task(
    restricted=Restricted(cells=["task3_chain_product"], **TORCH),
    parts=[
        Part(1, "chain_product: the product A_t ... A_1 (float64), for one Jacobian and chains of 3 to 8, and the "
                "Jacobians left as they were", products, check_product_values, _product_cases),
        Part(1, "chain_product forms exactly the products of the bracketing it is given, with @ (recorded while it "
                "runs), for forward, reverse and random bracketings", products, check_product_order, _product_cases),
        Part(1, "jacobians_along: each A_k is the Jacobian of layer k at the point x_(k-1) the forward pass reaches "
                "(compared with torch.func.jacrev), on networks of 1 to 6 layers", jacobians, check_jacobians,
             _networks),
    ])

for _part in TASK3.parts:
    _part.helpers = (_recording_products,) if _part.probe is products else (_make_layers,)


# ---------------------------------------------------------------------------------------------
# Task 4: verdicts, one part per case
# ---------------------------------------------------------------------------------------------

def verdicts():
    return order_verdicts()


_CHAINS = {"a": [1000, 200, 200, 1], "b": [1, 200, 200, 1000], "c": [500, 500, 10, 500, 500],
           "d": [20, 1000, 1, 10], "e": [50, 50, 50, 50, 50, 50]}


def _verdict(key):
    widths = _CHAINS[key]
    best, forward, reverse = _best_cost(widths), _forward_cost(widths), _reverse_cost(widths)
    if len(set(widths)) == 1:  # square Jacobians: every product costs n^3, every order (t - 1) n^3
        return "any"
    if best < min(forward, reverse):
        return "mixed"
    return "forward" if forward < reverse else "reverse"


_EXPECTED = {"a": "reverse", "b": "forward", "c": "mixed", "d": "forward", "e": "any"}
assert {key: _verdict(key) for key in _CHAINS} == _EXPECTED  # the grader's program agrees with the key

TASK4 = Task(parts=[Part(0.4, f"verdict ({key}): the widths {_CHAINS[key]}", verdicts,
                         verdict_check(key, mode, ("forward", "reverse", "mixed", "any")))
                    for key, mode in _EXPECTED.items()])

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3, "task4_tests": TASK4}
