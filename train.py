#!/usr/bin/env python
"""python train.py -opt options/....yml  (see README.md)"""
import sys

from atbsn.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
