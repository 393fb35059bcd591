#!/usr/bin/env python3
"""Checks the crate's dependency shape from its `use` lines and paths.

    scripts/layers.py [--graph] [SRC]

Fails (exit 1), naming each offending line, on
  - an arrow from a lower layer to a higher one (the table `LAYERS` below);
  - a circle of files: files that reach each other through their uses.

A file's arrows are the `crate::`, `super::` and `self::` paths in its code
(comments and test code are left out: tests may reach anywhere). A path is
resolved to the file that defines the item, following `pub use`
re-exports, so `super::Thing` re-exported by a `mod.rs` from a sibling is
an arrow to that sibling. A child's arrows to its own ancestors are not
circles: a module owns its children, and a child using the types its
parent declares is how Rust lays a module out.
"""

import os
import re
import sys
from collections import defaultdict

# Top-level modules from the bottom up. A module may use those on its own
# row or a lower one, never an upper one (and a circle between two of one
# row is still a circle).
LAYERS = [
    ["domain", "progress", "listener", "settings", "deferred", "chunks", "traces"],
    ["store", "metrics"],
    ["idempotency", "projection"],
    ["audit"],
    ["app"],
    ["tls", "auth"],
    ["config"],
    ["grpc", "cloud"],
    ["server"],
    ["cli"],
]
RANK = {m: i for i, row in enumerate(LAYERS) for m in row}
# lib.rs and main.rs sit on top of everything.
TOP = len(LAYERS)


def module_of(path, src):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return ()
    return tuple(rel)


def is_test_file(path):
    name = os.path.basename(path)
    return name == "tests.rs" or name.endswith("_tests.rs") or f"{os.sep}tests{os.sep}" in path


RAW = re.compile(r'r(#*)"')
CHAR = re.compile(r"'(\\.[^']*|[^'\\\n])'")


def literals_and_comments_out(text):
    """`text` with comments gone and string and char literals emptied,
    newlines kept (so line numbers hold)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and RAW.match(text, i) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = RAW.match(text, i).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and CHAR.match(text, i):
            out.append("''")
            i = CHAR.match(text, i).end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip(text):
    """Code without comments, literals and `#[cfg(test)]` blocks."""
    text = literals_and_comments_out(text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*(;|\{)", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        if m.group(3) == ";":
            i = m.end()
            continue
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e] (aliases dropped)."""
    tree = re.sub(r"\s+as\s+\w+", "", tree).replace(" ", "").replace("\n", "")
    if "{" not in tree:
        return [tree] if tree else []
    head, _, rest = tree.partition("{")
    body = rest[: rest.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    parts.append(cur)
    return [head + p if p != "self" else head.rstrip(":") for part in parts for p in expand(part)]


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}  # module path -> file
        self.code = {}  # file -> stripped code
        for d, _, names in os.walk(src):
            for n in names:
                if n.endswith(".rs") and os.path.join(d, n) != os.path.join(src, "main.rs"):
                    p = os.path.join(d, n)
                    self.files[module_of(p, src)] = p
        for mod, p in self.files.items():
            with open(p, encoding="utf-8") as f:
                self.code[p] = strip(f.read())
        self.exports = {m: self.reexports(m) for m in self.files}

    def uses(self, mod):
        """(line, absolute path) for every path the module's file names."""
        code = self.code[self.files[mod]]
        found = []
        for m in re.finditer(r"\buse\s+([^;]+);", code):
            line = code.count("\n", 0, m.start()) + 1
            for p in expand(m.group(1)):
                found.append((line, p, True))
        without_uses = re.sub(r"\buse\s+[^;]+;", lambda m: "\n" * m.group(0).count("\n"), code)
        for m in re.finditer(r"\b(?:crate|super|self)(?:::\w+)+", without_uses):
            line = without_uses.count("\n", 0, m.start()) + 1
            found.append((line, m.group(0), False))
        out = []
        for line, p, in_use in found:
            absolute = self.absolute(mod, p.split("::"), in_use)
            if absolute is not None:
                out.append((line, absolute))
        return out

    def absolute(self, mod, segs, in_use):
        segs = [s for s in segs if s]
        if not segs:
            return None
        base = list(mod)
        if segs[0] == "crate":
            base, segs = [], segs[1:]
        elif segs[0] in ("super", "self"):
            while segs and segs[0] in ("super", "self"):
                if segs[0] == "super":
                    base = base[:-1]
                segs = segs[1:]
        elif in_use and tuple(base + [segs[0]]) in self.files:
            pass  # a child module, named from its parent
        else:
            return None  # an external crate or a name in scope
        return tuple(base + segs)

    def reexports(self, mod):
        """Names that a module re-exports: name -> absolute path."""
        code = self.code[self.files[mod]]
        out = {}
        for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", code):
            for p in expand(m.group(1)):
                segs = p.split("::")
                absolute = self.absolute(mod, segs, True)
                if absolute is not None and segs[-1] not in ("*",):
                    out[segs[-1]] = absolute
        return out

    def file_of(self, path, seen=0):
        """The file that defines what an absolute path names."""
        path = tuple(path)
        for k in range(len(path), 0, -1):
            mod = path[:k]
            if mod in self.files:
                if k < len(path) and seen < 8:
                    target = self.exports[mod].get(path[k])
                    if target is not None and target != path:
                        return self.file_of(target + path[k + 1 :], seen + 1)
                return self.files[mod]
        return None


def sccs(nodes, edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    src = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "src")
    src = os.path.relpath(os.path.normpath(src))
    crate = Crate(src)
    rank_of = lambda mod: RANK.get(mod[0], None) if mod else TOP
    edges = defaultdict(set)
    why = {}
    problems = []
    for mod, path in sorted(crate.files.items()):
        if is_test_file(path):
            continue
        if mod and mod[0] not in RANK:
            problems.append(f"{path}: module `{mod[0]}` has no row in scripts/layers.py's LAYERS")
            continue
        for line, target in crate.uses(mod):
            to = crate.file_of(target)
            if to is None or to == path or is_test_file(to):
                continue
            to_mod = module_of(to, src)
            if rank_of(to_mod) is not None and rank_of(to_mod) > rank_of(mod):
                problems.append(
                    f"{path}:{line}: `{mod[0]}` (layer {rank_of(mod)}) uses "
                    f"`{'::'.join(target)}` of `{to_mod[0]}` (layer {rank_of(to_mod)}), a higher layer"
                )
            if mod[: len(to_mod)] == to_mod:
                continue  # a child using its ancestor
            edges[path].add(to)
            why.setdefault((path, to), (line, "::".join(target)))
    for comp in sccs(sorted(crate.code), edges):
        members = set(comp)
        lines = [
            f"    {a}:{why[(a, b)][0]} -> {b} ({why[(a, b)][1]})"
            for a in sorted(members)
            for b in sorted(edges[a] & members)
        ]
        problems.append("a circle of files:\n" + "\n".join(lines))
    if "--graph" in sys.argv:
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f"{a} -> {b}")
    for p in problems:
        print(p)
    files = len([p for p in crate.files.values() if not is_test_file(p)])
    if problems:
        print(f"layers: {len(problems)} problem(s) in {files} files")
        return 1
    print(f"layers: {files} files, no circle, no arrow to a higher layer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
