"""Assignment 12 (generative models): wrong-but-plausible answers, one per task.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/12_generative.py) that it gets right. DELEGATING = {solution grade_id: code}: right
answers that call what their task forbids (POT's ot.wasserstein_1d and ot.sliced_wasserstein_distance,
the book's gradient_penalty, under another name), handed in together; each scores 0 on its task.
The entries of GAMING = {name: (solution grade_id, test grade_id, code, score)}: answers that try to score
without the work (SciPy's distance, the book's ad_lib.generative, the difference of the means, which is exact on
translates and single points, random directions of one's own, which estimate the sliced distance in law;
for task 3, one that writes the input gradient by hand for the critics it recognizes and takes finite
differences, extrapolated, of the others), or that miss a requirement the visible tests also check (a
penalty that reaches into the generator's graph), with what they earn. They fill two submissions (each
holds a solution cell once), as assignment 11's do.
"""

WRONG = {
    # the quantile functions on the merged levels, right, but the p-th root forgotten: W_p^p, not W_p
    "task1_wasserstein": ("task1_tests", 4, '''
def wasserstein_1d(x, y, p=1):
    a, b = torch.sort(x).values, torch.sort(y).values
    n, m = a.numel(), b.numel()
    steps = torch.cat([torch.arange(n + 1, dtype=x.dtype) / n, torch.arange(1, m, dtype=x.dtype) / m]).sort().values
    middle = (steps[1:] + steps[:-1]) / 2
    i, j = (middle * n).long().clamp(max=n - 1), (middle * m).long().clamp(max=m - 1)
    return (torch.diff(steps) * (a[i] - b[j]).abs() ** p).sum()
''', 1),  # p = 1 is right (W_1^1 = W_1)
    # the mean of the 1-D distances W_p, instead of the p-th root of the mean of their p-th powers
    "task2_sliced": ("task2_tests", 3.5, '''
def sliced_wasserstein(x, y, directions, p=2):
    return torch.stack([wasserstein_1d(x @ theta, y @ theta, p) for theta in directions.T]).mean()
''', 1),  # p = 1 is right (the two means agree)
    # the gradient at the interpolates without create_graph: the right value, but no gradient in the
    # critic's parameters, so the critic's optimizer would never see the penalty
    "task3_penalty": ("task3_tests", 3.5, '''
def gradient_penalty(critic, real, fake, alpha):
    mix = alpha[:, None]
    x_hat = (mix * real + (1 - mix) * fake).detach().requires_grad_(True)
    g = torch.autograd.grad(critic(x_hat).sum(), x_hat)[0]
    return ((g.norm(dim=1) - 1) ** 2).mean()
''', 2),  # the value and the training-loop part are right
}

DELEGATING = {
    # POT's 1-D distance (it returns W_p^p), imported under another name: graded in a Python without POT
    "task1_wasserstein": '''
def wasserstein_1d(x, y, p=1):
    import importlib

    pot = importlib.import_module("o" + "t")
    return pot.wasserstein_1d(x, y, p=p) ** (1 / p)
''',
    # POT's sliced distance with the given directions as its projections
    "task2_sliced": '''
def sliced_wasserstein(x, y, directions, p=2):
    import importlib

    pot = importlib.import_module("o" + "t")
    return pot.sliced_wasserstein_distance(x, y, projections=directions, p=p)
''',
    # the book's gradient penalty, imported under another name: it draws its own mixing weights, so it
    # is handed the interpolates as both batches (every weight gives them back): right, but no ad_lib there
    "task3_penalty": '''
def gradient_penalty(critic, real, fake, alpha):
    import importlib

    book = importlib.import_module("ad_" + "lib.generative")
    both = torch.lerp(fake, real, alpha[:, None])
    return book.gradient_penalty(critic, both, both)
''',
}

