"""Shared pytest fixtures.

`x64` turns on float64 for one test only (jax.enable_x64 is a thread-local
context), so comparisons with closed forms and scipy run in double precision
without changing the default float32 of other tests in the same session.
Use it per module with `pytestmark = pytest.mark.usefixtures("x64")`.
"""

import jax
import pytest


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield
