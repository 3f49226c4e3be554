r"""Generation with a trained VAE: prior samples, reconstructions,
interpolations and latent traversals.

    python -m experiments.generate --workdir=runs/digits_anomaly
    python -m experiments.generate --workdir=runs/digits_anomaly \
        --temperature=0.7 --traversal_dims=0,3

Writes to WORKDIR/generate/ (or --output_dir), for image data as PNG grids:
  prior_means.png     decoder means E[x|z] at z ~ N(0, T² I)
  prior_samples.png   x ~ p(x|z) at the same z (Bernoulli pixels, or
                      mean + σ_dec·ε for a Gaussian decoder)
  reconstructions.png test inputs (odd rows) over their reconstructions
  interpolations.png  per row: input a, the decoded linear path between the
                      posterior means of a and b, input b
  traversals.png      per row one latent swept over [−r, r], the others at
                      a test input's posterior mean; by default the latents
                      with the largest KL
For tabular data the same outputs are CSV files in the file's units.

The data set is not needed for what uses none of it:
    python -m experiments.generate --workdir=W --inputs=x.npy
reconstructs, interpolates and traverses the examples of x.npy (N examples
of the model's size, e.g. [N, 28, 28] or [N, 784]: pixel intensities in
[0, 1], fed as given, or the file's features for tabular data) without
loading the data set. Without --inputs, a data set that cannot be loaded
leaves the prior draws (and the traversals of --traversal_dims about
z = 0), with one line saying what was skipped. A Gaussian decoder with
sigma_dec_mode=optimal takes its σ_dec from the training split, so it
always needs the data set.
"""


from absl import flags

from vae_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run's workdir.",
                               required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None,
                                  "Output folder; default WORKDIR/generate.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the prior draws.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0,
                                  "z ~ N(0, T² I) for the prior draws.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 64, "Prior draws.")
_NUM_PAIRS = flags.DEFINE_integer("num_pairs", 8, "Interpolated pairs.")
_STEPS = flags.DEFINE_integer("interpolation_steps", 10,
                              "Points per interpolation, ends included.")
_DIMS = flags.DEFINE_list("traversal_dims", None,
                          "Latents to traverse; default the largest-KL ones.")
_NUM_DIMS = flags.DEFINE_integer("num_traversal_dims", 8,
                                 "How many largest-KL latents to traverse.")
_RANGE = flags.DEFINE_float("traversal_range", 3.0,
                            "Traversed latents run over [−r, r].")
_TRAV_STEPS = flags.DEFINE_integer("traversal_steps", 9,
                                   "Values per traversal.")
_EXAMPLE = flags.DEFINE_integer("traversal_example", 0,
                                "Example whose encoding is held fixed.")
_INPUTS = flags.DEFINE_string(
    "inputs", None, "A .npy file of examples to reconstruct, interpolate "
    "and traverse instead of the test split; the data set is then not "
    "loaded.")


def main(argv):
  cli.reject_extra_args(argv)
  # Imports after flag parsing keep --help fast.
  from vae_jax.applications import common, generation  # pylint: disable=g-import-not-at-top

  cli.quiet_library_logs()
  with common.one_line_errors():
    try:
      dims = [int(d) for d in _DIMS.value] if _DIMS.value else None
    except ValueError:
      raise common.ApplicationError(
          f"--traversal_dims={','.join(_DIMS.value)} is not a list of "
          "integers") from None
    inputs, skipped = None, None
    if _INPUTS.value:
      trained = common.load_trained(_WORKDIR.value, with_dataset=False)
      inputs = generation.prepare_inputs(trained, _load_npy(_INPUTS.value))
    else:
      trained, skipped = common.load_trained_if_data(_WORKDIR.value)
    out_dir = common.output_dir(_WORKDIR.value, "generate", _OUTPUT_DIR.value)
    result = generation.run(
        trained, out_dir, seed=_SEED.value, temperature=_TEMPERATURE.value,
        num_samples=_NUM_SAMPLES.value, num_pairs=_NUM_PAIRS.value,
        interpolation_steps=_STEPS.value, traversal_dims=dims,
        num_traversal_dims=_NUM_DIMS.value, traversal_range=_RANGE.value,
        traversal_steps=_TRAV_STEPS.value, traversal_example=_EXAMPLE.value,
        inputs=inputs)
  if skipped:
    print(f"data set not loaded ({skipped}): wrote the prior draws only"
          + (" and traversals about z = 0" if result["traversal_dims"] else "")
          + "; pass --inputs=FILE.npy to reconstruct and interpolate")
  print(f"{trained.config.dataset}: temperature {result['temperature']:g}")
  kl = result["kl_per_dim"]
  if kl is not None:
    print(f"KL per latent over the {result['examples']} examples (nats): " +
          " ".join(f"{v:.2f}" for v in kl))
  if result["traversal_dims"]:
    print("traversed latents: " + ", ".join(
        str(d) if kl is None else f"{d} ({kl[d]:.2f} nats)"
        for d in result["traversal_dims"]) +
          ("" if dims else " (largest KL first)"))
  for path in result["files"]:
    print(f"wrote {path}")


def _load_npy(path):
  """The array in a .npy file; one error line when it cannot be read."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vae_jax.applications import common  # pylint: disable=g-import-not-at-top
  try:
    return np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise common.ApplicationError(
        f"--inputs={path}: not a readable .npy array ({e})") from None


if __name__ == "__main__":
  cli.run(main, config_flag=None)
