"""Where the train step's time goes, beside the plain step's: a profile.

  python -m experiments.profile_step [--calls=200 --repeats=3]

Runs the runner's step (`stack.make_stack_step`, one member), the plain
jitted step of `bench_throughput` and that plain step with its hand-written
NaN guard (plain_g) under `jax.profiler.trace`, `calls` calls each,
alternating `repeats` times, and reads the trace back
(`jax.profiler.ProfileData`). XLA:CPU records one event per thunk (a
fusion, a matrix product, a copy, a loop or a conditional); this prints
their time per step, summed by what the compiled program says each one
does (its `op_name`), at the two shapes of `bench_throughput`:

  matmul       dot thunks and YNNPACK dot fusions (forward and backward)
  optimizer    Adam: its moments and the parameter update (operations
               under jax.named_scope("optimizer") in all three)
  guard        the gradient norm and the parameter check
               (jax.named_scope("guard") in `TrainStep` and plain_g)
  rng          the threefry loops' bodies and what they feed (keys, noise)
  copy         copies XLA inserted
  loss other   everything else: activations, likelihood, KL, their
               gradients and small reductions
  control      while loops and conditionals: their spans, which include
               the thunks above that they run (not added to the total)
  total        the sum of the rows above `control`
  executor     ThunkExecutor::Execute: the spans of the whole program and
               of the loop and branch bodies it runs

Each row gives µs per step and, in parentheses, thunks run per step.
Thunk times add up to more than the program's wall time where thunks run
side by side on the intra-op threads, and tracing adds a few µs per thunk:
compare the two programs with each other, row by row, and take their
speed from `bench_throughput`. XLA:CPU only (the thunks of other backends
are traced under other names).
"""

import collections
import glob
import re
import shutil
import tempfile

import jax
import jax.numpy as jnp
from absl import app
from absl import flags

from experiments import bench_throughput
from experiments import timing
from vae_jax.training import stack as stack_lib
from vae_jax.training import step as train_lib

_CALLS = flags.DEFINE_integer("calls", 200, "Profiled calls per program and "
                              "repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Alternating repeats.")

CATEGORIES = ("matmul", "optimizer", "guard", "rng", "copy", "loss other")
CONTROL_FLOW = ("while", "conditional", "call")


def thunk_descriptions(hlo_text):
  """{instruction name: (opcode, op_names)} of a compiled program's text.

  op_names joins the instruction's own op_name with those of the
  computation it calls (a fusion's body), which is where XLA keeps them for
  fusions it made itself. An instruction with neither (XLA's wrapped
  single-op fusions, such as a reduce-window of a square) takes those of
  its operands: it works on their values.
  """
  instruction = re.compile(r"^\s*(?:ROOT )?%(\S+) = .*? ([a-z-]+)\((.*)")
  op_name = re.compile(r'op_name="([^"]*)"')
  calls = re.compile(r"calls=%([^\s,]+)")
  operand = re.compile(r"%([\w.-]+)")
  header = re.compile(r"^%(\S+) ")
  body_names = collections.defaultdict(list)
  found = {}
  current = None
  for line in hlo_text.splitlines():
    h = header.match(line)
    if h:
      current = h.group(1)
      continue
    m = instruction.match(line)
    if not m:
      continue
    own = op_name.search(line)
    called = calls.search(line)
    found[m.group(1)] = (m.group(2), own.group(1) if own else "",
                         called.group(1) if called else None,
                         operand.findall(m.group(3).split(")")[0]))
    if own and current:
      body_names[current].append(own.group(1))

  def names(name, depth=0):
    opcode, own, called, operands = found[name]
    joined = " ".join([own] + body_names.get(called, [])).strip()
    if joined or depth > 8:
      return joined
    return " ".join(names(o, depth + 1) for o in operands if o in found)

  return {name: (found[name][0], names(name)) for name in found}


def category(opcode, op_names):
  """One of CATEGORIES, or 'control', for a thunk (the module docstring)."""
  if opcode in CONTROL_FLOW:
    return "control"
  if opcode == "copy":
    return "copy"
  if any(k in op_names for k in (
      "threefry", "_normal", "_uniform", "random_bits")):
    return "rng"
  if opcode == "dot" or "dot_general" in op_names:
    return "matmul"
  if "guard/" in op_names:
    return "guard"
  if "optimizer/" in op_names:
    return "optimizer"
  return "loss other"


