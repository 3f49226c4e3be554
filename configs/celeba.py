"""TFDS `celeb_a`: centre crop 148 → 64×64×3, conv VAE, Gaussian likelihood.

The run meant for TPU VMs and for sweeps over σ_dec and the latent dimension:
  python -m vae_jax.main --config=configs/celeba.py:sigma_dec=0.1 --config.latent_dim=64
CelebA needs a manual download; prepare it once, cropped and resized to the
64×64 variant the host can feed an accelerator with (`celeb_a64`, read
whenever it is prepared and crop_size/image_size are 148/64):
  pip install -e '.[prepare]'
  python -m vae_jax.data.prepare --dataset=celeb_a64 --manual_dir=FOLDER
See `python -m vae_jax.data.prepare --help` for FOLDER's two files.

The Gaussian with σ_dec is the paper's model (§6.5); its bits/dim includes
D ln 256 for the dequantization. For bits/dim comparable with published
CelebA numbers use a discretized likelihood on the integer pixels, and on
TPUs bfloat16 compute (parameters and sums stay float32):
  python -m vae_jax.main --config=configs/celeba.py:likelihood=discretized_logistic_mixture,transform=none,compute_dtype=bfloat16
"""

from vae_jax import config_base


def get_config(config_string=None):
  c = config_base.base_config()
  c.dataset = "celeb_a"  # 162,770 train / 19,962 test; celeb_a64 if prepared.
  c.crop_size = 148  # centre crop (pixels) before resizing.
  c.image_size = 64  # 64×64 RGB.
  c.transform = "dequantize"  # uniform dequantization: a density on [0,1)^D.
  c.architecture = "conv"  # 4 stride-2 conv layers each way.
  c.channels = (32, 64, 128, 256)  # encoder channels (decoder reversed).
  c.activation = "gelu"  # conv nonlinearity.
  c.latent_dim = 128  # dimensions of z.
  c.likelihood = "gaussian"  # N(f(z), σ_dec² I).
  c.sigma_dec_mode = "fixed"  # σ_dec is the swept hyperparameter.
  c.sigma_dec = 0.1  # in units of [0, 1] pixel intensity.
  c.batch_size = 128  # global batch (a multiple of the device count).
  c.eval_batch_size = 128  # device-divisible.
  c.learning_rate = 2e-4  # peak Adam learning rate.
  c.lr_schedule = "warmup_cosine"  # warm-up then cosine decay.
  c.warmup_steps = 1000  # warm-up steps.
  c.grad_clip_norm = 1.0  # guards the first steps at small σ_dec.
  c.num_train_steps = 100_000  # optimizer steps.
  c.eval_every_steps = 5000  # evaluation period.
  c.checkpoint_every_steps = 2000  # preemption-safe period.
  c.eval_iwae_samples = 10  # cheap L_K during training.
  c.final_iwae_samples = 1000  # final NLL estimate (conv decoder is costly).
  c.iwae_chunk_size = 100  # samples per chunk.
  return config_base.apply_overrides(c, config_string)
