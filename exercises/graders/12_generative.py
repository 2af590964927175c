"""The grader of assignment 12 (generative models): hidden checks, run outside the student's kernel.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs
here, in the grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted).
Never released: nbgrader releases only what is in source/12_generative/.

Every task is written with torch and graded in one Python without ad_lib (ad_lib.generative has these
functions), NumPy, SciPy and POT: scipy.stats.wasserstein_distance, ot.wasserstein_1d and
ot.sliced_wasserstein_distance cannot run there, under any name (their folders are hidden and NumPy,
which both need, is absent). No dispatch-mode meter is needed: torch itself has no Wasserstein distance
and no gradient penalty, so whatever torch computes there is the student's own assembly.

Task 2 is graded with a right 1-D distance (`_exact_1d`) in the notebook's namespace in place of the
student's `wasserstein_1d` (restored after the probe), so that a mistake in task 1 costs task 1's points
only; an answer that sorts the projections itself is graded the same way. The stand-in serves the calls
on 1-D tensors, which is all task 1 asks for; a call on other shapes (a task 1 written for batches of
projections, columns or rows) goes to the student's own, which the stand-in cannot guess the layout of.

Task 3 hands the penalty critics of three forms (linear, a tanh layer, a tanh and a sigmoid layer) whose
scores are far from 0 (a last bias of 10^6 to 10^7, which changes no gradient): a gradient written by hand
for the critics of the visible tests fails on the deeper ones, and a difference quotient of the critic
(even extrapolated) loses about ulp(b) / h > 1e-7 to rounding, where autograd is exact; every part has a
critic of the deeper form.

Truths, all computed here, none with the student's formula:
- tasks 1 and 2 by `_quantile_power`, the integral of |F^-1 - G^-1|^p summed piece by piece over the
  merged levels i/n and j/m held as exact fractions (a loop in Python), and through it by torch.autograd
  for the gradients; besides, each part checks closed forms that need no sorting at all: a translate
  (W_p(mu, mu + t) = |t| for every p, SW_p^p = mean_l |<theta_l, t>|^p), point masses, a sample against
  one point (W_p^p = mean |x_i - c|^p), and a sample repeated k times (the same measure: 0). The
  notebook's visible tests hold the model answers to the best of all pairings (a brute force over
  permutations) and to finite differences (gradcheck); POT and SciPy agree with `_quantile_power`
  (ot.wasserstein_1d is W_p^p, scipy.stats.wasserstein_distance is W_1; checked when the grader was
  written, POT on the inputs of 80 students, to 1e-10, SciPy to 3e-16);
- task 3 by the critic's input gradient written out, the chain rule by hand layer by layer
  (W^T (v * (1 - tanh^2(W x + c))) for a critic with one tanh layer, w for a linear one: (|w| - 1)^2; with
  sigmoid' = s (1 - s) for the second layer of the deeper critic), and its gradient in the parameters by
  torch.autograd through that formula, a first derivative only (the student's answer needs a second one);
  checked against torch.autograd's double backward when the grader was written (1e-15, 400 critics). The
  training-loop part also checks that the penalty of a generated batch has no gradient in the generator's
  graph (the interpolates a new leaf), as the instructions ask.
"""

import fractions
import math

import torch
from grading import TORCH_ONLY, Part, Restricted, Task, Wrong, close

F64 = torch.float64

SETUP = TORCH_ONLY
WITHOUT = {"setup": SETUP, "without": ["ad_lib", "numpy", "scipy", "ot"],
           "why": "every task is written with torch and graded in a Python without ad_lib, NumPy, SciPy and POT "
                  "(no library computes the distances or the penalty)"}

TOL = {"rtol": 1e-10, "atol": 1e-12}


def _gen(rng):
    return torch.Generator().manual_seed(rng.randrange(2**31))


def _sample(generator, n, rng):
    """n numbers of a random location and scale (no two equal), in a random order."""
    return rng.uniform(-2, 2) + rng.uniform(0.3, 3) * torch.randn(n, generator=generator, dtype=F64)


def _shuffled(values, generator):
    return values[torch.randperm(values.shape[0], generator=generator)]


