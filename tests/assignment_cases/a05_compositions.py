"""Assignment 5 (feed-forward compositions): wrong-but-plausible answers, one per task.

Used by tests/test_assignments.py: WRONG = {solution grade_id: (test grade_id, points, code, score)},
where score is what the wrong answer still earns: the points of the parts of its task
(exercises/graders/05_compositions.py) that it gets right. DELEGATING = {solution grade_id: code}:
right answers that use what their task forbids, handed in together; each scores 0 on its task.
"""

WRONG = {
    # reverse mode's sum copied from forward mode's (k = 1 .. t-1 instead of k = 0 .. t-2)
    "task1_mode_costs": ("task1_tests", 2, '''
def mode_costs(widths):
    n, t = list(widths), len(widths) - 1
    forward = n[0] * sum(n[k] * n[k + 1] for k in range(1, t))
    reverse = n[t] * sum(n[k] * n[k + 1] for k in range(1, t))
    return forward, reverse
''', 0.75),  # forward mode is right; reverse mode, on long chains and on two Jacobians, is not
    # "the best order is the better of the two modes"
    "task2_best_order": ("task2_tests", 3, '''
def best_order(widths):
    n, t = list(widths), len(widths) - 1
    forward = n[0] * sum(n[k] * n[k + 1] for k in range(1, t))
    reverse = n[t] * sum(n[k] * n[k + 1] for k in range(t - 1))
    order = 1
    for k in range(2, t + 1):
        order = (k, order)
    if reverse < forward:
        order = t
        for k in range(t - 1, 0, -1):
            order = (order, k)
    return min(forward, reverse), order
''', 1),  # its bracketings are bracketings, of the cost it returns; the cost is not the smallest
    # ignores the order: always multiplies from the left (reverse mode)
    "task3_chain_product": ("task3_tests", 3, '''
def chain_product(jacobians, order):
    product = jacobians[-1]
    for a in reversed(jacobians[:-1]):
        product = product @ a
    return product


def jacobians_along(layers, x):
    found = []
    for layer in layers:
        found.append(torch.func.jacrev(layer)(x))
        x = layer(x)
    return found
''', 2),  # the product and the layers' Jacobians are right; the products formed are reverse mode's
    # the rule of thumb "reverse mode when n_t < n_0, forward when n_t > n_0, else any"
    "task4_verdicts": ("task4_tests", 2, '''
def order_verdicts():
    return {"a": "reverse", "b": "forward", "c": "any", "d": "reverse", "e": "any"}
''', 1.2),  # three of the five verdicts (a, b, e) are right
}

DELEGATING = {
    # ad_lib.compositions, imported under another name: tasks 1 and 2 are graded in a Python
    # without ad_lib (nor torch), where the import fails
    "task1_mode_costs": '''
def mode_costs(widths):
    import importlib

    library = importlib.import_module("ad_" + "lib.compositions")
    return library.chain_cost(widths, "forward"), library.chain_cost(widths, "reverse")
''',
    "task2_best_order": '''
def best_order(widths):
    from ad_lib.compositions import optimal_order

    return optimal_order(widths)
''',
    # right, with ad_lib.compositions's jacobian_chain and layer_jacobians: graded without ad_lib
    "task3_chain_product": '''
def chain_product(jacobians, order):
    from ad_lib import compositions

    return compositions.jacobian_chain(jacobians, order)


def jacobians_along(layers, x):
    from ad_lib import compositions

    return compositions.layer_jacobians(layers, x)
''',
}
