r"""Gradient-estimator variance: score function, reparameterization and more.

    python -m experiments.gradient_variance \
        --config=configs/gradient_variance.py --workdir=/tmp/gv

For every setting (model, state, M or K, latent dimension, σ_dec) and every
estimator of `vae_jax.estimators`, R independent gradient estimates of the
batch-mean bound on a fixed batch are drawn in one vmapped computation
(`replicate_moments`), and reduced to per-parameter variances, SNRs and,
where the true gradient is known, bias with its standard error. Statistics
are kept apart for the encoder φ ("enc_" columns) and the decoder θ ("dec_").

Models: the §3 linear-Gaussian model (the exact ELBO gradient is
`jax.grad` of the closed-form ELBO; states "init" and "optimum", q = exact
posterior) and an MLP VAE on real data (digits offline; states "init" and
"trained", trained here with Adam or restored from `config.checkpoint_dir`).

Writes to --workdir:
  results.csv            one row per setting and estimator
  summary.md             the claims, each with its measured numbers, and tables
  variance_vs_M.png      trace of the covariance vs M, log-log
  snr_vs_K.png           encoder and decoder SNR vs K, log-log
  variance_vs_latent_dim.png, variance_vs_sigma_dec.png
"""

import csv
import dataclasses
import functools
import math
import os
import time
import zlib
from typing import Any

from absl import app, flags, logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from vae_jax import cli
from vae_jax import estimators as est_lib
from vae_jax import gradient_stats, linear_gaussian, objectives

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "configs/gradient_variance.py, optionally :quick / :mnist.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.")

SWEEPS = ("num_samples", "latent_dim", "sigma_dec", "iwae_k")
MODELS = ("linear", "vae")
LINEAR_STATES = ("init", "near_optimum", "optimum")
VAE_STATES = ("init", "trained")
PARTS = ("enc", "dec")  # φ = params["encoder"]; θ = every other entry.
STAT_FIELDS = ("num_params", "var_trace", "var_mean", "var_max", "mean_norm",
               "snr_mean_of_ratios", "snr_ratio_of_means",
               "snr_debiased_mean_of_ratios", "bias_norm",
               "bias_noise_norm", "bias_rel", "bias_max_abs_z",
               "bias_chi2_per_param", "closed_form_var_trace",
               "vs_iwae_reparam_max_abs_z")
# seconds_group: wall time of the one compiled program that ran every
# estimator of the row's setting and M (or K), compilation included.
# ess: mean over the batch of 1/Σ_k w̃_k², the effective sample size of the
# K importance weights (K sweep only); a small ess/K means heavy-tailed
# weights, where the large-K theory of the SNR does not apply yet.
COLUMNS = (("sweep", "model", "dataset", "state", "estimator", "bound",
            "num_samples", "latent_dim", "sigma_dec", "batch_size",
            "num_replicates", "chunk_size", "truth", "ess")
           + tuple(f"{p}_{f}" for p in PARTS for f in STAT_FIELDS)
           + ("seconds_group",))
# float32 round-off of a gradient that should be exactly zero: the bias
# z-score divides by √(SE² + atol²) so an estimator with (nearly) zero
# variance is not flagged for a 1e-7 difference.
ROUNDOFF_ATOL = 1e-5
# Estimators whose encoder gradient is zero for every sample when q is the
# exact posterior (∇z [log p(x, z) − log q(z|x)] = 0 there).
ZERO_AT_OPTIMUM = ("stl", "iwae_stl", "iwae_dreg")


class ConfigError(ValueError):
  """A config problem, reported as one line before any work."""


# --------------------------------------------------------------------------
# Config validation.


def validate_config(config):
  """Checks the whole config; raises ConfigError with one line."""
  def need(ok, message):
    if not ok:
      raise ConfigError(message)

  need(set(config.models) <= set(MODELS) and config.models,
       f"models must be a non-empty subset of {MODELS}, got {config.models}")
  need(set(config.sweeps) <= set(SWEEPS) and config.sweeps,
       f"sweeps must be a non-empty subset of {SWEEPS}, got {config.sweeps}")
  for name in config.elbo_estimators:
    need(name in est_lib.ELBO_ESTIMATORS,
         f"elbo_estimators: {name!r} is not one of "
         f"{tuple(est_lib.ELBO_ESTIMATORS)}")
  for name in config.iwae_estimators:
    need(name in est_lib.IWAE_ESTIMATORS,
         f"iwae_estimators: {name!r} is not one of "
         f"{tuple(est_lib.IWAE_ESTIMATORS)}")
  for field in ("num_samples_grid", "iwae_k_grid"):
    grid = tuple(config[field])
    need(grid and all(isinstance(m, int) and m >= 1 for m in grid)
         and list(grid) == sorted(set(grid)),
         f"{field} must be increasing positive integers, got {grid}")
  need(config.base_num_samples >= 1, "base_num_samples must be >= 1")
  need(config.snr_fit_min_k >= 1, "snr_fit_min_k must be >= 1")
  need(config.chunk_size >= 1, "chunk_size must be >= 1")
  need(config.max_chunk_evals >= 1, "max_chunk_evals must be >= 1")
  lin = config.linear
  need(set(lin.states) <= set(LINEAR_STATES) and lin.states,
       f"linear.states must be a subset of {LINEAR_STATES}")
  need(lin.data_sigma > 0 and lin.batch_size >= 1 and lin.iwae_batch_size >= 1,
       "linear: data_sigma > 0 and batch sizes >= 1 required")
  need(lin.near_optimum_noise >= 0, "linear.near_optimum_noise must be >= 0")
  sigmas = (lin.sigma_dec,) + tuple(lin.sigma_decs)
  need(all(s > 0 for s in sigmas), "linear: sigma_dec values must be > 0")
  if {"optimum", "near_optimum"} & set(lin.states):
    need(all(s < lin.data_sigma for s in sigmas),
         f"linear: every sigma_dec must be < data_sigma={lin.data_sigma} for "
         f"the optimum (c² + s² = σ²) to exist, got {sigmas}")
  need(all(d >= 1 for d in (lin.latent_dim,) + tuple(lin.latent_dims)),
       "linear: latent dims must be >= 1")
  vae = config.vae
  need(set(vae.states) <= set(VAE_STATES) and vae.states,
       f"vae.states must be a subset of {VAE_STATES}")
  need(vae.likelihood in ("gaussian", "bernoulli"),
       f"vae.likelihood must be gaussian or bernoulli, got {vae.likelihood!r}")
  need(all(s > 0 for s in (vae.sigma_dec,) + tuple(vae.sigma_decs)),
       "vae: sigma_dec values must be > 0")
  need(vae.batch_size >= 1 and vae.iwae_batch_size >= 1 and
       vae.train_steps >= 0,
       "vae: batch sizes >= 1 and train_steps >= 0 required")
  need(vae.train_estimator in est_lib.ESTIMATORS,
       f"vae.train_estimator {vae.train_estimator!r} is not one of "
       f"{sorted(est_lib.ESTIMATORS)}")
  need(vae.train_num_samples >= est_lib.MIN_SAMPLES[vae.train_estimator],
       f"vae.train_num_samples too small for {vae.train_estimator}")
  for name, part in (("linear", lin), ("vae", vae)):
    need(2 <= part.min_replicates <= part.num_replicates,
         f"{name}: need 2 <= min_replicates <= num_replicates")
    need(part.max_sample_evals >= 1 and part.iwae_max_sample_evals >= 1,
         f"{name}: max_sample_evals and iwae_max_sample_evals must be >= 1")
  if config.checkpoint_dir is not None:
    need(os.path.isdir(config.checkpoint_dir),
         f"checkpoint_dir {config.checkpoint_dir!r} is not a directory")


