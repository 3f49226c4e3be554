"""The training loop: one model, or a vmapped stack of N same-shaped models.

A *member* is one experiment: a runner config and its own workdir. `train`
trains N >= 1 members whose configs differ only in values held in the
training state (σ_dec, seed, a state-held learning rate; see `stack`) as
one compiled step, and gives every member everything a run has, through the
same code: the workdir guard, its own checkpoints (resume, corrupt-step
fallback), metrics.jsonl and TensorBoard, evaluation during training, PNG
grids, NaN policy, and final metrics. N = 1 is `python -m vae_jax.main`; a
sweep group is N > 1, and each of its points is a workdir of its own; the
sweep command with `--config.start_index=i --config.end_index=i+1` resumes
or extends point i alone (`python -m vae_jax.main --workdir=<point>` would
read configs/default.py, which the workdir guard refuses).

Workdir of a member:
  config.json, config_history.jsonl   what was trained; allowed changes
  checkpoints/                        orbax: state + meta (data position)
  metrics.jsonl, tensorboard/         train/*, test/* and final/* rows
  images/                             reconstructions and prior samples
  final_metrics.json                  test metrics at the last step
"""

import dataclasses
import json
import math
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vae_jax import data as data_lib
from vae_jax.training import checkpointing
from vae_jax.training import evaluate as eval_lib
from vae_jax.training import images
from vae_jax.training import linear_report
from vae_jax.training import sharding
from vae_jax.training import stack as stack_lib
from vae_jax.training import step as step_lib
from vae_jax.training import workdir as workdir_lib
from vae_jax.training.metric_writers import MetricWriter


@dataclasses.dataclass(frozen=True)
class Member:
  """One experiment of a stack.

  Attributes:
    config: its runner config (fields of vae_jax/config_base.py).
    workdir: its own output folder.
    label: how messages name it ("" for a plain run, "sweep point 3").
  """

  config: object
  workdir: str
  label: str = ""


def _format_eta(seconds):
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _format_scalars(scalars):
  return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                   for k, v in scalars.items())


def _jsonable(tree):
  if tree is None:
    return None
  return {k: np.asarray(v).tolist() for k, v in tree.items()}


def _restore_common_step(managers, abstract_state):
  """Restores every member at the newest step all of them can load.

  Members of a stack save in lockstep; a crash between their saves leaves
  some a step ahead. Those newer steps are deleted (training reproduces
  them exactly) so that all resume together.

  Returns:
    [(step, state, meta)] per member, or None to start all afresh (then
    every member's checkpoints are deleted, for the same reason).
  """
  target = None
  while True:
    results = []
    for manager in managers:
      if target is not None:
        for s in [s for s in manager.all_steps() if s > target]:
          manager.delete(s)
      results.append(checkpointing.restore_latest(manager, abstract_state))
    if any(r is None for r in results):
      if any(r is not None for r in results):
        logging.warning("some members have no checkpoint: all start afresh")
        for manager in managers:
          for s in manager.all_steps():
            manager.delete(s)
      return None
    steps = {r[0] for r in results}
    if len(steps) == 1:
      return results
    target = min(steps)


@dataclasses.dataclass
class _Progress:
  """Steps/s and ETA from windows after the first step (compilation)."""

  steady_steps: int = 0
  steady_seconds: float = 0.0

  def add(self, steps, seconds):
    self.steady_steps += steps
    self.steady_seconds += seconds

  @property
  def rate(self):
    return self.steady_steps / max(self.steady_seconds, 1e-9)


