"""What a run does on a non-finite loss (``--on-nonfinite``, ``--nonfinite-lr-factor``, ``max_rollbacks``).

A NaN/inf training loss is never trained on. The step raises
:class:`~autoprog.errors.NonFiniteLoss` before its backward pass (:func:`check_finite`; with several
processes every one raises together, as soon as one of them sees it, so none waits in a collective
for the others). That ends the attempt, and :func:`after_nonfinite` decides:

* **rollback** (the default, at most ``max_rollbacks`` times per job, when ``last.pt`` or
  ``last.pt.prev`` exists): the next attempt resumes from the checkpoint with the learning rate
  times ``lr_factor``;
* **stop**: one ``nonfinite`` record with ``"action": "stop"`` and one line of
  :class:`~autoprog.errors.AutoprogError` saying why (``--on-nonfinite stop``, the rollbacks used
  up, or no checkpoint).

Rank 0 decides, and its decision is broadcast: every process rolls back, or every one stops.

Every rollback is logged (``{"event": "nonfinite", "action": "rollback", ...}``) and stays in
``log.jsonl``. Resuming cuts the log back to the checkpoint's offset, so a rollback record written
after that checkpoint (by an earlier rollback to the same checkpoint) is cut too; the attempt
therefore carries all of this job's rollback records (:attr:`Attempt.notes`), the checkpoint keeps
the records logged before it, and :meth:`Attempt.replay` writes again those the log lost.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from autoprog.distributed import DistContext
from autoprog.errors import AutoprogError, NonFiniteLoss
from autoprog.run.log import append_record
from autoprog.run.state import RunCheckpoint


@dataclass(frozen=True)
class NonFinitePolicy:
    """``--on-nonfinite``, the configuration's ``max_rollbacks`` and ``--nonfinite-lr-factor``."""

    action: Literal["rollback", "stop"] = "rollback"
    max_rollbacks: int = 3
    lr_factor: float = 0.5

    @classmethod
    def from_config(cls, cfg: Any) -> NonFinitePolicy:
        return cls(cfg.on_nonfinite, cfg.max_rollbacks, cfg.nonfinite_lr_factor)


@dataclass(frozen=True)
class Attempt:
    """What one attempt of a job starts from.

    Attributes:
        resume: continue from ``last.pt`` (``--resume``, or after a rollback).
        lr_scale: the learning-rate scale after a rollback (``None``: the checkpoint's, else 1).
        rollbacks: the rollbacks this job has done.
        notes: this job's ``nonfinite`` rollback records, in order.
    """

    resume: bool = False
    lr_scale: float | None = None
    rollbacks: int = 0
    notes: tuple[dict[str, Any], ...] = ()

    def replay(self, saved: list[dict[str, Any]], write: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
        """After resuming: ``write`` again this job's rollback records that the log, cut back to the
        checkpoint, no longer holds (those not among ``saved``, the checkpoint's records), and return
        the run's records (``saved`` and those), for the next checkpoint to keep."""
        records, logged = list(saved), list(saved)
        for record in self.notes:
            if record in logged:
                logged.remove(record)  # logged before the checkpoint: still in the log
            else:
                records.append(record)
                write(record)
        return records


def check_finite(value: float, step: int, lr_scale: float, ctx: DistContext) -> None:
    """Raise :class:`~autoprog.errors.NonFiniteLoss` before the backward pass when ``value`` (this
    process's loss) is NaN/inf, on every process when any one's is (a collective when distributed)."""
    bad = not math.isfinite(value)
    if ctx.distributed:  # every process stops (or rolls back) together
        bad = ctx.all_reduce_sum([float(bad)])[0] > 0
    if bad:
        raise NonFiniteLoss(value, step, lr_scale)


def after_nonfinite(
    error: NonFiniteLoss,
    attempt: Attempt,
    policy: NonFinitePolicy,
    checkpoint: RunCheckpoint,
    ctx: DistContext,
    log: Callable[[str], None],
) -> Attempt:
    """The attempt after ``error`` ended ``attempt``: a rollback to ``checkpoint`` with a lower
    learning rate; or, when the policy says stop, a ``stop`` record and an :class:`AutoprogError`."""
    present = checkpoint.exists()
    roll = ctx.broadcast(policy.action == "rollback" and attempt.rollbacks < policy.max_rollbacks and present)
    if not roll:
        append_record(checkpoint.out, ctx, {"event": "nonfinite", "step": error.step, "action": "stop",
                                            "lr_scale": error.lr_scale})  # fmt: skip
        why = "--on-nonfinite stop" if policy.action == "stop" else (
            f"{attempt.rollbacks} rollback(s) done, at most {policy.max_rollbacks} allowed" if present
            else "no checkpoint to roll back to"
        )  # fmt: skip
        raise AutoprogError(
            f"non-finite training loss ({error.value}) at step {error.step}; stopped ({why}; "
            f"last checkpoint: {checkpoint.path if present else 'none'})"
        ) from None
    lr_scale = error.lr_scale * policy.lr_factor
    log(f"  non-finite loss ({error.value}) at step {error.step}: rolling back to {checkpoint.path} with LR x{lr_scale:g}")
    record = {"event": "nonfinite", "step": error.step, "loss": str(error.value), "action": "rollback",
              "lr_scale": lr_scale}  # fmt: skip
    return Attempt(resume=True, lr_scale=lr_scale, rollbacks=attempt.rollbacks + 1, notes=(*attempt.notes, record))


__all__ = ["Attempt", "NonFinitePolicy", "after_nonfinite", "check_finite"]