# --------------------------------------------------------------------------
# Settings: a model, its parameters and a fixed batch.


@dataclasses.dataclass
class Setting:
  """One model state on one batch; every estimator is run on it."""

  model_kind: str  # "linear" | "vae"
  dataset: str
  state: str
  latent_dim: int
  sigma_dec: float  # NaN for a Bernoulli decoder
  model: Any
  params: Any
  x: jax.Array  # [B, *event]
  exact: bool  # the ELBO gradient is known in closed form
  budget: Any  # the config block with num_replicates, max_sample_evals, ...

  def tag(self):
    return (f"{self.model_kind}|{self.dataset}|{self.state}|{self.latent_dim}|"
            f"{self.sigma_dec}|{tuple(self.x.shape)}")


def _key(seed, *parts):
  """A key derived from a description, so a row does not depend on order."""
  text = "|".join(str(p) for p in parts)
  return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(text.encode()))


LINEAR_MODEL = est_lib.LinearGaussianModel()


def linear_setting(config, state, latent_dim, sigma_dec, batch_size=None):
  """§3 model with d = latent_dim at `state`, decoder noise s = sigma_dec.

  The batch is the first `batch_size` (default linear.batch_size) of one
  fixed draw, so the ELBO and K sweeps share their first examples.
  """
  lin = config.linear
  batch_size = lin.batch_size if batch_size is None else batch_size
  mu = lin.data_mu * jnp.ones((latent_dim,))
  x = linear_gaussian.sample_data(
      _key(config.seed, "linear-data", latent_dim), mu, lin.data_sigma,
      max(lin.batch_size, lin.iwae_batch_size))[:batch_size]
  if state in ("optimum", "near_optimum"):
    enc, dec = linear_gaussian.optimal_params(mu, lin.data_sigma, sigma_dec)
    if state == "near_optimum":
      # A stand-in for a trained model: the optimum plus small noise, so q is
      # close to, but not exactly, the posterior.
      leaves, tree = jax.tree.flatten((enc, dec))
      keys = jax.random.split(_key(config.seed, "near-optimum", latent_dim),
                              len(leaves))
      leaves = [v + lin.near_optimum_noise * jax.random.normal(k, v.shape)
                for v, k in zip(leaves, keys)]
      enc, dec = jax.tree.unflatten(tree, leaves)
  else:
    enc, dec = linear_gaussian.init_params(
        _key(config.seed, "linear-init", latent_dim), latent_dim,
        lin.init_scale)
    dec = dict(dec, log_s=jnp.full((latent_dim,), math.log(sigma_dec),
                                   jnp.float32))
  return Setting("linear", "synthetic_gaussian", state, latent_dim,
                 float(sigma_dec), LINEAR_MODEL,
                 est_lib.linear_gaussian_params(enc, dec), x, True, lin)


def _data_config(vae_cfg, seed):
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict({
      "dataset": vae_cfg.dataset, "idx_dir": vae_cfg.idx_dir,
      "data_dir": vae_cfg.data_dir, "data_seed": seed})


def _as_array(source):
  if hasattr(source, "to_numpy"):
    return np.asarray(source.to_numpy(), np.float32)
  return np.stack([np.asarray(source[i], np.float32)
                   for i in range(len(source))])


def load_vae_data(data_config, likelihood, batch_size, seed):
  """Training pixels and the fixed evaluation batch, float32.

  The eval batch is the first `batch_size` test examples; for a Bernoulli
  decoder it is binarized once with a fixed key (the dynamic binarization
  of training, frozen so that every estimator sees the same batch).

  Returns:
    (train [N, *event], x [B, *event] as the likelihood sees it,
     x_continuous [B, *event] unbinarized, dataset name).
  """
  from vae_jax import data  # pylint: disable=g-import-not-at-top
  dataset = data.get_dataset(data_config)
  train = _as_array(dataset.train)
  test = _as_array(dataset.test)
  if len(test) < batch_size:
    raise ConfigError(f"vae.batch_size={batch_size} exceeds the "
                      f"{len(test)} test examples of {dataset.name}")
  x_continuous = jnp.asarray(test[:batch_size])
  x = x_continuous
  if likelihood == "bernoulli" and dataset.kind != "binary":
    x = jax.random.bernoulli(_key(seed, "binarize"), x).astype(jnp.float32)
  return train, x, x_continuous, dataset.name


def build_vae(architecture, latent_dim, event_shape, hidden, channels,
              activation, likelihood, sigma_dec_mode, sigma_dec):
  """The VAE of `vae_jax.models.make_networks` for one configuration."""
  from vae_jax.models import make_networks  # pylint: disable=g-import-not-at-top
  from vae_jax.vae import VAE  # pylint: disable=g-import-not-at-top
  encoder, decoder = make_networks(architecture, latent_dim, tuple(event_shape),
                                   hidden=tuple(hidden),
                                   channels=tuple(channels),
                                   activation=activation)
  return VAE(encoder, decoder, tuple(event_shape), latent_dim, likelihood,
             sigma_dec_mode, float(sigma_dec))


