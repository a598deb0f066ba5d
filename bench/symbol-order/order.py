#!/usr/bin/env python3
"""Turns callgrind traces of a stripped mesh-proxy into lld's symbol order.

usage: order.py LINK_MAP OUT NAME=GLOB...

LINK_MAP is the map lld wrote for the traced binary (MESH_PROXY_LINK_MAP),
OUT the symbol ordering file, and each NAME=GLOB a group of callgrind outputs made
with --dump-instr=yes --compress-pos=no --compress-strings=no. Functions are
listed group by group, in the order each group first ran them, each once: the
first groups are what an idle sidecar has run, so they end up together.

A stripped binary has no symbol table, but its link map names the input
section (.text.<symbol>) at every address, and callgrind reports the
addresses of the instructions it ran relative to the object.
"""
import bisect
import glob
import re
import sys

SECTION = re.compile(
    r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s+\S*:\(\.text\.(\S+)\)$"
)


# LLVM puts cold, hot and start-up functions in .text.unlikely.<symbol> (and
# .text.hot., .text.startup., .text.exit., .text.split.); lld orders by symbol.
PREFIXES = ("unlikely.", "hot.", "startup.", "exit.", "split.")


def symbol_of(section_suffix):
    for p in PREFIXES:
        if section_suffix.startswith(p):
            return section_suffix[len(p):]
    return section_suffix


def sections(map_path):
    secs = []
    with open(map_path) as f:
        for line in f:
            m = SECTION.match(line)
            if m and int(m.group(2), 16):
                secs.append((int(m.group(1), 16), int(m.group(2), 16), symbol_of(m.group(3))))
    secs.sort()
    return secs


def functions_run(trace, secs, starts):
    """Symbols of the mesh-proxy functions a callgrind output ran, in order."""
    out, seen, obj = [], set(), None
    with open(trace) as f:
        for line in f:
            if line.startswith("ob="):
                obj = line[3:].strip()
            elif line.startswith("0x") and obj and obj.endswith("/mesh-proxy"):
                addr = int(line.split()[0], 16)
                i = bisect.bisect_right(starts, addr) - 1
                if i >= 0 and addr < secs[i][0] + secs[i][1]:
                    name = secs[i][2]
                    if name not in seen:
                        seen.add(name)
                        out.append(name)
    return out


def trace_key(path):
    # cg.<pid>.out.<n>: by process, then dump number (the final dump last).
    m = re.search(r"\.(\d+)\.out(?:\.(\d+))?$", path)
    if not m:
        return (0, 0)
    return (int(m.group(1)), int(m.group(2)) if m.group(2) else 1 << 30)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    map_path, out_path, groups = sys.argv[1], sys.argv[2], sys.argv[3:]
    secs = sections(map_path)
    if not secs:
        sys.exit(f"order.py: no .text.<symbol> sections in {map_path}: not an lld map?")
    starts = [s[0] for s in secs]
    size = {s[2]: s[1] for s in secs}
    order, seen, notes = [], set(), []
    for g in groups:
        name_of_group, _, pattern = g.partition("=")
        traces = sorted(glob.glob(pattern), key=trace_key)
        if not traces:
            sys.exit(f"order.py: no trace matches {pattern} ({name_of_group})")
        new = []
        for t in traces:
            for name in functions_run(t, secs, starts):
                if name not in seen:
                    seen.add(name)
                    new.append(name)
        order.extend(new)
        kb = sum(size[n] for n in new) / 1024
        notes.append(f"{name_of_group}: {len(new)} more functions, {kb:.0f} KiB")
        print(f"order.py: {notes[-1]}", file=sys.stderr)
    with open(out_path, "w") as f:
        f.write("# lld --symbol-ordering-file for mesh-proxy (proxy/build.rs), written by\n")
        f.write("# bench/symbol-order/generate.sh; do not edit. Groups, in order:\n")
        for n in notes:
            f.write(f"#   {n}\n")
        for name in order:
            f.write(name + "\n")


if __name__ == "__main__":
    main()