class _Stack:
  """The members of one `train` call and their per-member bookkeeping."""

  def __init__(self, members, dataset, mesh):
    self.members = members
    self.n = len(members)
    self.dataset = dataset
    self.mesh = mesh
    self.config = members[0].config
    self.is_lead = jax.process_index() == 0
    c = self.config
    self.model = step_lib.build_model(c, dataset.event_shape)
    self.optimizer = step_lib.make_optimizer(c)
    self.seeds = list(dict.fromkeys(int(m.config.seed) for m in members))
    self.seed_index = [self.seeds.index(int(m.config.seed)) for m in members]
    local_batch = c.batch_size // jax.process_count()
    self.iterators = [data_lib.train_iterator(
        dataset, local_batch, seed, c.transform,
        shard_index=jax.process_index(), shard_count=jax.process_count())
                      for seed in self.seeds]
    self.skipped = np.zeros(self.n, np.int64)
    self.past_train_s = np.zeros(self.n)

  def member_tree(self, tree, i):
    return tree if self.n == 1 else stack_lib.unstack_tree(tree, i)

  def next_batches(self):
    local = [next(it) for it in self.iterators]
    if self.n == 1:
      return sharding.step_input(local[0], self.mesh)
    return sharding.step_input(np.stack(local), self.mesh,
                               stack_lib.stacked_batch_sharding(self.mesh))

  def meta(self, i, train_s):
    m = self.members[i]
    it = self.iterators[self.seed_index[i]]
    return {"data_iterator": checkpointing.encode_iterator_state(
        it.get_state()),
            "config": json.loads(m.config.to_json()),
            "standardization": _jsonable(self.dataset.standardization),
            # Let prior samples and the user's inputs need no data set.
            "event_shape": [int(n) for n in self.dataset.event_shape],
            "data_kind": self.dataset.kind,
            "skipped_updates": int(self.skipped[i]),
            "train_time_s": float(self.past_train_s[i] + train_s)}


def _initial_states(stack, managers):
  """Fresh or restored states (stacked for N > 1) and the start step."""
  repl = sharding.replicated(stack.mesh)
  inits = [stack_lib.init_member_state(m.config, stack.dataset.event_shape,
                                       stack.optimizer)
           for m in stack.members]
  restored = _restore_common_step(
      managers, checkpointing.abstract_state(inits[0], repl))
  if restored is None:
    states = inits[0] if stack.n == 1 else stack_lib.stack_trees(inits)
    return jax.device_put(states, repl), 0
  step = restored[0][0]
  for i, (_, _, meta) in enumerate(restored):
    stack.skipped[i] = int(meta.get("skipped_updates", 0))
    stack.past_train_s[i] = float(meta.get("train_time_s", 0.0))
  for s, it in enumerate(stack.iterators):
    first = stack.seed_index.index(s)
    it.set_state(checkpointing.decode_iterator_state(
        restored[first][2]["data_iterator"]))
  states = [r[1] for r in restored]
  states = states[0] if stack.n == 1 else jax.device_put(
      stack_lib.stack_trees(states), repl)
  return states, step


def _nonfinite_error(stack, step, i):
  label = stack.members[i].label
  where = f"step {step}" + (f" of {label}" if label else "")
  return FloatingPointError(
      f"non-finite loss, gradient or updated parameters at {where}; no "
      f"checkpoint was written after it (set config.nan_policy='skip' to "
      f"drop such updates and go on)")


def _check_window(stack, window, first_step):
  """Counts skipped updates; raises on the first under nan_policy='stop'."""
  finite = np.stack([np.reshape(np.asarray(m["finite"]), (stack.n,))
                     for m in window])  # [T, N]
  if stack.config.nan_policy == "stop" and not finite.all():
    t, i = np.argwhere(~finite)[0]
    raise _nonfinite_error(stack, first_step + int(t), int(i))
  stack.skipped += (~finite).sum(axis=0)
  return finite


def _window_means(stack, window, finite):
  """Per member: mean of each train metric over its finite steps."""
  names = [k for k in window[0] if k != "finite"]
  values = {k: np.stack([np.reshape(np.asarray(m[k]), (stack.n,))
                         for m in window]) for k in names}  # [T, N]
  out = []
  for i in range(stack.n):
    ok = finite[:, i]
    out.append({k: float(np.mean(v[ok, i])) if ok.any() else float("nan")
                for k, v in values.items()})
  return out


def _save_images(model, params, dataset, config, workdir, step, key, writer):
  """PNG grids of reconstructions and prior samples, also to TensorBoard."""
  shape = images.image_shape_for(dataset.event_shape)
  n = min(config.num_image_examples, len(dataset.test))
  if shape is None or n == 0:
    return
  out_dir = os.path.join(workdir, "images")
  os.makedirs(out_dir, exist_ok=True)
  x = next(iter(data_lib.eval_batches(dataset, "test", n, config.transform,
                                      seed=config.seed))).x
  recon = jax.device_get(model.reconstruct(params, jnp.asarray(x)))
  paths = {"images/reconstructions": os.path.join(
      out_dir, f"reconstructions_{step:08d}.png"),
           "images/samples": os.path.join(out_dir, f"samples_{step:08d}.png")}
  images.save_pairs(paths["images/reconstructions"], x, recon, shape)
  samples = jax.device_get(model.sample_prior(params, key, n))
  images.save_png(paths["images/samples"], images.grid(samples, shape))
  writer.write_image_files(step, paths)


