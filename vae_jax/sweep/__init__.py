"""Sweeps over σ_dec × latent_dim × seed, run through the one training loop.

  grid      a sweep config's points: expansion, validation, fingerprint
  grouping  which points share a compiled program (one vmapped stack)
  run       each group through `training.loop.train`; result rows
  results   results.csv: rows, CSV I/O, merging split sweeps
  plots     rate–distortion, ELBO/NLL vs σ_dec, active units, samples
  layout    where a sweep keeps its files; the table's columns
"""

from vae_jax.sweep.grid import (Point, SweepError, describe, expand_grid,
                                fingerprint, index_range, is_sweep_config,
                                validate)
from vae_jax.sweep.grouping import data_key, group_points
from vae_jax.sweep.layout import (CONFIG_COLUMNS, EXECUTION_COLUMNS,
                                  METRIC_COLUMNS, point_dir)
from vae_jax.sweep.results import (collect_rows, format_ranges, format_table,
                                   load_result, merge_csvs, point_row,
                                   read_csv, write_csv, write_merged)
from vae_jax.sweep.run import check_workdir, members_of, run_group, run_sweep
