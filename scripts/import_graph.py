#!/usr/bin/env python3
"""The module import graph of each workspace crate, derived from the source, and its cycles.

Usage: scripts/import_graph.py [--crate NAME]... [--dot] [--fail-on-cycle]

A node is a source file's module (`lib.rs` → the crate root, `a.rs` / `a/mod.rs` → `a`,
`a/b.rs` → `a::b`; inline `mod x { … }` blocks belong to their file). An edge m → n means m's
non-test code names an item of n through a `crate::`, `super::` or `self::` path, or a path
into one of m's own child modules (`child::item`), in `use` declarations (brace groups
expanded) or inline. Paths through the crate root's `pub use`
re-exports resolve to the module that defines the item. Re-exports themselves (`pub use` in a
parent) are not edges: they are how a parent publishes a child, not a dependency of its code.
`#[cfg(test)]` modules are skipped: tests may reach anywhere.

Prints, per crate, the strongly connected components with more than one module (import cycles)
and the edges inside them. With --fail-on-cycle the exit status is 1 when any crate has one.
(Issue 16: the layering redesign brings this to zero and CI then runs it with --fail-on-cycle.)
"""

import argparse
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def strip(text):
    """Source without comments, string/char literals and `#[cfg(test)]` items."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not text[i - 1].isalnum()):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            i = n if j < 0 else j + len(end)
            out.append('""')
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            i += len(re.match(r"'(\\.|[^\\'])'", text[i:i + 4]).group(0))
        else:
            out.append(c)
            i += 1
    s = "".join(out)
    # Drop `#[cfg(test)]` items: the attribute, then one item up to its matching brace or `;`.
    while True:
        m = re.search(r"#\[cfg\(test\)\]", s)
        if not m:
            return s
        j = m.end()
        depth, k = 0, j
        while k < len(s):
            if s[k] == "{":
                depth += 1
            elif s[k] == "}":
                depth -= 1
                if depth == 0:
                    k += 1
                    break
            elif s[k] == ";" and depth == 0:
                k += 1
                break
            k += 1
        s = s[: m.start()] + s[k:]


def modules(src):
    """{module path: file} for a crate's src folder ("" is the root)."""
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)[:-3].split(os.sep)
            if rel == ["lib"] or rel == ["main"]:
                key = ""
            elif rel[-1] == "mod":
                key = "::".join(rel[:-1])
            else:
                key = "::".join(rel)
            if rel[0] == "bin":
                continue
            mods[key] = os.path.join(dirpath, f)
    return mods