# ---------------------------------------------------------------------------------------------
# The truths of tasks 1 and 2
# ---------------------------------------------------------------------------------------------

def _quantile_power(x, y, p):
    """W_p^p between the uniform empirical measures on x (n,) and y (m,): on each piece (lo, hi] of the
    merged levels {i/n} and {j/m} (exact fractions), F^-1 = x_(floor(lo n) + 1) and G^-1 = y_(floor(lo m) + 1)."""
    xs, ys = torch.sort(x).values, torch.sort(y).values
    n, m = xs.shape[0], ys.shape[0]
    cuts = sorted({fractions.Fraction(i, n) for i in range(n + 1)} | {fractions.Fraction(j, m) for j in range(m + 1)})
    pieces = [float(hi - lo) * (xs[math.floor(lo * n)] - ys[math.floor(lo * m)]).abs() ** p
              for lo, hi in zip(cuts, cuts[1:])]
    return torch.stack(pieces).sum()


def _w_truth(case):
    """W_p of a case of task 1: by its closed form where it has one, by _quantile_power otherwise."""
    x, y, p, kind, extra = case
    if kind == "translate":  # y is x shifted by t (and shuffled)
        return torch.tensor(abs(extra), dtype=F64)
    if kind == "atoms":  # one point each
        return (x[0] - y[0]).abs()
    if kind == "one point":  # y is a single point c
        return ((x - y[0]).abs() ** p).mean() ** (1 / p)
    if kind == "repeated":  # y is x repeated: the same measure
        return torch.zeros((), dtype=F64)
    return _quantile_power(x, y, p) ** (1 / p)


def _sliced_truth(x, y, directions, p):
    powers = [_quantile_power(x @ theta, y @ theta, p) for theta in directions.T]
    return (torch.stack(powers).mean()) ** (1 / p)


def _describe(x, y, p):
    return f"samples of sizes {x.shape[0]} and {y.shape[0]}, p = {p:g}"


# ---------------------------------------------------------------------------------------------
# Task 1: the exact W_p between two samples on the line
# ---------------------------------------------------------------------------------------------

def w1d_probe(cases):
    import torch

    answers = []
    for x, y, p, kind, extra in cases:
        kept = [x.clone(), y.clone()]
        got = wasserstein_1d(x, y, p)
        answers.append([got, torch.equal(kept[0], x) and torch.equal(kept[1], y)])
    return answers


def check_w1d(result, cases):
    if not isinstance(result, list) or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for (got, unchanged), case in zip(result, cases):
        x, y, p, kind, _ = case
        words = _describe(x, y, p) + ("" if kind == "reference" else f", {kind}")
        if kind == "repeated" and type(got) is torch.Tensor:
            # the truth is 0, where a p-th root magnifies rounding (a level computed as 3 * (1/3)):
            # compared on the scale of W_p^p, the integral that a sound answer computes to rounding
            got = got.abs() ** p
        close(got, _w_truth(case), **TOL, what=f"W_p ({words})")
        if unchanged is not True:
            raise Wrong("wasserstein_1d changed its arguments in place")


def _crossing(x, y):
    """Whether the monotone pairing of x and y (equal sizes) has gaps of both signs. Where it has not (the
    samples apart, or one above the other entry by entry), W_1 is |mean x - mean y|, which needs no
    sorting: each part with p = 1 has a case where the two differ."""
    gaps = torch.sort(x).values - torch.sort(y).values
    return bool((gaps > 0).any() and (gaps < 0).any())


