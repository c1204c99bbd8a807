#!/usr/bin/env python3
"""Groups a helgrind log's reports so that a person can judge them (make helgrind).

Usage: python3 tests/valgrind/helgrind_summary.py LOG...

Helgrind knows the pthread primitives only. netsock is Rust: its std::sync::Mutex, Condvar,
Once and channels are built on atomics and raw futex calls, which helgrind does not see, and
it does not model atomics either. So it reports, with "Locks held: none", accesses that are
in fact ordered. Each report ("context") is put in one of these groups:

  atomic    both accesses are atomic operations (their innermost frame is in
            core/src/sync/atomic.rs): never a data race by the language's definition.
  std       neither access is in netsock's own sources: std's internals (thread start and
            exit, its spin locks, thread-locals), mio, hashbrown, the allocator.
  review    plain accesses in netsock's code (or the tests'): each is listed with where both
            accesses and the memory come from. Such a pair is a false positive when the
            source shows both under one std Mutex (or ordered by a channel, a join, or a
            Release/Acquire atomic), and a real race otherwise.
  other     lock-order violations, pthread API misuse and whatever else helgrind says; those
            involve pthread objects helgrind does understand (in the C tests): look at them.

Prints the groups and one line per log; exits 0 (judging is for a person).
"""
import os
import re
import sys

FRAME = re.compile(r"\s+(?:at|by) 0x[0-9A-Fa-f]+: (.*?)(?: \(([^()]*)\))?$")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# netsock's source files as the debug info names them (file name only), less the names that
# std and the dependencies use too (mod.rs, lib.rs ...): a frame in one of these is netsock's.
AMBIGUOUS = {"mod.rs", "lib.rs", "unix.rs", "error.rs", "alloc.rs", "map.rs", "sync.rs"}
OWN_RS = {f for d, _, fs in os.walk(os.path.join(ROOT, "src")) for f in fs
          if f.endswith(".rs") and f not in AMBIGUOUS}


def blocks(path):
    cur = []
    with open(path, errors="replace") as f:
        for raw in f:
            line = re.sub(r"^==\d+== ?", "", raw.rstrip("\n"))
            if line.startswith("-----------------------------"):
                if cur:
                    yield cur
                cur = []
            else:
                cur.append(line)
    if cur:
        yield cur


def where(loc):
    """'file.rs:12' for a frame of our own (netsock or a test program), else None."""
    if not loc or loc.startswith("in /"):
        return None
    file = loc.split(":")[0]
    if file in OWN_RS or file.startswith("test_") and file.endswith(".c"):
        return loc
    return None


def access(frames):
    """(is_atomic, first own frame 'func @ file:line' or None)"""
    atomic = bool(frames) and (frames[0][1] or "").split(":")[0].endswith("atomic.rs")
    own = None
    for func, loc in frames:
        w = where(loc)
        if w:
            own = "%s @ %s" % (re.sub(r"<.*", "", func)[:60], w)
            break
    return atomic, own


def classify(block):
    start = next((i for i, l in enumerate(block) if l.startswith("Possible data race")
                  or l.startswith("Thread #") and ":" in l and "was created" not in l
                  and "is the program's main thread" not in l), None)
    if start is None:
        return None
    head = block[start]
    if not head.startswith("Possible data race"):
        return "other", head, []
    parts, cur = [], None
    for line in block[start:]:
        s = line.strip()
        if s.startswith(("Possible data race", "This conflicts", "Address", "Location")):
            cur = [s, []]
            parts.append(cur)
        elif s.startswith("Block was alloc'd"):
            cur = None
        else:
            m = FRAME.match(line)
            if m and cur is not None:
                cur[1].append((m.group(1), m.group(2)))
    acc = [access(p[1]) for p in parts if p[0].startswith(("Possible", "This conflicts"))]
    mem = [p for p in parts if p[0].startswith(("Address", "Location"))]
    memory = ""
    if mem:
        own = [access([f])[1] for f in mem[0][1]]
        own = [o for o in own if o]
        memory = re.sub(r"0x[0-9a-fA-F]+ ", "", mem[0][0])
        if own:
            memory += ", from " + own[0]
    kind = re.sub(r" at 0x[0-9A-Fa-f]+ by thread #\d+", "", head)
    if acc and all(a[0] for a in acc):
        group = "atomic"
    elif all(a[1] is None for a in acc):
        group = "std"
    else:
        group = "review"
    lines = ["%s%s" % ("atomic " if a[0] else "", a[1] or "(std/mio internals)") for a in acc]
    if memory:
        lines.append(memory)
    return group, kind, lines


def main():
    for path in sys.argv[1:]:
        groups = {"atomic": [], "std": [], "review": [], "other": []}
        total = ""
        with open(path, errors="replace") as f:
            for line in f:
                if "ERROR SUMMARY" in line:
                    total = re.sub(r"^==\d+== ", "", line.strip())
        for b in blocks(path):
            c = classify(b)
            if c:
                groups[c[0]].append(c[1:])
        print("##### %s: %s" % (path, total or "no ERROR SUMMARY (did it finish?)"))
        for name in ("other", "review", "std", "atomic"):
            items = groups[name]
            if not items:
                continue
            seen = {}
            for kind, lines in items:
                key = (kind, tuple(lines))
                seen[key] = seen.get(key, 0) + 1
            print("--- %s: %d contexts" % (name, len(items)))
            for (kind, lines), n in sorted(seen.items(), key=lambda kv: -kv[1]):
                print("  %s%s" % (kind, " (x%d)" % n if n > 1 else ""))
                for l in lines:
                    print("      " + l)
        print("%s: %d contexts: %d atomic, %d std-internal, %d to review, %d other"
              % (path, sum(len(v) for v in groups.values()), len(groups["atomic"]),
                 len(groups["std"]), len(groups["review"]), len(groups["other"])))


if __name__ == "__main__":
    main()
