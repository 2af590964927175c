"""The grader of assignment 2 (computational graphs): hidden checks, run outside the student's kernel.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs
here, in the grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted).
Never released: nbgrader releases only what is in source/02_computational_graphs/.

Tasks 1 to 3 are to be written in plain Python: they run in a second sandbox that has only the
standard library, without graphlib (and without ad_lib, torch, numpy, networkx, scipy), so a
graph library under any name, or a copy of its file, cannot be imported there.
"""

import functools

from grading import Part, Restricted, Task, Wrong, verdict_check

# The notebook's set-up, less what the restricted sandbox lacks (the same for tasks 1 to 3: one kernel)
PLAIN_SETUP = '''import math

SLIDES = {"x1": [], "x2": [], "v1": ["x1"], "v2": ["x1", "x2"], "v3": ["x2"], "v4": ["v1", "v2"], "v5": ["v4", "v3"]}


def is_topological(order, parents):
    position = {node: i for i, node in enumerate(order)}
    return sorted(order) == sorted(parents) and all(position[p] < position[k] for k in parents for p in parents[k])
'''

PLAIN = Restricted(cells=[], setup=PLAIN_SETUP,
                   without=["graphlib", "networkx", "ad_lib", "torch", "numpy", "scipy"],
                   why="tasks 1 to 3 are written in plain Python, and graded in a Python with only the "
                       "standard library, without graphlib")


def _plain(cell: str) -> Restricted:
    return Restricted(cells=[cell], setup=PLAIN.setup, without=PLAIN.without, why=PLAIN.why)


# ---------------------------------------------------------------------------------------------
# Random graphs, made in the grader: names that differ from one student to the next
# ---------------------------------------------------------------------------------------------

def _names(rng, count):
    letters = "abcdefghijkmnpqrstuvwxyz"
    names = set()
    while len(names) < count:
        names.add("".join(rng.choice(letters) for _ in range(3)) + str(rng.randrange(100)))
    names = sorted(names)
    rng.shuffle(names)
    return names


def random_dag(rng, size, density=0.3, repeats=True):
    """A DAG whose nodes are listed in an order that is not a topological one, some parents repeated."""
    names = _names(rng, size)  # a topological order: parents come earlier in this list
    dag = {}
    for i, name in enumerate(names):
        parents = [names[j] for j in range(i) if rng.random() < density]
        if repeats and parents and rng.random() < 0.3:
            parents.append(rng.choice(parents))
        dag[name] = parents
    listed = list(dag)
    rng.shuffle(listed)
    return {name: dag[name] for name in listed}


def _topological(order, parents) -> bool:
    if type(order) is not list or any(type(n) is not str for n in order) or sorted(order) != sorted(parents):
        return False
    position = {node: i for i, node in enumerate(order)}
    return all(position[p] < position[k] for k in parents for p in parents[k])


# ---------------------------------------------------------------------------------------------
# Task 1: a topological order
# ---------------------------------------------------------------------------------------------

def orders(graphs):
    return [topological_order(graph) for graph in graphs]


def check_orders(result, graphs):
    if type(result) is not list or len(result) != len(graphs):
        raise Wrong("the probe's result has the wrong form")
    for order, graph in zip(result, graphs):
        if not _topological(order, graph):
            raise Wrong(f"the order of a random graph of {len(graph)} nodes is not a topological order "
                        "(a list of all its nodes, each after its parents)")


def cycles(graphs):
    results = []
    for graph in graphs:
        try:
            topological_order(graph)
        except ValueError as error:
            results.append(["ValueError", str(error)[:500]])
        except BaseException as error:
            results.append([type(error).__name__[:60], ""])
        else:
            results.append(["returned", ""])
    return results


def check_cycles(result, graphs):
    if type(result) is not list or len(result) != len(graphs):
        raise Wrong("the probe's result has the wrong form")
    for (kind, message), graph in zip(result, graphs):
        if kind != "ValueError":
            raise Wrong(f"a graph of {len(graph)} nodes with a cycle should raise a ValueError"
                        + (", not return an order" if kind == "returned" else ""))
        if type(message) is not str or "cycle" not in message.lower():
            raise Wrong("the ValueError raised for a cycle should say 'cycle' in its message")


