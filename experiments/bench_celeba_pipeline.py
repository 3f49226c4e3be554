"""Does the host keep up with the CelebA step? Per-core image rates and ratios.

  python -m experiments.bench_celeba_pipeline [--data_dir=DIR] [--rounds=7]

Two host paths for configs/celeba.py (crop 148 → 64×64, dequantized):
  decode  TFDS celeb_a's layout: a 178×218 JPEG per read, decoded, centre
          cropped and resized (`tfds_data.CropResizeSource`), one example
          per read, reader threads as the pipeline sets them;
  fast    `celeb_a64`, the default when prepared: cropped and resized once
          by `python -m vae_jax.data.prepare`, raw uint8 in array_record,
          read a batch per call (`tfds_data.ArrayImageSource.take`).

Printed, all medians over interleaved rounds with their [min, max]:
  1. images/s per host core of each path (process CPU time of one thread:
     read + decode/crop/resize, or record lookup + scale; then with the
     dequantization both apply);
  2. the step rate of the CelebA config at a reduced model size on this
     device, with one batch already on it, and the images/s it consumes;
     then host cores each path needs to feed it;
  3. steps/s when every step takes its batch from `train_iterator` over
     each path, divided by the on-device steps/s (target ≥ 0.95 for the
     fast path; fast_inline: without read-ahead). On a CPU the host
     pipeline and the step share the cores;
  4. images/s the fast path's `train_iterator` delivers alone (wall), as
     it reads ahead in its default threads against none (read_threads=0).

Data: `--data_dir` with celeb_a64 prepared (and its `--manual_dir` for the
decode path), or by default CelebA-shaped JPEGs generated into a temporary
folder and prepared there (needs `pip install -e '.[prepare]'`).
"""

import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np
from absl import app
from absl import flags
from PIL import Image

from configs import celeba
from experiments import timing
from experiments.bench_throughput import describe, ratio, runner_step
from experiments.timing import interleaved
from vae_jax import cli
from vae_jax import data as data_lib
from vae_jax.data import celeb_a64
from vae_jax.data import tfds_data
from vae_jax.data.base import Dataset
from vae_jax.data.transforms import Dequantize
from vae_jax.training import sharding

FLAGS = flags.FLAGS  # --rounds, --steps: defined by bench_throughput.
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data dir with celeb_a64 prepared; default: "
    "generate and prepare synthetic CelebA-shaped data in a temporary dir.")
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "The CelebA files celeb_a64 was prepared from, for "
    "the decode path (with --data_dir).")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 1024, "Generated train "
                                  "images (default data only).")
_CHANNELS = flags.DEFINE_list("channels", ["16", "32", "64", "128"],
                              "Reduced encoder channels (config: 32..256).")
_LATENT = flags.DEFINE_integer("latent_dim", 64, "Reduced latent dimension "
                               "(config: 128).")


class JpegSource:
  """TFDS celeb_a's read path: {"image": uint8 [218, 178, 3]} decoded per
  read from JPEG bytes held in memory (as array_record records are)."""

  def __init__(self, zip_path: str, names: list[str]):
    with zipfile.ZipFile(zip_path) as zf:
      members = celeb_a64.zip_members(zip_path)
      self._jpegs = [zf.read(members[n]) for n in names]

  def __len__(self):
    return len(self._jpegs)

  def __getitem__(self, index):
    with Image.open(io.BytesIO(self._jpegs[index])) as img:
      return {"image": np.asarray(img.convert("RGB"))}


