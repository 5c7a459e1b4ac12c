"""Class-conditional DiT fine-tuning as a :class:`~autoprog.tasks.base.FinetuneTask` (paper Sec. 4, 5.3.1).

The source is a diffusers ``DiTTransformer2DModel`` folder (:class:`~autoprog.adapters.diffusers_dit.DiTDenoiser`)
or a ``DiTPipeline`` folder (``transformer/``, ``vae/``, ``scheduler/``, as ``facebook/DiT-XL-2-256``);
the objective is epsilon-MSE on the DDPM process with classifier-free guidance trained by label
dropout; the Unique Stage Identifier is a learnable stage embedding added to the class embedding
(Sec. 4.1.2), dropped to a null id independently of the label; the evaluation is the FID of
class-balanced DDIM samples of the EMA model, conditioned on the last stage's identifier.

**Latent DiTs.** With a ``vae/`` the transformer works on the VAE's latents, as in DiT:

* Resolutions stay in *pixels*: the unfreezing space's resolutions are multiples of
  ``patch_size x f`` pixels (``f``: the VAE's downsampling, 8 for DiT's), the loader reads images at
  a stage's pixel resolution ``r`` and the transformer sees ``r / f`` latents (DiT-XL/2 at 256 px:
  32 x 32 latents, 16 x 16 tokens; the paper's 64 .. 256 px stages are 8 .. 32 latents).
* Each image is encoded once per resolution (:class:`~autoprog.tasks.latent_cache.LatentCache`), and
  every step draws a fresh posterior sample from the cached mean and standard deviation. The cost of
  the encoding is reported apart (``latent_cache.encode_time_s``); it is inside the loop's
  ``wall_clock_s``, and not in ``train_flops`` (those count the transformer).
* The noise schedule is the folder's ``scheduler/scheduler_config.json`` (betas, timesteps,
  prediction type); samples are drawn by DDIM on it, decoded by the VAE, and the FID is computed on
  the decoded images. ``model/`` is a ``DiTPipeline`` folder (:func:`~autoprog.adapters.diffusers_dit.save_dit_pipeline`).

**Learned sigma** (``out_channels = 2 x in_channels``, DiT-XL/2, in pixel or latent space): the loss
is DiT's ``mse + vb`` (the variance trained by the variational bound, the mean's gradient stopped
there); the proxies and sampling use the epsilon half, as ``DiTPipeline`` does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from autoprog.adapters.base import resize_input
from autoprog.adapters.diffusers_dit import (
    DiTDenoiser,
    add_difffit_scales,
    add_lora,
    check_dit_source,
    export_transformer,
    save_dit_pipeline,
)
from autoprog.adapters.diffusers_vae import LatentCodec, load_vae
from autoprog.data.datasets import DatasetInfo
from autoprog.errors import ConfigError
from autoprog.tasks.latent_cache import LatentCache
from autoprog.train.diffusion import Condition, GaussianDiffusion, from_uint8, to_uint8

if TYPE_CHECKING:
    from autoprog.train.config import FinetuneConfig


def make_condition(
    labels: Tensor,
    stage_id: int | None,
    null_class: int,
    null_stage: int,
    cfg_dropout: float,
    sid_dropout: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> Condition:
    """The training condition of a batch (Sec. 4.1.2): each sample's label is dropped to the null
    class with probability ``cfg_dropout`` (classifier-free guidance), and, with SID, its stage id is
    the current stage's, dropped independently to the null id with probability ``sid_dropout``."""
    y = labels.clone()
    y[torch.rand(len(y), generator=generator) < cfg_dropout] = null_class
    s = None
    if stage_id is not None:
        s = torch.full_like(y, stage_id)
        s[torch.rand(len(y), generator=generator) < sid_dropout] = null_stage
        s = s.to(device)
    return Condition(y.to(device), s)


