"""Denoising diffusion on diffusers' schedulers: the training objective and DDIM sampling.

DDPM forward process with DiT's linear betas (1e-4 .. 0.02, 1000 steps) from diffusers'
``DDPMScheduler``, or a pipeline folder's own ``scheduler_config.json``; epsilon- (or v-) prediction
MSE loss; classifier-free guidance trained by dropping each sample's label (and, independently, its
stage identifier, Sec. 4.1.2) to the null index; sampling with diffusers' ``DDIMScheduler`` and
guidance. A *learned-sigma* denoiser (``out_channels = 2 x in_channels``, as DiT-XL/2) is trained as
DiT trains it: the MSE on the first half of the channels plus the variational bound on the
interpolated variance (Nichol & Dhariwal 2021, ``L_hybrid`` with the mean's gradient stopped);
sampling uses the first half only, as diffusers' ``DiTPipeline`` does. Images live in [-1, 1]
(pixel space); a latent model encodes / decodes through ``AutoencoderKL`` outside these functions.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Denoiser = Callable[..., torch.Tensor]


@dataclass
class Condition:
    """Class labels and (optional) stage ids of a batch; either may already hold null indices."""

    labels: torch.Tensor
    stage_ids: torch.Tensor | None = None


#: Prediction targets the objective supports (a scheduler config's ``prediction_type``).
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction")


def _accepted(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a scheduler ``config`` that ``cls.__init__`` takes (diffusers logs a warning
    for every other key, e.g. a DDIM config's ``set_alpha_to_one`` given to ``DDPMScheduler``)."""
    names = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in config.items() if k in names}


