#!/usr/bin/env python
"""Check the project's networks, losses and metrics against the official reference tensors.

    python scripts/verify_reference.py ../shared/reference

One line per check with its relative error; exits 1 if any check fails or a file the project
should understand cannot be checked.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from atbsn.refcheck import run_checks  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="folder of reference .pt files (format: shared/reference/README.md)")
    args = p.parse_args()
    if not os.path.isdir(args.folder):
        print(f"error: reference folder not found: '{args.folder}'", file=sys.stderr)
        return 2
    results, errors, pending = run_checks(args.folder)
    for r in results:
        print(f"{'PASS' if r.ok else 'FAIL'}  {r.file:34s} {r.name:42s} rel_err={r.rel_err:.3e} (tol {r.tol:.0e})")
    for e in errors:
        print(f"ERROR {e}")
    for f in pending:
        print(f"SKIP  {f:34s} not covered yet: no check registered")
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed} passed, {failed} failed, {len(errors)} errors, {len(pending)} files not covered yet")
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
