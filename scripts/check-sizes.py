#!/usr/bin/env python3
"""Fails when a function outside tests is longer than 80 lines, or an impl block longer than
250 lines, in src/, benches/ or tools/ (scripts/test.sh runs it; docs/architecture.md says why).

Lines are counted from the item's first line (after its attributes and doc comments) to its
closing brace, every line included (stricter than clippy's `too_many_lines`, which skips blank
and comment lines). `#[cfg(test)]` modules and `#[test]` functions are skipped. The scan is lexical (it
skips strings, chars and comments while matching braces), which is exact for rustfmt-formatted
code.
"""
import os
import re
import sys

MAX_FN = 80
MAX_IMPL = 250
ROOTS = ["src", "benches", "tools"]

FN_RE = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"[^\"]*\"\s+)?fn\s+(\w+)")
IMPL_RE = re.compile(r"^\s*(unsafe\s+)?impl\b(.*)")
TEST_MOD_RE = re.compile(r"^\s*#\[cfg\(test\)\]")
TEST_FN_RE = re.compile(r"^\s*#\[(tokio::)?test")


def strip_code(line, state):
    """Returns the line without strings, chars and comments; `state` carries a block comment
    or a raw/normal string across lines."""
    out = []
    i = 0
    n = len(line)
    while i < n:
        if state["block"]:
            end = line.find("*/", i)
            if end < 0:
                return "".join(out)
            state["block"] = False
            i = end + 2
            continue
        if state["string"] is not None:
            closing = state["string"]
            if closing == '"':
                j = i
                while j < n:
                    if line[j] == "\\":
                        j += 2
                        continue
                    if line[j] == '"':
                        break
                    j += 1
                if j >= n:
                    return "".join(out)
                state["string"] = None
                i = j + 1
            else:
                end = line.find(closing, i)
                if end < 0:
                    return "".join(out)
                state["string"] = None
                i = end + len(closing)
            continue
        c = line[i]
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"] = True
            i += 2
            continue
        m = re.match(r'(b?r)(#*)"', line[i:])
        if m and (i == 0 or not (line[i - 1].isalnum() or line[i - 1] == "_")):
            state["string"] = '"' + m.group(2)
            i += len(m.group(0))
            continue
        if c == '"':
            state["string"] = '"'
            i += 1
            continue
        if c == "'":
            m = re.match(r"'(\\.|\\u\{[0-9a-fA-F]+\}|[^\\'])'", line[i:])
            if m:
                i += len(m.group(0))
                continue
        out.append(c)
        i += 1
    return "".join(out)


def scan(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    state = {"block": False, "string": None}
    code = [strip_code(l, state) for l in lines]
    problems = []
    depth = 0
    # Open items: (kind, name, start line, depth at open, skip)
    stack = []
    pending = None  # an item header seen, waiting for its "{"
    skip_next = False
    skip_depth = None
    for no, (raw, c) in enumerate(zip(lines, code), start=1):
        if TEST_MOD_RE.match(raw) or TEST_FN_RE.match(raw):
            skip_next = True
        if pending is None:
            m = FN_RE.match(c)
            if m:
                pending = ("fn", m.group(7), no, skip_next)
                skip_next = False
            else:
                m = IMPL_RE.match(c)
                if m:
                    pending = ("impl", m.group(2).split("{")[0].strip(), no, skip_next)
                    skip_next = False
                elif re.match(r"^\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", c):
                    if skip_next and skip_depth is None:
                        skip_depth = depth
                    skip_next = False
        for ch in c:
            if ch == "{":
                if pending is not None:
                    stack.append((pending[0], pending[1], pending[2], depth, pending[3]))
                    pending = None
                depth += 1
            elif ch == "}":
                depth -= 1
                if skip_depth is not None and depth == skip_depth:
                    skip_depth = None
                if stack and stack[-1][3] == depth:
                    kind, name, start, _, skip = stack.pop()
                    if skip or skip_depth is not None:
                        continue
                    count = no - start + 1
                    limit = MAX_FN if kind == "fn" else MAX_IMPL
                    if count > limit:
                        problems.append(f"{path}:{start}: {kind} {name} is {count} lines (at most {limit})")
            elif ch == ";" and pending is not None and depth >= 0:
                # A declaration without a body (trait method, extern fn).
                pending = None
    return problems


def main():
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(top)
    problems = []
    for root in ROOTS:
        for dirpath, _, files in os.walk(root):
            for name in sorted(files):
                if name.endswith(".rs"):
                    problems.extend(scan(os.path.relpath(os.path.join(dirpath, name))))
    for p in problems:
        print(p)
    if problems:
        print(f"\n{len(problems)} item(s) too long: split them (docs/architecture.md, 'Size limits')", file=sys.stderr)
        return 1
    return 0



if __name__ == "__main__":
    sys.exit(main())