class GaussianDiffusion:
    """The DDPM noise schedule and the denoising objective (Ho et al. 2020; DiT's settings).

    Args:
        num_train_timesteps: diffusion steps T.
        beta_start, beta_end: linear beta schedule (DiT: 1e-4, 0.02).
        scheduler_config: a diffusers scheduler config (a pipeline's ``scheduler/scheduler_config.json``,
            any class of the DDPM family); it replaces the three numbers above. Training uses its
            betas, timesteps and ``prediction_type`` through ``DDPMScheduler``, sampling the same
            through ``DDIMScheduler``.
        learn_sigma: the denoiser also predicts the variance (``out_channels = 2 x in_channels``):
            :meth:`loss` adds DiT's variational-bound term (:meth:`vb_terms`).

    Raises:
        ValueError: a ``prediction_type`` other than :data:`PREDICTION_TYPES`.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        *,
        scheduler_config: Mapping[str, Any] | None = None,
        learn_sigma: bool = False,
    ) -> None:
        from diffusers import DDIMScheduler, DDPMScheduler

        if scheduler_config is None:
            scheduler_config = {
                "num_train_timesteps": num_train_timesteps,
                "beta_start": beta_start,
                "beta_end": beta_end,
                "beta_schedule": "linear",
                "clip_sample": False,
            }
        self.train_scheduler = DDPMScheduler.from_config(_accepted(DDPMScheduler, scheduler_config))
        self.sample_scheduler = DDIMScheduler.from_config(_accepted(DDIMScheduler, scheduler_config))
        self.num_train_timesteps = int(self.train_scheduler.config.num_train_timesteps)
        self.prediction_type = str(self.train_scheduler.config.prediction_type)
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type {self.prediction_type!r}: autoprog trains {' or '.join(PREDICTION_TYPES)} models"
            )
        self.learn_sigma = learn_sigma
        # The posterior q(x_{t-1} | x_t, x_0) (DiT's gaussian_diffusion.py), in float64.
        betas = self.train_scheduler.betas.double()
        acp = self.train_scheduler.alphas_cumprod.double()
        acp_prev = torch.cat([torch.ones(1, dtype=torch.float64), acp[:-1]])
        post_var = betas * (1.0 - acp_prev) / (1.0 - acp)
        self._tables = {
            "sqrt_recip_acp": torch.sqrt(1.0 / acp),
            "sqrt_recipm1_acp": torch.sqrt(1.0 / acp - 1.0),
            "sqrt_acp": torch.sqrt(acp),
            "sqrt_one_minus_acp": torch.sqrt(1.0 - acp),
            # log of the posterior variance, clipped: it is 0 at t = 0
            "post_log_var": torch.log(torch.cat([post_var[1:2], post_var[1:]])),
            "log_betas": torch.log(betas),
            "post_coef1": betas * torch.sqrt(acp_prev) / (1.0 - acp),
            "post_coef2": (1.0 - acp_prev) * torch.sqrt(1.0 - betas) / (1.0 - acp),
        }

    def noised(
        self, x0: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_t, t, noise)`` for clean images ``x0`` with t ~ U{0..T-1}, noise ~ N(0, I)."""
        n = x0.shape[0]
        t = torch.randint(0, self.num_train_timesteps, (n,), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        return self.train_scheduler.add_noise(x0, noise, t), t, noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser predicts: the noise (epsilon) or the velocity (v-prediction)."""
        if self.prediction_type == "epsilon":
            return noise
        return self.train_scheduler.get_velocity(x0, noise, t)

    def loss(
        self,
        denoiser: Denoiser,
        x0: torch.Tensor,
        cond: Condition,
        generator: torch.Generator | None = None,
        fixed: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """MSE of ``denoiser(x_t, t, labels[, stage_ids])`` against :meth:`target`; ``fixed`` = a
        given ``(x_t, t, noise)``. With ``learn_sigma`` the denoiser is called with
        ``variance=True`` and the mean of :meth:`vb_terms` is added (DiT's ``mse + vb``)."""
        x_t, t, noise = fixed if fixed is not None else self.noised(x0, generator)
        target = self.target(x0, noise, t)
        if not self.learn_sigma:
            eps = denoiser(x_t, t, cond.labels, cond.stage_ids)
            return F.mse_loss(eps.float(), target.float())
        out = denoiser(x_t, t, cond.labels, cond.stage_ids, variance=True).float()
        pred, var_values = out.chunk(2, dim=1)
        vb = self.vb_terms(pred.detach(), var_values, x0.float(), x_t.float(), t)
        return F.mse_loss(pred, target.float()) + vb.mean()

    def _at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table ``name`` at the timesteps ``t``, shaped to broadcast over ``like`` (N, C, H, W)."""
        v = self._tables[name].to(like.device)[t.long()].to(like.dtype)
        return v.view(-1, *([1] * (like.ndim - 1)))

    def vb_terms(
        self,
        pred: torch.Tensor,
        var_values: torch.Tensor,
        x0: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
    ) -> torch.Tensor:
        """The variational bound per sample, in bits per dimension (DiT's ``_vb_terms_bpd``).

        The model's variance interpolates in log space between the posterior's and ``beta_t``:
        ``log var = f log beta_t + (1 - f) log beta~_t`` with ``f = (v + 1) / 2`` for the variance
        channels ``v`` (Nichol & Dhariwal 2021, Eq. 15). Its mean comes from ``pred`` (pass it
        detached: the bound trains the variance only, as in DiT). For ``t > 0`` the term is
        ``KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))``, for ``t = 0`` the discretised Gaussian
        decoder's negative log-likelihood (256 bins over [-1, 1]).

        Returns:
            ``(N,)``: each sample's term averaged over its dimensions, divided by ``log 2``.
        """
        if self.prediction_type == "epsilon":
            x0_pred = self._at("sqrt_recip_acp", t, x_t) * x_t - self._at("sqrt_recipm1_acp", t, x_t) * pred
        else:
            x0_pred = self._at("sqrt_acp", t, x_t) * x_t - self._at("sqrt_one_minus_acp", t, x_t) * pred
        coef1, coef2 = self._at("post_coef1", t, x_t), self._at("post_coef2", t, x_t)
        model_mean = coef1 * x0_pred + coef2 * x_t
        true_mean = coef1 * x0 + coef2 * x_t
        min_log, max_log = self._at("post_log_var", t, x_t), self._at("log_betas", t, x_t)
        frac = (var_values + 1.0) / 2.0
        model_log_var = frac * max_log + (1.0 - frac) * min_log
        kl = normal_kl(true_mean, min_log, model_mean, model_log_var).mean(dim=tuple(range(1, x0.ndim)))
        nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var)
        nll = nll.mean(dim=tuple(range(1, x0.ndim)))
        return torch.where(t.to(kl.device) == 0, nll, kl) / math.log(2.0)

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
        clip: bool = True,
    ) -> torch.Tensor:
        """DDIM (eta 0) samples in [-1, 1] for ``labels``, with classifier-free guidance ``guidance``.

        The unconditional branch uses the null label (and the null stage id when SID is on); the
        conditional branch uses the final stage's id (Sec. 4.1.2). ``clip=False`` returns the
        samples unclipped (latents, which the VAE decodes, are not bounded by 1).
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
        return x.clamp(-1, 1) if clip else x


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL divergence of two diagonal Gaussians, elementwise (in nats)."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """Log-likelihood of ``x`` in [-1, 1] under a Gaussian discretised to 256 bins, elementwise
    (Ho et al. 2020's decoder; DiT's ``discretized_gaussian_log_likelihood``)."""

    def cdf(v: torch.Tensor) -> torch.Tensor:  # the standard normal's, tanh approximation
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))

    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 images."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> [-1, 1] floats."""
    return x.float().div(127.5).sub(1.0)