def prepare_synthetic(root: str, num_train: int) -> tuple[str, str]:
  """Generates CelebA-shaped JPEGs and prepares celeb_a64 from them."""
  manual, data_dir = os.path.join(root, "manual"), os.path.join(root, "tfds")
  celeb_a64.write_synthetic_manual_dir(
      manual, {"train": num_train, "validation": 8, "test": 64})
  t0 = time.perf_counter()
  proc = subprocess.run(
      [sys.executable, "-m", "vae_jax.data.prepare", "--dataset=celeb_a64",
       f"--manual_dir={manual}", f"--data_dir={data_dir}"],
      capture_output=True, text=True, check=False)
  if proc.returncode:
    sys.exit(f"error: preparing celeb_a64 failed (needs `pip install -e "
             f"'.[prepare]'`):\n{proc.stderr[-2000:]}")
  print(f"prepared {num_train + 72} synthetic 178×218 JPEGs as celeb_a64 in "
        f"{time.perf_counter() - t0:.1f} s wall (TensorFlow start included)")
  return manual, data_dir


def datasets(manual: str, data_dir: str) -> dict[str, Dataset]:
  """{"decode": JPEG-per-read CelebA, "fast": celeb_a64} over the same images."""
  partition = celeb_a64.read_partition(
      os.path.join(manual, celeb_a64.PARTITION_NAME))
  zip_path = os.path.join(manual, celeb_a64.ZIP_NAME)
  crop, size = tfds_data.CELEB_A64_CROP, tfds_data.CELEB_A64_SIZE
  decode = {s: tfds_data.CropResizeSource(JpegSource(zip_path, partition[s]),
                                          crop, size) for s in ("train", "test")}
  config = celeba.get_config()
  config.data_dir = data_dir
  fast = data_lib.get_dataset(config)
  assert isinstance(fast.train, tfds_data.ArrayImageSource), fast.train
  out = {"fast": fast}
  out["decode"] = Dataset(
      name="celeb_a", event_shape=fast.event_shape, train=decode["train"],
      test=decode["test"], train_labels=None, test_labels=None,
      kind="image8bit", levels=256, standardization=None)
  return out


def per_core_rates(sets: dict[str, Dataset], batch: int, rounds: int):
  """{contender: images/s per core [rounds]}: one thread, process CPU time.

  Contenders: each path's read (to float32 in [0, 1]) alone, and with the
  config's dequantization, as the training pipeline applies it (per batch
  on the fast path, per example on the decode path).
  """
  dequantize, rng = Dequantize(256), np.random.default_rng(0)
  n = len(sets["fast"].train)
  order = np.random.default_rng(1).permutation(n)
  fast, decode = sets["fast"].train, sets["decode"].train
  fns = {
      "decode": lambda idx: [decode[int(i)] for i in idx],
      "decode+dequantize": lambda idx: [dequantize(decode[int(i)], rng)
                                        for i in idx],
      "fast": fast.take,
      "fast+dequantize": lambda idx: dequantize(fast.take(idx), rng),
  }
  rates = {k: [] for k in fns}
  for r in range(rounds):
    idx = order[(r * batch) % (n - batch):][:batch]
    for name, fn in fns.items():
      c0 = time.process_time()
      fn(idx)
      rates[name].append(batch / (time.process_time() - c0))
  return rates


def spread(values, fmt="{:.0f}"):
  v = np.asarray(values)
  return (f"{fmt.format(np.median(v))} [{fmt.format(v.min())}, "
          f"{fmt.format(v.max())}]")


def main(argv):
  cli.reject_extra_args(argv)
  cli.quiet_library_logs()
  print(timing.device_line())
  with tempfile.TemporaryDirectory() as root:
    if _DATA_DIR.value:
      if not _MANUAL_DIR.value:
        sys.exit("error: --data_dir needs --manual_dir (the decode path)")
      manual, data_dir = _MANUAL_DIR.value, _DATA_DIR.value
    else:
      manual, data_dir = prepare_synthetic(root, _NUM_TRAIN.value)
    sets = datasets(manual, data_dir)
    config = celeba.get_config()
    config.channels = tuple(int(c) for c in _CHANNELS.value)
    config.latent_dim = _LATENT.value
    run(config, sets, FLAGS.rounds, FLAGS.steps)