def _cyclic_graphs(rng):
    graphs = []
    for length in (1, 2, rng.randint(3, 6)):  # a self-loop, two nodes, a longer cycle after an input
        names = _names(rng, length + 2)
        graph = {names[0]: []}
        ring = names[1:length + 1]
        for i, node in enumerate(ring):
            graph[node] = [ring[i - 1]] + ([names[0]] if i == 0 else [])
        graph[names[-1]] = [ring[-1]]
        graphs.append(graph)
    big = random_dag(rng, 30)  # a DAG of 30 nodes, and one edge back that closes a cycle
    for k in big:
        if big[k]:
            p = big[k][0]
            big[p] = big[p] + [k]
            break
    graphs.append(big)
    return {"graphs": graphs}


def long_chain(n, prefix):
    chain = {f"{prefix}{i}": [f"{prefix}{i - 1}"] if i else [] for i in range(n - 1, -1, -1)}  # listed backwards
    return topological_order(chain)


def check_long_chain(result, n, prefix):
    if result != [f"{prefix}{i}" for i in range(n)]:
        raise Wrong(f"the order of a chain of {n} nodes is wrong")


TASK1 = Task(restricted=_plain("task1_topological_order"), parts=[
    Part(1.5, "a topological order of random graphs of up to 60 nodes, listed in any order, some parents repeated",
         orders, check_orders, lambda rng: {"graphs": [random_dag(rng, size) for size in (1, 6, 25, 60)]}),
    Part(0.5, "a ValueError that mentions the cycle, for cycles of one, two and more nodes", cycles, check_cycles,
         _cyclic_graphs),
    Part(1, "time linear in the size of the graph: a chain of 30000 nodes, listed backwards, within the time limit",
         long_chain, check_long_chain, lambda rng: {"n": 30000, "prefix": rng.choice("kmpqrw")}),
])


# ---------------------------------------------------------------------------------------------
# Task 2: children from parents
# ---------------------------------------------------------------------------------------------

def children(graphs):
    return [[children_of(graph), graph] for graph in graphs]


def _expected_children(graph):
    expected = {node: [] for node in graph}
    for node, parents in graph.items():
        for p in parents:
            if node not in expected[p]:
                expected[p].append(node)
    return expected


def _children_results(result, graphs):
    if type(result) is not list or len(result) != len(graphs):
        raise Wrong("the probe's result has the wrong form")
    for (got, after), graph in zip(result, graphs):
        if type(got) is not dict:
            raise Wrong("children_of should return a dict")
        yield got, after, graph


def check_children(result, graphs):
    for got, _, graph in _children_results(result, graphs):
        for node, kids in _expected_children(graph).items():
            if kids and got.get(node) != kids:
                raise Wrong("the children of a node should be listed once each, in the order the nodes appear "
                            "in parents")


def check_every_node(result, graphs):
    for got, after, graph in _children_results(result, graphs):
        if set(got) != set(graph) or any(got[node] != [] for node, kids in _expected_children(graph).items() if not kids):
            raise Wrong("every node should be a key, a node without children mapped to []")
        if after != graph:
            raise Wrong("children_of should not change the dictionary it is given")


def _child_graphs(rng):
    return {"graphs": [random_dag(rng, size, density=0.35) for size in (1, 8, 30)]}


TASK2 = Task(restricted=_plain("task2_children"), parts=[
    Part(1, "the children of each node of random graphs, listed once each, in the order of parents",
         children, check_children, _child_graphs),
    Part(1, "every node is a key (a node without children maps to []), and parents is left unchanged",
         children, check_every_node, _child_graphs),
])


# ---------------------------------------------------------------------------------------------
# Task 3: counting paths
# ---------------------------------------------------------------------------------------------

def counts(graph, pairs):
    return [count_paths(graph, source, target) for source, target in pairs]


def _count(graph, source, target):
    @functools.cache
    def paths_to(node):
        return 1 if node == source else sum(paths_to(p) for p in graph[node])

    return paths_to(target)


def _counts_check(what):
    def check(result, graph, pairs):
        if type(result) is not list or len(result) != len(pairs):
            raise Wrong("the probe's result has the wrong form")
        for got, (source, target) in zip(result, pairs):
            if type(got) is not int or got != _count(graph, source, target):
                raise Wrong(f"the number of paths is wrong ({what})")
    return check


