"""Where the train step's time goes, beside the plain step's: a profile.

  python -m experiments.profile_step [--calls=200 --repeats=3]

Runs the runner's step (`stack.make_stack_step`, one member) and the plain
jitted step of `bench_throughput` under `jax.profiler.trace`, `calls` calls
each, alternating `repeats` times, and reads the trace back
(`jax.profiler.ProfileData`). XLA:CPU records one event per thunk (a
fusion, a matrix product, a copy, a loop or a conditional); this prints
their time per step, summed by what the compiled program says each one
does (its `op_name`), at the two shapes of `bench_throughput`:

  matmul       dot thunks and YNNPACK dot fusions (forward and backward)
  optimizer    Adam: its moments and the parameter update (operations
               under jax.named_scope("optimizer") in both steps)
  guard        the gradient norm and the parameter check
               (jax.named_scope("guard") in `TrainStep`)
  rng          the threefry loops and what they run (keys and the noise)
  copy         copies XLA inserted
  loss other   everything else: activations, likelihood, KL, their
               gradients and small reductions
  executor     ThunkExecutor::Execute, wall time of the whole program

Thunk times add up to more than `executor` where thunks run side by side
on the intra-op threads. Tracing adds a few µs per thunk, so compare the
two programs with each other, not with `bench_throughput`'s timings.
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
  """One of CATEGORIES for a thunk (see the module docstring)."""
  if opcode == "copy":
    return "copy"
  if opcode == "while" or any(k in op_names for k in (
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
  """{event name: µs per call} of `calls` traced calls of fn; the thunks
  are named after their HLO instructions, and 'executor' sums
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
  totals = collections.Counter()
  for plane in data.planes:
    if plane.name != "/host:CPU":
      continue
    for line in plane.lines:
      if line.name == "python":
        continue
      for event in line.events:
        if event.name == "ThunkExecutor::Execute":
          totals["executor"] += event.duration_ns / 1e3 / calls
        else:
          totals[event.name] += event.duration_ns / 1e3 / calls
  return totals


def programs(config):
  """{'step': fn, 'plain': fn} calling each program once, and their HLO."""
  model = train_lib.build_model(config, (784,))
  x = jax.random.bernoulli(jax.random.key(0), 0.13,
                           (config.batch_size, 784)).astype(jnp.float32)
  step_fn = stack_lib.make_stack_step(model, config, [0])
  state = {"s": train_lib.init_state(model, train_lib.make_optimizer(config),
                                     config.seed)}
  tx, plain = bench_throughput.plain_step(model, config.learning_rate)
  params = model.init(jax.random.key(0))
  ref = {"p": params, "o": tx.init(params), "k": jax.random.key(1)}
  hlo = {"step": step_fn.lower(state["s"], x).compile().as_text(),
         "plain": plain.lower(ref["p"], ref["o"], ref["k"], x).compile(
         ).as_text()}

  def run_step():
    state["s"], metrics = step_fn(state["s"], x)
    return metrics["loss"]

  def run_plain():
    ref["p"], ref["o"], loss = plain(ref["p"], ref["o"], ref["k"], x)
    return loss

  return {"step": run_step, "plain": run_plain}, hlo


def main(argv):
  del argv
  print(timing.device_line())
  for name, config in bench_throughput.shape_configs():
    fns, hlo = programs(config)
    for fn in fns.values():
      for _ in range(5):
        jax.block_until_ready(fn())
    per_category = {k: collections.defaultdict(list) for k in fns}
    for _ in range(_REPEATS.value):
      for key, fn in fns.items():
        sums = collections.Counter()
        descriptions = thunk_descriptions(hlo[key])
        for thunk, us in profile(fn, _CALLS.value).items():
          if thunk == "executor":
            sums["executor"] += us
          elif thunk in descriptions:  # not the runtime's own events
            sums[category(*descriptions[thunk])] += us
        for k in CATEGORIES + ("executor",):
          per_category[key][k].append(sums[k])
    print(f"\n{name}: µs per step, median over {_REPEATS.value} traces of "
          f"{_CALLS.value} calls")
    print(f"  {'':12s} {'step':>8s} {'plain':>8s} {'step - plain':>13s}")
    for k in CATEGORIES + ("executor",):
      a, b = (sorted(per_category[p][k])[len(per_category[p][k]) // 2]
              for p in ("step", "plain"))
      print(f"  {k:12s} {a:8.1f} {b:8.1f} {a - b:+13.1f}")


if __name__ == "__main__":
  app.run(main)