def profile(fn, calls):
  """{event name: (µs, count) per call} of `calls` traced calls of fn; the
  thunks are named after their HLO instructions, and 'executor' sums
  ThunkExecutor::Execute."""
  directory = tempfile.mkdtemp()
  try:
    with jax.profiler.trace(directory):
      for _ in range(calls):
        out = fn()
      jax.block_until_ready(out)
    path = glob.glob(directory + "/**/*.xplane.pb", recursive=True)[0]
    data = jax.profiler.ProfileData.from_file(path)
  finally:
    shutil.rmtree(directory, ignore_errors=True)
  totals = collections.defaultdict(lambda: [0.0, 0.0])
  for plane in data.planes:
    if plane.name != "/host:CPU":
      continue
    for line in plane.lines:
      for event in line.events:
        name = ("executor" if event.name == "ThunkExecutor::Execute" else
                event.name)
        totals[name][0] += event.duration_ns / 1e3 / calls
        totals[name][1] += 1 / calls
  return totals


def programs(config):
  """{name: fn} calling each compiled program once, and {name: HLO text} of
  those very executables: the runner's step ('step'), the plain step
  ('plain') and the plain step with a hand-written guard ('plain_g')."""
  model = train_lib.build_model(config, (784,))
  x = jax.random.bernoulli(jax.random.key(0), 0.13,
                           (config.batch_size, 784)).astype(jnp.float32)
  state = {"s": train_lib.init_state(model, train_lib.make_optimizer(config),
                                     config.seed)}
  step = stack_lib.make_stack_step(model, config, [0]).lower(
      state["s"], x).compile()

  def run_step():
    state["s"], metrics = step(state["s"], x)
    return metrics["loss"]

  fns, hlo = {"step": run_step}, {"step": step.as_text()}
  for name, guard in (("plain", False), ("plain_g", True)):
    tx, plain_fn = bench_throughput.plain_step(model, config.learning_rate,
                                               guard=guard)
    params = model.init(jax.random.key(0))
    ref = {"p": params, "o": tx.init(params), "k": jax.random.key(1)}
    plain = plain_fn.lower(ref["p"], ref["o"], ref["k"], x).compile()

    def run_plain(ref=ref, plain=plain):
      ref["p"], ref["o"], loss = plain(ref["p"], ref["o"], ref["k"], x)
      return loss

    fns[name], hlo[name] = run_plain, plain.as_text()
  return fns, hlo


def main(argv):
  del argv
  if jax.default_backend() != "cpu":
    raise app.UsageError("profile_step reads XLA:CPU's thunk events; run it "
                         "with JAX_PLATFORMS=cpu")
  print(timing.device_line())
  rows = CATEGORIES + ("total", "control", "executor")
  for name, config in bench_throughput.shape_configs():
    fns, hlo = programs(config)
    descriptions = {k: thunk_descriptions(v) for k, v in hlo.items()}
    for fn in fns.values():
      for _ in range(5):
        jax.block_until_ready(fn())
    runs = {k: collections.defaultdict(list) for k in fns}
    for _ in range(_REPEATS.value):
      for key, fn in fns.items():
        sums = collections.defaultdict(lambda: [0.0, 0.0])
        for event, (us, count) in profile(fn, _CALLS.value).items():
          if event == "executor":
            row = "executor"
          elif event in descriptions[key]:  # not the runtime's own events
            row = category(*descriptions[key][event])
          else:
            continue
          sums[row][0] += us
          sums[row][1] += count
          if row in CATEGORIES:
            sums["total"][0] += us
            sums["total"][1] += count
        for row in rows:
          runs[key][row].append(tuple(sums[row]))
    print(f"\n{name}: µs per step [min, max] (thunks per step), median "
          f"over {_REPEATS.value} traces of {_CALLS.value} calls")
    names = list(fns)
    print("  " + " " * 10 + "".join(f"{p:>34s}" for p in names)
          + f"{'step - plain':>14s}{'step - plain_g':>16s}")
    for row in rows:
      cells, medians = [], {}
      for p in names:
        runs_us = sorted(us for us, _ in runs[p][row])
        us, count = sorted(runs[p][row])[len(runs[p][row]) // 2]
        medians[p] = us
        cells.append(f"{us:8.1f} [{runs_us[0]:6.0f}, {runs_us[-1]:6.0f}] "
                     f"({count:4.0f})")
      print(f"  {row:10s} " + " ".join(cells)
            + f"{medians['step'] - medians['plain']:+14.1f}"
            + f"{medians['step'] - medians['plain_g']:+16.1f}")


if __name__ == "__main__":
  app.run(main)
