"""Evaluation of generative models: FID with the standard TF-Inception weights, fully offline."""

from __future__ import annotations

from autoprog.eval.fid import (
    FidStatistics,
    fid,
    frechet_distance,
    inception_statistics,
    reference_cache_path,
    reference_statistics,
)

__all__ = [
    "FidStatistics",
    "fid",
    "frechet_distance",
    "inception_statistics",
    "reference_cache_path",
    "reference_statistics",
]
