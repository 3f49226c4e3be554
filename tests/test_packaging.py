"""What `pip install` puts in site-packages, and config files from anywhere.

configs/ and experiments/ live in the checkout and are not installed: a
top-level `configs` or `experiments` package would collide with other
projects' in site-packages.
"""

import glob
import json
import os
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                      if not p.endswith("__init__.py"))


@pytest.mark.slow
def test_wheel_installs_only_the_vae_jax_package(tmp_path):
  subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps",
       "--no-build-isolation", "--quiet", "-w", str(tmp_path), REPO],
      check=True, cwd=tmp_path, capture_output=True)
  (wheel,) = glob.glob(str(tmp_path / "vae_jax-*.whl"))
  names = zipfile.ZipFile(wheel).namelist()
  top_level = {n.split("/")[0] for n in names
               if not n.split("/")[0].endswith(".dist-info")}
  assert top_level == {"vae_jax"}
  # The field definitions the library reads (--help, eval_workdir) ship
  # inside the package.
  assert "vae_jax/config_base.py" in names
  metadata = next(zipfile.ZipFile(wheel).read(n).decode() for n in names
                  if n.endswith(".dist-info/METADATA"))
  extras = {line.split(":", 1)[1].strip() for line in metadata.splitlines()
            if line.startswith("Provides-Extra:")}
  assert {"test", "prepare", "tpu", "cuda", "cuda13"} <= extras


def test_every_config_file_loads_outside_the_checkout(tmp_path):
  """From another working directory, with `configs` not importable, every
  config file (including those built on a sibling) loads by path."""
  script = (
      "import importlib.util, json, sys\n"
      "assert importlib.util.find_spec('configs') is None, 'configs importable'\n"
      "out = {}\n"
      "for path in sys.argv[1:]:\n"
      "  spec = importlib.util.spec_from_file_location('c', path)\n"
      "  m = importlib.util.module_from_spec(spec)\n"
      "  spec.loader.exec_module(m)\n"
      "  c = m.get_config()\n"
      "  out[path] = sorted(c.keys())\n"
      "print(json.dumps(out))\n")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  result = subprocess.run([sys.executable, "-c", script, *CONFIG_FILES],
                          cwd=tmp_path, env=env, capture_output=True,
                          text=True)
  assert result.returncode == 0, result.stderr[-2000:]
  loaded = json.loads(result.stdout)
  assert len(loaded) == len(CONFIG_FILES) >= 10
  # A config built on a sibling carries the sibling's fields.
  assert "num_train_steps" in loaded[os.path.join(REPO, "configs",
                                                  "binarized_mnist.py")]
  assert {"base", "grid"} <= set(loaded[os.path.join(REPO, "configs",
                                                     "celeba_sweep.py")])


def test_installed_runner_without_configs_asks_for_one(tmp_path):
  """vae_jax alone (as a wheel installs it, no configs/ beside it): the
  runner without --config says what to pass, in one line."""
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(os.path.join(REPO, "vae_jax"), tmp_path / "vae_jax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  env = dict(os.environ, PYTHONPATH=str(tmp_path))
  result = subprocess.run([sys.executable, "-m", "vae_jax.main"],
                          cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
  assert lines[0].startswith("error: no --config given") and (
      "--config=" in lines[0])
  assert not (tmp_path / "runs").exists()
  helped = subprocess.run([sys.executable, "-m", "vae_jax.main", "--help"],
                          cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
  assert helped.returncode == 0 and "--config" in helped.stdout