def _w1d_inputs(kind):
    def make(rng):
        generator, cases = _gen(rng), []

        def add(x, y, p, tag="reference", extra=None):
            cases.append((x, y, p, tag, extra))

        if kind in ("p = 1", "p > 1"):
            powers = [1, 1, 1] if kind == "p = 1" else [2, rng.choice([3, 4]), round(rng.uniform(1.2, 2.8), 3)]
            for k, p in enumerate(powers):
                n = rng.randint(4, 9)
                x, y = _sample(generator, n, rng), _sample(generator, n, rng)
                while k == 0 and not _crossing(x, y):  # drawn again (about half the time): see _crossing
                    x, y = _sample(generator, n, rng), _sample(generator, n, rng)
                add(x, y, p)
            x, t = _sample(generator, rng.randint(3, 8), rng), round(rng.uniform(-3, 3), 4)
            add(x, _shuffled(x + t, generator), powers[1], "translate", t)
            if kind == "p = 1":
                add(_sample(generator, 1, rng), _sample(generator, 1, rng), 1, "atoms")
        elif kind == "unequal":
            for p in (1, 2):
                n, m = rng.sample(range(2, 10), 2)
                add(_sample(generator, n, rng), _sample(generator, m, rng), p)
            x = _sample(generator, rng.randint(3, 6), rng)
            add(x, _shuffled(x.repeat(rng.randint(2, 4)), generator), rng.choice([1, 2, 3]), "repeated")
            add(_sample(generator, rng.randint(3, 7), rng), _sample(generator, 1, rng), rng.choice([1, 2]), "one point")
        return {"cases": cases}
    return make


def w1d_grad_probe(cases):
    import torch

    answers = []
    for x, y, p in cases:
        leaves = [x.clone().requires_grad_(True), y.clone().requires_grad_(True)]
        got = wasserstein_1d(leaves[0], leaves[1], p)
        if type(got) is not torch.Tensor or not got.requires_grad:
            answers.append(None)
            continue
        answers.append([got.detach(), *torch.autograd.grad(got, leaves, allow_unused=True)])
    return answers


def check_w1d_grad(result, cases):
    if not isinstance(result, list) or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for got, (x, y, p) in zip(result, cases):
        words = _describe(x, y, p)
        if got is None:
            raise Wrong(f"wasserstein_1d has no gradient in x and y ({words}): keep the computation in torch")
        leaves = [x.clone().requires_grad_(True), y.clone().requires_grad_(True)]
        value = _quantile_power(*leaves, p) ** (1 / p)
        want = torch.autograd.grad(value, leaves)
        close(got[0], value.detach(), **TOL, what=f"W_p ({words})")
        for name, mine, truth in zip("xy", got[1:], want):
            if mine is None:
                raise Wrong(f"W_p has no gradient in {name} ({words})")
            close(mine, truth, **TOL, what=f"the gradient of W_p in {name} ({words})")


def _w1d_grad_inputs(rng):
    generator, cases = _gen(rng), []
    n = rng.randint(4, 8)
    cases.append((_sample(generator, n, rng), _sample(generator, n, rng), 2))
    for p in (1, round(rng.uniform(1.3, 2.5), 3)):
        n, m = rng.sample(range(3, 9), 2)
        cases.append((_sample(generator, n, rng), _sample(generator, m, rng), p))
    return {"cases": cases}


TASK1 = Task(
    restricted=Restricted(cells=["task1_wasserstein"], **WITHOUT),
    parts=[
        Part(1, "samples of equal sizes with p = 1, unsorted: against the monotone pairing, translates "
                "(W_1 = |t|) and two single points", w1d_probe, check_w1d, _w1d_inputs("p = 1")),
        Part(1, "samples of equal sizes with p = 2, 3 or 4 and a p that is not an integer: W_p itself (the p-th "
                "root), translates (W_p = |t| for every p)", w1d_probe, check_w1d, _w1d_inputs("p > 1")),
        Part(1.5, "samples of unequal sizes (the quantile functions on the merged levels i/n and j/m), with p = 1 "
                  "and 2; a sample repeated k times (the same measure: 0); a sample against a single point",
             w1d_probe, check_w1d, _w1d_inputs("unequal")),
        Part(0.5, "differentiable by autograd: the gradient of W_p in x and in y, equal and unequal sizes",
             w1d_grad_probe, check_w1d_grad, _w1d_grad_inputs),
    ])


# ---------------------------------------------------------------------------------------------
# Task 2: the sliced Wasserstein distance from given directions
# ---------------------------------------------------------------------------------------------

