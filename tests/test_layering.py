"""Imports run one way (README.md, "The layout"; docs/design.md): every module's imports, read from its source, climb
no folder above its own, and no two modules import each other.

The order, bottom to top: the package's top-level modules (config, accepts, cli, files,
gpu_check); nn; data; parallel; train; interop and paper (side by side: neither imports the
other); the scripts (train.py, evaluate.py, classify.py, figures.py, experiments.py,
benchmarks/). A module may import its own folder and anything below. The package's
``__init__`` is the front door: it may name anything, but only inside functions, so that
``import alexnet_np`` loads nothing.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVELS = {"alexnet_np": 0, "alexnet_np.nn": 1, "alexnet_np.data": 2, "alexnet_np.parallel": 3,
          "alexnet_np.train": 4, "alexnet_np.interop": 5, "alexnet_np.paper": 5}
SCRIPTS = 6


def module_files():
    """{module name: path} of the package, the scripts at the top and the benchmarks."""
    found = {}
    for folder in ("alexnet_np", "benchmarks"):
        for dirpath, _, names in os.walk(os.path.join(ROOT, folder)):
            for name in names:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, name), ROOT)[:-3].replace(os.sep, ".")
                    found[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(dirpath, name)
    for name in os.listdir(ROOT):
        if name.endswith(".py"):
            found[name[:-3]] = os.path.join(ROOT, name)
    return found


def folder_of(module, modules):
    """The folder a module sits in: ``alexnet_np.nn`` for ``alexnet_np.nn.layers``, itself for a
    package's ``__init__``; None outside the package."""
    if not module.startswith("alexnet_np"):
        return None
    is_package = modules.get(module, "").endswith("__init__.py")
    return module if is_package else module.rpartition(".")[0]


def imports_of(module, path, modules):
    """[(imported module, line, at module level)] of our own modules, lazy imports included."""
    tree = ast.parse(open(path).read(), path)
    top_level = {id(node) for node in tree.body}
    package = folder_of(module, modules) or ""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            if name in modules:
                found.append((name, node.lineno, id(node) in top_level))
    return found


def level_of(module, modules):
    folder = folder_of(module, modules)
    return SCRIPTS if folder is None else LEVELS[folder]


def violations(graph, modules):
    """Every import that climbs, crosses between interop and paper, or closes a cycle:
    ``graph`` is {module: [(imported, line, at module level)]}."""
    found = []
    for module, targets in graph.items():
        for target, line, at_top in targets:
            where = f"{modules[module]}:{line}: {module} imports {target}"
            if module == "alexnet_np":
                if at_top:
                    found.append(f"{where} when the package is imported (import it inside a function)")
                continue
            mine, theirs = folder_of(module, modules), folder_of(target, modules)
            if mine == theirs or target == "alexnet_np":
                continue
            if level_of(target, modules) > level_of(module, modules):
                found.append(f"{where}, a folder above its own")
            elif level_of(target, modules) == level_of(module, modules) and mine is not None:
                found.append(f"{where}, a folder beside its own")
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return found


def cycles(graph):
    """Import cycles (two modules importing each other, or longer rings), each once."""
    edges = {m: sorted({t for t, _, _ in targets if t != m}) for m, targets in graph.items()}
    found, done = [], set()

    def visit(module, path):
        if module in path:
            ring = path[path.index(module):]
            start = ring.index(min(ring))
            found.append(ring[start:] + ring[:start] + [min(ring)])
            return
        if module in done:
            return
        for target in edges.get(module, []):
            visit(target, path + [module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])
    return sorted({tuple(c) for c in found})


def project_graph():
    modules = module_files()
    return {m: imports_of(m, path, modules) for m, path in modules.items()}, modules


def test_imports_run_one_way_and_never_in_a_circle():
    graph, modules = project_graph()
    assert len([m for m in modules if m.startswith("alexnet_np.")]) > 30   # the walk found the package
    assert violations(graph, modules) == []


def test_every_module_sits_in_a_known_folder():
    _, modules = project_graph()
    unknown = {folder_of(m, modules) for m in modules} - set(LEVELS) - {None}
    assert unknown == set(), f"folders without a place in the order: {sorted(unknown)}"


def test_the_check_sees_a_climb_a_sideways_import_and_a_cycle():
    graph, modules = project_graph()
    graph = {m: list(t) for m, t in graph.items()}
    graph["alexnet_np.nn.layers"].append(("alexnet_np.train.checkpoint", 1, True))      # climbs
    graph["alexnet_np.paper.trace"].append(("alexnet_np.interop.convert", 2, True))     # sideways
    graph["alexnet_np.data.tars"].append(("alexnet_np.data.ilsvrc", 3, False))          # ilsvrc imports tars
    graph["alexnet_np"].append(("alexnet_np.config", 4, True))                          # loads at import
    found = violations(graph, modules)
    assert any("nn.layers imports alexnet_np.train.checkpoint, a folder above" in v for v in found)
    assert any("paper.trace imports alexnet_np.interop.convert, a folder beside" in v for v in found)
    assert any(v.startswith("import cycle:") and "alexnet_np.data.tars" in v for v in found)
    assert any("when the package is imported" in v for v in found)
