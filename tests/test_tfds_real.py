"""A real TFDS dataset, prepared offline and trained on without TensorFlow.

`python -m vae_jax.data.prepare --dataset=celeb_a64` builds array_record
files from a folder laid out like CelebA's manual download (178×218 JPEGs in
img_align_celeba.zip, list_eval_partition.txt), generated here. Then
configs/celeba.py trains and evaluates on them through `tfds.data_source` +
grain, in a process that never imports TensorFlow. No `mock_data`, no
network.

Preparing needs TensorFlow (`pip install -e '.[prepare]'`, which .ci/run
installs); without it the tests that prepare are skipped.
"""

import importlib.util
import io
import json
import math
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from vae_jax.data import celeb_a64
from tiny_runs import run_python

needs_tensorflow = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="preparing needs TensorFlow: pip install -e '.[prepare]'")

SIZES = {"train": 24, "validation": 3, "test": 10}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """(manual_dir, data_dir) with celeb_a64 prepared by the CLI."""
  root = tmp_path_factory.mktemp("celeba")
  manual, data_dir = str(root / "manual"), str(root / "tfds")
  celeb_a64.write_synthetic_manual_dir(manual, SIZES, seed=3)
  proc = run_python(["-m", "vae_jax.data.prepare", "--dataset=celeb_a64",
                     f"--manual_dir={manual}", f"--data_dir={data_dir}"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  # The manual-download check runs first and reports what it found.
  assert f"{celeb_a64.ZIP_NAME}: " in proc.stdout
  assert "train 24, validation 3, test 10" in proc.stdout
  assert "prepared celeb_a64 in " in proc.stdout
  return manual, data_dir


def expected_split(manual, split):
  """uint8 [N, 64, 64, 3] of `split`, decoded and cropped here with PIL.

  The crop offsets are written out: (218 − 148) / 2 = 35 rows,
  (178 − 148) / 2 = 15 columns.
  """
  names = [line.split()[0] for line in open(
      os.path.join(manual, celeb_a64.PARTITION_NAME))
           if int(line.split()[1]) == celeb_a64.SPLITS[split]]
  out = []
  with zipfile.ZipFile(os.path.join(manual, celeb_a64.ZIP_NAME)) as zf:
    for name in names:
      pixels = np.asarray(Image.open(io.BytesIO(
          zf.read(f"img_align_celeba/{name}"))).convert("RGB"))
      assert pixels.shape == (218, 178, 3)
      crop = Image.fromarray(pixels[35:183, 15:163])
      out.append(np.asarray(crop.resize((64, 64), Image.Resampling.BILINEAR)))
  return np.stack(out)


def sorted_images(images):
  """The same images in an order that does not depend on storage order."""
  images = np.asarray(images)
  return images[np.lexsort(images.reshape(len(images), -1).T[::-1])]


@needs_tensorflow
def test_prepared_files_hold_each_split_cropped_and_resized(prepared):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  manual, data_dir = prepared
  for split, n in SIZES.items():
    source = tfds.data_source("celeb_a64", split=split, data_dir=data_dir,
                              download=False)
    assert len(source) == n
    stored = np.stack([source[i]["image"] for i in range(n)])
    assert stored.dtype == np.uint8
    np.testing.assert_array_equal(sorted_images(stored),
                                  sorted_images(expected_split(manual, split)))


@needs_tensorflow
def test_celeba_config_trains_and_evaluates_without_tensorflow(prepared,
                                                               tmp_path):
  manual, data_dir = prepared
  script = f"""
import json, sys
sys.path.insert(0, "tests")
import numpy as np
from configs import celeba
from vae_jax import data
from tiny_runs import shrink, train
c = shrink(celeba.get_config(), steps=6, every=3, batch=4)
c.data_dir = {data_dir!r}
c.channels, c.latent_dim, c.warmup_steps = (4, 8, 8, 8), 4, 2
dataset = data.get_dataset(c)
test = np.stack([dataset.test[i] for i in range(len(dataset.test))])
np.save({str(tmp_path / "test.npy")!r}, test)
final = train(c, {str(tmp_path / "run")!r})
print(json.dumps({{"final": final, "source": type(dataset.train).__name__,
                  "tensorflow": "tensorflow" in sys.modules}}))
"""
  proc = run_python(["-c", script])
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert not out["tensorflow"]  # reading and training need no TensorFlow
  assert out["source"] == "ArrayImageSource"  # the fast path, by default
  # The config's test split is the prepared one, scaled by 1/255.
  test = np.load(tmp_path / "test.npy")
  np.testing.assert_array_equal(
      sorted_images(np.rint(test * 255).astype(np.uint8)),
      sorted_images(expected_split(manual, "test")))
  final = out["final"]
  assert final["num_examples"] == SIZES["test"]
  assert final["elbo"] == pytest.approx(
      final["reconstruction"] - final["kl"], rel=1e-5)
  # Gaussian σ_dec = 0.1 on D = 12288 dequantized pixels: the reconstruction
  # term is at most −(D/2) log(2π σ²) nats, reached at zero error.
  d = 64 * 64 * 3
  assert final["reconstruction"] <= -0.5 * d * math.log(2 * math.pi * 0.01)
  assert math.isfinite(final["elbo"]) and final["kl"] >= 0
  lines = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
  assert [l["step"] for l in lines if "train/loss" in l] == [3, 6]


def test_check_reports_missing_files(tmp_path):
  from vae_jax.data import prepare  # pylint: disable=g-import-not-at-top
  with pytest.raises(celeb_a64.DataError, match="list_eval_partition.txt"):
    celeb_a64.write_synthetic_manual_dir(str(tmp_path), {"test": 1})
    os.remove(tmp_path / celeb_a64.PARTITION_NAME)
    prepare.check("celeb_a64", str(tmp_path))


def test_builder_also_reads_a_prepared_tfds_celeb_a(tmp_path):
  # Without a manual_dir, celeb_a64 is built from TFDS celeb_a's examples
  # ({"image": uint8 [218, 178, 3]}); the generator alone needs no TF.
  rng = np.random.default_rng(0)
  raw = rng.integers(0, 256, (2, 218, 178, 3), dtype=np.uint8)
  builder = celeb_a64.CelebA64(data_dir=str(tmp_path))
  out = list(builder._generate_examples(source=[{"image": r} for r in raw]))  # pylint: disable=protected-access
  assert [k for k, _ in out] == [0, 1]
  for r, (_, example) in zip(raw, out):
    want = Image.fromarray(r[35:183, 15:163]).resize(
        (64, 64), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(example["image"], np.asarray(want))
