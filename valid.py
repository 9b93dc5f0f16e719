#!/usr/bin/env python
"""python valid.py -opt options/....yml  (see README.md)"""
import sys

from atbsn.cli import valid_main

if __name__ == "__main__":
    sys.exit(valid_main())
