"""TensorBoard holds what the run wrote: read the event file back.

The reader below parses the TFRecord framing and Event protos itself, so
the test depends on neither TensorFlow nor the tensorboard package.
"""

import glob
import io
import json
import os
import struct

import ml_collections
import numpy as np
import pytest
from PIL import Image
from tensorboardX.proto import event_pb2
from tensorboardX.proto import plugin_hparams_pb2

from vae_jax.training import images as images_lib
from vae_jax.training.metric_writers import MetricWriter


def read_events(workdir):
  """Every Event of the run's event files, in write order."""
  events = []
  for path in sorted(glob.glob(os.path.join(workdir, "tensorboard",
                                            "events.out.tfevents.*"))):
    data = open(path, "rb").read()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      start = offset + 12  # length, then its masked CRC32.
      event = event_pb2.Event()
      event.ParseFromString(data[start:start + length])
      events.append(event)
      offset = start + length + 4  # the payload's CRC32.
  return events


def values(events):
  """[(step, Summary.Value)] of every summary value."""
  return [(e.step, v) for e in events if e.HasField("summary")
          for v in e.summary.value]


@pytest.fixture
def written(tmp_path):
  rng = np.random.default_rng(0)
  samples = images_lib.grid(rng.uniform(size=(6, 64)), (8, 8, 1))
  color = rng.integers(0, 256, size=(10, 14, 3), dtype=np.uint8)
  png_path = tmp_path / "recon.png"
  Image.fromarray(color).save(png_path)
  config = ml_collections.ConfigDict({
      "latent_dim": 8, "hidden": (128, 128), "data_dir": None,
      "analytic_kl": True, "learning_rate": 1e-3,
      "linear_gaussian": {"dim": 4}})
  writer = MetricWriter(str(tmp_path))
  writer.write_config(config)
  writer.write(3, {"test/elbo": -40.5, "train/loss": float("nan")})
  writer.write_images(3, {"images/samples": samples})
  writer.write_image_files(3, {"images/reconstructions": png_path})
  writer.write_hparams(config, {"elbo": -39.25, "nll_iwae": 38.5,
                                "kl_per_dim": [0.1, 0.2],
                                "bad": float("nan")}, step=6)
  writer.close()
  return tmp_path, samples, color, config


def test_scalars_reach_jsonl_and_tensorboard(written):
  workdir = written[0]
  lines = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert lines == [{"step": 3, "test/elbo": -40.5, "train/loss": "nan"}]
  scalars = {(s, v.tag): v.simple_value for s, v in values(read_events(workdir))
             if v.HasField("simple_value")}
  assert scalars[(3, "test/elbo")] == -40.5
  assert np.isnan(scalars[(3, "train/loss")])


def test_image_grids_are_pngs_of_the_same_pixels(written):
  workdir, samples, color, _ = written
  images = {v.tag: (s, v.image) for s, v in values(read_events(workdir))
            if v.HasField("image")}
  step, image = images["images/samples"]
  decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
  assert step == 3 and (image.height, image.width) == samples.shape[:2]
  # tensorboardX stores grayscale as RGB: three equal channels.
  np.testing.assert_array_equal(decoded, np.repeat(samples, 3, axis=-1))
  step, image = images["images/reconstructions"]
  decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
  np.testing.assert_array_equal(decoded, color)


def test_config_is_text_with_every_field(written):
  workdir, _, _, config = written
  texts = [v for _, v in values(read_events(workdir))
           if v.tag.startswith("config")]
  assert len(texts) == 1
  text = texts[0].tensor.string_val[0].decode()
  lines = text.splitlines()
  assert all(l.startswith("    ") for l in lines)  # a Markdown code block
  assert json.loads("\n".join(l[4:] for l in lines)) == json.loads(
      config.to_json_best_effort())


