"""Lets the examples import netsock from the source tree (bindings/python/) when it is not
installed; an installed netsock (or one on PYTHONPATH) is used as is."""
import os
import sys

try:
    import netsock  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
