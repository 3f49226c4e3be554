"""Data parallelism with a device Mesh: the batch on a `data` axis.

The same code runs on 1 CPU, 8 host devices, a GPU, or a multi-host TPU
slice: parameters are replicated, batches are split along their first axis.
"""

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None):
  """A 1-D mesh over all (global) devices, axis name 'data'."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh):
  """Sharding of parameters and optimizer state: a full copy per device."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh):
  """Sharding of a batch [B, ...]: B split over the 'data' axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local_batch, mesh):
  """Assembles this process's rows into one global, sharded jax.Array.

  Args:
    local_batch: np.ndarray [B / num_processes, ...] read by this process.

  Returns:
    jax.Array [B, ...] sharded on 'data'. On one process this is a plain
    device_put; on many, each process contributes its own rows.
  """
  return jax.make_array_from_process_local_data(batch_sharded(mesh),
                                                local_batch)


def maybe_initialize_distributed():
  """Calls jax.distributed.initialize() on a multi-process launch.

  A coordinator address in the environment (set by hand, by SLURM with
  several tasks, or on a multi-host TPU VM slice) marks one; a single
  process skips it, since initialize() would wait for peers.
  """
  env = os.environ
  multi = (bool(env.get("JAX_COORDINATOR_ADDRESS")) or
           int(env.get("SLURM_NTASKS", "1")) > 1 or
           "," in env.get("TPU_WORKER_HOSTNAMES", ""))
  if multi:
    jax.distributed.initialize()
