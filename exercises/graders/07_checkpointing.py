"""The grader of assignment 7 (recurrent nets, checkpointing, reversible leapfrog): hidden checks, run
outside the student's kernel.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs
here, in the grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted).
Never released: nbgrader releases only what is in source/07_checkpointing/.

Task 1 (back-propagation through time by hand) runs in the notebook's kernel while the probe
watches torch's gradient engine (reverse and forward mode) and ad_lib's differentiations: a
gradient that any automatic differentiation computed scores nothing. The probe also meters the
torch operations of `bptt_by_hand` (grading.operation_meter, a TorchDispatchMode): a complex tensor (the
complex step), or more work than WORK_LIMIT = 50 evaluations of the loss (perturbing the inputs one
at a time: finite differences, forward mode by hand, the complex step in real pairs), scores
nothing either. The backward recursion does the work of about 4 evaluations, and even explicit
Jacobians stay under 30 at the grader's sizes (n <= 6, q >= 5), where perturbing the n + 2qn >= 33
inputs one at a time costs over 100. A route outside torch (numpy, Python's complex numbers) is not
metered. Its truth is torch.autograd, run here. Task 2 (the cost of binomial checkpointing) is
plain Python, graded in a Python with only the standard library, so that
ad_lib.checkpointing.revolve_cost cannot be called under any name; its truth is the grader's own
dynamic program over the first checkpoint's position; the probe of its edge cases stops a call
after 2 seconds (without the check, snapshots = 0 loops forever) and says so. Task 3 (the leapfrog
step and its inverse) is written with torch and graded in a Python without ad_lib (no
ad_lib.reversible); the inverse is checked on states the student's step never produced (random
ones, and steps the grader took), so that a record of the step's calls cannot stand in for it.
Task 4 holds the verdicts.
"""

import functools
import math

import torch
from grading import Part, Restricted, Task, Wrong, close, operation_meter, verdict_check, watching_autodiff

F64 = torch.float64

PLAIN = {"setup": "import math", "without": ["ad_lib", "torch", "numpy", "scipy"],
         "why": "task 2 is written in plain Python, and graded in a Python with only the standard library "
                "(without ad_lib, torch and numpy)"}
TORCH = {"setup": "import math\nimport torch\nF64 = torch.float64", "without": ["ad_lib"],
         "why": "task 3 is written with torch, and graded in a Python without ad_lib"}


def _number(rng, low, high, digits=3):
    return round(rng.uniform(low, high), digits)


def _tensor(rng, *shape, scale=1.0):
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    return scale * torch.randn(*shape, generator=generator, dtype=F64)


# ---------------------------------------------------------------------------------------------
# Task 1: back-propagation through time for the residual recurrent perceptron, by hand
# ---------------------------------------------------------------------------------------------

def bptt_probe(x0, W1, W2, y, lam, steps_list, work_limit):
    import torch

    meter = operation_meter()

    def one_loss(x0, W1, W2, y, lam, steps):  # the yardstick: one evaluation of f, as the statement writes it
        x = x0
        for _ in range(steps):
            x = x + W2.T @ torch.tanh(W1 @ x)
        return 0.5 * float(((x - y) ** 2).sum()) + 0.5 * lam * float((W1**2).sum())

    def run():
        results, work, loss_work = [], 0, 0
        for steps in steps_list:
            args = [t.clone() for t in (x0, W1, W2, y)]
            with meter(stop_on_complex=True) as yardstick:
                one_loss(x0, W1, W2, y, lam, steps)
            loss_work += yardstick.work
            # stopped as soon as it computes with complex numbers or has done more work than allowed
            # (no need to wait for a gradient by perturbations to finish)
            student = meter(budget=work_limit * max(loss_work, 1) - work, stop_on_complex=True)
            try:
                with student:
                    out = bptt_by_hand(*args, lam, steps)
            finally:
                work += student.work
            if student.stopped:
                return [results, max(work / max(loss_work, 1), work_limit + 1), student.complex]
            unchanged = all(torch.equal(a, b) for a, b in zip(args, (x0, W1, W2, y)))
            results.append([out, unchanged])
        return [results, work / max(loss_work, 1), False]

    return watching_autodiff(run)


