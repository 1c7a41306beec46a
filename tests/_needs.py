"""`need(module)`: import an optional dependency; outside CI a missing one skips the
test with the reason, in CI it fails (CI installs every extra, so a missing one is a bug)."""

import importlib
import os

import pytest


def need(module: str, how: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        message = f"{module} is not installed ({e}); {how}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)
