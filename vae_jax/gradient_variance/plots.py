"""The sweep plots: variance vs M, latent dimension and σ_dec; SNR vs K.

Layout, the same in every figure: one row of panels per (model, state), so
init and trained never share a panel and each panel title names its state;
one column per parameter group (encoder φ, decoder θ). Each estimator keeps
one colour, marker and dash pattern in every figure; markers are hollow and
shrink with the drawing order, so estimators whose series coincide (the
decoder gradients of several ELBO estimators are the same function of ε) show
as nested markers, and the panel title names them ("identical: a ≡ b").
Estimators that are biased for the bound they target (`estimators.UNBIASED`)
are marked "BIASED" in the legend and drawn dotted with a cross marker. The
legend sits below the panels, outside every axes.
"""

import os
import textwrap

import numpy as np

from vae_jax.core import estimators as est_lib
from vae_jax.core import gradient_stats
from vae_jax.gradient_variance import rows as rows_lib
from vae_jax.gradient_variance.schema import MODELS

# (colour, marker, dash) per estimator. ELBO and L_K estimators never share
# a panel, so each family gets its own distinct set; no grey (the SNR floor).
_STYLES = {
    "reparam_analytic_kl": ("C0", "o", "-"),
    "reparam_mc_kl": ("C1", "s", "--"),
    "stl": ("C2", "^", "-."),
    "score_function": ("C3", "D", (0, (5, 1, 1, 1, 1, 1))),
    "score_function_loo": ("C4", "v", (0, (3, 1))),
    "iwae_reparam": ("C0", "o", "-"),
    "iwae_dreg": ("C2", "^", "-."),
    "iwae_stl": ("C3", "X", ":"),
}
# A series below this fraction of its panel's largest value is zero up to
# float32 round-off (STL and DReG at the exact posterior): not drawn, named.
_ROUNDOFF = 1e-9
_PART_NAMES = {"enc": "encoder φ", "dec": "decoder θ"}


def estimator_style(name):
  """(label, matplotlib line kwargs) of an estimator, the same everywhere."""
  color, marker, dash = _STYLES.get(name, ("C9", "*", "-"))
  label = name
  if name in est_lib.ESTIMATORS and name not in est_lib.UNBIASED:
    label = f"{name} (BIASED for K > 1)"
  return label, dict(color=color, marker=marker, linestyle=dash)


def write_plots(config, rows, workdir, problems=None):
  """Writes one PNG per sweep present in `rows`.

  Args:
    config: the gradient-variance config.
    rows: row dicts of the run.
    workdir: output folder.
    problems: optional list; layout problems found in the drawn figures
      (`layout_problems`) are appended to it.

  Returns:
    the paths written, in the order variance_vs_M.png, snr_vs_K.png,
    variance_vs_latent_dim.png, variance_vs_sigma_dec.png (absent sweeps
    are skipped).
  """
  m = config.base_num_samples
  draws = config.latent_dim_draws
  plots = (
      dict(sweep="num_samples", x_key="num_samples",
           x_label="M (samples per estimate)", name="variance_vs_M.png",
           kind="var_trace",
           title="Trace of the covariance of one gradient estimate vs M "
                 "(nats²)"),
      dict(sweep="iwae_k", x_key="num_samples", x_label="K (samples in L_K)",
           name="snr_vs_K.png", kind="snr",
           title="SNR of the L_K gradient vs K: median over parameters of "
                 "|mean|/std, bars 10th–90th percentile"),
      dict(sweep="latent_dim", x_key="latent_dim", x_label="latent dimension",
           name="variance_vs_latent_dim.png", kind="var_mean",
           title=f"Per-parameter gradient variance vs latent dimension (M = "
                 f"{m})\nmean of {draws} draws per d, bars min–max; linear: "
                 f"each draw nested over d; VAE: {draws} initializations"),
      dict(sweep="sigma_dec", x_key="sigma_dec", x_label="σ_dec",
           name="variance_vs_sigma_dec.png", kind="var_trace",
           title=f"Trace of the gradient covariance vs σ_dec at M = {m} "
                 f"(nats²)"),
  )
  files = []
  for p in plots:
    floor = None
    if p["kind"] == "snr":
      k_rows = [r for r in rows if r["sweep"] == p["sweep"]]
      if k_rows:
        floor = gradient_stats.snr_noise_floor(
            max(int(r["num_replicates"]) for r in k_rows))
    path = plot_sweep(rows, p["sweep"], p["x_key"], p["x_label"], p["kind"],
                      os.path.join(workdir, p["name"]), p["title"], floor,
                      problems)
    if path:
      files.append(path)
  return files


