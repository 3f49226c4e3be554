"""Generation (§7): samples from the prior, reconstructions, interpolations
between encoded inputs, and traversals of single latent dimensions.

Everything shown is a decoder output E[x|z] (Bernoulli probabilities or the
Gaussian mean), except the "sampled" grid, which draws x ~ p(x|z): Bernoulli
pixels, or mean + σ_dec·ε for a Gaussian decoder. Image data are written as
PNG grids; tabular data as CSV rows in the file's original units.
"""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.training import images
from vae_jax.applications import common
from vae_jax.data import destandardize
from vae_jax.data import standardize
from vae_jax.core.distributions import kl_diag_to_std_normal_per_dim


def sample_observations(model, params, key, z):
  """x ~ p_θ(x|z) for z [N, L]: [N, *event] (`VAE.sample_observations`)."""
  if (model.likelihood == "gaussian"
      and model.log_sigma_dec(params) is None):
    raise common.ApplicationError(
        "sigma_dec_mode 'optimal' has no σ_dec of its own; load the model "
        "with applications.common.load_trained, which fixes it")
  return model.sample_observations(params, key, z)


def prior_draws(model, params, key, num, temperature=1.0):
  """Decodes z ~ N(0, T² I).

  A temperature T < 1 draws from the prior's core (less variety, cleaner
  samples); only z is scaled, not the decoder's noise.

  Returns:
    (z [num, L], decoder means [num, *event], sampled x ~ p(x|z)
    [num, *event]), the means and samples at the same z.
  """
  k_z, k_x = jax.random.split(key)
  z = temperature * jax.random.normal(k_z, (num, model.latent_dim))
  return (z, model.decoder_mean(params, z),
          sample_observations(model, params, k_x, z))


def interpolation_path(z_start, z_end, num_steps):
  """(1 − t) z_start + t z_end at t = 0, 1/(S−1), ..., 1.

  Args:
    z_start, z_end: [..., L].
    num_steps: S >= 2.

  Returns:
    [..., S, L]; the first and last points are z_start and z_end exactly
    (1·z + 0·z' = z in floating point).
  """
  if num_steps < 2:
    raise ValueError(f"num_steps must be >= 2, got {num_steps}")
  t = jnp.linspace(0.0, 1.0, num_steps)[:, None]
  return ((1.0 - t) * z_start[..., None, :] + t * z_end[..., None, :])


def interpolate(model, params, x_start, x_end, num_steps):
  """Linear interpolation between the posterior means of pairs of inputs.

  Args:
    x_start, x_end: [P, *event], P pairs.
    num_steps: S points per path, end points included.

  Returns:
    (z [P, S, L], decoder means [P, S, *event]). The path's end points are
    the encodings E_q[z|x] of the two inputs, so its first and last images
    are the inputs' reconstructions.
  """
  num_pairs = x_start.shape[0]
  # One encoder call for both ends, so each end is encoded as in any batch.
  mean = model.posterior(params, jnp.concatenate([x_start, x_end])).mean
  z = interpolation_path(mean[:num_pairs], mean[num_pairs:], num_steps)
  decoded = model.decoder_mean(params, z.reshape(-1, model.latent_dim))
  return z, decoded.reshape(z.shape[:2] + decoded.shape[1:])


def top_kl_dims(kl_per_dim, num):
  """The `num` latent dimensions with the largest average KL, largest first.

  The KL per dimension says how much information a latent carries about x;
  inactive (collapsed) dimensions have KL ≈ 0 and traversing them shows
  nothing.
  """
  order = np.argsort(-np.asarray(kl_per_dim), kind="stable")
  return [int(j) for j in order[:num]]


def traverse(model, params, x, dims, values):
  """Varies one latent at a time, the others at the input's posterior mean.

  Args:
    x: [*event], one input.
    dims: latent indices to vary.
    values: [V] values given to the varied latent (in prior standard
      deviations, since p(z) = N(0, I)).

  Returns:
    (z [len(dims), V, L], decoder means [len(dims), V, *event]).
  """
  return traverse_about(model, params, model.posterior(params, x[None]).mean[0],
                        dims, values)


def traverse_about(model, params, z_base, dims, values):
  """Varies one latent at a time, the others held at z_base [L].

  Returns:
    (z [len(dims), V, L], decoder means [len(dims), V, *event]).
  """
  values = jnp.asarray(values, z_base.dtype)
  dims = jnp.asarray(dims, jnp.int32)
  z = jnp.broadcast_to(z_base, (len(dims), len(values), z_base.shape[0]))
  # Row i sets coordinate dims[i] to every value in turn.
  one_hot = jax.nn.one_hot(dims, z_base.shape[0], dtype=bool)[:, None, :]
  z = jnp.where(one_hot, values[None, :, None], z)
  decoded = model.decoder_mean(params, z.reshape(-1, z_base.shape[0]))
  return z, decoded.reshape(z.shape[:2] + decoded.shape[1:])