def train_vae(model, params, train_x, config, likelihood):
  """Adam on one of our estimators: the in-process "trained" state.

  A short, self-contained loop so the default run needs no runner output
  (a checkpoint from the runner, config.checkpoint_dir, takes its place when
  given). Bernoulli data are binarized afresh every step.

  Returns:
    trained params.
  """
  import optax  # pylint: disable=g-import-not-at-top
  vae = config.vae
  optimizer = optax.adam(vae.learning_rate)
  estimator = est_lib.get_estimator(vae.train_estimator, model,
                                    vae.train_num_samples)
  train_x = jnp.asarray(train_x)

  def step(carry, key):
    p, opt_state = carry
    k_idx, k_bin, k_grad = jax.random.split(key, 3)
    idx = jax.random.randint(k_idx, (vae.train_batch_size,), 0, len(train_x))
    xb = train_x[idx]
    if likelihood == "bernoulli":
      xb = jax.random.bernoulli(k_bin, xb).astype(jnp.float32)
    grads = estimator(p, k_grad, xb)
    # The estimator gives the ascent direction; optax minimizes.
    updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, grads),
                                          opt_state, p)
    return (optax.apply_updates(p, updates), opt_state), None

  keys = jax.random.split(_key(config.seed, "train"), vae.train_steps)
  (params, _), _ = jax.jit(lambda c, k: jax.lax.scan(step, c, k))(
      (params, optimizer.init(params)), keys)
  return params


def _elbo_nats(model, params, x, seed):
  """Batch-mean ELBO (M = 100, analytic KL) in nats per example."""
  elbo = jax.jit(lambda p, k: jnp.mean(model.elbo(p, k, x, 100).elbo))
  return float(elbo(params, _key(seed, "elbo-report")))


class VaeFactory:
  """Builds VAE settings: loads data once, trains or restores once.

  Base settings use config.vae (or the checkpoint's model and data for the
  "checkpoint" state and its "init"); the latent_dim sweep changes L; the
  sigma_dec sweep uses a Gaussian decoder N(f(z), σ_dec² I) on the
  unbinarized pixels, whatever the base likelihood.
  """

  def __init__(self, config):
    self.config = config
    vae = config.vae
    self.notes = []
    self.checkpoint = None
    self.num_eval = max(vae.batch_size, vae.iwae_batch_size)
    self.train_x, self.x, self.x_continuous, self.dataset = load_vae_data(
        _data_config(vae, config.seed), vae.likelihood, self.num_eval,
        config.seed)
    self.event_shape = self.x.shape[1:]
    self._models = {}
    self._trained = {}
    if config.checkpoint_dir is not None:
      self._restore(config.checkpoint_dir)

  def _restore(self, workdir):
    # Imported here: only runs with a checkpoint need orbax.
    from vae_jax.checkpointing import restore_params  # pylint: disable=g-import-not-at-top
    restored = restore_params(workdir)
    params, ckpt = restored[0], restored[1]
    likelihood = ckpt.likelihood
    _, x, _, dataset = load_vae_data(ckpt, likelihood, self.num_eval,
                                     self.config.seed)
    model = build_vae(ckpt.architecture, ckpt.latent_dim, x.shape[1:],
                      ckpt.hidden, ckpt.channels, ckpt.activation, likelihood,
                      ckpt.sigma_dec_mode, ckpt.sigma_dec)
    params = jax.tree.map(jnp.asarray, params)
    sigma = (float(ckpt.sigma_dec) if likelihood == "gaussian"
             else float("nan"))
    self.checkpoint = dict(model=model, params=params, x=x, dataset=dataset,
                           latent_dim=int(ckpt.latent_dim), sigma_dec=sigma)
    self.notes.append(
        f"checkpoint state: restored from `{workdir}` ({ckpt.architecture} "
        f"{tuple(ckpt.hidden)}, L={ckpt.latent_dim}, {likelihood} decoder, "
        f"dataset {dataset}); ELBO on the fixed batch "
        f"{_elbo_nats(model, params, x, self.config.seed):.2f} nats/example. "
        "Its init state is a fresh initialization of the same model.")

  def states(self):
    states = tuple(self.config.vae.states)
    if self.checkpoint is not None:
      states = tuple("checkpoint" if s == "trained" else s for s in states)
      if "checkpoint" not in states:
        states += ("checkpoint",)
    return states

  def setting(self, state, latent_dim=None, sigma_dec=None, batch_size=None):
    """A VAE setting; latent_dim / sigma_dec default to the base values."""
    vae = self.config.vae
    batch_size = vae.batch_size if batch_size is None else batch_size
    base = latent_dim is None and sigma_dec is None
    if self.checkpoint is not None and base:
      setting = self._checkpoint_setting(state)
      return dataclasses.replace(setting, x=setting.x[:batch_size])
    likelihood, x = vae.likelihood, self.x
    if sigma_dec is not None:
      likelihood, x = "gaussian", self.x_continuous
    latent_dim = vae.latent_dim if latent_dim is None else latent_dim
    sigma_dec = vae.sigma_dec if sigma_dec is None else sigma_dec
    model = self._model(latent_dim, likelihood, sigma_dec)
    params = jax.jit(model.init)(_key(self.config.seed, "vae-init",
                                      latent_dim))
    if state == "trained":
      params = self._train(model, params, x, likelihood)
    sigma = sigma_dec if likelihood == "gaussian" else float("nan")
    dataset = self.dataset + ("" if likelihood == vae.likelihood else
                              f" ({likelihood})")
    return Setting("vae", dataset, state, latent_dim, float(sigma), model,
                   params, x[:batch_size], False, vae)

  def _model(self, latent_dim, likelihood, sigma_dec):
    key = (latent_dim, likelihood, sigma_dec)
    if key not in self._models:
      vae = self.config.vae
      self._models[key] = build_vae(
          vae.architecture, latent_dim, self.event_shape, vae.hidden,
          vae.channels, vae.activation, likelihood, "fixed", sigma_dec)
    return self._models[key]

  def _train(self, model, params, x, likelihood):
    if id(model) not in self._trained:
      vae = self.config.vae
      start = time.perf_counter()
      before = _elbo_nats(model, params, x, self.config.seed)
      trained = train_vae(model, params, self.train_x, self.config,
                          likelihood)
      after = _elbo_nats(model, trained, x, self.config.seed)
      self.notes.append(
          f"trained state: {vae.train_steps} Adam steps here (lr "
          f"{vae.learning_rate}, batch {vae.train_batch_size}, gradient "
          f"{vae.train_estimator} with M/K = {vae.train_num_samples}) in "
          f"{time.perf_counter() - start:.1f} s; ELBO on the fixed batch "
          f"{before:.2f} → {after:.2f} nats/example")
      self._trained[id(model)] = trained
    return self._trained[id(model)]

  def _checkpoint_setting(self, state):
    ck = self.checkpoint
    params = ck["params"]
    if state == "init":
      params = jax.jit(ck["model"].init)(_key(self.config.seed, "vae-init",
                                              ck["latent_dim"]))
    return Setting("vae", ck["dataset"], state, ck["latent_dim"],
                   ck["sigma_dec"], ck["model"], params, ck["x"], False,
                   self.config.vae)


