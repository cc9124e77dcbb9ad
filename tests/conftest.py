"""Root of the test tree.

Its presence puts ``tests/`` on ``sys.path`` (pytest's prepend import mode), so test
modules import the shared helpers by name: ``model_paths`` (where the light models and
../shared live) and ``onnx_builders`` (small ONNX models).
"""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cost_cache(tmp_path_factory):
    """The cost model's on-disk cache goes to a temporary folder, never the user's."""
    old = os.environ.get("IRC_CACHE_DIR")
    os.environ["IRC_CACHE_DIR"] = str(tmp_path_factory.mktemp("irc-cache"))
    yield
    if old is None:
        os.environ.pop("IRC_CACHE_DIR", None)
    else:
        os.environ["IRC_CACHE_DIR"] = old
