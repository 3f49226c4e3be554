"""Bad command lines end in one `error:` line and exit 2; --help exits 0
and lists every config field with its default and meaning.

Each case runs a tiny absl entry point of our own that defines its config
flag the way vae_jax/main.py does, through `cli.define_config_file` and
`cli.run`, in a process of its own (config_flags reads sys.argv when the
flag is defined).
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from vae_jax import config_base
from vae_jax import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_ENTRY = textwrap.dedent('''
  """A tiny entry point with a config flag, for tests."""
  import os, sys
  from absl import flags
  from vae_jax import cli

  _CONFIG = cli.define_config_file("config", sys.argv[0] + ".cfg.py",
                                   "Config file", lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")

  def main(argv):
    cli.reject_extra_args(argv)
    print("latent_dim", _CONFIG.value.latent_dim)  # proof that main ran

  if __name__ == "__main__":
    cli.run(main)
''')

_BASE_CONFIG = textwrap.dedent('''
  from vae_jax import config_base

  def get_config(config_string=None):
    c = config_base.base_config()
    c.latent_dim = 3  # a value of this file's own.
    return config_base.apply_overrides(c, config_string)
''')


@pytest.fixture(scope="module")
def entry(tmp_path_factory):
  """Writes the entry point, its default config and some broken configs."""
  d = tmp_path_factory.mktemp("cli")
  (d / "entry.py").write_text(_ENTRY)
  (d / "entry.py.cfg.py").write_text(_BASE_CONFIG)
  (d / "syntax.py").write_text("def get_config():\n  return (\n")
  (d / "noget.py").write_text("x = 1\n")
  (d / "raises.py").write_text("import no_such_module_here\n")
  return d


# Runs command lines of the entry point, each in a fork of one driver
# process that has already imported vae_jax (and so jax): a fresh
# interpreter per case would spend ~1.5 s of CPU on imports alone.
_DRIVER = textwrap.dedent("""
  import json, os, runpy, sys
  import vae_jax.cli  # the imports every case shares, before forking
  entry, cases, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
  results = []
  for i, args in enumerate(cases):
    paths = [os.path.join(out, f"{i}.{n}") for n in ("out", "err")]
    pid = os.fork()
    if pid == 0:
      for fd, path in zip((1, 2), paths):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
      sys.argv = [entry, *args]
      code = 0
      try:
        runpy.run_path(entry, run_name="__main__")
      except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (e.code is not None)
      except BaseException:
        import traceback; traceback.print_exc(); code = 99
      sys.stdout.flush(); sys.stderr.flush()
      os._exit(code)
    _, status = os.waitpid(pid, 0)
    results.append([os.waitstatus_to_exitcode(status),
                    *(open(p).read() for p in paths)])
  print(json.dumps(results))
