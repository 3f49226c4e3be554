r"""Where bits-back coding spends its time: the networks or the entropy coder.

    python -m experiments.bench_bits_back --workdir=runs/mnist_idx

For one coder batch of test images (the run's eval_batch_size), times the
two halves of a bits-back step, interleaved over rounds so both see the same
machine load:
  network: the encoder's q(z|x) and the decoder's p(x|ẑ) (jitted jax, with
           the float64 conversions the coder needs);
  coder:   constriction's ANS: decode ẑ with Q, encode x with P(x|ẑ),
           encode ẑ with P(ẑ).
Prints medians over rounds [min, max] of wall and process CPU time, and
the ratio coder / network of the medians. This is the measurement behind
using constriction rather than a hand-written rANS: if the coder is not the
larger half, a faster coder cannot speed bits-back up by more than 2×.
"""

import time

from absl import app
from absl import flags
import numpy as np

from vae_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run's workdir.",
                               required=True)
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Interleaved rounds.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Calls timed per round.")
_LATENT_STEP = flags.DEFINE_float("latent_step", 0.05, "Latent grid step δ.")


def _time(fn, repeats):
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(repeats):
    fn()
  return ((time.perf_counter() - wall) / repeats,
          (time.process_time() - cpu) / repeats)


def main(argv):
  cli.reject_extra_args(argv)
  import constriction  # pylint: disable=g-import-not-at-top
  from vae_jax.applications import bits_back, common  # pylint: disable=g-import-not-at-top

  cli.quiet_library_logs()
  with common.one_line_errors():
    trained = common.load_trained(_WORKDIR.value)
    codec = bits_back.codec_from_trained(
        trained, bits_back.Discretization(_LATENT_STEP.value))
  b = codec.batch_size
  x = bits_back.symbols_from_inputs(codec, common.split_inputs(trained,
                                                               "test", b))
  b = len(x)
  stats = {}
  bits_back.encode(codec, x, stats)  # compiles; gives the ẑ of each image
  k = stats["latents"]
  params = {}

  def network():
    params["q"] = codec.latent_params(x)
    params["p"] = codec.pixel_params(k, b)

  network()
  pool = bits_back._pool(codec.pool_words)  # pylint: disable=protected-access

  def coder():
    ans = constriction.stream.stack.AnsCoder(pool.copy())
    z = ans.decode(codec._latent_model, *params["q"])  # pylint: disable=protected-access
    ans.encode_reverse(x.reshape(-1), codec._pixel_model, *params["p"])  # pylint: disable=protected-access
    ans.encode_reverse(z, codec._latent_model, *codec.prior_params(z.size))  # pylint: disable=protected-access

  times = {"network": [], "coder": []}
  for _ in range(_ROUNDS.value):
    for name, fn in (("network", network), ("coder", coder)):
      times[name].append(_time(fn, _REPEATS.value))
  symbols = x.size + 2 * k.size
  print(f"one bits-back step on {b} test images of {trained.dataset.name} "
        f"(D = {codec.num_dims}, L = {codec.model.latent_dim}, "
        f"{symbols} symbols), {_ROUNDS.value} interleaved rounds of "
        f"{_REPEATS.value} calls, ms per step:")
  medians = {}
  for name, values in times.items():
    wall, cpu = (np.array(v) * 1e3 for v in zip(*values))
    medians[name] = np.median(wall), np.median(cpu)
    print(f"  {name:8s} wall {np.median(wall):7.2f} [{wall.min():.2f}, "
          f"{wall.max():.2f}]   CPU {np.median(cpu):7.2f} [{cpu.min():.2f}, "
          f"{cpu.max():.2f}]")
  cpu_coder = medians["coder"][1] / 1e3
  print(f"  ratio coder/network: wall {medians['coder'][0] / medians['network'][0]:.2f}, "
        f"CPU {medians['coder'][1] / medians['network'][1]:.2f}; coder "
        f"{symbols / cpu_coder / 1e6:.1f} M symbols per CPU second")


if __name__ == "__main__":
  app.run(main)
