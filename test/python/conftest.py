"""pytest setup for the Python package: a private kernel cache and package
store per session, so runs do not depend on (or fill) the user's caches."""

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def pytest_configure(config):
    import tempfile
    cache = tempfile.mkdtemp(prefix="attnc-pytest-")
    os.environ["XDG_CACHE_HOME"] = cache
    os.environ.pop("ATTNC_PACKAGE_DIR", None)
    os.environ.pop("ATTNC_NO_COMPILER", None)


def has_compiler():
    import importlib
    try:
        importlib.import_module("attnc._attnc")
    except ImportError:
        return False
    return True


requires_compiler = pytest.mark.skipif(
    not has_compiler(), reason="the attnc compiler module is not built")


@pytest.fixture
def examples():
    return EXAMPLES
