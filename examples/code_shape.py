#!/usr/bin/env python3
"""The shape of runner's code: the module dependency graph (who imports `crate::x` from whom,
test modules left out, the rule tests/layers.rs enforces), its import cycles, and the longest
functions.

    python3 examples/code_shape.py [SRC_DIR]     # default: src

Run it on an older checkout (`git worktree add /tmp/old <commit>`) to compare.
"""
import re
import sys
from pathlib import Path


def module_name(src: Path, path: Path) -> str:
    rel = path.relative_to(src).with_suffix("")
    name = str(rel).replace("/", "::")
    return name[: -len("::mod")] if name.endswith("::mod") else name


def imports(text: str, modules: set) -> set:
    code = text.split("#[cfg(test)]\nmod tests")[0]
    found = set()
    for m in re.finditer(r"crate::([A-Za-z0-9_]+)(?:::([A-Za-z0-9_]+))?", code):
        first, second = m.group(1), m.group(2)
        nested = f"{first}::{second}" if second else None
        if nested in modules:
            found.add(nested)
        elif first in modules:
            found.add(first)
    return found


def cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def functions(path: Path):
    """(lines, name) of every `fn` outside test modules, by brace matching."""
    lines = path.read_text().split("\n")
    end = next((i for i, l in enumerate(lines) if l.startswith("#[cfg(test)]")), len(lines))
    i = 0
    while i < end:
        m = re.match(r"\s*(pub(\([a-z]+\))? )?(const )?(unsafe )?fn ([a-z_0-9]+)", lines[i])
        if not m:
            i += 1
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            depth += lines[j].count("{") - lines[j].count("}")
            started = started or "{" in lines[j]
            if started and depth <= 0:
                break
            if not started and lines[j].rstrip().endswith(";"):
                break  # a trait method without a body
            j += 1
        if started:
            yield j - i + 1, m.group(5)
        i += 1


def main():
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
    files = sorted(src.rglob("*.rs"))
    modules = {module_name(src, f) for f in files} - {"main", "lib"}
    graph = {}
    for f in files:
        m = module_name(src, f)
        if m in modules:
            graph[m] = sorted(imports(f.read_text(), modules) - {m})
    print("# module -> modules it imports")
    for m in sorted(graph):
        print(f"{m} -> {', '.join(graph[m]) or '(nothing)'}")
    found = cycles(graph)
    print(f"\n# import cycles: {len(found)}")
    for c in found:
        print("  " + " <-> ".join(c))
    fns = sorted(
        ((n, f"{module_name(src, f) if f.stem not in ('main', 'lib') else f.stem}::{name}")
         for f in files for n, name in functions(f)),
        reverse=True,
    )
    print(f"\n# longest functions (lines), of {len(fns)}")
    for n, name in fns[:8]:
        print(f"  {n:4} {name}")
    print(f"  functions over 100 lines: {sum(1 for n, _ in fns if n > 100)}")


if __name__ == "__main__":
    main()
