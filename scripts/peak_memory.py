#!/usr/bin/env python
"""Run a command and report its wall time and the peak memory of its whole process tree.

    python scripts/peak_memory.py -- python -m pytest -q

The tree's resident memory (RSS of the command and every descendant, summed) is sampled every
0.2 s from /proc (Linux), so short spikes between samples can be missed; ``ru_maxrss`` of the
largest single process is reported as well.
"""
import os
import resource
import subprocess
import sys
import time


def tree_rss_bytes(root: int) -> int:
    children: dict = {}
    rss: dict = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(pid))
            rss[int(pid)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def main() -> int:
    argv = sys.argv[1:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        sys.exit(__doc__)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_bytes(proc.pid))
        time.sleep(0.2)
    seconds = time.perf_counter() - t0
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"peak_memory: exit {proc.returncode}, {seconds:.0f} s wall, process-tree peak RSS "
          f"{peak / 2**30:.2f} GiB (largest single process {largest:.2f} GiB)", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