def dit_method_parameters(model: DiTDenoiser, method: str, lora_rank: int) -> Callable[[str], bool] | None:
    """Set up a parameter-efficient baseline; returns the predicate of its learnable parameters
    (``None`` for the methods that learn whole blocks). Class embedders always learn: the target
    data's classes are new."""
    if method == "bitfit":
        return lambda n: n.endswith(".bias") or "class_embedder" in n or n.startswith("stage_embedding")
    if method == "difffit":
        add_difffit_scales(model)
        return lambda n: n.endswith(".bias") or "difffit_gamma" in n or "class_embedder" in n
    if method == "lora":
        add_lora(model, rank=lora_rank)
        return lambda n: "lora_" in n or "class_embedder" in n
    return None


class DiTTask:
    """Fine-tuning a class-conditional diffusers DiT (pixel or latent space) with optional stage embedding.

    Args:
        model_dir: a diffusers DiT folder (``save_pretrained``) or a ``DiTPipeline`` folder, not one
            fine-tuned with SID.
        cfg: the run's configuration (CFG / SID dropout, FID settings, data for the reference).
        num_stages: stages of the run (the stage embedding's size when SID is on).
        device: where the model, the VAE and the probe tensors live.

    Attributes:
        codec: the frozen VAE of a latent DiT (``None`` in pixel space).
        cache: its :class:`~autoprog.tasks.latent_cache.LatentCache` (``None`` in pixel space).
    """

    metric = "fid"
    default_lr = 1e-4
    stage_identifiers = True

    def __init__(
        self, model_dir: Path, cfg: FinetuneConfig, *, num_stages: int, device: torch.device
    ) -> None:
        self.source = check_dit_source(model_dir)
        base = DiTDenoiser.load(model_dir)
        if base.stage_embedding is not None:
            raise ConfigError(
                f"{model_dir} is a fine-tuned model with stage identifiers; start from its source"
            )
        self.cfg = cfg
        self.device = device
        self.model = DiTDenoiser(base.transformer, num_stages if cfg.use_sid else None)
        self.codec = LatentCodec(load_vae(self.source.vae), device) if self.source.vae is not None else None
        self.cache = LatentCache(self.codec) if self.codec is not None else None
        f = self.codec.downsample if self.codec is not None else 1  # pixels per latent pixel
        self.full_resolution = base.sample_size * f
        self.channels = self.codec.image_channels if self.codec is not None else base.in_channels
        self.patch_size = self.model.patch_size * f
        self.block_paths = self.model.block_paths()
        self.diffusion = GaussianDiffusion(
            scheduler_config=self.source.scheduler_config, learn_sigma=self.model.learned_sigma
        )
        self.num_classes = self.model.num_classes
        self.class_names: list[str] = []

    def bind_data(self, info: DatasetInfo) -> None:
        if info.num_classes > self.model.num_classes:
            raise ConfigError(
                f"{info.name} has {info.num_classes} classes but the source's class embedder has {self.model.num_classes}"
            )
        self.num_classes = info.num_classes
        self.class_names = list(info.classes)

    def always_learnable(self, name: str) -> bool:
        return self.model.always_learnable(name)

    def method_parameters(self, method: str, lora_rank: int) -> Callable[[str], bool] | None:
        return dit_method_parameters(self.model, method, lora_rank)

    def _pixels(self, images: Tensor, resolution: int) -> Tensor:
        """uint8 images -> [-1, 1] floats on the device, at ``resolution``."""
        x0 = from_uint8(images).to(self.device)
        return resize_input(x0, resolution) if x0.shape[-1] != resolution else x0

    def _model_input(self, images: Tensor, resolution: int, generator: torch.Generator) -> Tensor:
        """The clean input ``x_0`` of the denoiser for uint8 images seen at ``resolution`` pixels:
        the pixels in [-1, 1], or scaled VAE latents ``(N, C, r / f, r / f)`` (the posterior from the
        cache, its sample drawn from ``generator``)."""
        if self.cache is None:
            return self._pixels(images, resolution)
        return self.cache.latents(images, resolution, generator)

    def loss(
        self,
        net: nn.Module,
        images: Tensor,
        labels: Tensor,
        resolution: int,
        stage_id: int | None,
        generator: torch.Generator,
    ) -> Tensor:
        x0 = self._model_input(images, resolution, generator)
        cond = make_condition(
            labels, stage_id, self.model.null_class, self.model.null_stage, self.cfg.cfg_dropout,
            self.cfg.sid_dropout, generator, self.device,
        )  # fmt: skip
        return self.diffusion.loss(net, x0, cond, generator=generator)

    def probe(
        self, images: Tensor, labels: Tensor, resolution: int, stage_id: int | None, seed: int
    ) -> tuple[Tensor, ...]:
        """``(x_t, t, labels[, stage_ids], target)``: noised probe images and what the denoiser
        should predict (the noise, or the velocity). For a learned-sigma model the target also
        carries ``x_0`` (concatenated on the channels) for the variational bound."""
        g = torch.Generator().manual_seed(seed)
        x0 = self._model_input(images, resolution, g)
        x_t, t, noise = self.diffusion.noised(x0, g)
        y = labels.to(self.device)
        s = (torch.full_like(y, stage_id),) if stage_id is not None else ()
        target = self.diffusion.target(x0, noise, t)
        if self.model.learned_sigma:
            target = torch.cat([target, x0], dim=1)
        return (x_t, t.to(self.device), y, *s, target)

    def output(self, model: nn.Module, *inputs: Tensor) -> Tensor:
        return model(*inputs)

    def probe_loss(self, model: nn.Module, probe: tuple[Tensor, ...]) -> Tensor:
        """The training objective on a probe batch (for a learned-sigma model with the bound)."""
        if not self.model.learned_sigma:
            return nn.functional.mse_loss(model(*probe[:-1]), probe[-1])
        x_t, t, y, *s, target = probe
        eps_target, x0 = target.chunk(2, dim=1)
        out = model(x_t, t, y, *s, variance=True).float()
        pred, var_values = out.chunk(2, dim=1)
        vb = self.diffusion.vb_terms(pred.detach(), var_values, x0.float(), x_t.float(), t)
        return nn.functional.mse_loss(pred, eps_target.float()) + vb.mean()

    def evaluate(
        self, model: nn.Module, out: Path, stage_id: int | None, log: Callable[[str], None]
    ) -> dict[str, Any]:
        """FID of ``cfg.fid_samples`` class-balanced DDIM samples (decoded by the VAE for a latent
        DiT) against the data's training images; the first 100 samples are saved as
        ``samples.png``. A latent DiT also reports its cache (``latent_cache``, ``encode_time_s``)."""
        f = self.codec.downsample if self.codec is not None else 1
        value, images = evaluate_fid(
            model, self.cfg, self.diffusion, self.num_classes, self.full_resolution // f, self.model.in_channels,
            stage_id=stage_id, device=self.device, log=log,
            decode=self.codec.decode if self.codec is not None else None,
        )  # fmt: skip
        if images is not None:
            save_grid(images[:100], out / "samples.png")
        result: dict[str, Any] = {"fid": value, "fid_samples": self.cfg.fid_samples}
        if self.cache is not None and self.codec is not None:
            stats = self.cache.stats()
            result.update(
                latent_cache=stats, encode_time_s=stats["encode_time_s"], decode_time_s=self.codec.decode_time_s,
            )  # fmt: skip
            log(
                f"  latent cache: {stats['encoded']} encodes for {stats['lookups']} lookups "
                f"({stats['hits']} hits), {stats['encode_time_s']:.1f}s encoding"
            )
        return result

    def save(self, model: nn.Module, path: Path) -> None:
        """Pixel space: the transformer folder with LoRA and DiffFit folded in (+ the stage
        embedding); a latent DiT: a ``DiTPipeline`` folder with the method's extras (LoRA, DiffFit,
        the last stage's SID) folded in."""
        if self.codec is None:
            model.save(path)  # type: ignore[operator]
            return
        assert isinstance(model, DiTDenoiser)
        scheduler = self.source.scheduler_config or dict(self.diffusion.sample_scheduler.config)
        meta = {"sid_folded": {"stage": model.num_stages - 1, "num_stages": model.num_stages}} if model.num_stages else {}
        save_dit_pipeline(
            path, export_transformer(model), self.codec.vae, scheduler,
            id2label=dict(enumerate(self.class_names)) or None, meta=meta,
        )  # fmt: skip


