"""Training infrastructure: one loop for one model or a vmapped stack.

  config_validation  the whole config checked before any work
  step               optimizer and the jitted train step
  runner             the loop: train, evaluate, checkpoint, resume
  evaluate           exact test-set averages: ELBO, L_K, bits/dim, active units
  checkpointing      orbax save/restore with corrupt-step fallback
  sharding           Mesh + NamedSharding, multi-process start-up
  metric_writers     metrics.jsonl and TensorBoard
  images             PNG grids
"""
