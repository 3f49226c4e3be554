"""What every command-line entry point shares: quiet logs, one-line errors."""

import logging as pylogging
import sys

from absl import logging


class _QuietLibraries(pylogging.Filter):
  """Drops the INFO chatter of orbax and of jax's backend probing."""

  def filter(self, record):
    noisy = any(name in record.pathname for name in (
        "orbax", "xla_bridge", "jax_array_handlers"))
    return record.levelno > pylogging.INFO or not noisy


def quiet_library_logs():
  """Keeps the log to this package's own lines (and libraries' warnings)."""
  logging.get_absl_handler().addFilter(_QuietLibraries())


def fail(message):
  """One `error:` line on stderr and exit status 2; nothing else is touched."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def reject_extra_args(argv):
  """absl passes positional leftovers through; commands take none."""
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