WORK_LIMIT = 50  # evaluations of the loss: the backward recursion does about 4 (explicit Jacobians: under 30)


def _truth(x0, W1, W2, y, lam, steps):
    x0, W1, W2 = (t.clone().requires_grad_(True) for t in (x0, W1, W2))
    x = x0
    for _ in range(steps):
        x = x + W2.T @ torch.tanh(W1 @ x)
    loss = 0.5 * ((x - y) ** 2).sum() + 0.5 * lam * (W1**2).sum()
    grads = torch.autograd.grad(loss, (x0, W1, W2), allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, (x0, W1, W2))]
    return {"loss": loss.item(), "grad_x0": grads[0], "grad_W1": grads[1], "grad_W2": grads[2]}


def _bptt_check(key, words):
    def check(result, x0, W1, W2, y, lam, steps_list, work_limit):
        (runs, work, complex_seen), torch_ran, ad_lib_ran = result
        if torch_ran:
            raise Wrong("bptt_by_hand ran torch's automatic differentiation: write the backward recursion yourself")
        if ad_lib_ran:
            raise Wrong("bptt_by_hand ran ad_lib's automatic differentiation: write the backward recursion yourself")
        if type(work) not in (int, float) or type(complex_seen) is not bool:
            raise Wrong("the probe's result has the wrong form")
        if complex_seen:
            raise Wrong("bptt_by_hand computed with complex numbers (the complex step differentiates one input at "
                        "a time): write the backward recursion yourself")
        if not work <= work_limit:
            raise Wrong(f"bptt_by_hand did the work of about {work:.0f} evaluations of the loss; the backward "
                        "recursion needs a few (reverse mode's cheap gradient), and the grader allows "
                        f"{WORK_LIMIT}, whereas perturbing the inputs one at a time (finite differences, forward "
                        "mode, the complex step) needs at least one for each of the n + 2qn inputs: write the "
                        "backward recursion yourself")
        if not isinstance(runs, list) or len(runs) != len(steps_list):
            raise Wrong("the probe's result has the wrong form")
        for (out, unchanged), steps in zip(runs, steps_list):
            if type(out) is not dict or key not in out:
                raise Wrong(f"bptt_by_hand should return a dict with the key {key!r}")
            expected = _truth(x0, W1, W2, y, lam, steps)[key]
            if key == "loss":
                if type(out[key]) is not float:
                    raise Wrong("the loss should be a Python float")
                close(out[key], expected, rtol=1e-10, atol=1e-12, what=f"the loss after {steps} steps")
            else:
                close(out[key], expected, rtol=1e-9, atol=1e-11, what=f"{words} after {steps} steps")
            if not unchanged:
                raise Wrong("bptt_by_hand changed its inputs in place")
    return check


def _bptt_inputs(rng):
    # q >= 5: n + 2qn >= 33 inputs, so that perturbing them one at a time costs far more than WORK_LIMIT
    n, q = rng.randint(3, 6), rng.randint(5, 8)
    return {"x0": _tensor(rng, n), "W1": _tensor(rng, q, n, scale=0.6), "W2": _tensor(rng, q, n, scale=0.6),
            "y": _tensor(rng, n), "lam": _number(rng, 0.05, 0.5),
            "steps_list": [0, 1, rng.randint(3, 9), rng.randint(10, 20)], "work_limit": WORK_LIMIT}


TASK1 = Task(parts=[
    Part(0.5, "the loss (squared error plus its regularization of W1), a Python float, after 0, 1 and several steps",
         bptt_probe, _bptt_check("loss", "the loss"), _bptt_inputs),
    Part(1, "the gradient in x0, by the backward recursion, with no automatic differentiation",
         bptt_probe, _bptt_check("grad_x0", "the gradient in x0"), _bptt_inputs),
    Part(0.5, "the gradient in W2, summed over the steps (zero after 0 steps)",
         bptt_probe, _bptt_check("grad_W2", "the gradient in W2"), _bptt_inputs),
    Part(1, "the gradient in W1: the sum over the steps plus the loss's own dependence on W1",
         bptt_probe, _bptt_check("grad_W1", "the gradient in W1"), _bptt_inputs),
])
for _part in TASK1.parts:
    _part.helpers = (watching_autodiff, operation_meter)