def _exact_1d(x, y, p=1):
    """A right wasserstein_1d (task 1), put in the student's namespace while task 2 is graded."""
    import torch

    u, v = x.sort().values, y.sort().values
    n, m = u.numel(), v.numel()
    ends = torch.cat([torch.arange(0, n * m + 1, m, device=x.device), torch.arange(0, n * m + 1, n, device=x.device)])
    ends = torch.unique(ends)  # sorted: the levels i/n and j/m in units of 1/(n m)
    lows = ends[:-1]
    return ((ends[1:] - lows).to(x.dtype) * (u[lows // m] - v[lows // n]).abs() ** p).sum().div(n * m) ** (1.0 / p)


def _with_exact_1d(run):
    """run() with _exact_1d as the notebook's wasserstein_1d on 1-D tensors (what the task allows); the
    student's own still serves any other call (a task 1 written for batches), and is put back afterwards."""
    namespace = __student__  # noqa: F821 (the probe's: the notebook's globals)
    missing = object()
    saved = namespace.get("wasserstein_1d", missing)

    def stand_in(x, y, p=1):
        if saved is missing or (getattr(x, "ndim", None) == 1 and getattr(y, "ndim", None) == 1):
            return _exact_1d(x, y, p)
        return saved(x, y, p)

    namespace["wasserstein_1d"] = stand_in
    try:
        return run()
    finally:
        if saved is missing:
            namespace.pop("wasserstein_1d", None)
        else:
            namespace["wasserstein_1d"] = saved


def sliced_probe(cases):
    import torch

    def run():
        answers = []
        for x, y, directions, p, t in cases:
            kept = [x.clone(), y.clone(), directions.clone()]
            got = sliced_wasserstein(x, y, directions, p)
            answers.append([got, all(torch.equal(k, a) for k, a in zip(kept, (x, y, directions)))])
        return answers

    return _with_exact_1d(run)


def check_sliced(result, cases):
    if not isinstance(result, list) or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for (got, unchanged), (x, y, directions, p, t) in zip(result, cases):
        words = (f"clouds of {x.shape[0]} and {y.shape[0]} points in dimension {x.shape[1]}, "
                 f"{directions.shape[1]} direction{'s' if directions.shape[1] > 1 else ''}, p = {p:g}")
        if t is not None:  # y is x translated by t: each projection is shifted by <theta, t>
            want = ((directions.T @ t).abs() ** p).mean() ** (1 / p)
            words += ", a translate"
        else:
            want = _sliced_truth(x, y, directions, p)
        close(got, want, **TOL, what=f"SW_p ({words})")
        if unchanged is not True:
            raise Wrong("sliced_wasserstein changed its arguments in place")


def _directions(generator, d, count):
    raw = torch.randn(d, count, generator=generator, dtype=F64)
    return raw / raw.norm(dim=0, keepdim=True)


def _cloud(generator, n, d, rng):
    spread = 0.5 + 2 * torch.rand(d, generator=generator, dtype=F64)
    return rng.uniform(-1, 1) + spread * torch.randn(n, d, generator=generator, dtype=F64)


def _sliced_inputs(kind):
    def make(rng):
        generator, cases = _gen(rng), []
        for _ in range(2):
            d = rng.randint(2, 4)
            if kind == "p = 2":
                n = m = rng.randint(4, 9)
            else:
                n, m = rng.sample(range(3, 10), 2)
            cases.append((_cloud(generator, n, d, rng), _cloud(generator, m, d, rng),
                          _directions(generator, d, rng.randint(3, 7)), 2 if kind == "p = 2" else 1, None))
        d = rng.randint(2, 4)
        if kind == "p = 2":  # a translate, with its closed form
            x, t = _cloud(generator, rng.randint(4, 8), d, rng), torch.randn(d, generator=generator, dtype=F64)
            cases.append((x, _shuffled(x + t, generator), _directions(generator, d, rng.randint(3, 6)), 2, t))
        else:  # a single direction
            n, m = rng.sample(range(3, 9), 2)
            cases.append((_cloud(generator, n, d, rng), _cloud(generator, m, d, rng), _directions(generator, d, 1), 1,
                          None))
        return {"cases": cases}
    return make


def sliced_grad_probe(cases):
    import torch

    def run():
        answers = []
        for x, y, directions, p in cases:
            leaves = [x.clone().requires_grad_(True), y.clone().requires_grad_(True)]
            got = sliced_wasserstein(leaves[0], leaves[1], directions, p)
            if type(got) is not torch.Tensor or not got.requires_grad:
                answers.append(None)
                continue
            answers.append([got.detach(), *torch.autograd.grad(got, leaves, allow_unused=True)])
        return answers

    return _with_exact_1d(run)


def check_sliced_grad(result, cases):
    if not isinstance(result, list) or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for got, (x, y, directions, p) in zip(result, cases):
        words = f"clouds of {x.shape[0]} and {y.shape[0]} points, p = {p:g}"
        if got is None:
            raise Wrong(f"sliced_wasserstein has no gradient in x and y ({words}): keep the computation in torch")
        leaves = [x.clone().requires_grad_(True), y.clone().requires_grad_(True)]
        value = _sliced_truth(*leaves, directions, p)
        want = torch.autograd.grad(value, leaves)
        close(got[0], value.detach(), **TOL, what=f"SW_p ({words})")
        for name, mine, truth in zip("xy", got[1:], want):
            if mine is None:
                raise Wrong(f"SW_p has no gradient in {name} ({words})")
            close(mine, truth, **TOL, what=f"the gradient of SW_p in {name} ({words})")


def _sliced_grad_inputs(rng):
    generator, cases = _gen(rng), []
    for equal in (True, False):
        d = rng.randint(2, 3)
        n, m = rng.sample(range(3, 8), 2)
        cases.append((_cloud(generator, n, d, rng), _cloud(generator, n if equal else m, d, rng),
                      _directions(generator, d, rng.randint(2, 5)), 2))
    return {"cases": cases}


TASK2 = Task(
    restricted=Restricted(cells=["task2_sliced"], **WITHOUT),
    parts=[
        Part(1.5, "p = 2, clouds of equal sizes, the given directions (one per column): the mean of the p-th "
                  "powers, then the p-th root; a translate (SW_2^2 = the mean of <theta, t>^2)",
             sliced_probe, check_sliced, _sliced_inputs("p = 2")),
        Part(1, "p = 1, clouds of unequal sizes, several directions and a single one", sliced_probe, check_sliced,
             _sliced_inputs("p = 1")),
        Part(1, "differentiable by autograd: the gradient of SW_2 in both clouds, equal and unequal sizes",
             sliced_grad_probe, check_sliced_grad, _sliced_grad_inputs),
    ])
for _part in TASK2.parts:
    _part.helpers = (_exact_1d, _with_exact_1d)


# ---------------------------------------------------------------------------------------------
# Task 3: the WGAN-GP gradient penalty at given interpolates
# ---------------------------------------------------------------------------------------------

def _critic(layers, flat):
    """The critic the probe hands to gradient_penalty: linear layers (weight, bias), a tanh after the first
    and a sigmoid after the second (when there are three); scores of shape (n, 1), or (n,) when `flat`."""
    import torch

    modules = []
    for k, (weight, bias) in enumerate(layers):
        if k:
            modules.append(torch.nn.Tanh() if k == 1 else torch.nn.Sigmoid())
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        modules.append(linear)
    if flat:
        modules.append(torch.nn.Flatten(0))
    return torch.nn.Sequential(*modules)


def _penalty_truth(real, fake, alpha, layers):
    """The penalty, by the critic's input gradient written out (the chain rule by hand, layer by layer:
    tanh' = 1 - tanh^2, sigmoid' = s (1 - s)), and its parameters (leaves) for autograd."""
    params = [t.clone().requires_grad_(True) for layer in layers for t in layer]
    weights = params[0::2]
    mixed = alpha[:, None] * real + (1 - alpha[:, None]) * fake
    slopes_of_hidden, z = [], mixed
    for k, (weight, bias) in enumerate(zip(params[0:-2:2], params[1:-2:2])):
        a = z @ weight.T + bias
        z = torch.tanh(a) if k == 0 else torch.sigmoid(a)
        slopes_of_hidden.append(1 - z ** 2 if k == 0 else z * (1 - z))
    slopes = weights[-1].expand(real.shape[0], -1)  # the last layer's gradient in its input: its weight row
    for weight, local in zip(reversed(weights[:-1]), reversed(slopes_of_hidden)):
        slopes = (slopes * local) @ weight
    return ((torch.linalg.vector_norm(slopes, dim=1) - 1) ** 2).mean(), params


def penalty_probe(cases):
    import torch

    answers = []
    for real, fake, alpha, layers, flat in cases:
        critic = _critic(layers, flat)
        kept = [real.clone(), fake.clone(), alpha.clone()]
        got = gradient_penalty(critic, real, fake, alpha)
        answers.append([got, all(torch.equal(k, a) for k, a in zip(kept, (real, fake, alpha)))])
    return answers


def _penalty_words(real, layers):
    widths = [weight.shape[0] for weight, _ in layers[:-1]]
    shape = ("linear" if not widths else f"one tanh layer of {widths[0]} units" if len(widths) == 1
             else f"a tanh layer of {widths[0]} units and a sigmoid layer of {widths[1]}")
    return f"a batch of {real.shape[0]} in dimension {real.shape[1]}, a critic with {shape}"


def check_penalty(result, cases):
    if not isinstance(result, list) or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for (got, unchanged), (real, fake, alpha, layers, flat) in zip(result, cases):
        want, _ = _penalty_truth(real, fake, alpha, layers)
        close(got, want.detach(), **TOL, what=f"the penalty ({_penalty_words(real, layers)})")
        if unchanged is not True:
            raise Wrong("gradient_penalty changed its arguments in place")


def penalty_grad_probe(cases):
    import torch

    answers = []
    for real, fake, alpha, layers, flat in cases:
        critic = _critic(layers, flat)
        got = gradient_penalty(critic, real, fake, alpha)
        if type(got) is not torch.Tensor or not got.requires_grad:
            answers.append(None)
            continue
        params = list(critic.parameters())
        grads = torch.autograd.grad(got, params, allow_unused=True)
        answers.append([got.detach(), [torch.zeros_like(t) if g is None else g for g, t in zip(grads, params)]])
    return answers


def check_penalty_grad(result, cases):
    if not isinstance(result, list) or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for got, (real, fake, alpha, layers, flat) in zip(result, cases):
        words = _penalty_words(real, layers)
        if got is None:
            raise Wrong(f"the penalty has no gradient in the critic's parameters ({words}): the gradient at the "
                        "interpolates must itself be differentiable (create_graph=True)")
        want, params = _penalty_truth(real, fake, alpha, layers)
        close(got[0], want.detach(), **TOL, what=f"the penalty ({words})")
        truths = torch.autograd.grad(want, params, allow_unused=True)
        places = {1: [""], 2: ["first ", "last "], 3: ["first ", "second ", "last "]}[len(layers)]
        names = [place + kind for place in places for kind in ("weight", "bias")]
        if not isinstance(got[1], list) or len(got[1]) != len(params):
            raise Wrong("the probe's result has the wrong form")
        for name, mine, truth, leaf in zip(names, got[1], truths, params):
            close(mine, torch.zeros_like(leaf) if truth is None else truth, **TOL,
                  what=f"the gradient of the penalty in the critic's {name} ({words})")


def penalty_care_probe(real, fake, alpha, layers, flat, marks):
    import torch

    critic = _critic(layers, flat)
    for param, mark in zip(critic.parameters(), marks):
        param.grad = mark.clone()
    source = fake.clone().requires_grad_(True)
    made = source * 1.0  # a batch with a generator's graph behind it
    got = gradient_penalty(critic, real, made, alpha)
    untouched = all(torch.equal(param.grad, mark) for param, mark in zip(critic.parameters(), marks))
    reaches = False  # whether the penalty has a gradient in the generated batch's source
    if type(got) is torch.Tensor and got.requires_grad:
        into, = torch.autograd.grad(got, source, allow_unused=True)
        reaches = into is not None and bool(into.abs().max() > 0)
    return [got, untouched, reaches]


def check_penalty_care(result, real, fake, alpha, layers, flat, marks):
    got, untouched, reaches = result
    words = _penalty_words(real, layers)
    want, _ = _penalty_truth(real, fake, alpha, layers)
    close(got, want.detach(), **TOL, what=f"the penalty of a generated batch that requires a gradient ({words})")
    if untouched is not True:
        raise Wrong("gradient_penalty changed the .grad of the critic's parameters: compute the gradient at the "
                    "interpolates with torch.autograd.grad, and return the penalty without back-propagating it")
    if reaches is not False:
        raise Wrong("the penalty of a generated batch has a gradient in the generator's graph: it should depend "
                    "on the critic's parameters only (make the interpolates a new leaf)")


def _penalty_case(rng, generator, kind="tanh"):
    """A batch, mixing weights and a critic: linear, one tanh layer, or a tanh and a sigmoid layer ("deep").
    The last bias is large (|b| > 1e6): scores far from 0, where a difference quotient of the critic loses
    its digits (an error of about ulp(b) / h), and autograd loses none."""
    n, d = rng.randint(4, 8), rng.randint(2, 4)
    real = torch.randn(n, d, generator=generator, dtype=F64)
    fake = rng.uniform(1, 3) + 0.5 * torch.randn(n, d, generator=generator, dtype=F64)
    alpha = torch.rand(n, generator=generator, dtype=F64)
    widths = {"linear": [], "tanh": [rng.randint(3, 6)], "deep": [rng.randint(3, 5), rng.randint(2, 4)]}[kind]
    sizes, layers = [d, *widths, 1], []
    for into, out in zip(sizes, sizes[1:]):
        scale = rng.uniform(0.3, 1.5) if kind == "linear" else 1.5 if out == 1 and kind == "deep" else 1.0
        layers.append((scale * torch.randn(out, into, generator=generator, dtype=F64),
                       torch.randn(out, generator=generator, dtype=F64)))
    top = rng.choice([-1, 1]) * 10 ** rng.uniform(6, 7)
    layers[-1] = (layers[-1][0], torch.full((1,), top, dtype=F64))
    return real, fake, alpha, layers, rng.random() < 0.5


def _penalty_inputs(kind):
    def make(rng):
        generator = _gen(rng)
        cases = [_penalty_case(rng, generator), _penalty_case(rng, generator, "deep")]
        if kind == "value":
            cases.append(_penalty_case(rng, generator, "linear"))
            real, fake, alpha, layers, flat = _penalty_case(rng, generator)
            ends = (torch.rand(real.shape[0], generator=generator, dtype=F64) < 0.5).to(F64)
            cases.append((real, fake, ends, layers, flat))  # weights 0 and 1: at the samples themselves
        flip = rng.random() < 0.5  # scores of shape (n, 1) and (n,) in turn: both in every part
        return {"cases": [(*case[:4], (k % 2 == 1) != flip) for k, case in enumerate(cases)]}
    return make


def _penalty_care_inputs(rng):
    generator = _gen(rng)
    real, fake, alpha, layers, flat = _penalty_case(rng, generator, "deep")
    marks = [torch.randn(t.shape, generator=generator, dtype=F64) for layer in layers for t in layer]
    return {"real": real, "fake": fake, "alpha": alpha, "layers": layers, "flat": flat, "marks": marks}


TASK3 = Task(
    restricted=Restricted(cells=["task3_penalty"], **WITHOUT),
    parts=[
        Part(1.5, "the value: the mean over the batch of (|grad D(x_hat_i)| - 1)^2 at x_hat_i = alpha_i r_i + "
                  "(1 - alpha_i) f_i, for linear critics ((|w| - 1)^2) and critics with one or two hidden layers, "
                  "scores of shape (n, 1) or (n,) and far from 0 (by autograd, not finite differences)",
             penalty_probe, check_penalty, _penalty_inputs("value")),
        Part(1.5, "differentiable in the critic's parameters (create_graph): the gradient of the penalty in every "
                  "weight and bias of the critic", penalty_grad_probe, check_penalty_grad, _penalty_inputs("grad")),
        Part(0.5, "in a training loop: a generated batch that requires a gradient, which the penalty does not "
                  "reach into, and the .grad of the critic's parameters left as they were", penalty_care_probe,
             check_penalty_care, _penalty_care_inputs),
    ])
for _part in TASK3.parts:
    _part.helpers = (_critic,)

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3}