_Y_LABELS = {
    "var_trace": "Σ_p Var g_p (nats²)",
    "var_mean": "mean_p Var g_p (nats²)",
    "snr": "|mean|/std",
}


def _aggregate(xs, ys):
  """Mean, min and max of ys at each distinct x (several draws per x)."""
  ux = np.unique(xs)
  groups = [ys[xs == u] for u in ux]
  return (ux, np.array([g.mean() for g in groups]),
          np.array([g.min() for g in groups]),
          np.array([g.max() for g in groups]))


def _panel_series(rows, sweep, x_key, kind, part, model, state):
  """{estimator: (x, y, y_low, y_high)} for one panel; low/high may be None."""
  out = {}
  if kind == "snr":
    fields = [f"{part}_snr_median", f"{part}_snr_q10", f"{part}_snr_q90"]
  else:
    fields = [f"{part}_{kind}"]
  got = [rows_lib.series(rows, sweep, x_key, f, model=model, state=state)
         for f in fields]
  for (_, _, name), (xs, ys) in got[0].items():
    if kind == "snr":
      lo, hi = got[1][(model, state, name)][1], got[2][(model, state, name)][1]
      out[name] = (xs, ys, lo, hi)
    else:
      ux, mean, lo, hi = _aggregate(xs, ys)
      several = len(ux) < len(xs)
      out[name] = (ux, mean, lo if several else None, hi if several else None)
  return out


def _coincide(a, b):
  """Same values (relative 1e-4: float32 round-off of the same function of
  ε) at the x values both series have, at least two of them."""
  xs = np.intersect1d(a[0], b[0])
  if len(xs) < min(2, len(a[0]), len(b[0])) or not len(xs):
    return False
  ya = a[1][np.isin(a[0], xs)]
  yb = b[1][np.isin(b[0], xs)]
  return np.allclose(ya, yb, rtol=1e-4, atol=0, equal_nan=True)


def _identical_groups(series):
  """Lists of estimators whose drawn values coincide where both exist."""
  groups = []
  for name, values in series.items():
    for g in groups:
      if _coincide(series[g[0]], values):
        g.append(name)
        break
    else:
      groups.append([name])
  return [g for g in groups if len(g) > 1]


def _set_log_ticks(ax, xs_all, ys_all):
  """Grid values as x ticks; y ticks at 1-2-5 over short ranges; no minor
  labels (log axes label minor ticks over short ranges, and they collide)."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  xs = np.unique(np.concatenate(xs_all)) if xs_all else np.array([])
  if 0 < len(xs) <= 8:
    ax.xaxis.set_major_locator(ticker.FixedLocator(xs))
    ax.xaxis.set_major_formatter(ticker.FixedFormatter([f"{v:g}" for v in xs]))
  ax.xaxis.set_minor_locator(ticker.NullLocator())
  ys = np.concatenate(ys_all) if ys_all else np.array([])
  ys = ys[np.isfinite(ys) & (ys > 0)]
  decades = np.log10(ys.max() / ys.min()) if len(ys) else 0
  subs = (1.0, 2.0, 5.0) if decades < 2 else (1.0,)
  ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs,
                                               numticks=8))
  ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def plot_sweep(rows, sweep, x_key, x_label, kind, path, title, floor=None,
               problems=None):
  """Log-log plot of one sweep, laid out as the module docstring says.

  Args:
    kind: "var_trace", "var_mean" or "snr" (median with q10–q90 bars).
    floor: SNR noise floor √(2/(πR)) drawn as a grey line, or None.
    problems: optional list that layout problems are appended to.

  Returns:
    path, or None when no row belongs to the sweep.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  panels = [(model, state) for model in MODELS
            for state in _states(rows, sweep, model)]
  if not panels:
    return None
  parts = ("enc", "dec")
  fig, axes = plt.subplots(len(panels), len(parts), squeeze=False,
                           figsize=(10, 2.9 * len(panels) + 1.4),
                           layout="constrained")
  handles = {}
  for i, (model, state) in enumerate(panels):
    for j, part in enumerate(parts):
      ax = axes[i][j]
      series = _panel_series(rows, sweep, x_key, kind, part, model, state)
      top = max([np.nanmax(np.where(_drawable(v[1]), v[1], np.nan))
                 for v in series.values() if _drawable(v[1]).any()],
                default=0.0)
      drawn = {n: v for n, v in series.items()
               if _drawable(v[1]).any() and np.nanmax(
                   np.where(_drawable(v[1]), v[1], np.nan)) > _ROUNDOFF * top}
      _draw_panel(ax, drawn, kind, handles)
      notes = []
      same = _identical_groups(drawn)
      if len(same) == 1 and len(same[0]) == len(drawn) > 2:
        notes.append("identical: all estimators drawn")
      elif same:
        notes += textwrap.wrap(
            "identical: " + "; ".join(" ≡ ".join(g) for g in same), 70)
      zero = sorted(n for n in series if n not in drawn and
                    _drawable(series[n][1]).any())
      if zero:
        notes.append("zero up to round-off, not drawn: " + ", ".join(zero))
      undefined = sorted(n for n in series if not _drawable(series[n][1]).any())
      if undefined:
        notes.append("undefined (zero variance), not drawn: "
                     + ", ".join(undefined))
      if floor is not None:
        line = ax.axhline(floor, color="0.5", lw=1.0, ls=(0, (1, 2)))
        handles.setdefault("SNR noise floor √(2/(πR))", line)
      ax.set_xscale("log")
      ax.set_yscale("log")
      _set_log_ticks(ax, [v[0] for v in series.values()],
                     [v[1][_drawable(v[1])] for v in drawn.values()])
      ax.set_xlabel(x_label)
      ax.set_ylabel(_Y_LABELS[kind], fontsize=9)
      ax.set_title(f"{model} · {state} · {_PART_NAMES[part]}"
                   + "".join(f"\n{n}" for n in notes), fontsize=8)
      ax.grid(True, which="major", alpha=0.3)
  order = list(est_lib.ESTIMATORS)
  labels = sorted(handles, key=lambda l: (
      l.startswith("SNR"), order.index(l.split()[0]) if l.split()[0] in order
      else len(order)))
  fig.legend([handles[l] for l in labels], labels, loc="outside lower center",
             ncol=min(3, len(labels)), fontsize=8, frameon=False)
  fig.suptitle(title, fontsize=10)
  if problems is not None:
    problems += [f"{os.path.basename(path)}: {p}"
                 for p in layout_problems(fig)]
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _states(rows, sweep, model):
  seen = []
  for r in rows:
    if r["sweep"] == sweep and r["model"] == model and r["state"] not in seen:
      seen.append(r["state"])
  return seen