def eval_key(config):
  """The PRNG key of a run's test evaluations (one per run, every step)."""
  return jax.random.key(config.seed + 1)


def _evaluate_during(stack, states, writers, eval_fn, step):
  for i, m in enumerate(stack.members):
    params = stack.member_tree(states["params"], i)
    scalars, _ = eval_lib.evaluate(stack.model, params, stack.dataset,
                                   m.config, eval_fn, eval_key(m.config))
    writers[i].write(step, {f"test/{k}": v for k, v in scalars.items()})
    logging.info("%seval at step %d: %s",
                 f"{m.label}: " if m.label else "", step,
                 _format_scalars(scalars))
    if stack.is_lead:
      _save_images(stack.model, params, stack.dataset, m.config, m.workdir,
                   step, eval_key(m.config), writers[i])


def _final_evaluation(stack, states, writers, train_s, saved):
  """Final test metrics of every member; writes final_metrics.json.

  saved: per member, final metrics already in its workdir for this step
  (kept as they are), or None.
  """
  c = stack.config
  eval_final = eval_lib.make_eval_fn(stack.model, c.final_iwae_samples,
                                     c.iwae_chunk_size, stack.mesh)
  finals = []
  for i, m in enumerate(stack.members):
    if saved[i] is not None:
      finals.append(saved[i])
      continue
    params = stack.member_tree(states["params"], i)
    key = eval_key(m.config)
    scalars, kl_per_dim = eval_lib.evaluate(stack.model, params,
                                            stack.dataset, m.config,
                                            eval_final, key)
    scalars["step"] = int(np.reshape(
        jax.device_get(states["step"]), (stack.n,))[i])
    scalars["iwae_samples"] = m.config.final_iwae_samples
    scalars["skipped_updates"] = int(stack.skipped[i])
    final = dict(scalars, kl_per_dim=kl_per_dim.tolist(),
                 train_time_s=float(stack.past_train_s[i] + train_s))
    if m.config.architecture == "linear":
      final["linear_gaussian"] = linear_report.report(
          jax.device_get(params), m.config, stack.dataset)
    if stack.is_lead:
      # The test curves end at the last step, under the same tags; the
      # HParams row carries the final metrics as final/*.
      writers[i].write(scalars["step"],
                       {f"test/{k}": v for k, v in scalars.items()})
      writers[i].write_hparams(m.config, scalars, step=scalars["step"])
      workdir_lib.write_final_metrics(m.workdir, final)
      _save_images(stack.model, params, stack.dataset, m.config, m.workdir,
                   scalars["step"], key, writers[i])
    logging.info("%sfinal: %s", f"{m.label}: " if m.label else "",
                 _format_scalars(scalars))
    finals.append(final)
  return finals


def train(members, dataset, mesh=None, name=None):
  """Trains (or resumes) members as one stack; evaluates each at the end.

  Args:
    members: [Member], N >= 1, configs equal but for `stack.value_fields`
      (same program); each has its own workdir.
    dataset: their `Dataset`.
    mesh: device mesh; default all devices on a 'data' axis.
    name: label of the stack in progress lines.

  Returns:
    [final metrics dict] per member, as in its final_metrics.json. A member
    whose newest readable checkpoint is at num_train_steps and whose
    final_metrics.json reports that step is neither retrained nor
    re-evaluated: its saved metrics are returned and nothing is written.

  Raises:
    workdir.WorkdirError: a workdir holding another experiment (nothing
      written anywhere).
    FloatingPointError: a non-finite update under nan_policy='stop' (names
      the step and the member), or final metrics that are not finite.
  """
  for m in members:
    workdir_lib.check(m.config, m.workdir, m.label or None)
  return _train_stack(members, dataset, mesh, name)


