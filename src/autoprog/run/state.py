"""A run's resumable state: ``OUT/checkpoints/last.pt``, the one before it kept as ``last.pt.prev``.

A loop rewrites ``last.pt`` at every stage boundary, search decision and ``--checkpoint-every``
steps with everything a fresh process needs to continue exactly; what goes into it (the model's
shape and weights, optimizer state by parameter name, the data position, the log offset, ...) is
the loop's. :class:`RunCheckpoint` holds what is the same for every loop:

* writing is atomic, with the previous file kept (:func:`autoprog.checkpoint.save_checkpoint`);
* ``--resume`` loads the newest loadable file, ``last.pt.prev`` when ``last.pt`` is damaged
  (:func:`autoprog.checkpoint.load_latest_checkpoint`), refuses one written by another kind of run,
  and one written under another configuration (:func:`autoprog.train.config.check_same_config`),
  each with one line;
* ``last.pt.prev`` alone counts as a checkpoint to resume or roll back to.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from autoprog.checkpoint import global_rng_states, load_latest_checkpoint, previous_path, save_checkpoint
from autoprog.distributed import DistContext
from autoprog.errors import ConfigError
from autoprog.train.config import check_same_config


class RunCheckpoint:
    """``OUT/checkpoints/last.pt`` of the run in ``out``.

    Example::

        checkpoint = RunCheckpoint(cfg.out)
        saved = checkpoint.load(cfg.to_dict(), "pretrain", lambda s: "controller" in s) if cfg.resume else None
        ...
        checkpoint.save({"model": model.state_dict(), ..., "config": cfg.to_dict()})
    """

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.path = self.out / "checkpoints" / "last.pt"

    def exists(self) -> bool:
        """``last.pt`` or ``last.pt.prev`` is there (something to resume or roll back to)."""
        return self.path.exists() or previous_path(self.path).exists()

    def load(
        self,
        config: dict[str, Any],
        kind: str,
        resumable: Callable[[dict[str, Any]], bool],
        log: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """The state ``--resume`` continues from, written by a run of the same configuration.

        Args:
            config: this run's configuration (``cfg.to_dict()``); the checkpoint's must match it
                up to :data:`~autoprog.train.config.RESUME_FREE_FIELDS`.
            kind: the command that writes such checkpoints (``"pretrain"``, ``"finetune"``), for the
                message.
            resumable: whether a loaded state is one this loop can continue.
            log: told when ``last.pt.prev`` is loaded instead of a damaged ``last.pt``.

        Raises:
            ConfigError: no checkpoint, not a resumable checkpoint of ``kind``, or another
                configuration (the message names the first differing option).
            CheckpointError: neither file can be loaded.
        """
        if not self.exists():
            raise ConfigError(
                f"--resume: no checkpoint in {self.path.parent} (a run checkpoints at every stage boundary "
                "and every --checkpoint-every steps)"
            )
        state = load_latest_checkpoint(self.path, log=log)
        if not isinstance(state.get("config"), dict) or not resumable(state):
            raise ConfigError(f"--resume: {self.path} is not a resumable checkpoint of autoprog {kind}")
        check_same_config(state["config"], config, self.out)
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` as ``last.pt`` atomically, the file it replaces kept as ``last.pt.prev``."""
        save_checkpoint(state, self.path, keep_previous=True)


def gather_rng_states(
    ctx: DistContext, device: torch.device, gen: torch.Generator | None = None
) -> list[dict[str, Any]]:
    """Every process's random states (global ones, and ``gen``'s as ``"gen"``), in rank order.

    A collective: every process calls it; each restores its own entry on resume
    (:func:`autoprog.checkpoint.set_global_rng_states`).
    """
    mine = {**global_rng_states(device), **({"gen": gen.get_state()} if gen is not None else {})}
    if not ctx.distributed:
        return [mine]
    states: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(states, mine)
    return states


__all__ = ["RunCheckpoint", "gather_rng_states"]
