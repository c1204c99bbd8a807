"""The package as installed: what pip put where, its version, its library lookup."""
import importlib.metadata
import os
import re
import subprocess
import sys

import netsock

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cargo_version():
    with open(os.path.join(REPO_ROOT, "Cargo.toml")) as f:
        return re.search(r'^version = "(.*)"', f.read(), re.M).group(1)


def test_versions_agree():
    # the package, its metadata, the library and Cargo.toml name one release
    assert netsock.__version__ == cargo_version() == netsock.version()
    if os.environ.get("NETSOCK_TEST_INSTALLED"):
        assert importlib.metadata.version("netsock") == netsock.__version__


def test_typed_package():
    here = os.path.dirname(netsock.__file__)
    assert os.path.basename(here) == "netsock"
    assert os.path.exists(os.path.join(here, "py.typed"))


def _import_with(env):
    code = "import netsock; print(netsock.LIBRARY_PATH)"
    full = {k: v for k, v in os.environ.items() if not k.startswith("NETSOCK_LIB")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                          text=True, timeout=30, cwd="/")


def test_library_lookup_order():
    lib = os.path.abspath(netsock.LIBRARY_PATH)
    if os.sep not in netsock.LIBRARY_PATH:
        lib = os.path.join(REPO_ROOT, "build", "libnetsock.so")
    out = _import_with({"NETSOCK_LIBRARY": lib})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == lib
    out = _import_with({"NETSOCK_LIB": lib})  # the older name still works
    assert out.stdout.strip() == lib
    # NETSOCK_LIBRARY wins, and a path that cannot be loaded fails the import, saying which
    out = _import_with({"NETSOCK_LIBRARY": "/nonexistent/libnetsock.so", "NETSOCK_LIB": lib})
    assert out.returncode != 0
    assert "NETSOCK_LIBRARY" in out.stderr and "/nonexistent/libnetsock.so" in out.stderr
