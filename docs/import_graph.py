"""Draw the import graph of `mmrec` and its flows package (mermaid) and list its import cycles.

    python docs/import_graph.py [ROOT] [--label after]    # ROOT: a checkout (default: this one)

Reads the source with `ast` (nothing is imported). Every `import` counts, also those inside
functions (they still tie the modules together; they only move the failure to run time), except
those under `if TYPE_CHECKING:` (never executed).
Modules are grouped by package for the picture (`mmrec.models.*` -> `models`); the cycles are
computed on single modules (strongly connected components of the module graph).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

#: the orchestrator's package: `mmrec_flows` (before the rename, a generic top-level `flows`)
FLOW_PACKAGES = ("mmrec_flows", "flows")
PACKAGES = ("mmrec", *FLOW_PACKAGES)


def is_flows(module: str) -> bool:
    return module.split(".")[0] in FLOW_PACKAGES


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        if not (root / pkg).is_dir():  # a checkout holds one of the flow package names
            continue
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:` (annotations only, never imported at run time)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)
    return out


def edges(root: Path) -> dict[str, set[str]]:
    mods = modules(root)
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join([*base, node.module] if node.module else base)
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
            for t in targets:
                # the longest known module the name starts with (`from a.b import c` may name module a.b.c)
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    graph[name].add(t)
    return graph


def group(module: str) -> str:
    parts = module.split(".")
    if is_flows(module):
        return parts[0]
    return parts[1] if len(parts) > 1 else "mmrec"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return sorted(out, key=len, reverse=True)


def mermaid(graph: dict[str, set[str]]) -> str:
    grouped: dict[str, set[str]] = defaultdict(set)
    for a, bs in graph.items():
        for b in bs:
            ga, gb = group(a), group(b)
            if ga != gb:
                grouped[ga].add(gb)
    lines = ["flowchart LR"]
    for a in sorted(grouped):
        for b in sorted(grouped[a]):
            style = " -.->|orchestrator!| " if not is_flows(a) and is_flows(b) else " --> "
            lines.append(f"  {a}{style}{b}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--label", default="")
    args = ap.parse_args(argv)
    graph = edges(args.root)
    found = cycles(graph)
    print(f"### Import graph {args.label}".rstrip())
    print(
        f"\n{len(modules(args.root))} modules, {sum(len(v) for v in graph.values())} import edges; "
        f"{len(found)} import cycle(s) between modules:\n"
    )
    for comp in found:
        print(f"- {len(comp)} modules: " + ", ".join(f"`{c}`" for c in comp))
    lib_to_flows = sorted(a for a, bs in graph.items() if not is_flows(a) and any(is_flows(b) for b in bs))
    print(f"\nlibrary modules importing the flows package: {', '.join(f'`{m}`' for m in lib_to_flows) or 'none'}\n")
    print("```mermaid")
    print(mermaid(graph))
    print("```")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