# ---------------------------------------------------------------------------------------------
# Task 2: the cost of binomial checkpointing, in plain Python
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _least_advances(steps, snapshots):
    """The grader's truth: the fewest advances to reverse `steps` steps from x_0, with `snapshots` states
    stored at most (x_0 among them). Reversing one step costs no advance (its taped evaluation is not
    counted); otherwise advance to x_m, store it, reverse the last steps - m steps with one snapshot fewer,
    then the first m with all of them."""
    if steps < 2:  # nothing, or one step, to reverse
        return 0
    if snapshots == 1:
        return steps * (steps - 1) // 2
    return min(m + _least_advances(steps - m, snapshots - 1) + _least_advances(m, snapshots)
               for m in range(1, steps))


def _closed_form(steps, snapshots):
    r = 0
    while math.comb(snapshots + r, snapshots) < steps:
        r += 1
    return r * steps - math.comb(snapshots + r, snapshots + 1)


def costs_probe(pairs):
    return [revolve_cost(steps, snapshots) for steps, snapshots in pairs]


def _costs_check(truth, words):
    def check(result, pairs):
        if not isinstance(result, list) or len(result) != len(pairs):
            raise Wrong("the probe's result has the wrong form")
        for got, (steps, snapshots) in zip(result, pairs):
            if type(got) is not int:
                raise Wrong("revolve_cost should return a Python int")
            if got != truth(steps, snapshots):
                raise Wrong(f"revolve_cost is wrong for {words}")
    return check


def _special_pairs(rng):
    l1, l2 = rng.randint(2, 40), rng.randint(3, 40)
    return {"pairs": [(100, 5), (l1, 1), (l2, l2 - 1), (l2, l2 + rng.randint(0, 5))]}


def _grid_pairs(rng):
    return {"pairs": [(rng.randint(2, 60), rng.randint(2, 8)) for _ in range(12)]}


def _large_pairs(rng):
    return {"pairs": [(rng.randint(500, 5000), rng.randint(2, 12)) for _ in range(4)]}


def edges_probe(snapshots):
    import signal

    class Hangs(Exception):
        pass

    def alarm(signum, frame):
        raise Hangs()

    def call(steps, snapshots):
        """["returned", value], ["raised", the error's name] or ["hangs", None] (running past 2 seconds:
        without the check, snapshots = 0 loops forever, since C(0 + r, 0) = 1 < steps for every r)."""
        timer = hasattr(signal, "setitimer")
        if timer:
            previous = signal.signal(signal.SIGALRM, alarm)
            signal.setitimer(signal.ITIMER_REAL, 2.0)
        try:
            return ["returned", revolve_cost(steps, snapshots)]
        except Hangs:
            return ["hangs", None]
        except Exception as error:  # noqa: BLE001 (the name of any error is the answer)
            return ["raised", "ValueError" if isinstance(error, ValueError) else type(error).__name__]
        finally:
            if timer:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)

    return [call(0, snapshots), call(1, snapshots), call(5, 0), call(5, -1)]


def check_edges(result, snapshots):
    if not isinstance(result, list) or len(result) != 4 or any(not isinstance(r, list) or len(r) != 2 for r in result):
        raise Wrong("the probe's result has the wrong form")
    for (kind, value), steps in zip(result[:2], (0, 1)):
        if kind == "hangs":
            raise Wrong(f"revolve_cost({steps}, {snapshots}) did not return within 2 seconds")
        if kind != "returned" or type(value) is not int or value != 0:
            raise Wrong("reversing 0 steps or 1 step costs 0 advances (a Python int)")
    for (kind, value), bad in zip(result[2:], (0, -1)):
        if kind == "hangs":
            raise Wrong(f"revolve_cost(5, {bad}) did not return within 2 seconds (with no snapshot, no r satisfies "
                        "5 <= C(s + r, s)): fewer than one snapshot should raise a ValueError, checked first")
        if [kind, value] != ["raised", "ValueError"]:
            raise Wrong("fewer than one snapshot should raise a ValueError")


