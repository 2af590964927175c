"""Assignment 2 (computational graphs): wrong-but-plausible answers, one per task, and one that delegates."""

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
'''),
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
'''),
    # counts the nodes reachable on the way, not the paths
    "task3_count_paths": ("task3_tests", 3, '''
def count_paths(parents, source, target):
    import functools

    @functools.cache
    def reaches(node):  # whether node can be reached, counted as 0 or 1
        return 1 if node == source else min(1, sum(reaches(p) for p in parents[node]))

    return reaches(target) * max(1, sum(1 for p in parents[target] if reaches(p)))
'''),
    # forgets the input node
    "task4_trace": ("task4_tests", 2, '''
from ad_lib.graph import trace


def graph_size(f, *inputs):
    return len(trace(f, *inputs)) - len(inputs)


def logistic_size(n):
    return 3 * (n - 1)
'''),
    "task5_verdicts": ("task5_tests", 2, '''
def topological_verdicts():
    return {"a": True, "b": True, "c": True, "d": False}
'''),
}


# Right answers that delegate to a graph library, which the rules forbid: a hidden check catches them.
DELEGATING = {
    "task1_topological_order": '''
def topological_order(parents):
    import graphlib
    try:
        return list(graphlib.TopologicalSorter(parents).static_order())
    except graphlib.CycleError as error:
        raise ValueError(f"the graph has a cycle: {error}") from None
''',
}
