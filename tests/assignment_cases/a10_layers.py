"""Assignment 10 (learning as optimization and the building blocks): wrong-but-plausible answers, one per task.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/10_layers.py) that it gets right. DELEGATING = {solution grade_id: code}: right
answers that use what their task forbids (ad_lib.layers, the aten convolution operator under another name,
torch.nn.grad's adjoint), handed in together; each scores 0 on its task. GAMING = {name: (solution grade_id, test grade_id, code, score)}:
answers that try to score without the work (a table of the visible answers, NumPy doing the
convolution, torch.nn.Conv2d in disguise, autograd as the adjoint, scikit-learn's
logistic regression, torch's convolution in another thread), with what they earn. Tried outside the
suite (its visible checks start a Python per call, 10 s of grading): F.conv1d in a `python -c` subprocess,
tensors through torch.save on its stdin and stdout, scores 0 on task 2 (no process starts there).
"""

WRONG = {
    # rounds the number of windows up: right whenever the stride is 1
    "task1_sizes": ("task1_tests", 1.5, '''
def conv_output_size(n, k, stride=1, padding=0):
    return -(-(n + 2 * padding - k) // stride) + 1


def unreached_inputs(n, k, stride=1, padding=0):
    touched = [False] * n
    start = -padding
    while start + k <= n + padding:
        for i in range(max(start, 0), min(start + k, n)):
            touched[i] = True
        start += stride
    return touched.count(False)
''', 1),  # stride 1 and the inputs no window reads are right
    # pads on the left only: right without padding
    "task2_conv1d": ("task2_tests", 3, '''
def conv1d(x, w, stride=1, padding=0):
    size = w.shape[2]
    extended = F.pad(x, (2 * padding, 0))
    pieces = extended.unfold(-1, size, stride)
    return torch.einsum("ncls,dcs->ndl", pieces, w)
''', 2),  # one channel and channels (both without padding) are right
    # flattens the weight as (C_out, kh, kw, C_in): right with one input channel
    "task3_conv2d": ("task3_tests", 3, '''
def conv2d(x, w, stride=1, padding=0):
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    n, _, rows, cols = x.shape
    d, _, kh, kw = w.shape
    patches = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))
    out = w.permute(0, 2, 3, 1).reshape(d, -1) @ patches
    return out.reshape(n, d, (rows + 2 * ph - kh) // sh + 1, (cols + 2 * pw - kw) // sw + 1)
''', 2),  # one channel, with and without strides, is right
    # ignores the size given and takes the smallest input that has y's shape
    "task4_conv_transpose2d": ("task4_tests", 2, '''
def conv_transpose2d(y, w, size, stride=1, padding=0):
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    n, d, rows, cols = y.shape
    kh, kw = w.shape[2], w.shape[3]
    guessed = ((rows - 1) * sh - 2 * ph + kh, (cols - 1) * sw - 2 * pw + kw)
    spread = w.reshape(d, -1).T @ y.reshape(n, d, rows * cols)
    return F.fold(spread, guessed, (kh, kw), padding=(ph, pw), stride=(sh, sw))
''', 1),  # stride 1 is right: no input is skipped
    # the penalty's gradient taken as lam / 2 times theta: it converges, to the minimizer of another loss
    "task5_fit_logistic": ("task5_tests", 1.5, '''
def fit_logistic(X, y, lam):
    n = X.shape[0]
    A = torch.cat([X, torch.ones(n, 1, dtype=X.dtype)], dim=1)
    t = 2 * y - 1
    rate = 1 / (torch.linalg.matrix_norm(A, ord=2) ** 2 / (4 * n) + lam)
    theta = torch.zeros(A.shape[1], dtype=X.dtype)
    for _ in range(50000):
        g = A.T @ (-t * torch.sigmoid(-t * (A @ theta))) / n + lam / 2 * theta
        if float(g.norm()) < 1e-9:
            break
        theta = theta - rate * g
    return theta[:-1], theta[-1]
''', 0.5),  # the classifier still generalizes
}