TASK2 = Task(
    restricted=Restricted(cells=["task2_revolve_cost"], **PLAIN),
    parts=[
        Part(1, "the special cases: (l, s) = (100, 5) costs 316, s = 1 costs l(l-1)/2, s >= l - 1 costs l - 1",
             costs_probe, _costs_check(_least_advances, "one of the special cases"), _special_pairs),
        Part(1, "a grid of (l, s) with l up to 60: the fewest advances any schedule needs (a dynamic program)",
             costs_probe, _costs_check(_least_advances, "a pair (l, s) of the grid"), _grid_pairs),
        Part(0.5, "long chains, l in the thousands (the binomial formula)",
             costs_probe, _costs_check(_closed_form, "a long chain"), _large_pairs),
        Part(0.5, "0 and 1 steps cost 0; snapshots < 1 is a ValueError", edges_probe, check_edges,
             lambda rng: {"snapshots": rng.randint(1, 6)}),
    ])


# ---------------------------------------------------------------------------------------------
# Task 3: the leapfrog step and its inverse, with torch, without ad_lib
# ---------------------------------------------------------------------------------------------

def _fields(A, B, c):
    """The fields the probes use, F(s) = tanh(A s) + c and G(r) = -sin(B r), with a call counter."""
    import torch

    calls = {"F": 0, "G": 0}

    def F(s):
        calls["F"] += 1
        return torch.tanh(A @ s) + c

    def G(r):
        calls["G"] += 1
        return -torch.sin(B @ r)

    return F, G, calls


def step_probe(A, B, c, states):
    F, G, _ = _fields(A, B, c)
    return [list(leapfrog_step(F, G, r.clone(), s.clone(), tau)) for r, s, tau in states]


def inverse_probe(A, B, c, states):
    F, G, _ = _fields(A, B, c)
    return [list(leapfrog_inverse(F, G, r.clone(), s.clone(), tau)) for r, s, tau in states]


def round_trip_probe(A, B, c, stepped):
    # (r1, s1) is a leapfrog step of (r, s) that the grader computed: the student's step never saw it, so
    # the inverse cannot give back (r, s) from a record of what the step was called with
    F, G, _ = _fields(A, B, c)
    return [list(leapfrog_inverse(F, G, r1.clone(), s1.clone(), tau)) for r1, s1, tau in stepped]


def calls_probe(A, B, c, states):
    import torch

    F, G, calls = _fields(A, B, c)
    r, s, tau = states[0]
    r_in, s_in = r.clone(), s.clone()
    leapfrog_step(F, G, r_in, s_in, tau)
    after_step = dict(calls)
    leapfrog_inverse(F, G, r_in, s_in, tau)
    return [after_step, dict(calls), bool(torch.equal(r_in, r) and torch.equal(s_in, s))]


def _expected_step(A, B, c, r, s, tau):
    r1 = r + tau * (torch.tanh(A @ s) + c)
    return r1, s + tau * -torch.sin(B @ r1)


def _expected_inverse(A, B, c, r1, s1, tau):
    s = s1 - tau * -torch.sin(B @ r1)
    return r1 - tau * (torch.tanh(A @ s) + c), s


def _pairs_check(expected, words):
    def check(result, A, B, c, states):
        if not isinstance(result, list) or len(result) != len(states):
            raise Wrong("the probe's result has the wrong form")
        for got, (r, s, tau) in zip(result, states):
            if len(got) != 2:
                raise Wrong(f"{words} should return a pair (r, s)")
            want = expected(A, B, c, r, s, tau)
            close(got[0], want[0], rtol=1e-12, atol=1e-12, what=f"r after {words}")
            close(got[1], want[1], rtol=1e-12, atol=1e-12, what=f"s after {words}")
    return check


