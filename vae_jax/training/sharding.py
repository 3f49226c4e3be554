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


def step_input(local_batch, mesh, sharding=None):
  """A host batch as the jitted train step should receive it.

  On one process with one device, the numpy array itself: jit's dispatch
  moves it to the device more cheaply than an explicit transfer first (at
  the runner's MNIST shape on the 2-core CPU, steps fed fresh host batches
  ran at 0.97-0.99 of on-device steps/s this way over the runs of
  experiments/bench_throughput.py, and at 0.99 against 0.96 with
  `global_batch` side by side in a one-off script). Otherwise the global
  array of `global_batch`.

  Args:
    local_batch: np.ndarray [B / num_processes, ...] read by this process.
    mesh: the mesh of `make_mesh`.
    sharding: the global array's sharding; default `batch_sharded(mesh)`.
  """
  if jax.process_count() == 1 and mesh.devices.size == 1:
    return local_batch
  return jax.make_array_from_process_local_data(
      batch_sharded(mesh) if sharding is None else sharding, local_batch)


class DistributedError(ValueError):
  """An incomplete multi-process launch; the message is one line."""


def _env_int(name):
  try:
    return int(os.environ[name])
  except ValueError:
    raise DistributedError(f"{name}={os.environ[name]!r} is not an integer"
                           ) from None


def maybe_initialize_distributed(coordinator_address=None, num_processes=None,
                                 process_id=None):
  """Starts jax.distributed on a multi-process launch; a no-op otherwise.

  Explicit values (flags of the entry point, or the environment variables
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) must come as
  all three; with none, a TPU VM slice (TPU_WORKER_HOSTNAMES lists several
  hosts) or a SLURM job with several tasks is detected and
  `jax.distributed.initialize()` finds its peers itself. A single process
  skips it, since initialize() would wait for peers.

  Raises:
    DistributedError: some but not all of the three values were given.
  """
  env = os.environ
  coordinator_address = coordinator_address or env.get(
      "JAX_COORDINATOR_ADDRESS") or None
  if num_processes is None and env.get("JAX_NUM_PROCESSES"):
    num_processes = _env_int("JAX_NUM_PROCESSES")
  if process_id is None and env.get("JAX_PROCESS_ID"):
    process_id = _env_int("JAX_PROCESS_ID")
  given = {"coordinator address": coordinator_address,
           "process count": num_processes, "process id": process_id}
  if any(v is not None for v in given.values()):
    missing = [k for k, v in given.items() if v is None]
    if missing:
      raise DistributedError(
          f"a multi-process launch needs the coordinator address, the "
          f"process count and this process's id; missing: "
          f"{', '.join(missing)} (--coordinator_address, --num_processes, "
          f"--process_id or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
          f"JAX_PROCESS_ID)")
    if not 0 <= process_id < num_processes:
      raise DistributedError(f"process id {process_id} is not in [0, "
                             f"{num_processes})")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id)
    return
  auto = (int(env.get("SLURM_NTASKS", "1")) > 1 or
          "," in env.get("TPU_WORKER_HOSTNAMES", ""))
  if auto:
    jax.distributed.initialize()