def create_dit_task(
    model_dir: Path, cfg: FinetuneConfig, *, num_stages: int, device: torch.device
) -> DiTTask:
    """The fine-tuning task of a diffusers DiT folder (see :class:`DiTTask`)."""
    return DiTTask(model_dir, cfg, num_stages=num_stages, device=device)


def evaluate_fid(
    model: nn.Module,
    cfg: FinetuneConfig,
    diffusion: GaussianDiffusion,
    num_classes: int,
    resolution: int,
    channels: int,
    *,
    stage_id: int | None,
    device: torch.device,
    log: Callable[[str], None] = print,
    decode: Callable[[Tensor], Tensor] | None = None,
) -> tuple[float | None, Tensor | None]:
    """FID of ``cfg.fid_samples`` class-balanced DDIM samples against the data's training images.

    ``resolution`` and ``channels`` are the denoiser's (latent ones for a latent DiT); ``decode``
    maps a batch of samples to images in [-1, 1] (the VAE's decoder), identity when ``None``."""
    if cfg.fid_samples == 0:
        return None, None
    from autoprog.eval.fid import fid, reference_statistics

    images = fid_samples(model, cfg, diffusion, num_classes, resolution, channels, stage_id=stage_id, device=device,
                         decode=decode)  # fmt: skip
    t0 = time.perf_counter()
    ref = reference_statistics(cfg.data, "train", cfg.fid_reference, data_dir=cfg.data_dir, device=device)
    value = fid(images, ref, device=device)
    log(
        f"  FID {value:.2f} ({len(images)} samples vs {cfg.fid_reference} {cfg.data} training images, {time.perf_counter() - t0:.0f}s)"
    )
    return value, images


