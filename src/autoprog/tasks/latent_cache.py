"""Each training image encoded by the VAE once per resolution, then reused (fast-DiT's trick).

A latent DiT trains on ``z = s * (mu(x) + sigma(x) * n)``, ``n ~ N(0, I)``, where ``mu, sigma`` are the
VAE encoder's posterior of image ``x`` (DiT's ``train.py`` re-encodes every batch). The encoder is
frozen, so ``mu`` and ``sigma`` of an image never change: :class:`LatentCache` stores them the first
time an image is seen at a resolution and draws only the fresh ``n`` afterwards. Training is
therefore the same process as re-encoding every step (a new posterior sample each time, from the
training generator); fast-DiT instead stores one sample per image, which fixes ``n``.

The cache key is ``(VAE digest, resolution, image digest)``: the SHA-256 of the VAE's config and
weights (:func:`~autoprog.adapters.diffusers_vae.module_digest`), the pixel side the encoder sees, and a
BLAKE2b digest of the image's uint8 bytes and shape as the loader delivered them. So the cache holds
one entry per distinct image of the training set (the image set) and resolution; a different VAE,
a different resolution or a changed image never reuses an entry. The cache lives as long as the
fine-tuning task (one run); its counters go to ``summary.json`` (``latent_cache``).

It is not checkpointed: a resumed run encodes its images again. The encoder's result for an image
can differ in the last bit with the batch it was encoded in (a batch of one takes another
convolution path on the CPU, about 1e-7), so a resumed latent run matches an uninterrupted one up to
that rounding, not bit for bit as a pixel-space run does.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import torch
from torch import Tensor

from autoprog.adapters.base import resize_input
from autoprog.adapters.diffusers_vae import LatentCodec
from autoprog.train.diffusion import from_uint8


def image_digest(image: Tensor) -> bytes:
    """BLAKE2b (16 bytes) of one uint8 image's shape and bytes."""
    x = image.detach().cpu().contiguous()
    h = hashlib.blake2b(str(tuple(x.shape)).encode(), digest_size=16)
    h.update(memoryview(x.numpy()).cast("B"))
    return h.digest()


class LatentCache:
    """VAE posteriors ``(mean, std)`` keyed by (VAE digest, resolution, image digest).

    Args:
        codec: the frozen VAE.
        encode_batch: images per encoder call when filling the cache.

    Attributes:
        encoded: images run through the encoder so far (each key once).
        lookups: images asked for; ``hits`` of them were in the cache already.
        encode_time_s: seconds spent in the encoder (the rest of a training step is the denoiser's).
    """

    def __init__(self, codec: LatentCodec, encode_batch: int = 32) -> None:
        self.codec = codec
        self.encode_batch = encode_batch
        self._store: dict[tuple[str, int, bytes], tuple[Tensor, Tensor]] = {}
        self.encoded = 0
        self.lookups = 0
        self.hits = 0
        self.encode_time_s = 0.0

    def __len__(self) -> int:
        return len(self._store)

    def posterior(self, images: Tensor, resolution: int) -> tuple[Tensor, Tensor]:
        """``(mean, std)`` ``(N, latent_channels, r / f, r / f)`` on the codec's device for uint8
        ``images`` ``(N, C, h, w)`` seen at ``resolution`` pixels (resized first when ``h`` differs),
        encoding only the images not cached yet."""
        keys = [(self.codec.digest, resolution, image_digest(img)) for img in images]
        self.lookups += len(keys)
        missing = {k: i for i, k in enumerate(keys) if k not in self._store}  # first occurrence
        self.hits += len(keys) - len(missing)  # a repeat of a new image within the batch is a hit
        if missing:
            t0 = time.perf_counter()
            idx = list(missing.values())
            for lo in range(0, len(idx), self.encode_batch):
                part = idx[lo : lo + self.encode_batch]
                x = from_uint8(images[part]).to(self.codec.device)
                if x.shape[-2:] != (resolution, resolution):
                    x = resize_input(x, resolution)
                mean, std = self.codec.posterior(x)
                for j, i in enumerate(part):
                    self._store[keys[i]] = (mean[j].cpu(), std[j].cpu())
            self.encoded += len(idx)
            self.encode_time_s += time.perf_counter() - t0
        mean = torch.stack([self._store[k][0] for k in keys]).to(self.codec.device)
        std = torch.stack([self._store[k][1] for k in keys]).to(self.codec.device)
        return mean, std

    def latents(self, images: Tensor, resolution: int, generator: torch.Generator | None) -> Tensor:
        """The denoiser's clean input: a posterior sample times the VAE's scaling factor (the
        sample's noise drawn from ``generator``; ``None`` takes the posterior mean)."""
        mean, std = self.posterior(images, resolution)
        return self.codec.scale(mean, std, generator)

    def stats(self) -> dict[str, Any]:
        """Counters for ``summary.json``: entries per resolution, encodes, lookups, hits, seconds."""
        per_res: dict[int, int] = {}
        for _, res, _ in self._store:
            per_res[res] = per_res.get(res, 0) + 1
        return {
            "vae_digest": self.codec.digest[:16],
            "entries": len(self._store),
            "entries_per_resolution": {str(r): n for r, n in sorted(per_res.items())},
            "encoded": self.encoded,
            "lookups": self.lookups,
            "hits": self.hits,
            "encode_time_s": self.encode_time_s,
        }


__all__ = ["LatentCache", "image_digest"]
