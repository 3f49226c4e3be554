"""Runner configs shrunk to seconds, and child processes, for end-to-end
tests of plumbing."""

import os
import re
import subprocess
import sys
import threading
import time

import jax
import numpy as np

from vae_jax.training import config_validation
from vae_jax import data as data_lib
from vae_jax.data import idx
from vae_jax.training import loop


def shrink(config, steps=6, every=None, images=4, batch=None):
  """A few seconds of work: `steps` steps, evaluating and checkpointing
  every `every` (default: only at the end), tiny L_K sample counts."""
  every = every or steps
  config.num_train_steps = steps
  config.checkpoint_every_steps = every
  config.eval_every_steps = every
  config.log_every_steps = every
  config.eval_iwae_samples = 4
  config.final_iwae_samples = 8
  config.iwae_chunk_size = 4
  config.num_image_examples = images
  if batch:
    config.batch_size = batch
    config.eval_batch_size = batch
  return config


def train(config, workdir):
  """Validates like `vae_jax.main`, then trains and evaluates in-process."""
  config_validation.validate(config, jax.device_count(), jax.process_count())
  return loop.train_and_evaluate(config, str(workdir),
                                   data_lib.get_dataset(config))


def write_tiny_mnist_idx(folder, num_train=24, num_test=16, seed=0):
  """Random MNIST-shaped IDX files (images and labels) for dataset=mnist_idx."""
  rng = np.random.default_rng(seed)
  for split, n in (("train", num_train), ("t10k", num_test)):
    idx.write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte"),
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    idx.write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte"),
                  rng.integers(0, 10, (n,), dtype=np.uint8))


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(args, num_host_devices=None, timeout=300, cwd=REPO):
  """`python *args` in a process of its own, from `cwd` (the repository).

  With num_host_devices, XLA shows that many CPU devices: the flag must be
  set before jax is imported, hence the separate process.

  Returns:
    the CompletedProcess, with text stdout and stderr.
  """
  env = dict(os.environ)
  if num_host_devices:
    env["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={num_host_devices}")
    env["JAX_PLATFORMS"] = "cpu"
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout)


class Child:
  """A `python *args` process to signal mid-run: its stdout and stderr are
  read as they come (threads), so neither pipe fills up and blocks it, and
  stderr's lines are kept. Use as a context manager: leaving it kills the
  process if it still runs (a failed test leaves no run training on).
  """

  def __init__(self, args, env=None, preexec_fn=None):
    self.proc = subprocess.Popen(
        [sys.executable, *args], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec_fn)
    self._lines, self._changed = [], threading.Condition()
    self._readers = [threading.Thread(target=self._read, args=(pipe, keep),
                                      daemon=True)
                     for pipe, keep in ((self.proc.stdout, False),
                                        (self.proc.stderr, True))]
    for reader in self._readers:
      reader.start()

  def _read(self, pipe, keep):
    for line in pipe:
      if keep:
        with self._changed:
          self._lines.append(line)
          self._changed.notify_all()

  def wait_for_line(self, pattern, timeout=120):
    """Blocks until a stderr line matches `pattern` (re.search); fails if
    none has after `timeout` s or once the process ended without one."""
    deadline = time.monotonic() + timeout
    with self._changed:
      while not any(re.search(pattern, l) for l in self._lines):
        ended = not any(r.is_alive() for r in self._readers)
        if ended or time.monotonic() > deadline:
          raise AssertionError(f"no line matching {pattern!r}: "
                               + "".join(self._lines)[-2000:])
        self._changed.wait(0.5)

  def finish(self, timeout=120):
    """Waits for the process; returns (return code, its whole stderr)."""
    self.proc.wait(timeout)
    for reader in self._readers:
      reader.join(timeout)
    return self.proc.returncode, "".join(self._lines)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()