# --------------------------------------------------------------------------
# Running estimators.


def effective_sample_size(setting, key, num_samples):
  """Mean over the batch of 1/Σ_k w̃_k² for one draw of K samples."""
  return float(_ess(setting.model, num_samples, setting.params, key,
                    setting.x))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _ess(model, num_samples, params, key, x):
  terms = objectives.sample_terms(key, model.posterior(params, x),
                                  model.log_likelihood_fn(params, x),
                                  num_samples)
  w = jax.nn.softmax(terms.log_weights, axis=0)
  return jnp.mean(1.0 / jnp.sum(jnp.square(w), axis=0))


# Jitted so that each is one compiled program, not dozens of eager ops.
@jax.jit
def _exact_flat(params, x):
  return est_lib.flatten_split(est_lib.exact_gradient(params, x))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _closed_form_traces(params, x, name, num_samples):
  _, var = gradient_stats.linear_gaussian_gradient_moments(params, x, name,
                                                           num_samples)
  return [jnp.sum(v) for v in est_lib.flatten_split(var)]


class Evaluator:
  """Runs estimators on settings; caches compiled programs and rows.

  All estimators of one setting and one M (or K) run in a single compiled
  program on the same keys (common random numbers): compiling them together
  is about 2.5× faster than one by one, and compilation dominates the
  small settings.
  """

  def __init__(self, config):
    self.config = config
    self._compiled = {}
    self._rows = {}

  def _plan(self, setting, bound, evals_per_replicate):
    """(R, chunk): R within the budget, rounded up to a multiple of chunk.

    A whole number of chunks keeps one copy of each estimator in the
    compiled program (no ragged last chunk).
    """
    b = setting.budget
    cap = b.max_sample_evals if bound == "elbo" else b.iwae_max_sample_evals
    r = max(b.min_replicates, min(b.num_replicates,
                                  cap // evals_per_replicate))
    by_memory = self.config.max_chunk_evals // evals_per_replicate
    chunk = max(1, min(self.config.chunk_size, by_memory, r))
    return int(chunk * math.ceil(r / chunk)), int(chunk)

  def _function(self, setting, names, num_samples, num_replicates, chunk):
    key = (id(setting.model), names, num_samples, num_replicates, chunk)
    if key not in self._compiled:
      estimators = [est_lib.get_estimator(n, setting.model, num_samples)
                    for n in names]

      def all_moments(params, rng, x):
        return [est_lib.replicate_moments(e, params, rng, x, num_replicates,
                                          chunk) for e in estimators]

      self._compiled[key] = jax.jit(all_moments)
    return self._compiled[key]

  def run(self, setting, sweep, names, num_samples):
    """Rows (dicts of COLUMNS) of `names` on `setting` with M (or K) samples.

    L_K estimators run together also get a two-sample comparison with
    iwae_reparam (column *_vs_iwae_reparam_max_abs_z).
    """
    names = tuple(names)
    todo = tuple(n for n in names
                 if (setting.tag(), n, num_samples) not in self._rows)
    if todo:
      self._compute(setting, sweep, todo, num_samples)
    return [dict(self._rows[(setting.tag(), n, num_samples)], sweep=sweep)
            for n in names]

  def _compute(self, setting, sweep, names, num_samples):
    batch = setting.x.shape[0]
    bounds = {"elbo" if n in est_lib.ELBO_ESTIMATORS else "iwae"
              for n in names}
    if len(bounds) != 1:
      raise ValueError(f"mixed ELBO and L_K estimators in one group: {names}")
    bound = bounds.pop()
    num_replicates, chunk = self._plan(setting, bound, num_samples * batch)
    fn = self._function(setting, names, num_samples, num_replicates, chunk)
    start = time.perf_counter()
    key = _key(self.config.seed, "mc", setting.tag(), num_samples)
    results = jax.block_until_ready(fn(setting.params, key, setting.x))
    seconds = time.perf_counter() - start

    # The exact ELBO gradient is the truth for ELBO estimators, for L_1 = ELBO,
    # and for every K at the exact posterior, where ∇E[L_K] = ∇ELBO
    # (tests/test_estimators.py derives this).
    has_truth = setting.exact and (bound == "elbo" or num_samples == 1 or
                                   setting.state == "optimum")
    truths = _exact_flat(setting.params, setting.x) if has_truth else (None,
                                                                        None)
    ess = (effective_sample_size(setting, key, num_samples)
           if bound == "iwae" else "")
    moments = dict(zip(names, results))
    for name, (enc, dec) in moments.items():
      row = {c: "" for c in COLUMNS}
      row.update(sweep=sweep, model=setting.model_kind,
                 dataset=setting.dataset, state=setting.state, estimator=name,
                 bound=bound, num_samples=num_samples,
                 latent_dim=setting.latent_dim, sigma_dec=setting.sigma_dec,
                 batch_size=batch, num_replicates=num_replicates,
                 chunk_size=chunk,
                 truth="exact_elbo_gradient" if has_truth else "none",
                 ess=ess, seconds_group=round(seconds, 3))
      closed = None
      if setting.exact and name in gradient_stats.PATHWISE_CLOSED_FORM:
        closed = [float(v) for v in _closed_form_traces(
            setting.params, setting.x, name, num_samples)]
      for i, (part, m, truth) in enumerate(zip(PARTS, (enc, dec), truths)):
        atol = 0.0
        if truth is not None:
          atol = ROUNDOFF_ATOL * max(1.0, float(jnp.max(jnp.abs(truth))))
        for field, value in gradient_stats.summarize(m, truth, atol).items():
          row[f"{part}_{field}"] = value
        if closed is not None:
          row[f"{part}_closed_form_var_trace"] = closed[i]
        if "iwae_reparam" in moments and bound == "iwae":
          row[f"{part}_vs_iwae_reparam_max_abs_z"] = _two_sample_max_abs_z(
              m, moments["iwae_reparam"][i])
      if setting.state == "optimum" and name in ZERO_AT_OPTIMUM:
        # Exactly zero encoder gradient in exact arithmetic: |mean|/std is
        # round-off over round-off, not a signal-to-noise ratio.
        for field in ("snr_mean_of_ratios", "snr_ratio_of_means",
                      "snr_debiased_mean_of_ratios"):
          row[f"enc_{field}"] = float("nan")
      self._rows[(setting.tag(), name, num_samples)] = row
    logging.info("%-11s %-6s %-12s M/K=%-5d R=%-5d %d estimators in %.2fs",
                 sweep, setting.model_kind, setting.state, num_samples,
                 num_replicates, len(names), seconds)


def _two_sample_max_abs_z(a, b):
  """max_p |mean_a − mean_b| / √(SE_a² + SE_b² + atol²) of two Moments."""
  se2 = a.variance / a.count + b.variance / b.count
  atol = ROUNDOFF_ATOL * max(1.0, float(jnp.max(jnp.abs(b.mean))))
  return float(jnp.max(jnp.abs(a.mean - b.mean) / jnp.sqrt(se2 + atol**2)))


# --------------------------------------------------------------------------
# Sweeps.


def _elbo_names(config, num_samples):
  return [n for n in config.elbo_estimators
          if num_samples >= est_lib.MIN_SAMPLES[n]]


def run_sweeps(config, evaluator, vae_factory):
  """All rows of the configured sweeps."""
  rows = []
  settings_by_model = {}
  if "linear" in config.models:
    lin = config.linear
    settings_by_model["linear"] = (
        lambda state, d=None, s=None, batch=None: linear_setting(
            config, state, lin.latent_dim if d is None else d,
            lin.sigma_dec if s is None else s, batch))
  if "vae" in config.models:
    settings_by_model["vae"] = (
        lambda state, d=None, s=None, batch=None: vae_factory.setting(
            state, d, s, batch))

  for model_kind, make in settings_by_model.items():
    states = (tuple(config.linear.states) if model_kind == "linear"
              else vae_factory.states())
    if "num_samples" in config.sweeps:
      for state in states:
        setting = make(state)
        for m in config.num_samples_grid:
          rows += evaluator.run(setting, "num_samples",
                                _elbo_names(config, m), m)
    # Latent dimension and σ_dec: every linear state; the VAE at
    # initialization only (a trained VAE per value would need its own run).
    sweep_states = states if model_kind == "linear" else ("init",)
    m = config.base_num_samples
    if "latent_dim" in config.sweeps:
      dims = (config.linear.latent_dims if model_kind == "linear"
              else config.vae.latent_dims)
      for state in sweep_states:
        for d in dims:
          rows += evaluator.run(make(state, d=d), "latent_dim",
                                _elbo_names(config, m), m)
    if "sigma_dec" in config.sweeps:
      sigmas = (config.linear.sigma_decs if model_kind == "linear"
                else config.vae.sigma_decs)
      for state in sweep_states:
        for s in sigmas:
          rows += evaluator.run(make(state, s=s), "sigma_dec",
                                _elbo_names(config, m), m)
    if "iwae_k" in config.sweeps:
      iwae_batch = (config.linear.iwae_batch_size if model_kind == "linear"
                    else config.vae.iwae_batch_size)
      for state in states:
        setting = make(state, batch=iwae_batch)
        for k in config.iwae_k_grid:
          rows += evaluator.run(setting, "iwae_k", config.iwae_estimators, k)
  return rows


# --------------------------------------------------------------------------
# Outputs: CSV, plots, summary.


def write_csv(rows, path):
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: _fmt_csv(row.get(k, "")) for k in COLUMNS})


def _fmt_csv(value):
  if isinstance(value, float):
    return f"{value:.6g}"
  return value


def _num(value):
  try:
    return float(value)
  except (TypeError, ValueError):
    return float("nan")


def _series(rows, sweep, x_key, y_key, **match):
  """{(model, state, estimator): (xs, ys)} of rows matching `match`."""
  out = {}
  for r in rows:
    if r["sweep"] != sweep or any(r[k] != v for k, v in match.items()):
      continue
    out.setdefault((r["model"], r["state"], r["estimator"]), []).append(
        (_num(r[x_key]), _num(r[y_key])))
  return {k: tuple(np.array(v).T) for k, v in
          ((k, sorted(v)) for k, v in out.items())}


def plot_sweep(rows, sweep, x_key, x_label, y_fields, y_labels, path, title,
               floor=None):
  """Log-log plot: one row of panels per model, one column per y field."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  models = [m for m in MODELS if any(r["model"] == m and r["sweep"] == sweep
                                     for r in rows)]
  if not models:
    return None
  fig, axes = plt.subplots(len(models), len(y_fields), squeeze=False,
                           figsize=(5.5 * len(y_fields), 4 * len(models)))
  styles = ["-", "--", ":", "-."]
  for i, model in enumerate(models):
    states = sorted({r["state"] for r in rows
                     if r["model"] == model and r["sweep"] == sweep})
    for j, (field, label) in enumerate(zip(y_fields, y_labels)):
      ax = axes[i][j]
      series = _series(rows, sweep, x_key, field, model=model)
      names = sorted({k[2] for k in series})
      colors = {n: f"C{c}" for c, n in enumerate(names)}
      for (_, state, name), (xs, ys) in sorted(series.items()):
        ok = np.isfinite(ys) & (ys > 0)
        if not ok.any():
          continue
        ax.plot(xs[ok], ys[ok], styles[states.index(state) % 4], marker="o",
                ms=3, color=colors[name], label=f"{name} [{state}]")
      if floor is not None:
        ax.axhline(floor, color="gray", lw=0.8, ls=":",
                   label="SNR noise floor √(2/(πR))")
      ax.set_xscale("log")
      ax.set_yscale("log")
      ax.set_xlabel(x_label)
      ax.set_ylabel(label)
      ax.set_title(f"{model}: {label}", fontsize=9)
      ax.grid(True, which="both", alpha=0.3)
      if j == 0:
        ax.legend(fontsize=6)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _fmt(value, digits=3):
  value = _num(value)
  if not math.isfinite(value):
    return "n/a"
  if value == 0:
    return "0"
  if abs(value) >= 1e4 or abs(value) < 1e-3:
    return f"{value:.{digits - 1}e}"
  return f"{value:.{digits}g}"


def _claim(ok):
  return "**holds**" if ok else "**does NOT hold**"


def slope_table(rows):
  """Fitted log-log slopes of the variance trace against M.

  Returns:
    (markdown lines, {estimator: [slopes]}).
  """
  lines, slopes = [], {}
  for part in PARTS:
    series = _series(rows, "num_samples", "num_samples", f"{part}_var_trace")
    for (model, state, name), (ms, vs) in sorted(series.items()):
      if len(ms) < 2 or not np.all(np.isfinite(vs)) or np.max(vs) < 1e-10:
        continue  # zero variance (STL at the optimum) has no slope
      slope, se = gradient_stats.loglog_slope(ms, vs)
      slopes.setdefault(name, []).append(slope)
      lines.append(f"| {model} | {state} | {name} | {part} | "
                   f"{_fmt(slope)} ± {_fmt(se, 2)} | "
                   f"{int(ms[0])}–{int(ms[-1])} |")
  header = ["| model | state | estimator | part | slope ± SE | M range |",
            "|---|---|---|---|---|---|"]
  return header + lines, slopes


def _at(rows, **match):
  for r in rows:
    if all(r[k] == v for k, v in match.items()):
      return r
  return None


def _k_series(k_rows, field, model, state, name):
  series = _series(k_rows, "iwae_k", "num_samples", field, model=model,
                   state=state, estimator=name)
  return next(iter(series.values())) if series else None


def snr_findings(config, k_rows):
  """Finding 4: encoder SNR vs K for iwae_reparam and iwae_dreg.

  Slopes and verdicts use the debiased SNR (no √(2/(πR)) floor, which would
  flatten a falling SNR); the plain mean-of-ratios values are listed too.
  """
  k_min = config.snr_fit_min_k
  items, n_settings, n_falls, n_flat = [], 0, 0, 0
  not_falls, not_flat = [], []
  for model in MODELS:
    for state in sorted({r["state"] for r in k_rows if r["model"] == model}):
      if model == "linear" and state == "optimum":
        continue  # ∇φ E[L_K] = 0 and DReG's φ-gradient ≡ 0 there (see CSV)
      fits = {}
      for name in ("iwae_reparam", "iwae_dreg"):
        raw = _k_series(k_rows, "enc_snr_mean_of_ratios", model, state, name)
        deb = _k_series(k_rows, "enc_snr_debiased_mean_of_ratios", model,
                        state, name)
        if raw is None or deb is None:
          continue
        ks, debiased = deb
        keep = (ks >= k_min) & (debiased > 0)
        if keep.sum() < 2:
          continue
        slope, _ = gradient_stats.loglog_slope(ks[keep], debiased[keep])
        fits[name] = (ks, raw[1], debiased, slope)
      if len(fits) < 2:
        continue
      n_settings += 1
      label = f"{model} [{state}]"
      falls = fits["iwae_reparam"][3] < -0.2
      flat = fits["iwae_dreg"][3] >= -0.1
      n_falls += falls
      n_flat += flat
      if not falls:
        not_falls.append(label)
      if not flat:
        not_flat.append(label)
      ks = fits["iwae_reparam"][0]
      top = [r for r in k_rows if r["model"] == model and
             r["state"] == state and int(r["num_samples"]) == int(ks[-1])][0]
      parts = []
      for name, (_, raw, debiased, slope) in fits.items():
        parts.append(f"{name} {', '.join(_fmt(v) for v in raw)} (debiased "
                     f"{', '.join(_fmt(v) for v in debiased)}; slope "
                     f"{_fmt(slope)})")
      dec = _k_series(k_rows, "dec_snr_mean_of_ratios", model, state,
                      "iwae_reparam")
      if dec is not None:
        keep = dec[0] >= k_min
        if keep.sum() >= 2:
          slope, _ = gradient_stats.loglog_slope(dec[0][keep], dec[1][keep])
          parts.append(f"decoder SNR (iwae_reparam) {_fmt(dec[1][0])} → "
                       f"{_fmt(dec[1][-1])} (slope {_fmt(slope)})")
      floor = gradient_stats.snr_noise_floor(int(top["num_replicates"]))
      items.append(
          f"   * {label}, K = {', '.join(str(int(k)) for k in ks)}; ESS/K "
          f"at K = {int(ks[-1])}: {_fmt(_num(top['ess']) / int(ks[-1]))}; "
          f"plain-SNR noise floor {_fmt(floor)}: " + "; ".join(parts) + ".")
  if not n_settings:
    return []
  head = (f"4. **Encoder SNR vs K.** Values: mean over parameters of "
          f"|mean|/std, and its debiased form (`gradient_stats.snr_debiased`)"
          f"; slopes: log-log fit of the debiased SNR over K ≥ {k_min} (at "
          f"K = 1 the bound is the ELBO and DReG coincides with STL). The "
          f"importance-weighted bound's encoder SNR falls (slope < −0.2) in "
          f"{n_falls} of {n_settings} settings"
          + (f" (not in: {', '.join(not_falls)})" if not_falls else "") +
          f"; DReG's does not fall (slope ≥ −0.1) in {n_flat} of "
          f"{n_settings}"
          + (f" (not in: {', '.join(not_flat)})" if not_flat else "") +
          ". Both in every setting: "
          + _claim(n_falls == n_settings and n_flat == n_settings) + ". "
          "The large-K rates (IWAE ∝ K^−½, DReG ∝ K^+½; Rainforth et al. "
          "2018, Tucker et al. 2019) are asymptotic: they need K large "
          "against the spread of the weights (of w², for DReG); ESS/K is "
          "listed as a rough gauge of how far each setting is from it.")
  return [head] + items + [""]


def summary_markdown(config, rows, notes, elapsed, files):
  """The summary: claims with measured numbers, then compact tables."""
  out = ["# Gradient-estimator variance benchmark", ""]
  out.append(f"Run of `python -m experiments.gradient_variance` in "
             f"{elapsed:.0f} s on {jax.devices()[0].platform} "
             f"({os.cpu_count()} CPUs visible), seed {config.seed}. "
             "Gradients are of the batch-mean bound in nats per example; "
             "`enc` = encoder parameters φ, `dec` = decoder parameters θ; "
             "variances are traces of the covariance of one estimate "
             "(Σ_p Var g_p) over R replicates.")
  out.append("")
  for note in notes:
    out.append(f"* {note}")
  out.append("")
  out.append("## Findings")
  out.append("")

  # 1. Variance ∝ 1/M.
  if any(r["sweep"] == "num_samples" for r in rows):
    _, by_name = slope_table(rows)
    iid = [v for n, vs in by_name.items() if n != "score_function_loo"
           for v in vs]
    if iid:
      lo, hi = min(iid), max(iid)
      out.append(f"1. **Variance falls as 1/M.** Fitted log-log slopes of the "
                 f"variance trace against M lie in [{_fmt(lo)}, {_fmt(hi)}] "
                 f"(median {_fmt(float(np.median(iid)))}) over {len(iid)} "
                 f"series (estimators averaging M i.i.d. terms, φ and θ, "
                 f"every model and state); −1 is 1/M: "
                 f"{_claim(all(abs(s + 1) < 0.1 for s in iid))} "
                 "(|slope + 1| < 0.1 for every series).")
      loo = by_name.get("score_function_loo")
      if loo:
        out.append(f"   The leave-one-out baseline couples the M samples (a "
                   f"U-statistic: its variance lies between 1/M and "
                   f"1/(M − 1)); its slopes: {_fmt(min(loo))} to "
                   f"{_fmt(max(loo))}.")
      out.append("")

  # 2. Score function vs reparameterization on the VAE.
  items, all_big, all_narrow = [], True, True
  for state in sorted({r["state"] for r in rows if r["model"] == "vae"}):
    ratios = []
    for m in config.num_samples_grid:
      get = lambda name, m=m: _at(rows, sweep="num_samples", model="vae",
                                  state=state, estimator=name, num_samples=m)
      ref, sf, loo = (get("reparam_analytic_kl"), get("score_function"),
                      get("score_function_loo"))
      if ref and sf and loo:
        base = _num(ref["enc_var_trace"])
        ratios.append((m, _num(sf["enc_var_trace"]) / base,
                       _num(loo["enc_var_trace"]) / base))
    if ratios:
      all_big &= min(r[1] for r in ratios) >= 100
      all_narrow &= all(r[2] < r[1] for r in ratios)
      items.append(f"   * VAE [{state}]: " + "; ".join(
          f"M={m}: score function {_fmt(a)}×, with baseline {_fmt(b)}×"
          for m, a, b in ratios) + ".")
  if items:
    out.append("2. **Score function vs reparameterization on the VAE.** "
               "Encoder variance trace relative to the analytic-KL "
               "reparameterization estimator at the same M. Orders of "
               f"magnitude above (≥ 100× at every M and state): "
               f"{_claim(all_big)}; the leave-one-out baseline narrows the "
               f"gap everywhere: {_claim(all_narrow)}.")
    out += items + [""]

  # 3. STL at the exact posterior.
  stl_rows = [r for r in rows if r["model"] == "linear" and
              r["state"] == "optimum" and r["estimator"] == "stl" and
              r["sweep"] == "num_samples"]
  if stl_rows:
    pairs = []
    for r in stl_rows:
      ref = _at(rows, sweep="num_samples", model="linear", state="optimum",
                estimator="reparam_analytic_kl",
                num_samples=r["num_samples"])
      pairs.append((r["num_samples"], _num(r["enc_var_trace"]),
                    _num(ref["enc_var_trace"]) if ref else float("nan"),
                    _num(r["enc_closed_form_var_trace"])))
    worst = max(p[1] / p[2] for p in pairs if p[2] > 0)
    listing = "; ".join(f"M={m}: {_fmt(a)} vs {_fmt(b)}" for m, a, b, _ in
                        pairs)
    out.append(f"3. **Sticking the landing has zero variance at the exact "
               f"posterior** (linear model, q = p(z|x)): encoder variance "
               f"trace STL vs analytic-KL reparameterization — {listing}; "
               f"closed form 0 (max {_fmt(max(p[3] for p in pairs))}). "
               f"Largest ratio {_fmt(worst)}, float32 round-off: "
               f"{_claim(worst < 1e-6)} (ratio < 1e-6).")
    out.append("")

  # 4. SNR vs K.
  k_rows = [r for r in rows if r["sweep"] == "iwae_k"]
  if k_rows:
    out += snr_findings(config, k_rows)

  # 5. Ground truth checks on the linear model.
  truth_rows = [r for r in rows if r["truth"] == "exact_elbo_gradient"]
  if truth_rows:
    by_name = {}
    for r in truth_rows:
      z = max(_num(r["enc_bias_max_abs_z"]), _num(r["dec_bias_max_abs_z"]))
      by_name.setdefault(r["estimator"], []).append(z)
    listing = ", ".join(f"{n} {_fmt(max(z))} ({len(z)} settings)"
                        for n, z in sorted(by_name.items()))
    worst = max(max(z) for z in by_name.values())
    out.append(f"5. **Unbiased against the exact gradient** (linear model; "
               f"ELBO estimators everywhere, L_K estimators at K = 1 and at "
               f"the exact posterior, where ∇E[L_K] = ∇ELBO): largest "
               f"|bias|/SE per estimator over all parameters and settings — "
               f"{listing}. All below 5: {_claim(worst < 5)}.")
    ratios = [_num(r[f"{p}_var_trace"]) /
              _num(r[f"{p}_closed_form_var_trace"])
              for r in rows for p in PARTS
              if _num(r.get(f"{p}_closed_form_var_trace")) > 1e-8]
    if ratios:
      out.append(f"   Measured / closed-form variance trace for the pathwise "
                 f"estimators (`gradient_stats.linear_gaussian_gradient_"
                 f"moments`): {_fmt(min(ratios))} to {_fmt(max(ratios))} over "
                 f"{len(ratios)} comparisons.")
    out.append("")
  biased = [r for r in rows if r["estimator"] == "iwae_stl" and
            _num(r["num_samples"]) > 1 and
            r["enc_vs_iwae_reparam_max_abs_z"] != "" and
            not (r["model"] == "linear" and r["state"] == "optimum")]
  if biased:
    listing = "; ".join(f"{r['model']} [{r['state']}] K={r['num_samples']}: "
                        f"{_fmt(r['enc_vs_iwae_reparam_max_abs_z'])}"
                        for r in biased)
    dreg = [_num(r["enc_vs_iwae_reparam_max_abs_z"]) for r in rows
            if r["estimator"] == "iwae_dreg" and
            r["enc_vs_iwae_reparam_max_abs_z"] != ""]
    out.append(f"6. **STL on L_K is biased for K > 1**: encoder max "
               f"two-sample |z| against the unbiased iwae_reparam mean — "
               f"{listing}" + (f" (DReG, unbiased: at most {_fmt(max(dreg))})"
                               if dreg else "") + ".")
    out.append("")

  # Tables.
  m = config.base_num_samples
  table_rows = [r for r in rows if r["sweep"] == "num_samples" and
                r["num_samples"] == m]
  if table_rows:
    out += ["## Estimators at M = %d" % m, "",
            "| model | state | estimator | R | enc var trace | dec var trace "
            "| enc SNR mean of ratios | enc SNR ratio of means | dec SNR mean "
            "of ratios | dec SNR ratio of means | max bias/SE |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table_rows:
      z = max(_num(r["enc_bias_max_abs_z"]), _num(r["dec_bias_max_abs_z"]))
      out.append(f"| {r['model']} | {r['state']} | {r['estimator']} | "
                 f"{r['num_replicates']} | {_fmt(r['enc_var_trace'])} | "
                 f"{_fmt(r['dec_var_trace'])} | "
                 f"{_fmt(r['enc_snr_mean_of_ratios'])} | "
                 f"{_fmt(r['enc_snr_ratio_of_means'])} | "
                 f"{_fmt(r['dec_snr_mean_of_ratios'])} | "
                 f"{_fmt(r['dec_snr_ratio_of_means'])} | {_fmt(z)} |")
    out.append("")
  if k_rows:
    out += ["## Importance-weighted bound vs K", "",
            "| model | state | estimator | K | R | enc var trace | enc SNR "
            "mean of ratios | enc SNR ratio of means | dec SNR mean of ratios "
            "| dec SNR ratio of means | enc max |z| vs iwae_reparam |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in k_rows:
      out.append(f"| {r['model']} | {r['state']} | {r['estimator']} | "
                 f"{r['num_samples']} | {r['num_replicates']} | "
                 f"{_fmt(r['enc_var_trace'])} | "
                 f"{_fmt(r['enc_snr_mean_of_ratios'])} | "
                 f"{_fmt(r['enc_snr_ratio_of_means'])} | "
                 f"{_fmt(r['dec_snr_mean_of_ratios'])} | "
                 f"{_fmt(r['dec_snr_ratio_of_means'])} | "
                 f"{_fmt(r['enc_vs_iwae_reparam_max_abs_z'])} |")
    out.append("")
  if any(r["sweep"] == "num_samples" for r in rows):
    table, _ = slope_table(rows)
    out += ["## Log-log slope of the variance trace against M", ""] + table
    out.append("")
  out.append("Definitions: SNR *mean of ratios* = mean over parameters (with "
             "std > 0) of |mean|/std; SNR *ratio of means* = mean |mean| / "
             "mean std. Each is measured from R replicates, so an SNR near "
             "√(2/(πR)) is indistinguishable from zero signal. Bias z-scores "
             f"divide by √(SE² + atol²), atol = {ROUNDOFF_ATOL:g}·max(1, "
             "max|truth|), the float32 round-off of an exactly-zero "
             "gradient.")
  out.append("")
  out.append("Files: " + ", ".join(f"`{os.path.basename(f)}`" for f in files))
  out.append("")
  return "\n".join(out)


def run(config, workdir):
  """Runs the configured sweeps and writes every output; returns the rows."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  start = time.perf_counter()
  evaluator = Evaluator(config)
  factory = VaeFactory(config) if "vae" in config.models else None
  rows = run_sweeps(config, evaluator, factory)
  notes = list(factory.notes) if factory else []
  if "vae" in config.models:
    vae = config.vae
    notes.append(
        f"VAE: {vae.architecture} {tuple(vae.hidden)}, L = {vae.latent_dim}, "
        f"{vae.likelihood} decoder on {factory.dataset}; fixed batches of the "
        f"first {vae.batch_size} (ELBO sweeps) and {vae.iwae_batch_size} (K "
        f"sweep) test examples. The latent_dim and sigma_dec sweeps are at "
        f"initialization; sigma_dec uses a Gaussian decoder N(f(z), σ_dec² I) "
        f"on the unbinarized pixels.")
  if "linear" in config.models:
    lin = config.linear
    notes.append(
        f"Linear model (§3): x ~ N({lin.data_mu}, {lin.data_sigma}² I), d = "
        f"{lin.latent_dim}, s = σ_dec = {lin.sigma_dec}, batches of "
        f"{lin.batch_size} (ELBO) and {lin.iwae_batch_size} (K). States: "
        f"init = `linear_gaussian.init_params` (scale {lin.init_scale}) with "
        f"log s set; optimum = `linear_gaussian.optimal_params`, where q is "
        f"the exact posterior (the ELBO's maximizer, what training tends "
        f"to); near_optimum = the optimum plus N(0, "
        f"{lin.near_optimum_noise}²) on every parameter.")
  if any(n == "score_function_loo" for n in config.elbo_estimators):
    notes.append("score_function_loo has no M = 1 rows: the leave-one-out "
                 "baseline needs M ≥ 2.")
  notes.append("R per setting = min(num_replicates, max_sample_evals / "
               "(M·batch)) (iwae_max_sample_evals / (K·batch) in the K "
               "sweep), at least min_replicates, rounded up to whole chunks; "
               "see the CSV column num_replicates. All estimators of one "
               "setting share their Monte Carlo keys.")

  files = [os.path.join(workdir, "results.csv")]
  write_csv(rows, files[0])
  plots = (
      ("num_samples", "num_samples", "M (samples per estimate)",
       "variance_vs_M.png",
       "Trace of the covariance of one gradient estimate vs M", None),
      ("iwae_k", "num_samples", "K (samples in L_K)", "snr_vs_K.png",
       "SNR of the L_K gradient vs K (mean over parameters of |mean|/std)",
       "snr"),
      ("latent_dim", "latent_dim", "latent dimension",
       "variance_vs_latent_dim.png",
       f"Variance trace vs latent dimension (M = {config.base_num_samples})",
       None),
      ("sigma_dec", "sigma_dec", "σ_dec", "variance_vs_sigma_dec.png",
       f"Variance trace vs σ_dec (M = {config.base_num_samples})", None),
  )
  for sweep, x_key, x_label, name, title, kind in plots:
    if kind == "snr":
      k_rows = [r for r in rows if r["sweep"] == sweep]
      floor = (gradient_stats.snr_noise_floor(
          max(int(r["num_replicates"]) for r in k_rows)) if k_rows else None)
      path = plot_sweep(rows, sweep, x_key, x_label,
                        ("enc_snr_mean_of_ratios", "dec_snr_mean_of_ratios"),
                        ("encoder SNR", "decoder SNR"),
                        os.path.join(workdir, name), title, floor)
    else:
      path = plot_sweep(rows, sweep, x_key, x_label,
                        ("enc_var_trace", "dec_var_trace"),
                        ("encoder variance trace (nats²)",
                         "decoder variance trace (nats²)"),
                        os.path.join(workdir, name), title)
    if path:
      files.append(path)
  summary_path = os.path.join(workdir, "summary.md")
  files.append(summary_path)
  text = summary_markdown(config, rows, notes, time.perf_counter() - start,
                          files)
  with open(summary_path, "w") as f:
    f.write(text)
  logging.info("wrote %s", ", ".join(files))
  return rows


def main(argv):
  cli.reject_extra_args(argv)
  cli.quiet_library_logs()
  if _WORKDIR.value is None:
    cli.fail("--workdir is required")
  try:
    validate_config(_CONFIG.value)
  except ConfigError as e:
    cli.fail(f"config: {e}")
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except Exception as e:  # pylint: disable=broad-except
    # Missing data or checkpoints are the user's to fix: one line, no trace.
    if type(e).__name__ in ("ConfigError", "DataError", "CheckpointError"):
      cli.fail(str(e))
    raise
  print(open(os.path.join(_WORKDIR.value, "summary.md")).read())


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
