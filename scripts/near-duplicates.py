#!/usr/bin/env python3
# Counts near-duplicate code in a source tree: the runs of 8 or more consecutive code
# lines (comments, blank lines, braces and test modules left out) that appear again
# elsewhere once names, numbers and strings are blanked. A rough guide for keeping the
# storage layer written once: `scripts/near-duplicates.py crates/waggle/src/storage`.
# Overlapping windows are merged into runs; a run is counted once per place it occurs.
import os, re, sys
W = int(sys.argv[2]) if len(sys.argv) > 2 else 8
root = sys.argv[1]
tok = re.compile(r'"(?:\\.|[^"\\])*"|\b\d[\w.]*\b|\b[A-Za-z_]\w*\b|\S')
KEYWORDS = set('fn let mut if else match for while loop return async await impl pub struct enum use mod self Self Some None Ok Err true false in as where move dyn ref const static type trait crate super'.split())
def norm(line):
    out = []
    for t in tok.findall(line):
        if t.startswith('"'): out.append('S')
        elif t[0].isdigit(): out.append('N')
        elif re.match(r'[A-Za-z_]', t): out.append(t if t in KEYWORDS else 'I')
        else: out.append(t)
    return ' '.join(out)
lines = []  # (file, lineno, norm)
for dp, _, fs in os.walk(root):
    for f in sorted(fs):
        if not f.endswith('.rs'): continue
        p = os.path.join(dp, f)
        in_tests = False
        for i, l in enumerate(open(p), 1):
            s = l.strip()
            if s.startswith('#[cfg(test)]'): in_tests = True
            if in_tests or not s or s.startswith('//'): continue
            n = norm(s)
            if len(n.split()) < 3: continue  # braces, `}`, `)?;`
            lines.append((p, i, n))
from collections import defaultdict
by_file = defaultdict(list)
for p, i, n in lines: by_file[p].append((i, n))
windows = defaultdict(list)
for p, ls in by_file.items():
    for k in range(len(ls) - W + 1):
        key = tuple(n for _, n in ls[k:k+W])
        windows[key].append((p, k))
dup = defaultdict(set)
for key, places in windows.items():
    if len(places) > 1:
        for p, k in places:
            dup[p].update(range(k, k + W))
runs = 0; dup_lines = 0
for p, idx in dup.items():
    idx = sorted(idx); dup_lines += len(idx)
    runs += 1 + sum(1 for a, b in zip(idx, idx[1:]) if b != a + 1)
print(f"{root}: {runs} runs, {dup_lines} duplicated code lines of {len(lines)}")
