"""Which points of a sweep train together, and which share a dataset.

Points whose configs differ only in values held in the training state
(`training.stack.value_fields`: σ_dec, seed, a state-held learning rate)
compile to one program and train as one vmapped stack. Points with other
shapes (latent_dim, hidden, sigma_dec_mode, ...) form other groups, which
run one after another through the same loop.
"""

import json
from typing import Sequence

from vae_jax.sweep.grid import Point
from vae_jax.training import stack as stack_lib

# Fields no dataset loader reads: configs equal apart from these share data.
_NON_DATA_FIELDS = (
    "seed", "architecture", "latent_dim", "hidden", "channels", "activation",
    "likelihood", "sigma_dec_mode", "sigma_dec", "objective", "num_samples",
    "analytic_kl", "batch_size", "num_train_steps", "learning_rate",
    "lr_schedule", "warmup_steps", "grad_clip_norm", "adam_b1", "adam_b2",
    "nan_policy", "eval_batch_size", "eval_every_steps", "eval_iwae_samples",
    "final_iwae_samples", "iwae_chunk_size", "log_every_steps",
    "checkpoint_every_steps", "keep_checkpoints", "num_image_examples",
    "num_levels", "num_mixtures", "compute_dtype")


def group_points(points: Sequence[Point], max_group_size=0,
                 has_checkpoints=None):
  """Points with one compiled program, in order of their first index;
  points that resume apart from points that start afresh.

  Args:
    points: the points to run.
    max_group_size: cap on points trained at once (memory); 0 = no cap.
      Larger groups are cut into consecutive chunks.
    has_checkpoints: point -> whether it has checkpoints to resume from;
      None: no point has. Members of a stack train in lockstep, so a point
      with checkpoints stacked with one without would lose them and be
      retrained from step 0. (Resuming points a step apart, as a crash
      between the members' saves leaves them, stay together: the stack
      resumes from the newest step all hold.)

  Returns:
    list of lists of points.
  """
  groups = {}
  for p in points:
    resumes = has_checkpoints is not None and has_checkpoints(p)
    groups.setdefault((stack_lib.program_key(p.config), resumes),
                      []).append(p)
  out = []
  for members in groups.values():
    size = max_group_size if max_group_size > 0 else len(members)
    out.extend(members[i:i + size] for i in range(0, len(members), size))
  return sorted(out, key=lambda g: g[0].index)


def data_key(config):
  """JSON of the fields that choose the data: equal keys share a Dataset."""
  d = json.loads(config.to_json())
  for name in _NON_DATA_FIELDS:
    d.pop(name, None)
  return json.dumps(d, sort_keys=True)
