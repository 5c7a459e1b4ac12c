"""The searches of a fine-tuning run: which sub-network (resolution, unfreezing level) a stage trains.

At the start of every stage but the last, AutoProg chooses among the stage's candidates
(:func:`autoprog.search.rules.unfreeze_candidates`: the current resolution or the next, the current
level or the next; under the default ``horizon`` rule only those from which the stages left reach
the full model one step per stage):

* **AutoProg-Zero** (Sec. 4.2, Eq. 12-19): :meth:`StageSearch.zero_shot` scores each candidate by
  the NTK condition number, ZiCo and its step time on :class:`~autoprog.train.finetune_data.SearchProbe`,
  combined by ranked voting, without training.
* **AutoProg-One** (Sec. 5.1.2): :meth:`StageSearch.supernet` trains the candidates in shuffled
  rounds for ``--search-fraction`` of the stage (these steps count: weight recycling) and ranks them
  by average training loss x step time (Eq. 6), checkpointing mid-search.

Step times are measured once per run and configuration (:class:`~autoprog.search.step_times.StepTimes`),
or taken from FLOPs with ``--search-runtime flops`` (deterministic). Rank 0's numbers decide for
every process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from autoprog.distributed import DistContext
from autoprog.errors import ConfigError
from autoprog.search.rules import floored_power_law_score, unfreeze_candidates
from autoprog.search.step_times import StepTimes
from autoprog.search.supernet import SupernetSearch
from autoprog.search.zero_shot import zero_shot_search
from autoprog.train.config import FinetuneConfig
from autoprog.train.finetune_data import SearchProbe, StageBatches
from autoprog.train.finetune_step import FinetuneStep, LearnableSubnets
from autoprog.unfreeze import UnfreezeConfig, UnfreezeSpace

#: ``(chosen sub-network, the search's record for log.jsonl and summary.json)``.
SearchResult = tuple[UnfreezeConfig, dict[str, Any]]


class StageSearch:
    """The stage searches of one run.

    Args:
        cfg: the search settings (``ntk_samples``, ``zico_batches``, ``time_repeats``,
            ``search_runtime``, ``vote_weights``, ``search_fraction``, ``checkpoint_every``, seed).
        space: the unfreezing space the candidates come from.
        subnets: makes a candidate learnable and counts its FLOPs.
        probe: the fixed samples the candidates are scored and timed on.
        ctx: this process's place in the job (rank 0's decision is broadcast).
        device: where the model lives (step times are synchronised on it).

    Attributes:
        step_times: seconds (or FLOPs) of one training step per configuration, measured so far;
            checkpointed with the run.
    """

    def __init__(
        self, cfg: FinetuneConfig, space: UnfreezeSpace, subnets: LearnableSubnets, probe: SearchProbe,
        ctx: DistContext, device: torch.device,
    ) -> None:  # fmt: skip
        self.cfg, self.space, self.subnets, self.probe = cfg, space, subnets, probe
        self.ctx, self.device = ctx, device
        self.model, self.task = subnets.model, subnets.task
        self.step_times: dict[UnfreezeConfig, float] = {}

    def time_steps(self, cs: list[UnfreezeConfig], stage: int) -> None:
        """Seconds of one training step (forward + backward) of each sub-network in ``cs``, measured
        once per run (candidates recur across stages; the model's cost does not change), the new ones
        in interleaved rounds; with ``--search-runtime flops``, the step's training FLOPs instead
        (deterministic). Fills :attr:`step_times`."""
        cfg = self.cfg

        def step_for(c: UnfreezeConfig) -> Callable[[], object]:
            probe = tuple(  # one training batch of probe samples (repeated if the probe set is smaller)
                v.repeat((cfg.batch_size + len(v) - 1) // len(v), *[1] * (v.ndim - 1))[: cfg.batch_size]
                for v in self.probe.batch(c.resolution, 0, cfg.batch_size, stage)
            )
            return lambda: self.task.probe_loss(self.model, probe).backward()

        flops = (lambda c: float(self.subnets.flops(c) * cfg.batch_size)) if cfg.search_runtime == "flops" else None
        StepTimes(self.model, self.subnets.configure, step_for, runtime=flops, repeats=cfg.time_repeats, warmup=1,
                  device=self.device, cache=self.step_times).measure(cs)  # fmt: skip

    def zero_shot(self, k: int, current: UnfreezeConfig | None, step: int) -> SearchResult:
        """AutoProg-Zero (Sec. 4.2, Eq. 12-19) at the start of stage ``k`` (``step``): NTK condition
        number, ZiCo and time per candidate, combined by ranked voting; decided once (rank 0's
        numbers) and the same for every process."""
        cfg, probe = self.cfg, self.probe
        t0 = time.perf_counter()
        candidates = unfreeze_candidates(self.space, k, current, cfg.search())

        def ntk_inputs(c: UnfreezeConfig) -> tuple[torch.Tensor, ...]:
            return probe.batch(c.resolution, 0, cfg.ntk_samples, k)[:-1]

        def zico_batches(c: UnfreezeConfig) -> list[tuple[torch.Tensor, ...]]:
            bs = cfg.batch_size
            return [probe.batch(c.resolution, b * bs, (b + 1) * bs, k) for b in range(cfg.zico_batches)]

        self.time_steps(candidates, k)
        self.model.eval()
        winner, rows, _ = zero_shot_search(
            self.model, candidates, self.subnets.configure, forward=self.task.output, loss_fn=self.task.probe_loss,
            ntk_inputs=ntk_inputs, zico_batches=zico_batches, time_step=self.step_times.__getitem__,
            weights=cfg.weights(), seed=cfg.seed, ntk_tensors=cfg.search().ntk_tensors,
        )  # fmt: skip
        self.model.train()
        winner, rows = self.ctx.broadcast((winner, rows))  # measured times differ per process: rank 0's decide
        chosen = candidates[winner]
        for r in rows:
            r.pop("scoring_time_s", None)
        record = {"stage": k, "start_step": step, "candidates": rows, "chosen": {"resolution": chosen.resolution,
                  "level": chosen.level}, "weights": cfg.weights(), "search_time_s": time.perf_counter() - t0}  # fmt: skip
        return chosen, record

    def supernet(
        self,
        k: int,
        current: UnfreezeConfig | None,
        end_step: int,
        train_step: FinetuneStep,
        batches: StageBatches,
        write: Callable[[dict[str, Any]], None],
        checkpoint: Callable[[dict[str, Any]], None],
        saved_search: dict[str, Any] | None = None,
    ) -> SearchResult:
        """AutoProg-One for fine-tuning (Sec. 5.1.2) in stage ``k`` (ending at ``end_step``): train the
        candidates in shuffled rounds for a part of the stage (these steps count: weight recycling),
        rank by average loss x time (Eq. 6).

        ``write`` logs each step's record; ``checkpoint(search_state)`` saves the run mid-search every
        ``--checkpoint-every`` steps; ``saved_search`` is such a state to continue from."""
        cfg, subnets = self.cfg, self.subnets
        t0 = time.perf_counter() - (saved_search["elapsed_s"] if saved_search is not None else 0.0)
        rule = cfg.search()
        candidates = unfreeze_candidates(self.space, k, current, rule)
        # Shuffled rounds: each candidate trains once in every len(candidates) steps, so every one is
        # scored (a random choice per step could leave one untrained); scored by its training losses,
        # with the rule's floor on Eq. 6's balancing factor.
        search = SupernetSearch(candidates, sampling="rounds", seed=cfg.seed * 1_000_003 + k * 7919,
                                score_source="training-loss", rule=floored_power_law_score(rule.w_floor, rule.w_fit))  # fmt: skip
        if saved_search is None:
            n_steps = max(len(candidates), int(cfg.search_fraction * (end_step - train_step.step)))
        else:
            if saved_search["candidates"] != [[c.resolution, c.level] for c in candidates]:
                raise ConfigError(
                    f"--resume: the checkpoint's stage-{k} search has other candidates than this run's"
                )
            n_steps = saved_search["n_steps"]
            search.load_state_dict({"steps": saved_search["done"], "losses": saved_search["losses"]})
        subnets.configure(max(candidates, key=lambda c: c.level))  # the widest
        # The optimizer covers every candidate's parameters; frozen ones get no gradient.
        train_step.rebuild(supernet=len({c.level for c in candidates}) > 1)
        data_resolution = max(c.resolution for c in candidates)  # candidates change every step, the loader's size does not
        for i in range(search.steps, n_steps):
            c = search.next_candidate()
            subnets.configure(c)
            x, y = batches.next(data_resolution)
            search.record_step(loss=train_step(c, x, y, k))
            write({"event": "step", "step": train_step.step - 1, "stage": k, "loss": search.losses[c][-1],
                   "supernet": True, "resolution": c.resolution, "level": c.level})  # fmt: skip
            if cfg.checkpoint_every and train_step.step % cfg.checkpoint_every == 0:
                checkpoint({"candidates": [[c.resolution, c.level] for c in candidates],
                            "losses": [search.losses[c] for c in candidates], "n_steps": n_steps, "done": i + 1,
                            "elapsed_s": time.perf_counter() - t0})  # fmt: skip
        self.time_steps(candidates, k)
        # Eq. 6 over the mean losses and step times; rank 0's numbers decide for every process.
        decision = search.decide([self.step_times[c] for c in candidates], broadcast=self.ctx.broadcast)
        rows = [{"resolution": c.resolution, "level": c.level, "loss": decision.losses[i], "time": decision.runtimes[i],
                 "score": math.inf if decision.scores[i] is None else decision.scores[i],
                 "steps": len(search.losses[c])} for i, c in enumerate(candidates)]  # fmt: skip
        chosen = decision.chosen
        record = {"stage": k, "start_step": train_step.step - n_steps, "supernet_steps": n_steps, "candidates": rows,
                  "chosen": {"resolution": chosen.resolution, "level": chosen.level},
                  "search_time_s": time.perf_counter() - t0}  # fmt: skip
        return chosen, record


__all__ = ["SearchResult", "StageSearch"]