def check_round_trip(result, A, B, c, stepped):
    if not isinstance(result, list) or len(result) != len(stepped):
        raise Wrong("the probe's result has the wrong form")
    for back, (r1, s1, tau) in zip(result, stepped):
        if len(back) != 2:
            raise Wrong("leapfrog_inverse should return a pair (r, s)")
        # the state the step came from (the grader's inverse gives it back to a rounding or two)
        for got, want, half in zip(back, _expected_inverse(A, B, c, r1, s1, tau), ("r", "s")):
            if type(got) is not torch.Tensor or got.dtype != F64:
                raise Wrong("the inverse should return float64 tensors for float64 inputs")
            if tuple(got.shape) != tuple(want.shape) or not bool((got - want).abs().max() <= 1e-12):
                raise Wrong(f"leapfrog_inverse does not undo a leapfrog step: it does not give back {half} "
                            "to 1e-12 in float64")


def _round_trip_inputs(rng):
    """Three leapfrog steps (r1, s1, tau) of random states (r, s), taken here, in the grader; (r, s) stays here."""
    inputs = _leapfrog_inputs(rng)
    A, B, c = inputs["A"], inputs["B"], inputs["c"]
    stepped = [(*_expected_step(A, B, c, r, s, tau), tau) for r, s, tau in inputs.pop("states")]
    return {**inputs, "stepped": stepped}


def check_calls(result, **_):
    after_step, after_both, unchanged = result
    if after_step != {"F": 1, "G": 1}:
        raise Wrong("leapfrog_step should evaluate F once and G once")
    if after_both != {"F": 2, "G": 2}:
        raise Wrong("leapfrog_inverse should evaluate G once and F once")
    if not unchanged:
        raise Wrong("leapfrog_step or leapfrog_inverse changed r or s in place")


def _leapfrog_inputs(rng):
    n, m = rng.randint(2, 5), rng.randint(3, 6)  # r in R^n, s in R^m: F maps s to R^n, G maps r to R^m
    return {"A": _tensor(rng, n, m), "B": _tensor(rng, m, n), "c": _tensor(rng, n),
            "states": [(_tensor(rng, n), _tensor(rng, m), _number(rng, 0.05, 1.5)) for _ in range(3)]}


TASK3 = Task(
    restricted=Restricted(cells=["task3_leapfrog"], **TORCH),
    parts=[
        Part(1, "leapfrog_step: r moves with F(s), then s with G at the new r", step_probe,
             _pairs_check(_expected_step, "leapfrog_step"), _leapfrog_inputs),
        Part(0.5, "leapfrog_inverse at any state: s back with G at the given r, then r back with F at the recovered s",
             inverse_probe, _pairs_check(_expected_inverse, "leapfrog_inverse"), _leapfrog_inputs),
        Part(1, "leapfrog_inverse undoes a leapfrog step (one the grader took) to 1e-12 in float64, steps up to 1.5",
             round_trip_probe, check_round_trip, _round_trip_inputs),
        Part(0.5, "each function evaluates F once and G once, and leaves r and s unchanged", calls_probe, check_calls,
             _leapfrog_inputs),
    ])
for _part in TASK3.parts:
    _part.helpers = (_fields,)


# ---------------------------------------------------------------------------------------------
# Task 4: verdicts, one part per case
# ---------------------------------------------------------------------------------------------

def verdicts():
    return memory_verdicts()


_METHODS = ("store", "checkpoint", "reversible")
_VERDICTS = {"a": ("store", _METHODS, "a short chain, memory to spare, the fastest gradient"),
             "b": ("checkpoint", _METHODS, "a long general recurrent net, memory for 20 states"),
             "c": ("reversible", _METHODS, "a long leapfrog integration in float64, memory for 2 states"),
             "d": ("checkpoint", _METHODS, "a long float32 leapfrog integration whose walk back drifts"),
             "e": (False, (True, False), "the leapfrog inverse is exact in float64")}

TASK4 = Task(parts=[Part(0.4, f"verdict ({key}): {words}", verdicts, verdict_check(key, answer, choices))
                    for key, (answer, choices, words) in _VERDICTS.items()])

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3, "task4_tests": TASK4}