def test_hparams_session_holds_config_and_final_metrics(written):
  workdir = written[0]
  vals = values(read_events(workdir))
  plugin = {}
  for _, v in vals:
    if v.metadata.plugin_data.plugin_name == "hparams":
      data = plugin_hparams_pb2.HParamsPluginData()
      data.ParseFromString(v.metadata.plugin_data.content)
      plugin[data.WhichOneof("data")] = data
  experiment = plugin["experiment"].experiment
  assert sorted(m.name.tag for m in experiment.metric_infos) == [
      "final/elbo", "final/nll_iwae"]  # lists and NaN are left out
  session = plugin["session_start_info"].session_start_info
  hp = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        for k, v in session.hparams.items()}
  assert hp == {"latent_dim": 8, "hidden": "(128, 128)", "data_dir": "None",
                "analytic_kl": True, "learning_rate": 1e-3,
                "linear_gaussian.dim": 4}
  finals = {(s, v.tag): v.simple_value for s, v in vals
            if v.tag.startswith("final/")}
  assert finals == {(6, "final/elbo"): -39.25, (6, "final/nll_iwae"): 38.5}


def test_disabled_writer_writes_nothing(tmp_path):
  writer = MetricWriter(str(tmp_path), enabled=False)
  writer.write(1, {"a": 1.0})
  writer.write_images(1, {"x": np.zeros((4, 4, 1), np.uint8)})
  writer.write_config({"a": 1})
  writer.write_hparams({"a": 1}, {"elbo": -1.0}, step=1)
  writer.close()
  assert os.listdir(tmp_path) == []


def visible_scalars(events, tag):
  """[(step, value)] of `tag` as TensorBoard shows it: on a session start
  at step s it drops every event read so far with step >= s (TensorBoard's
  purge of orphaned data, on by default)."""
  shown = []
  for event in events:
    if (event.HasField("session_log") and
        event.session_log.status == event_pb2.SessionLog.START):
      shown = [(s, v) for s, v in shown if s < event.step]
    for value in event.summary.value if event.HasField("summary") else ():
      if value.tag == tag:
        shown.append((event.step, value.simple_value))
  return shown


def test_a_resumed_run_shows_each_step_once_in_jsonl_and_tensorboard(
    tmp_path):
  """Logged to step 8, checkpointed at 5, interrupted, resumed at 5: steps
  6-8 are written again and must not appear twice."""
  first = MetricWriter(str(tmp_path), resume_step=0)
  for step in range(1, 9):
    first.write(step, {"train/loss": float(step)})
  first.close()
  resumed = MetricWriter(str(tmp_path), resume_step=5)
  for step in range(6, 9):
    resumed.write(step, {"train/loss": 10.0 * step})
  resumed.close()
  want = [(s, float(s)) for s in range(1, 6)] + [(s, 10.0 * s)
                                                 for s in range(6, 9)]
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [(r["step"], r["train/loss"]) for r in rows] == want
  assert visible_scalars(read_events(str(tmp_path)), "train/loss") == want


def visible_steps(events, tag):
  """Steps of the summary values tagged `tag` that TensorBoard shows (the
  purge of `visible_scalars`)."""
  shown = []
  for event in events:
    if (event.HasField("session_log") and
        event.session_log.status == event_pb2.SessionLog.START):
      shown = [s for s in shown if s < event.step]
    for value in event.summary.value if event.HasField("summary") else ():
      if value.tag.startswith(tag):
        shown.append(event.step)
  return shown


def test_config_shows_once_per_session_that_passed_a_checkpoint(tmp_path):
  """Fresh, then resumed twice from the checkpoint at step 5 (the second
  resume before any new checkpoint), then from one at step 8: the config
  text of the session that was redone must not stay beside its redo."""
  for resume_step, last in ((0, 8), (5, 7), (5, 9), (8, 10)):
    writer = MetricWriter(str(tmp_path), resume_step=resume_step)
    writer.write_config({"resumed_at": resume_step})
    for step in range(resume_step + 1, last + 1):
      writer.write(step, {"train/loss": float(step)})
    writer.close()
  events = read_events(str(tmp_path))
  assert visible_steps(events, "config") == [1, 6, 9]
  assert visible_steps(events, "train/loss") == list(range(1, 11))