def _train_stack(members, dataset, mesh, name):
  t_start = time.time()
  mesh = sharding.make_mesh() if mesh is None else mesh
  stack = _Stack(members, dataset, mesh)
  c = stack.config
  is_lead = stack.is_lead
  # A new workdir gets its config.json before anything else is created in
  # it; a resumed one only once it is known that training will go on.
  for m in members:
    if not os.path.isfile(os.path.join(m.workdir, workdir_lib.CONFIG_FILE)):
      workdir_lib.prepare(m.config, m.workdir, is_lead)
  managers = [checkpointing.make_manager(m.workdir, c.keep_checkpoints)
              for m in members]
  states, step = _initial_states(stack, managers)
  saved = [workdir_lib.finished_metrics(m.config, m.workdir)
           if step == c.num_train_steps else None for m in members]
  if all(f is not None for f in saved):
    for manager in managers:
      manager.close()
    logging.info("already trained to step %d: final metrics in %s", step,
                 ", ".join(os.path.join(m.workdir,
                                        workdir_lib.FINAL_METRICS_FILE)
                           for m in members))
    for m, final in zip(members, saved):
      if final.get("iwae_samples") != m.config.final_iwae_samples:
        # A finished run is never re-evaluated in place: say so, and how.
        logging.warning(
            "%s: final metrics use K = %s, not final_iwae_samples = %d; "
            "python -m vae_jax.eval_workdir --workdir=%s --iwae_samples=%d "
            "evaluates it again", m.workdir, final.get("iwae_samples"),
            m.config.final_iwae_samples, m.workdir,
            m.config.final_iwae_samples)
    return saved
  for m in members:
    for field, old, new in workdir_lib.prepare(m.config, m.workdir, is_lead):
      logging.info("%s: %s changed %r -> %r (recorded in %s)", m.workdir,
                   field, old, new, workdir_lib.HISTORY_FILE)
  prefix = f"{name}: " if name else ""
  if step:
    logging.info("%sresumed at step %d", prefix, step)
  else:
    logging.info("%sstarting %s", prefix, members[0].workdir if stack.n == 1
                 else f"{stack.n} members")
  train_fn = stack_lib.make_stack_step(stack.model, c, stack.seed_index)
  eval_during = eval_lib.make_eval_fn(stack.model, c.eval_iwae_samples,
                                      c.iwae_chunk_size, mesh)
  writers = [MetricWriter(m.workdir, enabled=is_lead, resume_step=step)
             for m in members]
  for m, writer in zip(members, writers):
    writer.write_config(m.config)
  total = c.num_train_steps
  progress = _Progress()
  window, window_start, t0 = [], step, time.time()
  first_step_done = False
  stop = _StopRequest()
  try:
    stop.install()
    while step < total:
      states, metrics = train_fn(states, stack.next_batches())
      window.append(metrics)
      step += 1
      if not first_step_done:
        # The first step compiles: keep it out of steps/s and the ETA.
        jax.block_until_ready(metrics)
        first_step_done = True
        window_start_steady, t0 = step, time.time()
      log = step % c.log_every_steps == 0 or step == total
      save = step % c.checkpoint_every_steps == 0 or step == total
      evaluate = step % c.eval_every_steps == 0 and step != total
      signum = stop.signal_to_stop_on(all_pause=log or save or evaluate)
      if signum:
        # This step's metrics and a checkpoint of it, so a resumed run loses
        # nothing. An evaluation due now is skipped (a preempted VM has
        # seconds), and the resumed run starts after this step: the test
        # curve misses this point.
        log, save, evaluate = True, True, False
      if not (log or save or evaluate):
        continue
      window = jax.device_get(window)
      finite = _check_window(stack, window, window_start + 1)
      now = time.time()
      progress.add(step - window_start_steady, now - t0)
      if log:
        means = _window_means(stack, window, finite)
        for i in range(stack.n):
          writers[i].write(step, {f"train/{k}": v for k, v in dict(
              means[i], steps_per_sec=progress.rate,
              skipped_updates=int(stack.skipped[i])).items()})
        losses = [mm["loss"] for mm in means]
        loss_text = (f"loss {losses[0]:.3f} nats" if stack.n == 1 else
                     f"loss {min(losses):.3f}..{max(losses):.3f} nats over "
                     f"{stack.n} members")
        logging.info("%sstep %d/%d  %s  %.1f steps/s  ETA %s", prefix, step,
                     total, loss_text, progress.rate,
                     _format_eta((total - step) / max(progress.rate, 1e-9)))
      if evaluate:
        _evaluate_during(stack, states, writers, eval_during, step)
      if save:
        train_s = time.time() - t_start
        for i, manager in enumerate(managers):
          checkpointing.save(manager, step, stack.member_tree(states, i),
                             stack.meta(i, train_s))
      if signum:
        logging.warning("%s%s: stopped after step %d and saved it; the same "
                        "command resumes from there", prefix,
                        signal.Signals(signum).name, step)
        raise StopRequested(signum, step)
      window, window_start = [], step
      window_start_steady, t0 = step, time.time()
    # The last checkpoint is written with the handlers still in place (a
    # signal now is noted, not acted on mid-write); one noted since the last
    # check (the steps still running then, the save) stops here, before the
    # final evaluation, which a rerun of the same command does.
    _finish_saves(managers)
    stop.uninstall()
    signum = stop.signal_to_stop_on(all_pause=True)
    if signum:
      logging.warning("%s%s: stopped after the last step (saved); the same "
                      "command runs the final evaluation", prefix,
                      signal.Signals(signum).name)
      raise StopRequested(signum, step)
    # The final evaluation takes a signal at once: no checkpoint is in flight.
    finals = _final_evaluation(stack, states, writers,
                               time.time() - t_start, saved)
  except KeyboardInterrupt:
    # Let a checkpoint being written finish (orbax writes it in the
    # background), so the interrupted run resumes from it.
    _finish_saves(managers)
    raise
  finally:
    stop.uninstall()
    for w in writers:
      w.close()
  for m, final in zip(members, finals):
    bad = [k for k in ("elbo", "reconstruction", "kl", "nll_iwae")
           if not math.isfinite(final.get(k, 0.0))]
    if bad:
      raise FloatingPointError(
          f"{m.label or m.workdir}: final metrics are not finite ("
          f"{', '.join(f'{k}={final[k]}' for k in bad)}); see "
          f"{os.path.join(m.workdir, workdir_lib.FINAL_METRICS_FILE)}")
  return finals


