"""The math core: the paper's equations as pure functions of arrays.

jax only (no Flax, no I/O, no configs). Explicit PRNG keys, per-example
outputs in nats; everything composes under jit, vmap, grad, pmap and
shard_map.

  distributions    Gaussian log-densities and KLs (Thm 1.3, §6.4)
  likelihoods      log p(x|z): Bernoulli on logits, Gaussian with σ_dec (§6.5),
                   discretized Gaussian and logistic mixture over 8-bit levels
  objectives       encode, reparam (eq 10–11), elbo (eq 1, eq 3), L_K
  linear_gaussian  the §3 model in closed form
  estimators       gradient estimators: reparameterization, score function, STL, DReG
  gradient_stats   replicate moments, variance, SNR, bias
  diagnostics      bits/dim, active units
"""
