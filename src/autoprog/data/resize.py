"""Bringing an image batch to a smaller size: the input transforms of the resolution axis.

Every function takes a batch ``(N, C, H, W)`` (or any ``(..., H, W)``) and returns it at
``size x size``; a batch already at that size comes back unchanged (the same tensor). They are
plain functions, usable from any training loop:

- ``bilinear``: antialiased bilinear interpolation (the growth methods' default, as before).
- ``nearest``: nearest-neighbour interpolation: Composer's ``ProgressiveResizing`` ``mode="resize"``
  (its ``_make_resize`` calls ``F.interpolate(..., mode="nearest")``, although its class docstring
  says "bilinear"; we follow the code).
- ``crop``: a random ``size x size`` window at the original pixel scale, one position for the whole
  batch: Composer's ``mode="crop"``.
- ``lowfreq``: :func:`low_frequency_crop`, EfficientTrain's Fourier-domain low-pass down-sampling.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

#: The input transforms by name (``--input-transform``).
InputTransform = Literal["bilinear", "nearest", "crop", "lowfreq"]
INPUT_TRANSFORMS: tuple[str, ...] = ("bilinear", "nearest", "crop", "lowfreq")


def _sizes(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def low_frequency_crop(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Keep the centred ``size x size`` band of the 2-D spectrum and return it as a ``size x size`` image.

    EfficientTrain (Wang et al., ICCV 2023) and EfficientTrain++ (TPAMI 2024), Sec. "low-frequency
    cropping": the 2-D DFT of each ``H x W`` image is cropped to the frequencies ``k`` with
    ``-B//2 <= k <= B - B//2 - 1`` along each axis (for even ``B``: ``-B/2 .. B/2 - 1``, the
    centred ``B x B`` block of the ``fftshift``-ed spectrum), scaled by ``B_h B_w / (H W)`` so that
    intensities keep their scale (a constant image stays the same constant), inverse-transformed
    at the new size and its real part taken. A cosine of integer frequency ``(u, v)`` (cycles per
    image) with ``|u| < B_h/2`` and ``|v| < B_w/2`` survives with its amplitude and phase, now
    sampled on the ``B x B`` grid; one with ``|u| > B_h/2`` or ``|v| > B_w/2`` vanishes. A component
    exactly at the new Nyquist frequency ``±B/2`` (even ``B``) keeps half its amplitude: only its
    ``-B/2`` bin is in the band, and the real part averages it with the missing conjugate, as in
    the authors' ``freq_crop`` (LeapLabTHU/EfficientTrain, ``utils.py``; our own code).

    The transform is linear and keeps constants, so it commutes with a per-channel normalisation
    ``(x - mean) / std``: apply it before or after, the result is the same.

    Args:
        x: real images ``(..., H, W)`` (any float dtype; integer input is converted to float32).
        size: the output size ``B`` (or ``(B_h, B_w)``), at most the input's.

    Returns:
        ``(..., B_h, B_w)`` real images (float; values may leave the input's range: it is a low-pass
        filter, with ringing at sharp edges). ``x`` itself when the size is unchanged.

    Example:
        >>> x = torch.rand(8, 1, 28, 28)
        >>> low_frequency_crop(x, 12).shape
        torch.Size([8, 1, 12, 12])
    """
    bh, bw = _sizes(size)
    h, w = x.shape[-2:]
    if (bh, bw) == (h, w):
        return x
    if not (1 <= bh <= h and 1 <= bw <= w):
        raise ValueError(f"low_frequency_crop: size {(bh, bw)} must be between 1 and the input's {(h, w)}")
    xf = x if x.is_floating_point() else x.float()
    spectrum = torch.fft.fftshift(torch.fft.fft2(xf), dim=(-2, -1))  # frequency 0 at index (h//2, w//2)
    top, left = h // 2 - bh // 2, w // 2 - bw // 2
    band = spectrum[..., top : top + bh, left : left + bw]  # frequencies -B//2 .. B - B//2 - 1
    band = torch.fft.ifftshift(band, dim=(-2, -1)) * ((bh * bw) / (h * w))
    return torch.fft.ifft2(band).real.to(xf.dtype)


def random_crop(x: torch.Tensor, size: int | tuple[int, int], generator: torch.Generator | None = None) -> torch.Tensor:
    """A ``size x size`` window of every image, at one random position for the whole batch.

    Composer's ``ProgressiveResizing(mode="crop")`` (its ``_make_crop``: one ``top``/``left`` per
    batch). The position is uniform over every window that fits, both borders included (Composer
    draws ``torch.randint(H - Hc)``, which never reaches the last row or column; we include it).

    Args:
        x: images ``(..., H, W)``.
        size: the window's size.
        generator: draws the position (pass one seeded by the step for a reproducible, resumable
            run; default: torch's global generator).
    """
    bh, bw = _sizes(size)
    h, w = x.shape[-2:]
    if (bh, bw) == (h, w):
        return x
    if not (1 <= bh <= h and 1 <= bw <= w):
        raise ValueError(f"random_crop: size {(bh, bw)} must be between 1 and the input's {(h, w)}")
    top = int(torch.randint(h - bh + 1, (1,), generator=generator))
    left = int(torch.randint(w - bw + 1, (1,), generator=generator))
    return x[..., top : top + bh, left : left + bw]


def resize_batch(
    x: torch.Tensor,
    size: int,
    mode: InputTransform = "bilinear",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``x`` ``(N, C, H, W)`` at ``size x size`` by one of the input transforms (module docstring).

    Composer's functional ``resize_batch`` (``composer/algorithms/progressive_resizing``) for
    classification inputs (targets are labels and are never resized); our own code. ``x`` itself
    when it is at ``size`` already.

    Args:
        x: float images ``(N, C, H, W)`` (``nearest`` and ``crop`` also keep uint8 as uint8).
        size: the output size (not larger than the input).
        mode: ``bilinear``, ``nearest``, ``crop`` or ``lowfreq``.
        generator: the crop position's generator (``crop`` only).
    """
    if x.shape[-2:] == (size, size):
        return x
    if mode == "lowfreq":
        return low_frequency_crop(x, size)
    if mode == "crop":
        return random_crop(x, size, generator)
    if mode == "nearest":
        if x.is_floating_point():
            return F.interpolate(x, size=(size, size), mode="nearest")
        return F.interpolate(x.float(), size=(size, size), mode="nearest").to(x.dtype)  # exact: picks pixels
    if mode == "bilinear":
        return F.interpolate(x.float() if not x.is_floating_point() else x, size=(size, size),
                             mode="bilinear", align_corners=False, antialias=size < max(x.shape[-2:]))  # fmt: skip
    raise ValueError(f"unknown input transform {mode!r}; choose from {', '.join(INPUT_TRANSFORMS)}")


def step_generator(seed: int, step: int) -> torch.Generator:
    """A generator seeded by ``(seed, step)`` alone: a random crop that is a pure function of the step,
    so that a resumed run draws the same windows as an uninterrupted one."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


__all__ = [
    "INPUT_TRANSFORMS",
    "InputTransform",
    "low_frequency_crop",
    "random_crop",
    "resize_batch",
    "step_generator",
]
