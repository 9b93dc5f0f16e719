#!/usr/bin/env python
"""python test.py -opt options/....yml  (see README.md)"""
import sys

from atbsn.cli import test_main

if __name__ == "__main__":
    sys.exit(test_main())