def kl_per_dim(trained, batch_size=None):
  """Average KL(q(z_j|x) ‖ N(0, 1)) of each latent over the test split, nats."""
  model = trained.model
  fn = lambda params, key, x: {
      "kl_per_dim": kl_diag_to_std_normal_per_dim(*model.posterior(params, x))}
  return common.map_split(fn, trained, "test", batch_size)["kl_per_dim"].mean(0)


def kl_per_dim_of(model, params, x, batch_size=500):
  """Average KL(q(z_j|x) ‖ N(0, 1)) of each latent over inputs x [N, *event],
  encoded `batch_size` at a time."""
  kl = jax.jit(lambda p, xb: kl_diag_to_std_normal_per_dim(
      *model.posterior(p, xb)))
  parts = [np.asarray(kl(params, jnp.asarray(x[i:i + batch_size])))
           for i in range(0, len(x), batch_size)]
  return np.concatenate(parts).mean(0)


def prepare_inputs(trained, raw):
  """A user's examples as the model takes them.

  They reach the encoder as given: a model trained on binarized pixels
  (dynamic_binarize) sees grey values unless the caller binarizes them.

  Args:
    raw: [N, ...] array of N examples with as many values each as the
      model's example shape (e.g. [N, 28, 28] or [N, 784]), in the data's
      own units: pixel intensities in [0, 1] for images, the file's feature
      values for tabular data (standardized here with the training split's
      statistics stored in the checkpoint).

  Returns:
    float32 [N, *event].

  Raises:
    ApplicationError: not N examples of the model's size, values that are
      not finite numbers, or image intensities outside [0, 1].
  """
  raw = np.asarray(raw)
  shape = tuple(trained.event_shape)
  size = math.prod(shape)
  if raw.ndim < 2 or math.prod(raw.shape[1:]) != size:
    raise common.ApplicationError(
        f"inputs of shape {raw.shape} are not N examples of shape {shape} "
        f"({size} values each)")
  if raw.dtype != bool and not np.issubdtype(raw.dtype, np.number):
    raise common.ApplicationError(f"inputs of dtype {raw.dtype} are not "
                                  "numbers")
  x = raw.reshape((len(raw),) + shape).astype(np.float64)
  if not np.all(np.isfinite(x)):
    raise common.ApplicationError("inputs must be finite numbers")
  if trained.meta.get("data_kind") in ("image8bit", "binary") and (
      x.min() < 0 or x.max() > 1):
    raise common.ApplicationError(
        f"image inputs must be intensities in [0, 1], got values in "
        f"[{x.min():g}, {x.max():g}] (8-bit pixels: divide by 255)")
  if trained.standardization is not None:
    x = standardize(x, trained.standardization)
  return x.astype(np.float32)