GAMING = {
    # SciPy's W_1 on NumPy copies (and a p-th power of the quantile gaps by NumPy for p > 1): no SciPy there
    "SciPy's distance": ("task1_wasserstein", "task1_tests", '''
def wasserstein_1d(x, y, p=1):
    from scipy import stats

    first = stats.wasserstein_distance(x.detach().numpy(), y.detach().numpy())
    return torch.tensor(first, dtype=x.dtype)
''', 0),
    # the difference of the means: exact between translates and between two single points, wrong elsewhere
    "difference of the means": ("task1_wasserstein", "task1_tests", '''
def wasserstein_1d(x, y, p=1):
    return (x.mean() - y.mean()).abs()
''', 0),
    # many random directions of its own instead of the given ones: right in law, not the number asked
    "random directions": ("task2_sliced", "task2_tests", '''
def sliced_wasserstein(x, y, directions, p=2):
    drawn = torch.randn(x.shape[1], 4000, dtype=x.dtype)
    drawn = drawn / drawn.norm(dim=0)
    a, b = torch.sort(x @ drawn, dim=0).values, torch.sort(y @ drawn, dim=0).values
    if a.shape[0] != b.shape[0]:
        k = a.shape[0] * b.shape[0]
        a, b = a.repeat_interleave(b.shape[0], dim=0), b.repeat_interleave(k // b.shape[0], dim=0)
    return ((a - b).abs() ** p).mean() ** (1 / p)
''', 0),
    # the book's sliced distance, imported under another name: graded in a Python without ad_lib
    "the book's sliced distance": ("task2_sliced", "task2_tests", '''
def sliced_wasserstein(x, y, directions, p=2):
    import importlib

    book = importlib.import_module("ad_" + "lib.generative")
    return book.sliced_wasserstein(x, y, p=p, projections=directions)
''', 0),
    # the interpolates not detached: the value and the gradient in the critic are right, but the penalty
    # of a generated batch reaches back into the generator's graph (the critic's step would move it)
    "not detached from the generator": ("task3_penalty", "task3_tests", '''
def gradient_penalty(critic, real, fake, alpha):
    w = alpha.unsqueeze(1)
    hat = torch.lerp(fake, real, w)
    hat.requires_grad_(True)
    out = critic(hat)
    slope, = torch.autograd.grad(out, hat, torch.ones_like(out), create_graph=True)
    return (slope.norm(dim=-1).sub(1)).pow(2).mean()
''', 3),  # the training-loop part is lost
    # the input gradient written by hand for the critics it recognizes (Linear and Tanh, at most two
    # layers), central differences extrapolated twice (Richardson) for any other: exact on the critics
    # of the visible tests, but no automatic differentiation at all; the grader's deeper critics and its
    # scores far from 0 (where a difference quotient loses its digits) catch it in every part
    "hand-written gradients and finite differences": ("task3_penalty", "task3_tests", '''
def gradient_penalty(critic, real, fake, alpha):
    u = alpha.unsqueeze(-1)
    pts = u * real + (1 - u) * fake.detach()
    mods = [mod for mod in critic.modules() if mod is not critic]
    dense = [mod for mod in mods if isinstance(mod, torch.nn.Linear)]
    known = all(isinstance(mod, (torch.nn.Linear, torch.nn.Tanh, torch.nn.Flatten)) for mod in mods)
    if isinstance(critic, torch.nn.Linear):
        known, dense = True, [critic]
    if known and len(dense) <= 2:
        g = dense[-1].weight.expand(pts.shape[0], -1)
        if len(dense) == 2:
            act = torch.tanh(torch.nn.functional.linear(pts, dense[0].weight, dense[0].bias))
            g = (g * (1 - act * act)) @ dense[0].weight
    else:
        h, eye = 1e-4, torch.eye(pts.shape[1], dtype=pts.dtype)
        def dq(s):
            return torch.stack([(critic(pts + s * e).reshape(-1) - critic(pts - s * e).reshape(-1)) / (2 * s)
                                for e in eye], 1)
        r1, r2 = (4 * dq(h / 2) - dq(h)) / 3, (4 * dq(h / 4) - dq(h / 2)) / 3
        g = (16 * r2 - r1) / 15
    return ((g.norm(dim=1) - 1) ** 2).mean()
''', 0),
}
