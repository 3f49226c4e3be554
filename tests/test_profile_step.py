"""experiments/profile_step.py sorts the compiled step's thunks by what
they do: the labels it relies on (jax.named_scope in TrainStep and in the
benchmark's plain step) must survive compilation, and its trace reader
must see the thunks that run."""

import jax

from experiments import profile_step
from vae_jax import config_base


def _tiny_config():
  c = config_base.base_config()
  c.hidden, c.latent_dim, c.activation, c.batch_size = (16,), 2, "tanh", 8
  return c


def _kinds(hlo_text):
  descriptions = profile_step.thunk_descriptions(hlo_text)
  kinds = {}
  for name, (opcode, op_names) in descriptions.items():
    if opcode in ("fusion", "dot", "copy", "while", "conditional"):
      kinds.setdefault(profile_step.category(opcode, op_names), []).append(
          name)
  return kinds


def test_steps_have_optimizer_thunks_and_only_plain_no_guard():
  fns, hlo = profile_step.programs(_tiny_config())
  step, plain, plain_g = (_kinds(hlo[k]) for k in ("step", "plain",
                                                    "plain_g"))
  for kinds in (step, plain, plain_g):
    assert kinds.get("optimizer") and kinds.get("matmul")
    assert kinds.get("rng") and kinds.get("control")
  assert step.get("guard") and plain_g.get("guard") and not plain.get("guard")


def test_trace_sees_the_thunks_that_run():
  fns, hlo = profile_step.programs(_tiny_config())
  for _ in range(2):
    jax.block_until_ready(fns["step"]())
  events = profile_step.profile(fns["step"], calls=3)
  names = set(profile_step.thunk_descriptions(hlo["step"]))
  ran = [e for e in events if e in names]
  assert events["executor"][1] >= 1  # at least one program span per call
  assert len(ran) >= 10
  assert all(us >= 0 for us, _ in events.values())
