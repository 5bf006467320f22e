"""Fixtures shared by the inference tests."""

import pyro
import pytest


@pytest.fixture(autouse=True)
def _clean_param_store():
    """Every test starts and ends with an empty Pyro param store (engines and guides keep
    parameters there; a test must neither see nor leave another's)."""
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
