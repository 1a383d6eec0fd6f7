"""Check the package's shape: no import circle, no module importing a higher layer, no overlong function.

    python tools/check_structure.py            # prints what it finds; exit status 1 when a rule is broken
    python tools/check_structure.py --longest 10

Layers, lowest first (a module may import its own layer and lower ones): the utilities (``config``,
``fileio``, ``distributed``, ``progress``, ``outputs``), ``data``, ``models``, ``losses``, then ``evaluation`` and
``localize``, then ``train`` and ``report``, then ``importers``, ``hub`` (models by name, converted by the
importers) and ``embeddings``, then the entry points (``cli``, ``demo``, ``__main__``, the package's
``__init__``). Every ``import`` counts, also those inside functions. ``tests/test_structure.py`` runs it.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "avssl"
LAYERS = [
    {"config", "fileio", "distributed", "progress", "outputs"},
    {"data"},
    {"models"},
    {"losses"},
    {"evaluation", "localize"},
    {"train", "report"},
    {"importers", "hub", "embeddings"},
    {"cli", "demo", "__main__", "__init__"},
]
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise SystemExit(f"{module}: not in any layer of tools/check_structure.py")


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports: ``from X import y`` is module ``X.y`` where that is a
    module, else ``X`` itself."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for a in node.names:
                out.add(f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix)
    return {n for n in out if n in modules}


def check() -> tuple[list[str], list[tuple[int, str]]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(f): f for f in files}
    graph: dict[str, set[str]] = {}
    problems = []
    for mod, path in modules.items():
        deps = {d for d in _imports(path, mod, set(modules)) if d != mod}
        graph[mod] = deps
        for d in sorted(deps):
            if _layer(d) > _layer(mod):
                problems.append(f"layer: {mod} imports {d} (a higher layer)")
    # circles: strongly connected components of the module graph (packages' __init__ re-exports included)
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    # a package importing its own submodules to re-export them is not a circle of logic
    for comp in sccs:
        inner = [m for m in comp if not any(m == c.rsplit(".", 1)[0] for c in comp if c != m)]
        if len(inner) > 1 or len(comp) > 2:
            problems.append(f"circle: {' -> '.join(comp)}")
    lengths = []
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                lengths.append((n, f"{mod}.{node.name} ({path.relative_to(PACKAGE.parent)}:{node.lineno})"))
                if n > MAX_FUNCTION_LINES:
                    problems.append(f"length: {mod}.{node.name} has {n} lines (over {MAX_FUNCTION_LINES})")
    return problems, sorted(lengths, reverse=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--longest", type=int, default=5, help="list this many of the longest functions")
    args = p.parse_args()
    problems, lengths = check()
    for n, name in lengths[: args.longest]:
        print(f"{n:4d} lines  {name}")
    for line in problems:
        print(line)
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