def expand_use(tree):
    """`a::{b, c::{d, e}}` → ["a::b", "a::c::d", "a::c::e"]."""
    tree = re.sub(r"\s+", "", tree)
    i = tree.find("{")
    if i < 0:
        return [tree]
    prefix, body = tree[:i], tree[i + 1 : tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    return [p for part in parts if part for p in expand_use(prefix + part)]


def absolute(path, here, inline=0):
    """A `crate::`/`super::`/`self::` path as a list of segments from the crate root. `inline` is
    how many inline `mod x { … }` blocks of the file the path sits in: their `super` is still
    the file's module."""
    segs = [s for s in path.split("::") if s]
    base = here.split("::") if here else []
    if segs[0] == "crate":
        return segs[1:]
    cur = list(base)
    # In `a/b.rs` (module a::b) `super` is `a`; in `a/mod.rs` (module a) it is the root.
    while segs and segs[0] in ("self", "super"):
        if segs[0] == "super":
            if inline:
                inline -= 1
            else:
                cur = cur[:-1]
        segs = segs[1:]
    return cur + segs


def inline_spans(text):
    """(start, end) of every inline `mod x { … }` block."""
    spans = []
    for m in re.finditer(r"\bmod\s+\w+\s*\{", text):
        depth, k = 0, m.end() - 1
        while k < len(text):
            depth += text[k] == "{"
            depth -= text[k] == "}"
            k += 1
            if depth == 0:
                break
        spans.append((m.start(), k))
    return spans


def resolve(segs, mods, reexports):
    """The module (longest existing prefix) that defines the item `segs` names."""
    for k in range(len(segs), -1, -1):
        m = "::".join(segs[:k])
        if m in mods:
            if m == "" and segs and segs[0] in reexports:
                return reexports[segs[0]]
            return m
    return None


def graph(crate_dir):
    src = os.path.join(crate_dir, "src")
    mods = modules(src)
    texts = {m: strip(open(f, encoding="utf-8").read()) for m, f in mods.items()}
    # The root's `pub use x::{A, B}` re-exports: A → x.
    reexports = {}
    for tree in re.findall(r"pub\s+use\s+([^;]+);", texts.get("", "")):
        for p in expand_use(tree):
            segs = absolute(p if p.startswith(("crate", "self", "super")) else "crate::" + p, "")
            target = resolve(segs[:-1], mods, {})
            if target:
                reexports[segs[-1]] = target
    edges = {m: set() for m in mods}
    for m, text in texts.items():
        spans = inline_spans(text)
        depth = lambda pos: sum(a <= pos < b for a, b in spans)
        paths = []  # (path, inline depth)
        for u in re.finditer(r"(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text):
            vis, tree = u.group(1) or "", u.group(2)
            if vis.strip() == "pub":
                continue  # a re-export
            d = depth(u.start())
            for p in expand_use(tree):
                if p.startswith(("crate::", "super::", "self::")):
                    paths.append((p, d))
                elif "::" in p and (f"{m}::" if m else "") + p.split("::")[0] in mods:
                    # `child::item`: a path relative to this module, into one of its children
                    paths.append(("self::" + p, d))
        body = re.sub(r"(pub(?:\([^)]*\))?\s+)?use\s+[^;]+;", lambda x: " " * len(x.group(0)), text)
        for x in re.finditer(r"(?<![:\w])([a-z_][a-z0-9_]*)((?:::\w+)+)", body):
            head, rest = x.group(1), x.group(2)
            if head in ("crate", "super", "self"):
                paths.append((head + rest, depth(x.start())))
            elif (f"{m}::" if m else "") + head in mods:
                paths.append(("self::" + head + rest, depth(x.start())))
        for p, d in paths:
            t = resolve(absolute(p, m, d), mods, reexports)
            if t is not None and t != m and t != "":
                edges[m].add(t)
    return mods, edges


def sccs(edges):
    """Tarjan's strongly connected components."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--crate", action="append", help="crate folder name under crates/ (default: all)")
    p.add_argument("--dot", action="store_true", help="print the graph in Graphviz dot")
    p.add_argument("--fail-on-cycle", action="store_true")
    a = p.parse_args()
    crates_dir = os.path.join(ROOT, "crates")
    names = a.crate or sorted(d for d in os.listdir(crates_dir) if os.path.isdir(os.path.join(crates_dir, d, "src")))
    cycles = 0
    for name in names:
        mods, edges = graph(os.path.join(crates_dir, name))
        if a.dot:
            print(f'digraph "{name}" {{')
            for m in sorted(edges):
                for t in sorted(edges[m]):
                    print(f'  "{m or "lib"}" -> "{t}";')
            print("}")
            continue
        comps = [c for c in sccs(edges) if len(c) > 1]
        n_edges = sum(len(v) for v in edges.values())
        print(f"{name}: {len(mods)} modules, {n_edges} edges, {len(comps)} cycle(s)")
        for c in comps:
            cycles += 1
            print(f"  cycle of {len(c)}: {', '.join(c)}")
            for m in c:
                inside = sorted(t for t in edges[m] if t in c)
                print(f"    {m} → {', '.join(inside)}")
    if a.fail_on_cycle and cycles:
        sys.exit(1)


if __name__ == "__main__":
    main()
