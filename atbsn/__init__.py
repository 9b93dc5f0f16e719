"""Self-supervised real-world image denoising: AT-BSN, D-BSN, C-BSN and Neighbor2Neighbor.

Importing the package is light: sub-packages (archs, models, data, ...) load on first use.
"""
__version__ = "0.1.0"
