#!/usr/bin/env python3
"""Fails when a function in src/ (test code left out) is longer than a limit.

    scripts/fn_length.py [--limit N] [--top K] [SRC]

A function's length is its lines from `fn` to its closing brace, counted on
the code with comments and string literals taken out (the same stripping as
scripts/layers.py). It prints the K longest either way.
"""

import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layers import is_test_file, strip  # noqa: E402

FN = re.compile(r"\bfn\s+(\w+)\s*(<[^{;]*?>)?\s*\(")


def functions(code):
    """(name, first line, length) of every function with a body."""
    out = []
    for m in FN.finditer(code):
        i, depth = m.end(), 0
        # The body starts at the first `{` outside the signature's
        # parentheses; a `;` first means a declaration without one.
        parens = 1
        while i < len(code) and parens:
            parens += {"(": 1, ")": -1}.get(code[i], 0)
            i += 1
        while i < len(code) and code[i] not in "{;":
            i += 1
        if i >= len(code) or code[i] == ";":
            continue
        while i < len(code):
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
            if depth == 0:
                break
        first = code.count("\n", 0, m.start()) + 1
        last = code.count("\n", 0, i) + 1
        out.append((m.group(1), first, last - first + 1))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("src", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "src"))
    args = parser.parse_args()
    src = os.path.relpath(os.path.normpath(args.src))
    found = []
    for d, _, names in os.walk(src):
        for name in names:
            path = os.path.join(d, name)
            if not name.endswith(".rs") or is_test_file(path):
                continue
            with open(path, encoding="utf-8") as f:
                code = strip(f.read())
            found += [(n, path, line, name_) for name_, line, n in functions(code)]
    found.sort(reverse=True)
    for length, path, line, name in found[: args.top]:
        print(f"{length:5} {path}:{line} {name}")
    over = [f for f in found if f[0] > args.limit]
    if over:
        print(f"fn_length: {len(over)} function(s) over {args.limit} lines")
        return 1
    print(f"fn_length: {len(found)} functions, none over {args.limit} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
