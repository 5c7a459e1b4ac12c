"""One training job from start to end: :func:`run_job` runs a loop's attempts until one finishes.

Under ``torchrun`` / ``accelerate launch`` every process runs the job with the same configuration;
it joins the process group the launcher set up (and leaves it at the end, unless the caller had
joined it already). Only rank 0 speaks on the console.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import torch

from autoprog.distributed import DistContext, init_distributed, shutdown_distributed
from autoprog.errors import NonFiniteLoss
from autoprog.run.log import console, quiet
from autoprog.run.nonfinite import Attempt, NonFinitePolicy, after_nonfinite
from autoprog.run.process import device_type
from autoprog.run.state import RunCheckpoint

C = TypeVar("C", bound="RunConfig")


class RunConfig(Protocol):
    """What :func:`run_job` reads of a loop's configuration (``PretrainConfig``, ``FinetuneConfig``)."""

    out: str
    device: str | None
    resume: bool
    on_nonfinite: str
    max_rollbacks: int
    nonfinite_lr_factor: float

    def validate(self) -> None: ...


def run_job(
    cfg: C,
    attempt_fn: Callable[[C, Callable[[str], None], DistContext, Attempt], dict[str, Any]],
    log: Callable[[str], None] = console,
) -> dict[str, Any]:
    """Validate ``cfg``, join the process group, and return the summary of the first attempt of
    ``attempt_fn(cfg, say, ctx, attempt)`` that finishes.

    An attempt ended by :class:`~autoprog.errors.NonFiniteLoss` is followed by one resuming from the
    last checkpoint with a lower learning rate, or the job stops (:mod:`autoprog.run.nonfinite`).
    ``say`` is ``log`` on rank 0 and silent elsewhere.
    """
    cfg.validate()
    joined = torch.distributed.is_available() and torch.distributed.is_initialized()
    ctx = init_distributed(device_type(cfg.device))
    say = log if ctx.is_main else quiet
    policy, checkpoint = NonFinitePolicy.from_config(cfg), RunCheckpoint(cfg.out)
    try:
        attempt = Attempt(resume=cfg.resume)
        while True:
            try:
                return attempt_fn(cfg, say, ctx, attempt)
            except NonFiniteLoss as e:
                attempt = after_nonfinite(e, attempt, policy, checkpoint, ctx, say)
    finally:
        if not joined:
            shutdown_distributed()


__all__ = ["RunConfig", "run_job"]
