"""Adaptive regularisation (paper Appendix B-C, Tab. XIV): regularisation that rises with the stage.

Smaller sub-networks in early stages need less regularisation. The RandAugment magnitude,
stochastic-depth rate and random-erasing probability rise linearly with the stage index, from a
fraction of their full value to the full value (the authors' VOLO setting: RandAugment 4.5 -> 9,
drop-path 0 -> 0.1, random-erasing 0 -> 0.25).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from torch import nn


@dataclass(frozen=True)
class StageRegularization:
    """Regularisation strengths of one stage."""

    randaug: str | None
    drop_path: float
    reprob: float


def adaptive_regularization(
    stage: int,
    num_stages: int,
    randaug: str | None,
    drop_path: float,
    reprob: float,
    min_fraction: tuple[float, float, float] = (0.5, 0.0, 0.0),
) -> StageRegularization:
    """The regularisation of ``stage``: ``linspace(min_fraction, 1, num_stages)[stage] * full``.

    Args:
        stage: stage index.
        num_stages: number of stages.
        randaug: the full timm RandAugment string (its ``m`` is scaled), or ``None``.
        drop_path: full stochastic-depth rate.
        reprob: full random-erasing probability.
        min_fraction: first-stage fraction of (RandAugment magnitude, drop-path, random-erasing).
    """

    def scale(i: int) -> float:
        return float(np.linspace(min_fraction[i], 1.0, num_stages)[stage]) if num_stages > 1 else 1.0

    ra = None
    if randaug:
        match = re.search(r"-m(\d+(?:\.\d+)?)", randaug)
        if match:
            # timm takes integer magnitudes: round half up, after removing float noise (7.4999.. -> 8)
            m = int(math.floor(round(float(match.group(1)) * scale(0), 6) + 0.5))
            ra = re.sub(r"-m\d+(?:\.\d+)?", f"-m{m}", randaug, count=1) if m > 0 else None
        else:
            ra = randaug
    return StageRegularization(ra, drop_path * scale(1), reprob * scale(2))


def set_drop_path(blocks: list[nn.Module], rate: float) -> None:
    """Set stochastic depth on timm-style blocks, rising linearly with depth up to ``rate`` (DeiT's rule).

    timm builds a block whose rate is 0 with ``nn.Identity`` in its ``drop_path*`` slots, so the slots
    are replaced (``DropPath`` when the rate is positive, ``Identity`` otherwise) rather than edited.
    """
    from timm.layers import DropPath

    n = len(blocks)
    for i, block in enumerate(blocks):
        r = rate * i / max(1, n - 1)
        for parent in list(block.modules()):
            for name, child in list(parent.named_children()):
                if name.startswith("drop_path") and isinstance(child, nn.Identity | DropPath):
                    setattr(parent, name, DropPath(r) if r > 0 else nn.Identity())
