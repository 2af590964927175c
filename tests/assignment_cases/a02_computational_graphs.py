"""Assignment 2 (computational graphs): wrong-but-plausible answers, one per task, and right answers that delegate.

WRONG = {solution grade_id: (test grade_id, points, code, score)}, where score is what the wrong
answer still earns: the points of the parts of its task (exercises/graders/02_computational_graphs.py)
that it gets right.
"""

WRONG = {
    # nodes sorted by name: right for the slides' graph, wrong in general
    "task1_topological_order": ("task1_tests", 3, '''
def topological_order(parents):
    order = sorted(parents, key=lambda node: (len(parents[node]) > 0, node))
    position = {node: i for i, node in enumerate(order)}
    if any(position[p] >= position[k] for k in parents for p in parents[k] if p == k):
        raise ValueError("cycle")
    if any(k in parents.get(p, []) for k in parents for p in parents[k]):
        raise ValueError("cycle")
    return order
''', 0),  # not a topological order of the random graphs, a cycle of three not seen, the chain out of order
    # forgets nodes without children
    "task2_children": ("task2_tests", 2, '''
def children_of(parents):
    children = {}
    for node, ps in parents.items():
        for p in ps:
            children.setdefault(p, [])
            if node not in children[p]:
                children[p].append(node)
    return children
''', 1),  # the children are right: only the nodes without children are missing
    # counts the nodes reachable on the way, not the paths
    "task3_count_paths": ("task3_tests", 3, '''
def count_paths(parents, source, target):
    import functools

    @functools.cache
    def reaches(node):  # whether node can be reached, counted as 0 or 1
        return 1 if node == source else min(1, sum(reaches(p) for p in parents[node]))

    return reaches(target) * max(1, sum(1 for p in parents[target] if reaches(p)))
''', 1),  # right only from a node to itself and to one it cannot reach
    # forgets the input node
    "task4_trace": ("task4_tests", 2, '''
from ad_lib.graph import trace


def graph_size(f, *inputs):
    return len(trace(f, *inputs)) - len(inputs)


def logistic_size(n):
    return 3 * (n - 1)
''', 0),
    "task5_verdicts": ("task5_tests", 2, '''
def topological_verdicts():
    return {"a": True, "b": True, "c": True, "d": False}
''', 1.5),  # three of the four verdicts are right
}


# Right answers that use a graph library, which the rules forbid: they run, for the grader, in a
# Python without it, where neither the import nor a copy of the library's file works.
DELEGATING = {
    "task1_topological_order": '''
def topological_order(parents):
    import importlib.util
    import os
    import sysconfig

    spec = importlib.util.spec_from_file_location("sorter", os.path.join(sysconfig.get_paths()["stdlib"], "graphlib.py"))
    sorter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sorter)
    try:
        return list(sorter.TopologicalSorter(parents).static_order())
    except sorter.CycleError as error:
        raise ValueError(f"the graph has a cycle: {error}") from None
''',
    "task3_count_paths": '''
def count_paths(parents, source, target):
    from graphlib import TopologicalSorter as order

    paths = {}
    for node in order(parents).static_order():
        paths[node] = 1 if node == source else sum(paths[p] for p in parents[node])
    return paths[target]
''',
}