def _drawable(ys):
  ys = np.asarray(ys, float)
  return np.isfinite(ys) & (ys > 0)


def _draw_panel(ax, series, kind, handles):
  """Draws each estimator; larger hollow markers first so coincident ones
  nest. SNR bars are spread a little along x so they do not overlap."""
  names = sorted(series, key=lambda n: list(est_lib.ESTIMATORS).index(n)
                 if n in est_lib.ESTIMATORS else 99)
  for k, name in enumerate(names):
    xs, ys, lo, hi = series[name]
    ok = _drawable(ys)
    if not ok.any():
      continue
    label, style = estimator_style(name)
    size = max(3.0, 10.0 - 1.6 * k)
    x = xs[ok] * (1.07 ** (k - (len(names) - 1) / 2) if kind == "snr" else 1)
    line, = ax.plot(x, ys[ok], markersize=size, markerfacecolor="none",
                    markeredgewidth=1.3, linewidth=1.4, zorder=2 + k,
                    **style)
    if lo is not None:
      err = np.array([ys[ok] - np.maximum(lo[ok], ys[ok] * 1e-3),
                      hi[ok] - ys[ok]])
      ax.errorbar(x, ys[ok], yerr=np.maximum(err, 0), fmt="none",
                  ecolor=style["color"], elinewidth=1.0, capsize=2.5,
                  zorder=2 + k)
    handles.setdefault(label, line)


def layout_problems(fig):
  """Overlaps that make a figure hard to read, as strings (empty if none).

  Checks that no legend covers any axes, that no two tick labels of one
  axis overlap each other, and that no title runs off the figure.
  """
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  out = []
  frame = fig.bbox
  for n, ax in enumerate(fig.axes):
    box = ax.title.get_window_extent(renderer)
    if (box.x0 < frame.x0 - 1 or box.x1 > frame.x1 + 1 or
        box.y1 > frame.y1 + 1):
      out.append(f"axes {n}: title runs off the figure")
  legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes
                                 if ax.get_legend() is not None]
  for legend in legends:
    box = legend.get_window_extent(renderer)
    for n, ax in enumerate(fig.axes):
      if box.overlaps(ax.get_window_extent(renderer)):
        out.append(f"legend overlaps axes {n} ({ax.get_title()[:40]!r})")
  for n, ax in enumerate(fig.axes):
    for axis_name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
      boxes = [t.get_window_extent(renderer)
               for t in axis.get_ticklabels(which="both")
               if t.get_visible() and t.get_text()]
      for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
          if boxes[a].overlaps(boxes[b]):
            out.append(f"axes {n}: {axis_name} tick labels overlap")
            break
  return sorted(set(out))
