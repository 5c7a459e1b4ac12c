"""The VAE of a latent diffusion pipeline: diffusers' ``AutoencoderKL`` as a frozen codec.

A latent DiT (DiT-XL/2 in ``facebook/DiT-XL-2-256``) denoises the latents of a KL autoencoder
(``vae/`` of the pipeline folder), not pixels. As diffusers' ``DiTPipeline`` (and DiT's
``train.py``) do, an image ``x`` in [-1, 1] is encoded to ``z = scaling_factor * sample(q(z | x))``
and a latent decoded to ``x = decode(z / scaling_factor)``; the scaling factor comes from the VAE's
own ``config.json`` (0.18215 for Stable Diffusion's VAE, which DiT uses). The VAE never learns.

Geometry: each down block but the last halves the side, so a latent pixel covers
``2 ** (len(block_out_channels) - 1)`` pixels (8 for Stable Diffusion's VAE: 256 px -> 32 x 32).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from autoprog.errors import ConfigError

#: ``_class_name`` values of a VAE folder autoprog encodes with.
VAE_CLASS_NAMES: tuple[str, ...] = ("AutoencoderKL",)


def read_config(path: Path) -> dict[str, Any]:
    """A ``config.json`` as a dict (one-line :class:`ConfigError` when unreadable)."""
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is not a readable config: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} is not a readable config: not a JSON object")
    return config


def has_weights(folder: Path, stem: str = "diffusion_pytorch_model") -> bool:
    """Whether ``folder`` holds a diffusers weights file (``<stem>.safetensors`` / ``.bin``, or shards)."""
    return any(f.name.startswith(stem) for f in folder.iterdir())


def check_vae_folder(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` of the VAE folder ``path`` after checks that build nothing.

    Raises:
        ConfigError: no config, another class than :data:`VAE_CLASS_NAMES`, no weights, or a VAE
            whose latents ``DiTPipeline`` would decode wrongly (a ``shift_factor``).
    """
    p = Path(path)
    if not (p / "config.json").is_file():
        raise ConfigError(f"{p} has no config.json (expected an AutoencoderKL folder saved by save_pretrained)")
    config = read_config(p / "config.json")
    kind = config.get("_class_name")
    if kind not in VAE_CLASS_NAMES:
        raise ConfigError(
            f"{p} holds a {kind or 'config without a model class'}, not an {' / '.join(VAE_CLASS_NAMES)}"
        )
    if not has_weights(p):
        raise ConfigError(f"{p} has a config.json but no weights (diffusion_pytorch_model.safetensors or .bin)")
    if config.get("shift_factor") not in (None, 0, 0.0):
        raise ConfigError(
            f"{p}: the VAE has shift_factor {config['shift_factor']}; DiTPipeline decodes latents / "
            "scaling_factor only, so a DiT's VAE has none"
        )
    return config


def load_vae(path: str | os.PathLike[str]) -> nn.Module:
    """``AutoencoderKL.from_pretrained(path)`` after :func:`check_vae_folder`."""
    from diffusers import AutoencoderKL

    check_vae_folder(path)
    try:
        return AutoencoderKL.from_pretrained(str(path))
    except (OSError, ValueError, TypeError, RuntimeError, KeyError) as e:
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ConfigError(f"cannot load the VAE in {path}: {first}") from e


def vae_scale_factor(vae: nn.Module) -> int:
    """Pixels per latent pixel: ``2 ** (len(block_out_channels) - 1)`` (8 for Stable Diffusion's VAE)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def module_digest(module: nn.Module) -> str:
    """SHA-256 of a diffusers model's config and of every tensor of its state (name, dtype, shape,
    bytes): equal digests mean the same function."""
    h = hashlib.sha256()
    config = {k: v for k, v in dict(getattr(module, "config", {})).items() if not k.startswith("_")}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, value in sorted(module.state_dict().items()):
        v = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{value.dtype}|{tuple(value.shape)}".encode())
        h.update(memoryview(v.view(torch.uint8).numpy()))
    return h.hexdigest()


class LatentCodec:
    """Pixels <-> scaled latents through a frozen ``AutoencoderKL`` (as ``DiTPipeline``).

    Args:
        vae: the autoencoder (set to eval mode, frozen and moved to ``device``).
        device: where it runs.

    Attributes:
        scaling_factor: ``vae.config.scaling_factor``.
        downsample: pixels per latent pixel (:func:`vae_scale_factor`).
        latent_channels: channels of a latent (4 for DiT's VAE).
        image_channels: channels of an image (3).
        digest: :func:`module_digest` of the VAE (part of every latent cache key).
        decode_time_s: seconds spent decoding so far.
    """

    def __init__(self, vae: nn.Module, device: torch.device) -> None:
        self.vae = vae.requires_grad_(False).eval().to(device)
        self.device = device
        self.scaling_factor = float(vae.config.scaling_factor)
        self.downsample = vae_scale_factor(vae)
        self.latent_channels = int(vae.config.latent_channels)
        self.image_channels = int(vae.config.in_channels)
        self.digest = module_digest(vae)
        self.decode_time_s = 0.0

    @torch.no_grad()
    def posterior(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, std)`` of ``q(z | x)`` (unscaled, float32) for images in [-1, 1] ``(N, C, H, W)``.
        Runs in float32 whatever autocast the caller is under."""
        with torch.autocast(self.device.type, enabled=False):
            dist = self.vae.encode(pixels.to(self.device, torch.float32)).latent_dist
        return dist.mean.float(), dist.std.float()

    def scale(self, mean: Tensor, std: Tensor, generator: torch.Generator | None) -> Tensor:
        """A posterior sample times the scaling factor (the denoiser's input); ``generator=None``
        takes the mean."""
        if generator is None:
            return mean * self.scaling_factor
        noise = torch.randn(mean.shape, generator=generator).to(mean.device, mean.dtype)
        return (mean + std * noise) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: Tensor, batch_size: int = 16) -> Tensor:
        """Images in [-1, 1] of scaled ``latents`` ``(N, latent_channels, h, w)``: ``decode(z / s)``,
        ``batch_size`` latents at a time."""
        t0 = time.perf_counter()
        out = []
        with torch.autocast(self.device.type, enabled=False):
            for lo in range(0, len(latents), batch_size):
                z = latents[lo : lo + batch_size].to(self.device, torch.float32) / self.scaling_factor
                out.append(self.vae.decode(z).sample.clamp(-1, 1))
        self.decode_time_s += time.perf_counter() - t0
        return torch.cat(out)


__all__ = [
    "VAE_CLASS_NAMES",
    "LatentCodec",
    "check_vae_folder",
    "has_weights",
    "load_vae",
    "module_digest",
    "read_config",
    "vae_scale_factor",
]
