"""Shared pytest fixtures.

`x64` turns on float64 for one test only (jax.enable_x64 is a thread-local
context), so comparisons with closed forms and scipy run in double precision
without changing the default float32 of other tests in the same session.
Use it per module with `pytestmark = pytest.mark.usefixtures("x64")`.
"""

import os

import jax
import pytest

# End-to-end tests compile the same programs many times (a fresh jit per
# run): a persistent compilation cache makes the repeats cheap.
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(os.environ.get("TMPDIR", "/tmp"),
                               f"vae_jax_test_cache_{os.getuid()}"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield
