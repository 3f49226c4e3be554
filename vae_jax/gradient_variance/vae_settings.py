"""VAE settings: loading data, building, training or restoring the model."""

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.core import estimators as est_lib
from vae_jax.gradient_variance.settings import Setting, derive_key
from vae_jax.gradient_variance.validation import ConfigError


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
    x = jax.random.bernoulli(derive_key(seed, "binarize"),
                             x).astype(jnp.float32)
  return train, x, x_continuous, dataset.name


def build_vae(architecture, latent_dim, event_shape, hidden, channels,
              activation, likelihood, sigma_dec_mode, sigma_dec):
  """The VAE of `vae_jax.models.make_networks` for one configuration."""
  from vae_jax.models.networks import make_networks  # pylint: disable=g-import-not-at-top
  from vae_jax.models.vae import VAE  # pylint: disable=g-import-not-at-top
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

  keys = jax.random.split(derive_key(config.seed, "train"), vae.train_steps)
  (params, _), _ = jax.jit(lambda c, k: jax.lax.scan(step, c, k))(
      (params, optimizer.init(params)), keys)
  return params


def _elbo_nats(model, params, x, seed):
  """Batch-mean ELBO (M = 100, analytic KL) in nats per example."""
  elbo = jax.jit(lambda p, k: jnp.mean(model.elbo(p, k, x, 100).elbo))
  return float(elbo(params, derive_key(seed, "elbo-report")))


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
    from vae_jax.training.checkpointing import restore_params  # pylint: disable=g-import-not-at-top
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

  def setting(self, state, latent_dim=None, sigma_dec=None, batch_size=None,
              init_draw=None):
    """A VAE setting; latent_dim / sigma_dec default to the base values.

    init_draw: None for the base initialization; 0, 1, ... for the draws the
    latent_dim sweep averages over (draw 0 is the base initialization).
    """
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
    # Draw 0 keeps the base key, so it is the same model as other sweeps'.
    parts = (latent_dim,) if not init_draw else (latent_dim, init_draw)
    params = jax.jit(model.init)(derive_key(self.config.seed, "vae-init",
                                            *parts))
    if state == "trained":
      params = self._train(model, params, x, likelihood)
    sigma = sigma_dec if likelihood == "gaussian" else float("nan")
    dataset = self.dataset + ("" if likelihood == vae.likelihood else
                              f" ({likelihood})")
    return Setting("vae", dataset, state, latent_dim, float(sigma), model,
                   params, x[:batch_size], False, vae, init_draw)

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
      params = jax.jit(ck["model"].init)(
          derive_key(self.config.seed, "vae-init", ck["latent_dim"]))
    return Setting("vae", ck["dataset"], state, ck["latent_dim"],
                   ck["sigma_dec"], ck["model"], params, ck["x"], False,
                   self.config.vae)
