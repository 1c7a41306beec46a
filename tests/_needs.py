"""What a test needs that may be missing here: outside CI it is skipped with the reason;
in CI it fails (CI installs every extra and Chromium, so a missing one is a bug)."""

import importlib
import os

import pytest

IN_CI = bool(os.environ.get("CI"))


def unavailable(message: str):
    """Fail (CI) or skip (elsewhere) the current test or module, saying why."""
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


def need(module: str, how: str):
    """Import an optional dependency, or `unavailable` with how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        unavailable(f"{module} is not installed ({e}); {how}")