def _finish_saves(managers):
  """Waits for the checkpoints orbax writes in the background; closes."""
  for manager in managers:
    manager.wait_until_finished()
    manager.close()


class StopRequested(KeyboardInterrupt):
  """Training stopped on a signal, after checkpointing the step it stopped
  at: `python -m vae_jax.main` exits with 128 + signum, as the signal's
  default action would."""

  def __init__(self, signum, step):
    super().__init__(f"{signal.Signals(signum).name} at step {step}")
    self.signum, self.step = signum, step


class _StopRequest:
  """SIGINT (Ctrl-C) or SIGTERM (what schedulers and preemptible cloud VMs
  send before killing a job) while training: stop between steps, not
  inside one, and checkpoint the last step.

  A KeyboardInterrupt raised wherever SIGINT lands can cut into orbax's
  background save or a library's threads. Installed, the first of these
  signals only sets `signum`; the loop asks `signal_to_stop_on` after each
  step,
  saves that step, and raises StopRequested, a KeyboardInterrupt: the usual
  path follows (the checkpoints in flight finish, one line, exit 128 +
  signum). The handlers it replaced come back at once, so a second signal
  acts wherever it lands. Only the main thread can install signal handlers,
  and an ignored signal (SIGINT of a background job of a shell without job
  control, nohup) stays ignored; otherwise this does nothing.
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.signum = 0  # the first signal received; 0 for none
    self._previous = {}
    self._several_processes = jax.process_count() > 1

  def install(self):
    if threading.current_thread() is not threading.main_thread():
      return
    for signum in self.SIGNALS:
      previous = signal.getsignal(signum)
      if previous == signal.SIG_IGN:
        continue
      if previous is None:  # a handler not installed from Python
        previous = (signal.default_int_handler if signum == signal.SIGINT
                    else signal.SIG_DFL)
      self._previous[signum] = previous
      signal.signal(signum, self._handle)

  def uninstall(self):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}

  def signal_to_stop_on(self, all_pause: bool) -> int:
    """The signal to stop on after this step, 0 for none.

    One process: the one it received. Several must stop after the same
    step, or those still training wait forever in the next step's
    collectives, so they agree only where all pause anyway (all_pause: a
    log, checkpoint or evaluation step, the same on every process): the
    largest signal any received, through one all-gather; elsewhere 0.
    """
    if not self._several_processes:
      return self.signum
    if not all_pause:
      return 0
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    received = multihost_utils.process_allgather(np.int32(self.signum))
    return int(np.max(received))

  def _handle(self, signum, frame):
    del frame
    self.signum = self.signum or signum
    self.uninstall()


def train_and_evaluate(config, workdir, dataset):
  """A plain run: `train` with one member. Returns its final metrics."""
  return train([Member(config, workdir)], dataset)[0]
