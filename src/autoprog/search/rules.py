"""How a searched stage chooses its sub-network: the paper's rule, and the rule that sees the end (issue 16).

Every searched path (AutoProg-One and AutoProg-Zero, pre-training and fine-tuning, the controller
and the Lightning callbacks) takes its candidates and its decision from one :class:`SearchRule`.

``paper`` is Sec. 3.2, Appendix B and the authors' code, as published: a later stage's candidates are
the current or the next resolution (and, in pre-training, the next up to 3 depths); AutoProg-One
scores each candidate by the momentum network's loss on training images *at the candidate's own
resolution* after two supernet epochs sampled at random, with Eq. 6 and the fitted balancing factor;
AutoProg-Zero votes with the authors' weights (time 1, NTK 0.5, ZiCo 0.5).

Measured on every benchmark we ran (``docs/methods/autoprog-one.md``), ``paper`` keeps the smallest
resolution until the last stage and then jumps: the network trained at the incumbent resolution
always wins its own exam, a weight-shared supernet cannot tell resolutions apart, and the last stage
pays for the jump. ``horizon`` judges every stage by the model it leads to:

- **reach**: a stage's resolution may never be so small that the stages left cannot reach the full
  resolution one grid step at a time (:func:`resolution_floor`); the full model is then always
  reached without a multi-step jump, as depth already is (it is forced to grow);
- **exam** ``validation``: AutoProg-One's search loss is the momentum network's loss on held-out
  validation images *at the full resolution*, the exam the final model sits. The supernet's weights
  are shared across resolutions, so this exam cannot prefer one resolution over another: only the
  smallest allowed resolution is trained and chosen, and the supernet searches depth;
- **sampling** ``rounds``: every candidate trains once per shuffled round, so none is scored on
  one or two steps;
- **supernet_fraction**: the supernet trains for a fraction of the stage (not two whole epochs: at a
  few epochs per stage that was half the stage on a mixture of sub-networks);
- **score**: Eq. 6 with the fitted balancing factor, floored at ``w_floor`` so that time always
  counts (the fit is 0 when the loss does not fall with time, and makes two candidates tie);
- AutoProg-Zero votes with equal weights, Eq. 19 as printed (with the authors' weights a larger
  resolution can at best tie, ``docs/dev-notes.md``);
- ``ntk_tensors``: which learnable tensors AutoProg-Zero's NTK differentiates. Both rules keep
  ``all`` (what autoprog has always done); TE-NAS and the authors' code take the tensors named
  ``*weight*`` only (``weights``), and on random learnable sets the two rank differently on about
  a fifth of the pairs (issue 16's audit). ``--search-ntk-tensors`` selects.

``trial`` keeps ``horizon``'s reach and AutoProg-Zero ballot and replaces AutoProg-One's supernet by
trials (:mod:`autoprog.search.trial_growth`): at a stage's start each candidate's copy trains alone
for ``trial_fraction`` of the stage's steps on the same batches, from the same weights, and sits an
exam on validation images at its own resolution; Eq. 6 with ``w = w_floor`` fixed (``w_fit`` off: with two candidates the fitted
factor makes their scores tie, so the faster always won) decides, and the winner trains the whole
stage. The comparison is paired, and the run trains nothing but the chosen sub-networks.

Each field can be overridden on its own (``--search-reach``, ``--search-exam``, ...), which is how
the ablation in ``benchmarks/tables/ablation_search.sh`` measures each remedy alone and combined.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from autoprog.errors import ConfigError
from autoprog.growth.schedule import GrowthSpace, SubnetConfig
from autoprog.search.one_shot import ScoreRule, power_law_balancing_factor, power_law_score, stage_candidates
from autoprog.search.voting import DEFAULT_WEIGHTS
from autoprog.search.zero_shot import NTKTensors
from autoprog.unfreeze.schedule import UnfreezeConfig, UnfreezeSpace, zero_shot_candidates

Exam = Literal["train", "validation", "trial"]
Sampling = Literal["random", "rounds"]


@dataclass(frozen=True)
class SearchRule:
    """How a searched stage chooses its sub-network (module docstring).

    Attributes:
        name: the rule's name (``paper``, ``horizon``; ``custom`` after an override).
        reach: candidates keep the full resolution reachable one grid step per remaining stage.
        exam: AutoProg-One's search loss: ``train`` (a supernet, training images at the candidate's
            resolution, the paper's), ``validation`` (a supernet, validation images at the full
            resolution) or ``trial`` (no supernet: each candidate trained alone for a few steps from
            the stage's start, then validation images at its own resolution,
            :mod:`autoprog.search.trial_growth`).
        sampling: which candidate a supernet step trains: ``random`` (the paper's) or ``rounds``.
        supernet_fraction: the supernet's length as a fraction of the stage's steps; ``None``: the
            run's ``search_epochs`` whole epochs (the paper's two).
        w_floor: the least balancing factor of Eq. 6 (``0``: the fitted one, the paper's).
        vote_weights: AutoProg-Zero's ballot weights (Eq. 19).
        ntk_tensors: the learnable tensors AutoProg-Zero's NTK differentiates: ``all`` or
            ``weights`` (those named ``*weight*``, TE-NAS's and the authors' set).
        trial_fraction: under the ``trial`` exam, each candidate's trial as a fraction of the
            stage's steps (at least 4 steps).
        w_fit: fit Eq. 6's balancing factor over the candidates (the authors', floored at
            ``w_floor``); ``False``: ``w = w_floor`` (with two candidates the fit makes their scores
            tie, so the faster always wins).
    """

    name: str
    reach: bool = False
    exam: Exam = "train"
    sampling: Sampling = "random"
    supernet_fraction: float | None = None
    w_floor: float = 0.0
    vote_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    ntk_tensors: NTKTensors = "all"
    trial_fraction: float = 0.02
    w_fit: bool = True

    def __post_init__(self) -> None:
        if self.exam not in ("train", "validation", "trial"):
            raise ConfigError(f"--search-exam must be train, validation or trial, got {self.exam!r}")
        if not 0.0 < self.trial_fraction <= 0.5:
            raise ConfigError(f"--search-trial-fraction must be in (0, 0.5], got {self.trial_fraction}")
        if self.sampling not in ("random", "rounds"):
            raise ConfigError(f"--search-sampling must be random or rounds, got {self.sampling!r}")
        if self.ntk_tensors not in ("all", "weights"):
            raise ConfigError(f"--search-ntk-tensors must be all or weights, got {self.ntk_tensors!r}")
        if self.supernet_fraction is not None and not 0.0 < self.supernet_fraction < 1.0:
            raise ConfigError(f"--search-supernet-fraction must be in (0, 1), got {self.supernet_fraction}")
        if not (math.isfinite(self.w_floor) and self.w_floor >= 0):
            raise ConfigError(f"--search-w-floor must be a finite number >= 0, got {self.w_floor}")

    @property
    def prunes_resolutions(self) -> bool:
        """The exam sees the full resolution only, so a weight-shared supernet's candidates of one
        depth tie: train (and choose) only the smallest allowed resolution."""
        return self.exam == "validation"

    def with_overrides(self, **overrides: Any) -> SearchRule:
        """This rule with the fields in ``overrides`` that are not ``None`` replaced (``name``
        becomes ``custom`` when one differs)."""
        changed = {k: v for k, v in overrides.items() if v is not None and getattr(self, k) != v}
        if not changed:
            return self
        return dataclasses.replace(self, name="custom", **changed)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "vote_weights": dict(self.vote_weights)}


SEARCH_RULES: dict[str, SearchRule] = {
    "paper": SearchRule("paper"),
    "horizon": SearchRule(
        "horizon", reach=True, exam="validation", sampling="rounds", supernet_fraction=0.125, w_floor=0.1,
        vote_weights={"time": 1.0, "ntk": 1.0, "zico": 1.0},
    ),
    "trial": SearchRule(
        "trial", reach=True, exam="trial", w_floor=0.1, w_fit=False, vote_weights={"time": 1.0, "ntk": 1.0, "zico": 1.0},
    ),
}  # fmt: skip
"""The named rules (``--search-rule``)."""

DEFAULT_SEARCH_RULE = "horizon"


def create_search_rule(name: str, **overrides: Any) -> SearchRule:
    """The rule ``name`` (:data:`SEARCH_RULES`) with ``overrides`` (``None`` values ignored)."""
    if name not in SEARCH_RULES:
        raise ConfigError(f"--search-rule must be one of {', '.join(SEARCH_RULES)}, got {name!r}")
    return SEARCH_RULES[name].with_overrides(**overrides)


def resolution_floor(resolutions: Sequence[int], stage: int, num_stages: int, step: int = 1) -> int:
    """The smallest resolution stage ``stage`` may train at so that the last stage (the full model,
    ``resolutions[-1]``) is reached by at most ``step`` grid steps per remaining stage boundary.

    With as many grid values as stages (the usual growth space) and ``step`` 1, stage ``k`` trains
    at ``resolutions[k]`` or larger: the linear ramp is the slowest growth that arrives on time.
    """
    left = num_stages - 1 - stage  # stage boundaries still to come
    return resolutions[max(0, len(resolutions) - 1 - step * left)]


def growth_candidates(
    space: GrowthSpace, stage: int, current: SubnetConfig | None, rule: SearchRule
) -> list[SubnetConfig]:
    """A pre-training stage's candidates under ``rule``: Appendix B's growth space
    (:func:`~autoprog.search.one_shot.stage_candidates`), with ``rule.reach`` the resolutions below
    :func:`resolution_floor` removed (the floor itself is added when nothing is left)."""
    candidates = stage_candidates(space, stage, current)
    if not rule.reach:
        return candidates
    floor = resolution_floor(space.resolutions, stage, space.num_stages)
    kept = [c for c in candidates if c.resolution >= floor]
    if kept:
        return kept
    return list(dict.fromkeys(SubnetConfig(floor, c.depth) for c in candidates))


def _reachable(values: Sequence[int], chosen: Sequence[int], stage: int, num_stages: int) -> list[int]:
    floor = resolution_floor(values, stage, num_stages)
    kept = [v for v in chosen if v >= floor]
    return kept or [floor]


def unfreeze_candidates(
    space: UnfreezeSpace, stage: int, current: UnfreezeConfig | None, rule: SearchRule
) -> list[UnfreezeConfig]:
    """A fine-tuning stage's candidates under ``rule`` (Sec. 4.2.1): the reference's
    :func:`~autoprog.unfreeze.schedule.zero_shot_candidates`, with ``rule.reach`` the resolutions
    and unfreezing levels the remaining stages could not grow to the full model one step at a
    time removed from each axis (the floor itself kept when nothing is left)."""
    candidates = zero_shot_candidates(space, stage, current)
    if not rule.reach:
        return candidates
    n = space.num_stages
    rs = _reachable(space.resolutions, list(dict.fromkeys(c.resolution for c in candidates)), stage, n)
    ls = _reachable(space.levels, list(dict.fromkeys(c.level for c in candidates)), stage, n)
    return [UnfreezeConfig(r, level) for r in rs for level in ls]


def smallest_resolution(candidates: Sequence[Any]) -> list[Any]:
    """The candidates at the smallest resolution among them (a rule that prunes resolutions)."""
    low = min(c.resolution for c in candidates)
    return [c for c in candidates if c.resolution == low]


def floored_power_law_score(w_floor: float, fit: bool = True) -> ScoreRule:
    """Eq. 6, ``score_i = L_i * T_i^w``, with ``w`` the fitted balancing factor
    (:func:`~autoprog.search.one_shot.power_law_balancing_factor`) but at least ``w_floor``, or
    (``fit=False``) ``w = w_floor`` itself (the function carries ``w_floor`` and ``w_fixed``, which
    the search record's ``balancing_factor`` honours)."""
    if not fit:

        def fixed(losses: Sequence[float], times: Sequence[float]) -> list[float]:
            return [float(loss * t**w_floor) for loss, t in zip(losses, times, strict=True)]

        fixed.w_fixed = w_floor  # type: ignore[attr-defined]
        return fixed
    if w_floor <= 0:
        return power_law_score

    def score(losses: Sequence[float], times: Sequence[float]) -> list[float]:
        w = max(w_floor, power_law_balancing_factor(losses, times))
        return [float(loss * t**w) for loss, t in zip(losses, times, strict=True)]

    score.w_floor = w_floor  # type: ignore[attr-defined]
    return score


def controller_options(rule: SearchRule) -> dict[str, Any]:
    """The :class:`~autoprog.controller.GrowthController` arguments that make it search by ``rule``:
    ``candidate_fn``, ``sampling``, ``score_rule``, ``supernet_fraction``, ``prune_resolutions``
    and ``trial_fraction`` (``paper`` gives the controller's defaults)."""
    return {
        "candidate_fn": partial(growth_candidates, rule=rule),
        "sampling": rule.sampling,
        "score_rule": floored_power_law_score(rule.w_floor, rule.w_fit),
        "supernet_fraction": rule.supernet_fraction if rule.exam != "trial" else None,
        "prune_resolutions": rule.prunes_resolutions,
        "trial_fraction": rule.trial_fraction if rule.exam == "trial" else None,
    }


__all__ = [
    "DEFAULT_SEARCH_RULE",
    "SEARCH_RULES",
    "SearchRule",
    "controller_options",
    "create_search_rule",
    "floored_power_law_score",
    "growth_candidates",
    "resolution_floor",
    "smallest_resolution",
    "unfreeze_candidates",
]
