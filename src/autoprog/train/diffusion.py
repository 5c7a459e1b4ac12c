"""Denoising diffusion on diffusers' schedulers: the training objective and DDIM sampling.

DDPM forward process with DiT's linear betas (1e-4 .. 0.02, 1000 steps) from diffusers'
``DDPMScheduler``; epsilon-prediction MSE loss; classifier-free guidance trained by dropping each
sample's label (and, independently, its stage identifier, Sec. 4.1.2) to the null index; sampling
with diffusers' ``DDIMScheduler`` and guidance. Images live in [-1, 1] (pixel space); a latent
model encodes / decodes through ``AutoencoderKL`` outside these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Denoiser = Callable[..., torch.Tensor]


@dataclass
class Condition:
    """Class labels and (optional) stage ids of a batch; either may already hold null indices."""

    labels: torch.Tensor
    stage_ids: torch.Tensor | None = None


class GaussianDiffusion:
    """The DDPM noise schedule and the epsilon-MSE objective (Ho et al. 2020; DiT's settings).

    Args:
        num_train_timesteps: diffusion steps T.
        beta_start, beta_end: linear beta schedule (DiT: 1e-4, 0.02).
    """

    def __init__(
        self, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> None:
        from diffusers import DDIMScheduler, DDPMScheduler

        self.train_scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule="linear",
            clip_sample=False,
        )
        self.sample_scheduler = DDIMScheduler.from_config(self.train_scheduler.config)
        self.num_train_timesteps = num_train_timesteps

    def noised(
        self, x0: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_t, t, noise)`` for clean images ``x0`` with t ~ U{0..T-1}, noise ~ N(0, I)."""
        n = x0.shape[0]
        t = torch.randint(0, self.num_train_timesteps, (n,), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        return self.train_scheduler.add_noise(x0, noise, t), t, noise

    def loss(
        self,
        denoiser: Denoiser,
        x0: torch.Tensor,
        cond: Condition,
        generator: torch.Generator | None = None,
        fixed: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Epsilon-MSE of ``denoiser(x_t, t, labels[, stage_ids])``; ``fixed`` = a given ``(x_t, t, noise)``."""
        x_t, t, noise = fixed if fixed is not None else self.noised(x0, generator)
        eps = denoiser(x_t, t, cond.labels, cond.stage_ids)
        return F.mse_loss(eps.float(), noise.float())

    @torch.no_grad()
    def sample(
        self,
        denoiser: nn.Module,
        labels: torch.Tensor,
        *,
        channels: int,
        resolution: int,
        null_label: int,
        stage_id: int | None = None,
        null_stage: int | None = None,
        steps: int = 25,
        guidance: float = 1.5,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """DDIM (eta 0) samples in [-1, 1] for ``labels``, with classifier-free guidance ``guidance``.

        The unconditional branch uses the null label (and the null stage id when SID is on); the
        conditional branch uses the final stage's id (Sec. 4.1.2).
        """
        was_training = denoiser.training
        denoiser.eval()
        n = labels.shape[0]
        scheduler = self.sample_scheduler
        scheduler.set_timesteps(steps)
        x = torch.randn((n, channels, resolution, resolution), generator=generator).to(device)
        labels = labels.to(device)
        use_cfg = guidance != 1.0
        y = torch.cat([labels, torch.full_like(labels, null_label)]) if use_cfg else labels
        s = None
        if stage_id is not None:
            s = torch.full_like(labels, stage_id)
            if use_cfg:
                s = torch.cat(
                    [s, torch.full_like(labels, null_stage if null_stage is not None else stage_id)]
                )
        for t in scheduler.timesteps:
            x_in = torch.cat([x, x]) if use_cfg else x
            tt = torch.full((x_in.shape[0],), int(t), device=device, dtype=torch.long)
            eps = denoiser(x_in, tt, y, s)
            if use_cfg:
                cond, uncond = eps.chunk(2)
                eps = uncond + guidance * (cond - uncond)
            x = scheduler.step(eps, t, x).prev_sample
        denoiser.train(was_training)
        return x.clamp(-1, 1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 images."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> [-1, 1] floats."""
    return x.float().div(127.5).sub(1.0)
