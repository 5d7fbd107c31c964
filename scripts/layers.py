#!/usr/bin/env python3
"""Checks the layering of pipeline/src that lib.rs states: each top-level module (a file or
a folder) uses only the modules listed before it in LAYERS, so there is no cycle between
folders and nothing reaches up (the ground floor, `config`, `problem` and `storage`, uses
no data-path module). Test modules (`#[cfg(test)]`) are not counted. It also checks that
every `lib.rs` and `mod.rs` names each of its submodules in its `//!` docs (the Layouts).
Exits 1 and names each problem; run by .ci/run."""
import os
import re
import sys

REPO = os.path.join(os.path.dirname(__file__), "..")
ROOT = os.path.join(REPO, "pipeline", "src")
# Every module file of these crates names each of its submodules in its `//!` docs.
CRATES = ["pipeline/src", "sinks/src", "udfs/src", "benchmarks/src"]

# Bottom first: a module may use only those listed before it.
LAYERS = [
    # The ground floor.
    "error", "config", "problem", "reltime", "storage", "auth", "metrics", "supervisor",
    "ballista",
    # The data path.
    "ingest", "users", "compat", "jobs", "query", "segments", "profiles", "webhooks",
    "exports", "flows",
    # The doors, the composition of a node, and the command line.
    "server", "node", "cli",
]
# Pairs kept apart although the order would allow them: the command line runs a node
# through `node`, never the doors' internals.
APART = {("cli", "server")}
# The binary's entry point and the crate root are above everything.
TOP = {"lib", "main"}


def strip_tests(src):
    """The source without its `#[cfg(test)]` items (a module or a function)."""
    lines = src.split("\n")
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"(\s*)#\[cfg\(test\)\]", lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent = m.group(1)
        j = i + 1
        while j < len(lines) and lines[j] != indent + "}":
            if j == i + 1 and lines[j].rstrip().endswith(";"):
                break  # `#[cfg(test)] mod tests;`
            j += 1
        i = j + 1
    return "\n".join(out)


def uses(src):
    found = set(re.findall(r"crate::([a-z_][a-z0-9_]*)", src))
    for group in re.findall(r"use crate::\{([^}]*)\}", src, re.S):
        found.update(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
    return found


def unlisted_modules():
    """Submodules a `lib.rs` or `mod.rs` declares but its `//!` docs do not name."""
    out = []
    for crate in CRATES:
        for dirpath, _, files in os.walk(os.path.join(REPO, crate)):
            for f in files:
                if f not in ("lib.rs", "mod.rs"):
                    continue
                path = os.path.join(dirpath, f)
                src = open(path).read()
                doc = "\n".join(l for l in src.split("\n") if l.startswith("//!"))
                declared = re.findall(r"^(?:pub(?:\([^)]*\))? )?mod (\w+);", src, re.M)
                for m in declared:
                    if m != "tests" and f"`{m}`" not in doc:
                        out.append(f"{os.path.relpath(path, REPO)}: module `{m}` is not in its docs")
    return out


def main():
    declared = set(re.findall(r"^pub mod (\w+);", open(os.path.join(ROOT, "lib.rs")).read(), re.M))
    declared.add("error")
    missing = declared - set(LAYERS)
    if missing:
        print(f"layers.py: modules of lib.rs missing from LAYERS: {sorted(missing)}")
        return 1
    rank = {m: i for i, m in enumerate(LAYERS)}
    broken = []
    for dirpath, _, files in os.walk(ROOT):
        for f in sorted(files):
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, ROOT)
            top = rel.split(os.sep)[0].removesuffix(".rs")
            if top in TOP or f.endswith("_tests.rs"):
                continue
            for used in sorted(uses(strip_tests(open(path).read()))):
                if used == top or used not in rank:
                    continue
                if rank[used] > rank[top]:
                    broken.append(f"{rel}: `{top}` uses `{used}`, which is above it")
                elif (top, used) in APART:
                    broken.append(f"{rel}: `{top}` uses `{used}`, which it must not (APART)")
    broken += unlisted_modules()
    for b in broken:
        print(b)
    if broken:
        print(f"layers.py: {len(broken)} problem(s): imports against LAYERS, modules not in docs")
        return 1
    print(f"layers.py: {len(LAYERS)} layers, no import reaches up, every module in its docs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