def run(trained, out_dir, seed=0, temperature=1.0, num_samples=64,
        num_pairs=8, interpolation_steps=10, traversal_dims=None,
        num_traversal_dims=8, traversal_range=3.0, traversal_steps=9,
        traversal_example=0, num_reconstructions=16, inputs=None):
  """Writes the generation outputs of a trained model.

  Image data (PNG): prior_means.png and prior_samples.png (the same z),
  reconstructions.png (inputs over their reconstructions),
  interpolations.png (one row per pair: input, S decoded path points,
  input), traversals.png (one row per latent). Tabular data: the same as
  CSV files in the data's original units.

  The examples reconstructed, interpolated and traversed are `inputs` when
  given, else the test split's first ones when the data set is loaded.
  With neither, only the prior outputs are written, and traversals (of the
  given `traversal_dims` only: ranking latents by KL needs examples) hold
  the other latents at the prior mean z = 0.

  Args:
    trained: from `common.load_trained` (with or without its data set).
    out_dir: output folder (exists).
    seed: PRNG seed of the prior draws.
    temperature: z ~ N(0, T² I).
    num_samples: prior draws.
    num_pairs: interpolations, between examples 2i and 2i+1.
    interpolation_steps: points per path, end points included.
    traversal_dims: latents to traverse; None = the `num_traversal_dims`
      with the largest KL over the examples.
    traversal_range: each traversed latent runs over [−r, r].
    traversal_steps: values per traversal.
    traversal_example: index of the example whose encoding is held.
    num_reconstructions: examples reconstructed.
    inputs: float32 [N, *event] from `prepare_inputs`, or None.

  Returns:
    {"files": [paths], "traversal_dims": [...], "kl_per_dim": [...] or
     None, "temperature": T, "examples": "given" | "test split" | None}.
  """
  model, params = trained.model, trained.params
  if inputs is not None:
    examples, x = "given", jnp.asarray(inputs)
    kl = kl_per_dim_of(model, params, x)
  elif trained.dataset is not None:
    need = max(2 * num_pairs, num_reconstructions, traversal_example + 1)
    examples = "test split"
    x = jnp.asarray(common.split_inputs(trained, "test", need))
    kl = kl_per_dim(trained)
  else:
    examples, x, kl = None, None, None
  if traversal_dims:
    dims = list(traversal_dims)
  elif kl is not None:
    dims = top_kl_dims(kl, min(num_traversal_dims, model.latent_dim))
  else:
    dims = []
  bad = [d for d in dims if not 0 <= d < model.latent_dim]
  if bad:
    raise common.ApplicationError(f"traversal dims {bad} are outside 0.."
                                  f"{model.latent_dim - 1}")
  if x is not None and traversal_example >= len(x):
    raise common.ApplicationError(
        f"traversal_example={traversal_example} is beyond the {len(x)} "
        "examples")

  _, means, draws = prior_draws(model, params, jax.random.key(seed),
                                num_samples, temperature)
  outputs = {"prior_means": means, "prior_samples": draws}
  values = np.linspace(-traversal_range, traversal_range, traversal_steps)
  if x is not None:
    num_pairs = min(num_pairs, len(x) // 2)
    outputs["inputs"] = x[:num_reconstructions]
    outputs["reconstructions"] = model.reconstruct(params,
                                                   x[:num_reconstructions])
    if num_pairs:
      _, outputs["path"] = interpolate(model, params, x[0:2 * num_pairs:2],
                                       x[1:2 * num_pairs:2],
                                       interpolation_steps)
      outputs["pair_ends"] = (x[0:2 * num_pairs:2], x[1:2 * num_pairs:2])
    z_base = model.posterior(params, x[traversal_example][None]).mean[0]
  else:
    z_base = jnp.zeros((model.latent_dim,))
  if dims:
    _, outputs["traversals"] = traverse_about(model, params, z_base, dims,
                                              values)
  outputs = jax.device_get(outputs)
  shape = images.image_shape_for(trained.event_shape)
  if shape is not None:
    files = _write_images(out_dir, outputs, shape)
  else:
    files = _write_tables(out_dir, outputs, trained.standardization,
                          dims, values)
  return {"files": files, "traversal_dims": dims,
          "kl_per_dim": None if kl is None else [float(v) for v in kl],
          "temperature": temperature, "examples": examples}


def _write_images(out_dir, out, shape):
  """PNG grids of the outputs present; traversals.png has one row per
  latent, one column per value."""
  files = []

  def save(name, image):
    files.append(os.path.join(out_dir, f"{name}.png"))
    images.save_png(files[-1], image)

  for name in ("prior_means", "prior_samples"):
    save(name, images.grid(out[name], shape))
  if "reconstructions" in out:
    files.append(os.path.join(out_dir, "reconstructions.png"))
    images.save_pairs(files[-1], out["inputs"], out["reconstructions"], shape)
  if "path" in out:
    start, end = out["pair_ends"]
    rows = np.concatenate([start[:, None], out["path"], end[:, None]], axis=1)
    save("interpolations", images.grid(rows.reshape((-1,) + rows.shape[2:]),
                                       shape, num_cols=rows.shape[1]))
  if "traversals" in out:
    trav = out["traversals"]
    save("traversals", images.grid(trav.reshape((-1,) + trav.shape[2:]),
                                   shape, num_cols=trav.shape[1]))
  return files


def _write_tables(out_dir, out, standardization, dims, values):
  """CSV versions for non-image data, destandardized to the file's units."""
  raw = (lambda v: destandardize(v, standardization)) if standardization else (
      lambda v: np.asarray(v, np.float64))
  num_features = out["prior_means"].shape[-1]
  feats = lambda prefix: [f"{prefix}x{j}" for j in range(num_features)]
  files = []

  def table(name, columns, matrix):
    path = os.path.join(out_dir, f"{name}.csv")
    common.write_csv(path, {**columns, **dict(zip(
        feats(""), np.asarray(matrix).reshape(-1, num_features).T))})
    files.append(path)

  for name in ("prior_means", "prior_samples"):
    table(name, {"sample": np.arange(len(out[name]))}, raw(out[name]))
  if "reconstructions" in out:
    table("reconstructions",
          {"example": np.arange(len(out["inputs"])),
           **dict(zip(feats("input_"), raw(out["inputs"]).T))},
          raw(out["reconstructions"]))
  if "path" in out:
    p, s = out["path"].shape[:2]
    table("interpolations", {"pair": np.repeat(np.arange(p), s),
                             "t": np.tile(np.linspace(0, 1, s), p)},
          raw(out["path"]))
  if "traversals" in out:
    table("traversals", {"dim": np.repeat(dims, len(values)),
                         "value": np.tile(values, len(dims))},
          raw(out["traversals"]))
  return files