def _path_inputs(rng):
    graph = random_dag(rng, 25, density=0.35, repeats=False)
    reachable = [(s, t) for s in graph for t in graph if s != t and _count(graph, s, t) > 1]
    reachable.sort(key=lambda pair: -_count(graph, *pair))  # the three pairs with the most paths, and three more
    pairs = reachable[:3] + rng.sample(reachable[3:], min(3, len(reachable) - 3))
    return {"graph": graph, "pairs": pairs}


def _edge_inputs(rng):
    graph = random_dag(rng, 12, density=0.3, repeats=False)
    nodes = list(graph)
    same = [(n, n) for n in rng.sample(nodes, 3)]
    apart = [(s, t) for s in graph for t in graph if s != t and _count(graph, s, t) == 0]
    rng.shuffle(apart)
    return {"graph": graph, "pairs": same + apart[:3]}


def ladder(n, names):
    graph = {names + "1": []}
    for k in range(1, n):  # from l_k, two routes to l_{k+1}: the graph of the logistic map
        graph[f"{names}a{k}"] = [f"{names}{k}"]
        graph[f"{names}b{k}"] = [f"{names}{k}"]
        graph[f"{names}{k + 1}"] = [f"{names}a{k}", f"{names}b{k}"]
    return count_paths(graph, names + "1", f"{names}{n}")


def check_ladder(result, n, names):
    if type(result) is not int or result != 2 ** (n - 1):
        raise Wrong(f"the number of paths through a ladder of {n} rungs is wrong")


TASK3 = Task(restricted=_plain("task3_count_paths"), parts=[
    Part(1, "the number of paths between nodes of a random graph", counts, _counts_check("between nodes of a "
         "random graph"), _path_inputs),
    Part(1, "far too many paths to enumerate (2**(n-1) through a ladder of n rungs), within the time limit",
         ladder, check_ladder, lambda rng: {"n": rng.randint(60, 90), "names": rng.choice(["l", "m", "r"])}),
    Part(1, "one path from a node to itself, none to a node that cannot be reached", counts,
         _counts_check("from a node to itself, or to a node it cannot reach"), _edge_inputs),
])


# ---------------------------------------------------------------------------------------------
# Task 4: tracing with ad_lib.graph; task 5: verdicts
# ---------------------------------------------------------------------------------------------

def sizes(exps, loops):
    import torch
    from ad_lib import ops

    def exp_chain(x):
        for _ in range(exps):
            x = ops.exp(x)
        return x

    def affine_loop(x, y):
        s = x
        for _ in range(loops):
            s = s * y + x
        return s

    return [graph_size(exp_chain, torch.tensor([0.1, 0.2])),
            graph_size(affine_loop, 0.5, 2.0),
            graph_size(lambda x, y: ops.log(x) + x * y - ops.sin(y), 2.0, 5.0),
            graph_size(lambda x, y: ops.sin(x) * 2.0, 0.3, 1.0)]  # an input that is not used is still a node


def check_sizes(result, exps, loops):
    expected = [exps + 1, 2 * loops + 2, 7, 4]
    if type(result) is not list or len(result) != len(expected) or any(type(r) is not int for r in result):
        raise Wrong("graph_size should return an int")
    if result != expected:
        raise Wrong("the number of nodes of a traced program (inputs included) is wrong")


def logistic(ns):
    return [logistic_size(n) for n in ns]


def check_logistic(result, ns):
    if type(result) is not list or any(type(r) is not int for r in result):
        raise Wrong("logistic_size should return an int")
    if result != [3 * n - 2 for n in ns]:
        raise Wrong("the number of nodes of the logistic map's graph is wrong")


TASK4 = Task(parts=[
    Part(1, "graph_size of traced programs: loops, tensors, an input that is not used", sizes, check_sizes,
         lambda rng: {"exps": rng.randint(2, 9), "loops": rng.randint(3, 12)}),
    Part(1, "logistic_size for several n", logistic, check_logistic,
         lambda rng: {"ns": [1] + sorted(rng.sample(range(3, 40), 3))}),
])


def verdicts():
    return topological_verdicts()


_VERDICTS = {"a": True, "b": True, "c": False, "d": False}

TASK5 = Task(parts=[Part(0.5, f"verdict ({key}) on order ({key})", verdicts, verdict_check(key, value, (True, False)))
                    for key, value in _VERDICTS.items()])

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3, "task4_tests": TASK4, "task5_tests": TASK5}
