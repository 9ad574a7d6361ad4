"""Shared test helpers: finding the real parts a test needs."""

from __future__ import annotations

import os
import shutil

import pytest


def require_binary(name: str) -> str:
    """The path of a real program a test needs.

    Under ``CI=true`` a missing program fails the test (CI must install it); elsewhere the test
    is skipped with the reason shown, so a developer sees what to install.
    """
    fallback = f"/usr/bin/{name}"
    path = shutil.which(name) or (fallback if os.path.exists(fallback) else None)
    if path is None:
        message = f"{name} is not installed (apt-get install the package that provides it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