def fid_samples(
    model: nn.Module,
    cfg: FinetuneConfig,
    diffusion: GaussianDiffusion,
    num_classes: int,
    resolution: int,
    channels: int,
    *,
    stage_id: int | None,
    device: torch.device,
    decode: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """The ``cfg.fid_samples`` images FID is computed on: uint8 ``(N, C, H, W)`` on the CPU, class
    ``i % num_classes`` for sample ``i``, DDIM with ``cfg.sample_steps`` steps and ``cfg.guidance``,
    noise from a generator seeded ``cfg.seed + 12345``, in batches of 100. Also usable on its own:
    sample on one machine, compute FID on another (``benchmarks/gpu``). ``decode`` as in
    :func:`evaluate_fid`."""
    g = torch.Generator().manual_seed(cfg.seed + 12345)
    labels = torch.arange(cfg.fid_samples) % num_classes
    samples = []
    for lo in range(0, cfg.fid_samples, 100):
        drawn = diffusion.sample(
            model,
            labels[lo : lo + 100],
            channels=channels,
            resolution=resolution,
            null_label=model.null_class,  # type: ignore[attr-defined]
            stage_id=stage_id,
            null_stage=getattr(model, "null_stage", None),
            steps=cfg.sample_steps,
            guidance=cfg.guidance,
            generator=g,
            device=device,
            clip=decode is None,  # latents are not bounded by 1; the decoded images are clipped
        )
        samples.append(to_uint8(decode(drawn) if decode is not None else drawn).cpu())
    return torch.cat(samples)


def save_grid(images: Tensor, path: Path, nrow: int = 10) -> None:
    """A PNG grid of uint8 images (N, C, H, W)."""
    import math

    from PIL import Image

    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    grid = torch.zeros(c, rows * h, nrow * w, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[:, r * h : (r + 1) * h, q * w : (q + 1) * w] = images[i]
    arr = grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()
    Image.fromarray(arr).save(path)


__all__ = [
    "DiTTask",
    "create_dit_task",
    "dit_method_parameters",
    "evaluate_fid",
    "fid_samples",
    "make_condition",
    "save_grid",
]
