"""Plots of a sweep's results table (matplotlib, Agg backend).

Rows are dicts as `vae_jax.sweep.read_csv` or `collect_rows` give them:
the rate–distortion curve across σ_dec, ELBO/NLL against σ_dec per latent
dimension, active units against latent dimension, one sample grid per point.
"""

import os

import numpy as np

from vae_jax.sweep.layout import (CONFIG_COLUMNS, EXECUTION_COLUMNS,
                                  METRIC_COLUMNS, latest_image,
                                  point_dir)



def _num(value):
  """float of a CSV cell or row value; None for an empty cell."""
  if value is None or value == "":
    return None
  return float(value)


def _series(rows):
  """Rows grouped for plotting: {(latent_dim, mode, other): {σ: [rows]}}.

  Seeds are pooled (mean ± standard deviation); the 'other' part holds
  swept fields beside latent_dim, σ_dec, mode and seed.
  """
  skip = set(CONFIG_COLUMNS) | set(METRIC_COLUMNS) | set(
      EXECUTION_COLUMNS) | {"index"}
  out = {}
  for r in rows:
    other = tuple(sorted((k, str(v)) for k, v in r.items() if k not in skip))
    mode = r.get("sigma_dec_mode") or "bernoulli"
    key = (int(_num(r["latent_dim"])), str(mode), other)
    out.setdefault(key, []).append(r)
  return out


def _label(latent_dim, mode, other):
  text = f"L={latent_dim}"
  if mode != "fixed":
    text += f", σ_dec {mode}"
  if other:
    text += ", " + ", ".join(f"{k}={v}" for k, v in other)
  return text


def _by_sigma(rows, column):
  """(σ_dec_final mean, metric mean, metric std) per configured σ, sorted."""
  groups = {}
  for r in rows:
    # Learned σ_dec pools seeds by its initial value, the optimal one by
    # mode (its configured σ is empty); the x value is the σ reached.
    sigma = _num(r.get("sigma_dec"))
    groups.setdefault(sigma, []).append(r)
  out = []
  for sigma in sorted(groups, key=lambda s: (s is None, s or 0)):
    rs = groups[sigma]
    vals = [_num(r[column]) for r in rs if _num(r[column]) is not None]
    xs = [_num(r["sigma_dec_final"]) for r in rs
          if _num(r.get("sigma_dec_final")) is not None]
    if not vals:
      continue
    out.append((float(np.mean(xs)) if xs else None, float(np.mean(vals)),
                float(np.std(vals))))
  return out


def _colors(keys):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  dims = sorted({k[0] for k in keys})
  cmap = plt.get_cmap("viridis")
  return {d: cmap(i / max(len(dims) - 1, 1) * 0.9) for i, d in
          enumerate(dims)}


_MARKERS = {"fixed": "o", "learned": "*", "learned_per_dim": "P",
            "optimal": "D", "bernoulli": "o"}


def _plain_ticks(axis, values):
  """Ticks at `values`, labelled as plain numbers (log axes)."""
  import matplotlib.ticker as ticker  # pylint: disable=g-import-not-at-top
  if not values:
    return
  axis.set_major_locator(ticker.FixedLocator(values))
  axis.set_major_formatter(ticker.FixedFormatter([f"{v:g}" for v in values]))
  axis.set_minor_locator(ticker.NullLocator())


