"""Scrub In command line and end-to-end workflows (``python -m scrubin``, ``scrubin``).

The stage packages (:mod:`imaging`, :mod:`registration`, :mod:`overlay`, :mod:`mentor`) hold
the algorithms and never import this package.
"""

__version__ = "0.1.0"