def run(config, sets, rounds, steps):
  batch = config.batch_size
  rates = per_core_rates(sets, batch, rounds)
  print(f"\n1. host images/s per core (one thread, process CPU; batch "
        f"{batch}, dequantized), {rounds} rounds:")
  for name, values in rates.items():
    print(f"  {name:17s}: {spread(values)}")
  for suffix in ("", "+dequantize"):
    fold = (np.asarray(rates["fast" + suffix])
            / np.asarray(rates["decode" + suffix]))
    print(f"  fast{suffix} / decode{suffix}: {spread(fold, '{:.1f}')}x")

  mesh = sharding.make_mesh()
  step = runner_step(config, sets["fast"].event_shape, mesh)
  iterators = {k: data_lib.train_iterator(d, batch, config.seed,
                                          config.transform)
               for k, d in sets.items()}
  iterators["fast_inline"] = data_lib.train_iterator(
      sets["fast"], batch, config.seed, config.transform, read_threads=0)
  fixed = sharding.global_batch(next(iterators["fast"]), mesh)

  def step_on(batch_fn):
    return lambda: step(batch_fn())

  fns = {"device": step_on(lambda: fixed)}
  for k, it in iterators.items():
    fns[k] = step_on(lambda it=it: sharding.global_batch(next(it), mesh))
  times = interleaved(fns, rounds, steps)
  step_wall = np.asarray(times["device"][1])
  consumed = batch / step_wall
  print(f"\n2. CelebA step, channels {tuple(config.channels)}, latent "
        f"{config.latent_dim}, batch {batch}, {rounds} rounds x {steps} "
        "steps:")
  for k in ("device", "fast", "decode", "fast_inline"):
    print("  " + describe(times, k))
  print(f"  on-device: {spread(1 / step_wall, '{:.2f}')} steps/s = "
        f"{spread(consumed)} images/s")
  for name in ("decode+dequantize", "fast+dequantize"):
    cores = statistics.median(consumed) / statistics.median(rates[name])
    print(f"  host cores needed, {name:17s}: {cores:.3f}")
  print("\n3. steps/s fed by train_iterator / on-device steps/s:")
  for name, target in (("fast", " (target >= 0.95)"), ("decode", ""),
                       ("fast_inline", " (no read-ahead)")):
    print(f"  {name:6s}{target}: {ratio(times, 'device', name)}")
  read_ahead_rates(sets["fast"], config, rounds, 4 * steps + 16)


def read_ahead_rates(dataset, config, rounds, calls):
  """4. images/s the fast path's `train_iterator` delivers alone, wall
  clock: reading ahead in its default threads against none. Every round
  times a fresh iterator from a stream position not read before, so no
  batch is ready when the clock starts, and closes it after the clock
  stops (the blocks still being made finish there, not in the next
  contender's time)."""
  make = {"ahead": {}, "inline": {"read_threads": 0}}
  state = None
  rates = {k: ([], []) for k in make}
  order = np.random.default_rng(0)
  for r in range(rounds):
    start = (r + 1) * 10 * calls
    for k in order.permutation(list(make)):
      it = data_lib.train_iterator(dataset, config.batch_size, config.seed,
                                   config.transform, **make[k])
      state = state or it.get_state()
      it.set_state(dict(state, step=start, pipeline={"batches": start}))
      c0, w0 = time.process_time(), time.perf_counter()
      for _ in range(calls):
        next(it)
      wall, cpu = time.perf_counter() - w0, time.process_time() - c0
      it.close()
      rates[k][0].append(calls * config.batch_size / wall)
      rates[k][1].append(calls * config.batch_size / cpu)
  print(f"\n4. fast path's train_iterator alone, {calls} batches of "
        f"{config.batch_size} a round, {rounds} rounds: images/s wall "
        "(and per CPU-second of this process)")
  for k in make:
    print(f"  {k:6s}: wall {spread(rates[k][0])}, cpu {spread(rates[k][1])}")
  fold = np.asarray(rates["ahead"][0]) / np.asarray(rates["inline"][0])
  print(f"  ahead / inline, wall: {spread(fold, '{:.2f}')}x")

if __name__ == "__main__":
  app.run(main)