def plot_rate_distortion(rows, path):
  """Rate (KL, nats) against distortion (test MSE per pixel), log scale.

  MSE, not −reconstruction, is the distortion here: −reconstruction holds
  log σ_dec and would move with σ_dec even for the same reconstructions.
  Lines join fixed σ_dec values of one latent dimension; stars and
  diamonds mark the learned and optimal σ_dec.
  """
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  series = _series(rows)
  colors = _colors(series)
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for key, rs in sorted(series.items()):
    latent_dim, mode, other = key
    by_sigma = {}
    for r in rs:
      by_sigma.setdefault(_num(r.get("sigma_dec")), []).append(r)
    pts = []
    for sigma in sorted(by_sigma, key=lambda s: (s is None, s or 0)):
      group = by_sigma[sigma]
      pts.append((np.mean([_num(r["kl"]) for r in group]),
                  np.mean([_num(r["mse"]) for r in group]), sigma))
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    ax.plot(xs, ys, marker=_MARKERS.get(mode, "o"),
            linestyle="-" if mode == "fixed" else "none",
            color=colors[latent_dim], markersize=9 if mode != "fixed" else 5,
            label=_label(latent_dim, mode, other))
    if mode == "fixed":
      for x, y, sigma in pts:
        ax.annotate(f"{sigma:g}", (x, y), fontsize=6,
                    textcoords="offset points", xytext=(3, 3))
  ax.set_yscale("log")
  ax.set_xlabel("rate: KL(q(z|x) ‖ p(z)) [nats per example]")
  ax.set_ylabel("distortion: test MSE per pixel")
  ax.set_title("Rate–distortion across σ_dec (labels: fixed σ_dec)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_elbo_nll_vs_sigma(rows, path):
  """−ELBO and the L_K NLL (nats per example) against σ_dec, per L.

  Learned and optimal σ_dec sit at the σ they reached, so they read
  against the fixed values around them.
  """
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  series = _series(rows)
  colors = _colors(series)
  fig, axes = plt.subplots(1, 2, figsize=(13, 4.4))
  for ax, column, sign, title in (
      (axes[0], "elbo", -1.0, "−ELBO [nats per example]"),
      (axes[1], "nll_iwae", 1.0, "NLL ≈ −L_K [nats per example]")):
    for key, rs in sorted(series.items()):
      latent_dim, mode, other = key
      pts = [p for p in _by_sigma(rs, column) if p[0] is not None]
      if not pts:
        continue
      xs = [p[0] for p in pts]
      ys = [sign * p[1] for p in pts]
      es = [p[2] for p in pts]
      ax.errorbar(xs, ys, yerr=es, marker=_MARKERS.get(mode, "o"),
                  linestyle="-" if mode == "fixed" else "none",
                  color=colors[latent_dim],
                  markersize=10 if mode != "fixed" else 5, capsize=2,
                  label=_label(latent_dim, mode, other))
    ax.set_xscale("log")
    _plain_ticks(ax.xaxis, sorted({_num(r["sigma_dec"]) for r in rows
                                   if _num(r.get("sigma_dec")) is not None}))
    # Small σ_dec costs hundreds of nats: symlog keeps the optimum legible.
    ax.set_yscale("symlog", linthresh=10.0)
    ax.set_xlabel("σ_dec (learned / optimal: the value reached)")
    ax.set_ylabel(title)
    ax.set_title(f"test {title.split(' [')[0]} vs σ_dec (lower is better)")
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="center right", fontsize=7)
  fig.tight_layout(rect=(0, 0, 0.83, 1))
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_active_units(rows, path):
  """Active units (Cov_x E_q[z_j] > 0.01) against latent_dim, per σ_dec."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  lines = {}
  for r in rows:
    mode = r.get("sigma_dec_mode") or "bernoulli"
    sigma = _num(r.get("sigma_dec"))
    label = (f"σ_dec={sigma:g}" if mode == "fixed" else
             f"σ_dec {mode}" if mode != "bernoulli" else "Bernoulli")
    lines.setdefault(label, {}).setdefault(
        int(_num(r["latent_dim"])), []).append(_num(r["active_units"]))
  fig, ax = plt.subplots(figsize=(6, 4.5))
  import matplotlib  # pylint: disable=g-import-not-at-top
  cmap = matplotlib.colormaps["plasma"]
  dims = sorted({d for by_dim in lines.values() for d in by_dim})
  for i, (label, by_dim) in enumerate(sorted(lines.items())):
    ds = sorted(by_dim)
    ax.errorbar(ds, [np.mean(by_dim[d]) for d in ds],
                yerr=[np.std(by_dim[d]) for d in ds], marker="o",
                capsize=2, color=cmap(i / max(len(lines) - 1, 1) * 0.9),
                label=label)
  ax.plot(dims, dims, "k:", label="all units active")
  ax.set_xscale("log", base=2)
  _plain_ticks(ax.xaxis, dims)
  ax.set_xlabel("latent dimension L")
  ax.set_ylabel("active units (Cov_x E_q[z_j] > 0.01)")
  ax.set_title("Posterior collapse: active units vs L")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_samples(rows, path, folders):
  """Prior samples of every point of the first seed: rows = decoder
  setting, columns = latent_dim. Uses each point's newest
  points/<i>/images/samples_<step>.png.

  Returns:
    True when a figure was written (some sample images were found).
  """
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  first_seed = min(int(_num(r["seed"])) for r in rows)
  skip = set(CONFIG_COLUMNS) | set(METRIC_COLUMNS) | set(
      EXECUTION_COLUMNS) | {"index", "latent_dim"}
  cells, row_labels, dims = {}, [], set()
  for r in rows:
    if int(_num(r["seed"])) != first_seed:
      continue
    img_path = None
    for folder in folders:
      candidate = latest_image(point_dir(folder, int(r["index"])), "samples")
      if candidate is not None:
        img_path = candidate
        break
    if img_path is None:
      continue
    mode = r.get("sigma_dec_mode") or "bernoulli"
    sigma = _num(r.get("sigma_dec"))
    label = (f"σ_dec={sigma:g}" if mode == "fixed" else
             f"σ_dec {mode}" if mode != "bernoulli" else "Bernoulli")
    other = [f"{k}={v}" for k, v in sorted(r.items()) if k not in skip and
             k not in ("sigma_dec_mode",)]
    label = ", ".join([label] + other)
    if label not in row_labels:
      row_labels.append(label)
    dim = int(_num(r["latent_dim"]))
    dims.add(dim)
    cells[(label, dim)] = img_path
  if not cells:
    return False
  dims = sorted(dims)
  fig, axes = plt.subplots(len(row_labels), len(dims), squeeze=False,
                           figsize=(1.8 * len(dims) + 1.2,
                                    1.8 * len(row_labels) + 0.4))
  for i, label in enumerate(row_labels):
    for j, dim in enumerate(dims):
      ax = axes[i][j]
      ax.set_xticks([])
      ax.set_yticks([])
      if (label, dim) in cells:
        ax.imshow(np.asarray(Image.open(cells[(label, dim)])), cmap="gray")
      if i == 0:
        ax.set_title(f"L={dim}", fontsize=9)
      if j == 0:
        ax.set_ylabel(label, fontsize=7)
  fig.suptitle(f"prior samples (decoder means), seed {first_seed}",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def plot_all(rows, out_dir, folders):
  """All plots of a results table; those that do not apply are skipped."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  rows = [{k: ("" if v is None else v) for k, v in r.items()} for r in rows]
  if any(_num(r.get("sigma_dec_final")) is not None for r in rows):
    plot_rate_distortion(rows, os.path.join(out_dir, "rate_distortion.png"))
    plot_elbo_nll_vs_sigma(rows,
                           os.path.join(out_dir, "elbo_nll_vs_sigma_dec.png"))
  plot_active_units(rows, os.path.join(out_dir,
                                       "active_units_vs_latent_dim.png"))
  plot_samples(rows, os.path.join(out_dir, "samples.png"), folders)
