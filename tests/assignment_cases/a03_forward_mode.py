"""Assignment 3 (forward mode and dual numbers): wrong-but-plausible answers.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/03_forward_mode.py) that it gets right.
"""

WRONG = {
    # the quotient rule with the wrong sign (a frequent slip): (x'y + xy') / y^2
    "task1_dual": ("task1_tests", 3, '''
class Dual:
    def __init__(self, value, tangent=0.0):
        self.value = float(value)
        self.tangent = float(tangent)

    @staticmethod
    def lift(other):
        return other if isinstance(other, Dual) else Dual(other, 0.0)

    def __neg__(self):
        return Dual(-self.value, -self.tangent)

    def __add__(self, other):
        other = Dual.lift(other)
        return Dual(self.value + other.value, self.tangent + other.tangent)

    def __sub__(self, other):
        other = Dual.lift(other)
        return Dual(self.value - other.value, self.tangent - other.tangent)

    def __rsub__(self, other):
        return Dual.lift(other) - self

    def __mul__(self, other):
        other = Dual.lift(other)
        return Dual(self.value * other.value, self.value * other.tangent + self.tangent * other.value)

    def __truediv__(self, other):
        other = Dual.lift(other)
        return Dual(self.value / other.value, (self.tangent * other.value + self.value * other.tangent) / other.value**2)

    def __rtruediv__(self, other):
        return Dual.lift(other) / self

    __radd__ = __add__
    __rmul__ = __mul__


def sin(d):
    if not isinstance(d, Dual):
        return math.sin(d)
    return Dual(math.sin(d.value), math.cos(d.value) * d.tangent)


def exp(d):
    if not isinstance(d, Dual):
        return math.exp(d)
    return Dual(math.exp(d.value), math.exp(d.value) * d.tangent)


def dual_derivative(f, x):
    out = f(Dual(x, 1.0))
    return out.tangent if isinstance(out, Dual) else 0.0
''', 2.5),  # only division is wrong: the other five parts pass
    # the Jacobian-vector products stacked as rows: the transpose, n x m
    "task2_jacobian": ("task2_tests", 2, '''
def jacobian_by_columns(f, x):
    columns = []
    for j in range(x.numel()):
        e = torch.zeros_like(x)
        e[j] = 1.0
        columns.append(jvp(f, (x,), (e,))[1])
    return torch.stack(columns)
''', 0),  # the transpose: every part needs the Jacobian assembled right
    # the right gradient, with the pass count of forward differences (p + 1) instead of a measured one
    "task3_gradient": ("task3_tests", 2, '''
def forward_mode_gradient(f, x):
    gradient = torch.empty_like(x)
    for i in range(x.numel()):
        e = torch.zeros_like(x)
        e[i] = 1.0
        gradient[i] = jvp(f, (x,), (e,))[1]
    return gradient, x.numel() + 1
''', 1),  # the gradient is right, the count is not measured
    # believes the untagged implementation is right
    "task4_confusion": ("task4_tests", 2, '''
def perturbation_confusion():
    return {"correct": 8.0, "untagged": 8.0}
''', 1),  # the correct value is right
    # always reverse mode
    "task5_modes": ("task5_tests", 2, '''
def cheaper_mode():
    return {"a": "reverse", "b": "reverse", "c": "reverse", "d": "reverse", "e": "reverse"}
''', 0.8),  # two of the five verdicts are right
}
