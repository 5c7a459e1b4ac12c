"""The run machinery of the training loops: what every autoprog run needs around its steps.

A training loop (``autoprog pretrain``, ``autoprog finetune``) should read as data, model, step,
evaluation and save. Around that every run needs the same machinery, and two copies of it had
drifted apart (issue 18: a second rollback to the same checkpoint lost the first one's record in
``pretrain`` but not in ``finetune``). It lives here, once:

* :mod:`autoprog.run.job` -- :func:`run_job`: validate the configuration, join the launcher's
  process group, run attempts of the loop until one finishes, leave the group. A non-finite loss
  ends an attempt; the next one resumes from the last checkpoint with a lower learning rate.
* :mod:`autoprog.run.nonfinite` -- the non-finite policy (``--on-nonfinite``): every process
  detects a NaN/inf loss together (:func:`check_finite`), rank 0's rollback-or-stop decision holds
  for all (:func:`after_nonfinite`), ``last.pt.prev`` counts as a checkpoint to roll back to, and
  every rollback record stays in ``log.jsonl`` however often the run returns to one checkpoint
  (:meth:`Attempt.replay`). One wording of the stop error for both loops.
* :mod:`autoprog.run.state` -- :class:`RunCheckpoint`: ``OUT/checkpoints/last.pt`` written
  atomically with the previous one kept as ``last.pt.prev`` (:mod:`autoprog.checkpoint`), loaded
  for ``--resume`` with the fallback, the kind check and the same-configuration check
  (:func:`~autoprog.train.config.check_same_config`); per-process random states.
* :mod:`autoprog.run.log` -- the sinks of a run's records: :class:`RunLog` (``log.jsonl``, flushed
  per record and cut back to a checkpoint's offset on resume; TensorBoard; per-rank decision logs
  :class:`~autoprog.distributed.RankLog`), the one-line console messages and the progress bar.
* :mod:`autoprog.run.module` -- :class:`TrainModule`: the module of the training forward for a
  model that changes shape or learnable set: DDP-wrapped anew on every change, ``torch.compile``
  once per change, channels-last.
* :mod:`autoprog.run.process` -- this process's device, threads, mixed-precision dtype and the
  machine facts recorded with every result.

Nothing here knows what is trained (a growing ViT, an unfreezing DiT): the loops keep their model,
data, step, searches and the layout of their checkpoints; they hand this machinery records, state
dicts and modules. Rank-0 decisions themselves (``DistContext.broadcast``) are
:mod:`autoprog.distributed`'s.
"""

from __future__ import annotations

from autoprog.run.job import RunConfig, run_job
from autoprog.run.log import RunLog, append_record, console, progress_bar, quiet, read_records, show_progress
from autoprog.run.module import TrainModule
from autoprog.run.nonfinite import Attempt, NonFinitePolicy, after_nonfinite, check_finite
from autoprog.run.process import environment, mixed_precision_dtype, select_device, setup_process
from autoprog.run.state import RunCheckpoint, gather_rng_states

__all__ = [
    "Attempt",
    "NonFinitePolicy",
    "RunCheckpoint",
    "RunConfig",
    "RunLog",
    "TrainModule",
    "after_nonfinite",
    "append_record",
    "check_finite",
    "console",
    "environment",
    "gather_rng_states",
    "mixed_precision_dtype",
    "progress_bar",
    "quiet",
    "read_records",
    "run_job",
    "select_device",
    "setup_process",
    "show_progress",
]