""")


def run_entries(entry, cases):
  """[(returncode, stdout, stderr)] of `entry.py *args` for each case."""
  out = entry / "outputs"
  out.mkdir(exist_ok=True)
  (entry / "driver.py").write_text(_DRIVER)
  env = dict(os.environ, PYTHONPATH=REPO)
  result = subprocess.run(
      [sys.executable, str(entry / "driver.py"), str(entry / "entry.py"),
       json.dumps(cases), str(out)], cwd=REPO, env=env, capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return [tuple(r) for r in json.loads(result.stdout)]


BAD = [
    (["--config.no_such_field=1"],
     r"--config\.no_such_field: not a field of the config"),
    (["--config.latent_dims=1"],
     r"--config\.latent_dims: .*did you mean --config\.latent_dim\?"),
    (["--config={cfg}", "--config.linear_gaussian.dimm=2"],
     r"did you mean --config\.linear_gaussian\.dim\?"),
    (["--config={cfg}:latent_dim"],
     r"'latent_dim' is not of the form field=value"),
    (["--config={cfg}:no_such_field=1"],
     r"'no_such_field' is not a config field"),
    (["--config={cfg}:latent_dim=x"],
     r"latent_dim='x' does not parse as int"),
    (["--config={d}/missing.py"], r"--config: no such config file: .*missing"),
    (["--config={d}/syntax.py"],
     r"--config: .*syntax\.py, line 2: syntax error"),
    (["--config={d}/noget.py"], r"--config: .*noget\.py defines no get_config"),
    (["--config={d}/raises.py"],
     r"--config: loading .*raises\.py failed: ModuleNotFoundError"),
    (["--config.latent_dim=1.5"],
     r"--config\.latent_dim=1\.5: latent_dim expects int like 3"),
    (["--config={cfg}", "--config.learning_rate=fast"],
     r"--config\.learning_rate=fast: learning_rate expects float"),
    (["--config.hidden=(1,2"], r"--config\.hidden=\(1,2: hidden expects tuple"),
    (["--config.latent_dim"], r"Missing value for flag --config\.latent_dim"),
    (["--config.seed=1", "--config={cfg}"],
     r"Found --config\.seed=1 in argv before a value for --config"),
    (["--workdirr=x"], r"unknown flag --workdirr; did you mean --workdir\?"),
    (["stray"], r"unexpected arguments: stray"),
]


@pytest.fixture(scope="module")
def outcomes(entry):
  """Every case of BAD and of GOOD, run once: {case index: outcome}."""
  cases = [[f"--workdir={entry / 'out'}"] +
           [a.format(d=entry, cfg=entry / "entry.py.cfg.py") for a in args]
           for args, _ in BAD + GOOD]
  return dict(enumerate(run_entries(entry, cases)))


@pytest.mark.parametrize("index", range(len(BAD)),
                         ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_error_line_and_exit_2(outcomes, index):
  returncode, stdout, stderr = outcomes[index]
  lines = stderr.splitlines()
  assert returncode == 2, stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr
  assert re.search(BAD[index][1], lines[0]), lines[0]
  assert stdout == ""  # main never ran


GOOD = [
    (["--config.latent_dim=5"], r"^latent_dim 5$"),
    (["--config={cfg}:latent_dim=6", "--config.analytic_kl"],
     r"^latent_dim 6$"),
]


@pytest.mark.parametrize("index", range(len(GOOD)))
def test_good_command_lines_reach_main(outcomes, index):
  returncode, stdout, stderr = outcomes[len(BAD) + index]
  assert returncode == 0, stderr
  assert re.search(GOOD[index][1], stdout.strip()), stdout


def _common_meanings():
  """{field: (default, comment)} read from vae_jax/config_base.py with a plain
  regex: independent of cli's ast/tokenize parsing."""
  defaults = cli.config_fields(config_base.base_config())
  meanings = {}
  source = open(os.path.join(REPO, "vae_jax", "config_base.py"),
                encoding="utf-8").read()
  for match in re.finditer(r"^  c\.([\w.]+) = .*?  # (.*)$", source, re.M):
    meanings[match.group(1)] = match.group(2).strip()
  return {f: (v, meanings[f]) for f, v in defaults.items()}


def test_help_lists_every_config_field_with_default_and_meaning(entry):
  (returncode, out, err), (rc_h, out_h, _) = run_entries(
      entry, [["--help"], ["--config.latent_dim=7", "-h"]])
  assert returncode == 0, err
  assert err == ""
  assert "A tiny entry point with a config flag" in out
  assert "--workdir: Output directory." in out
  assert "--config: Config file" in out
  fields = _common_meanings()
  assert len(fields) > 40
  rows = {line.split()[0]: line for line in out.splitlines()
          if line.startswith("  ") and not line.startswith("  --")}
  for field, (default, meaning) in fields.items():
    row = rows[field]
    value = 3 if field == "latent_dim" else default  # the file's own value
    assert f"  {value!r}" in row, row
    assert meaning in row, (field, row)
  # The config file's own comment follows the common meaning.
  assert "[entry.py.cfg.py: a value of this file's own.]" in rows["latent_dim"]
  assert "latent_dim 3" not in out  # help ends before main
  # Help shows the values the rest of the command line sets.
  assert rc_h == 0
  row = [l for l in out_h.splitlines() if l.split()[:1] == ["latent_dim"]]
  assert len(row) == 1 and row[0].split()[1] == "7"


COMMANDS = ("vae_jax.main", "vae_jax.eval_workdir", "experiments.generate",
            "experiments.anomaly", "experiments.anomaly_protocol",
            "experiments.compress", "experiments.gradient_variance",
            "experiments.sweep")


@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_rejects_an_unknown_flag_in_one_line(module, tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", module, "--zzz=1",
       f"--workdir={tmp_path / 'w'}"], cwd=REPO, capture_output=True,
      text=True, timeout=120)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-2000:]
  assert lines == ["error: unknown flag --zzz"], lines
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("module", ["experiments.generate",
                                    "experiments.anomaly",
                                    "vae_jax.eval_workdir"])
def test_help_works_without_the_required_flags(module):
  result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "--workdir" in result.stdout and not result.stderr.strip()


def test_help_of_a_non_runner_config_gives_its_own_meanings():
  """The gradient-variance config shares field names with the runner's
  (batch_size, likelihood); its --help must not borrow their meanings."""
  result = subprocess.run(
      [sys.executable, "-m", "experiments.gradient_variance", "--help"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  line = next(l for l in result.stdout.splitlines()
              if l.strip().startswith("linear.batch_size "))
  assert "examples in the fixed batch" in line
  assert "split over all devices" not in result.stdout
