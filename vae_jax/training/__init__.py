"""Training infrastructure: one loop for one model or a vmapped stack.

  config_validation  the whole config checked before any work
  step               optimizer and the jitted train step
  loop               the one training loop, for one model or a vmapped stack
  stack              N same-shaped models as one pytree; the (vmapped) step
  workdir            what identifies an experiment; what may change on resume
  linear_report      the §3 run's learned parameters vs the optimum
  evaluate           exact test-set averages: ELBO, L_K, bits/dim, active units
  checkpointing      orbax save/restore with corrupt-step fallback
  sharding           Mesh + NamedSharding, multi-process start-up
  metric_writers     metrics.jsonl and TensorBoard
  images             PNG grids
"""
