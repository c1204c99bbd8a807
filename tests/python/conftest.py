"""Which netsock the tests use: the installed package (make test-python installs it into a fresh
virtual environment and sets NETSOCK_TEST_INSTALLED=1, so a copy from the source tree would be an
error), or, run by hand without one installed, the source tree's bindings/python."""
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINDING_DIR = os.path.join(REPO_ROOT, "bindings", "python")

try:
    import netsock  # noqa: F401
except ImportError:
    if os.environ.get("NETSOCK_TEST_INSTALLED"):
        raise
    sys.path.insert(0, BINDING_DIR)
    import netsock  # noqa: F401

if os.environ.get("NETSOCK_TEST_INSTALLED"):
    where = os.path.realpath(netsock.__file__)
    if where.startswith(os.path.realpath(BINDING_DIR) + os.sep):
        raise ImportError("netsock was imported from the source tree (%s), not the installed "
                          "package" % where)
