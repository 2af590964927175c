"""Assignment 12 (generative models): wrong-but-plausible answers, one per task.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/12_generative.py) that it gets right. DELEGATING = {solution grade_id: code}: right
answers that call what their task forbids (POT's ot.wasserstein_1d and ot.sliced_wasserstein_distance,
under another name), handed in together; each scores 0 on its task. GAMING = {name: (solution grade_id,
test grade_id, code, score)}: answers that try to score without the work (SciPy's distance, the book's
ad_lib.generative, the difference of the means, which is exact on translates and single points, random
directions of one's own, which estimate the sliced distance in law), with what they earn. They fill two
submissions (each holds a solution cell once), as assignment 11's do.
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
    # the book's gradient penalty (at interpolates of its own drawing): no ad_lib there
    "the book's penalty": ("task3_penalty", "task3_tests", '''
def gradient_penalty(critic, real, fake, alpha):
    import importlib

    return importlib.import_module("ad_" + "lib.generative").gradient_penalty(critic, real, fake)
''', 0),
}