DELEGATING = {
    # ad_lib.layers' convolution, under another name: graded in a Python without ad_lib
    "task2_conv1d": '''
def conv1d(x, w, stride=1, padding=0):
    import importlib

    library = importlib.import_module("ad_" + "lib.layers")
    return library.conv1d(x, w, stride=stride, padding=padding)
''',
    # the aten operator under torch's conv2d, fetched by a name put together at run time: the grader's record
    # of the operators sees it
    "task3_conv2d": '''
def conv2d(x, w, stride=1, padding=0):
    two = (lambda v: [v, v] if isinstance(v, int) else list(v))
    kernel = getattr(torch.ops.aten, "convol" + "ution")
    return kernel(x, w, None, two(stride), two(padding), [1, 1], False, [0, 0], 1)
''',
    # torch's gradient of a convolution in its input (blocked by name, and a convolution operator)
    "task4_conv_transpose2d": '''
def conv_transpose2d(y, w, size, stride=1, padding=0):
    full = (y.shape[0], w.shape[1], *size)
    return torch.nn.grad.conv2d_input(full, w, y, stride=stride, padding=padding)
''',
}

GAMING = {
    # the visible checks' answers, and a guess elsewhere
    "table of sizes": ("task1_sizes", "task1_tests", '''
KNOWN = {(10, 3, 1, 0): 8, (7, 3, 1, 1): 7, (10, 3, 2, 0): 4, (6, 4, 3, 1): 2, (1, 1, 1, 0): 1}


def conv_output_size(n, k, stride=1, padding=0):
    return KNOWN.get((n, k, stride, padding), n - k + 1)


def unreached_inputs(n, k, stride=1, padding=0):
    return {(10, 3, 2, 0): 1, (10, 2, 3, 0): 4, (6, 2, 3, 1): 2}.get((n, k, stride, padding), 0)
''', 0),
    # NumPy's correlate, channel by channel: graded in a Python without NumPy
    "NumPy conv1d": ("task2_conv1d", "task2_tests", '''
def conv1d(x, w, stride=1, padding=0):
    import numpy as np

    xs = np.pad(x.numpy(), ((0, 0), (0, 0), (padding, padding)))
    ws = w.numpy()
    rows = [[sum(np.correlate(xs[b, c], ws[o, c], mode="valid") for c in range(ws.shape[1]))[::stride]
             for o in range(ws.shape[0])] for b in range(xs.shape[0])]
    return torch.tensor(np.array(rows))
''', 0),
    # torch.nn.Conv2d with the weight put in: its forward is torch's conv2d
    "Conv2d in disguise": ("task3_conv2d", "task3_tests", '''
def conv2d(x, w, stride=1, padding=0):
    layer = torch.nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=stride, padding=padding,
                            bias=False).to(x.dtype)
    with torch.no_grad():
        layer.weight.copy_(w)
        return layer(x)
''', 0),
    # the adjoint as torch.autograd's backward pass of a hand-made convolution: not by hand
    "autograd adjoint": ("task4_conv_transpose2d", "task4_tests", '''
def conv_transpose2d(y, w, size, stride=1, padding=0):
    probe = torch.zeros(y.shape[0], w.shape[1], *size, dtype=y.dtype, requires_grad=True)
    cols = F.unfold(probe, tuple(w.shape[2:]), padding=padding, stride=stride)
    image = (w.reshape(w.shape[0], -1) @ cols).reshape(y.shape)
    return torch.autograd.grad(image, probe, grad_outputs=y)[0]
''', 0),
    # torch's aten convolution run in a second thread, out of sight of the operator record (a dispatch mode
    # holds for the thread it was entered in): no thread starts there, and the operator's kernels raise
    "threaded aten convolution": ("task3_conv2d", "task3_tests", '''
from concurrent.futures import ThreadPoolExecutor


def conv2d(x, w, stride=1, padding=0):
    pair = (lambda v: [v, v] if isinstance(v, int) else list(v))
    with ThreadPoolExecutor(max_workers=1) as pool:
        job = pool.submit(torch.ops.aten.convolution, x, w, None, pair(stride), pair(padding), [1, 1], False,
                          [0, 0], 1)
        return job.result()
''', 0),
    # scikit-learn's logistic regression: graded in a Python without it (nor NumPy)
    "scikit-learn": ("task5_fit_logistic", "task5_tests", '''
def fit_logistic(X, y, lam):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1 / (lam * len(y)), tol=1e-12, max_iter=10000).fit(X.numpy(), y.numpy())
    return torch.tensor(model.coef_[0]), float(model.intercept_[0])
''', 0),
}
