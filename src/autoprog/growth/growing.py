"""The network a progressive run trains, kept consistent through every change of shape (Sec. 3.1.3, Eq. 3).

:class:`GrowingModel` owns the model, its momentum (EMA) copy and the optimizer. A change of shape
(growth by an operator, the elastic supernet, a materialised sub-network) goes through
:meth:`GrowingModel.rebuild`, which re-pairs the momentum copy by parameter name and rebuilds the
optimizer with AdamW's moments carried by name (the operator's new -> old name map) and the
learning rates kept; :attr:`GrowingModel.version` counts those changes, so a loop knows when to
re-wrap the model (DDP, ``torch.compile``). Nothing is ever paired by position.

Used by :class:`~autoprog.controller.GrowthController`; usable alone::

    net = GrowingModel(adapter, adapter.create_model(3), operator=create_operator("mogrow"),
                       optimizer_factory=lambda m: build_optimizer(m, 1e-3, 0.05), ema_decay=0.998)
    ...                      # train net.model with net.optimizer, net.update_ema(step) after each step
    net.grow(6)              # MoGrow from the momentum copy; optimizer state follows the weights
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoprog.adapters.base import ModelAdapter
from autoprog.ema import ModelEma
from autoprog.errors import ConfigError
from autoprog.growth.elastic import ElasticSupernet
from autoprog.growth.operators import GrowthOperator
from autoprog.growth.structure import block_structure, model_from_structure
from autoprog.optim import carry_state, clone_state, load_named_state_dict, named_state_dict, state_by_name

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]
NameMap = dict[str, str | None]


def ema_warmup_decay(decay: float, step: int) -> float:
    """The momentum copy's decay at optimizer step ``step`` with warm-up (timm's ``ModelEmaV3``):
    ``min(decay, 1 - (1 + step)^(-2/3))``, so early averages are not dominated by the random init."""
    return min(decay, 1.0 - (1.0 + step) ** (-2.0 / 3.0))


@dataclass(frozen=True)
class Snapshot:
    """A copy of the network and its optimizer state by name, to come back to (:meth:`GrowingModel.restore`)."""

    model: nn.Module
    momentum: nn.Module
    optimizer_state: dict[str, dict[str, torch.Tensor]]


class GrowingModel:
    """The model, its momentum copy and its optimizer, paired by parameter name through growth.

    Args:
        adapter: the model adapter (blocks, fresh models).
        model: the initial network (moved to ``device``).
        operator: the growth operator of :meth:`grow` (MoGrow grows from the momentum copy).
        optimizer_factory: ``model -> optimizer`` over the trainable parameters; param groups must
            carry ``"names"``.
        carry_optimizer_state: give grown parameters their source's optimizer moments (by name);
            otherwise every rebuild starts them afresh (the paper's code).
        ema_decay: the momentum copy's decay (Eq. 3), or ``None`` for no momentum copy.
        ema_warmup: ramp the decay up (:func:`ema_warmup_decay`).
        device: where the model lives (``None``: where it is).
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        model: nn.Module,
        *,
        operator: GrowthOperator,
        optimizer_factory: OptimizerFactory,
        carry_optimizer_state: bool = True,
        ema_decay: float | None = 0.998,
        ema_warmup: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        self.adapter = adapter
        self.operator = operator
        self.optimizer_factory = optimizer_factory
        self.carry_optimizer_state = carry_optimizer_state
        self.ema_warmup = ema_warmup
        self.device = torch.device(device) if device is not None else None
        self.model = model
        self.to_device()
        self.ema: ModelEma | None = ModelEma(self.model, ema_decay) if ema_decay is not None else None
        self.optimizer: torch.optim.Optimizer = optimizer_factory(self.model)
        #: changes of the model so far (growth, supernet, materialisation): re-wrap when it moves
        self.version = 0

    @property
    def momentum(self) -> nn.Module | None:
        """The momentum network (``None`` without a momentum copy)."""
        return self.ema.module if self.ema is not None else None

    @property
    def depth(self) -> int:
        return len(self.adapter.get_blocks(self.model))

    # -- changes of shape ------------------------------------------------------------------------

    def reshape(
        self, model: nn.Module, momentum: nn.Module | None, depth: int, nested_from: int | None = None
    ) -> NameMap:
        """Turn ``model`` (and ``momentum``) into the sub-network of ``depth`` blocks, in place, as a
        stage start does; return the new -> old parameter names. Works on copies too (a zero-shot
        search scores candidates built this way).

        After a trained stage this is growth with the operator. Before the first stage
        (``nested_from``: the smallest candidate depth) nothing is trained yet: the sub-network is
        the one of the fresh full-depth model that Interpolation from ``nested_from`` blocks nests,
        as in AutoProg-One's first supernet (Sec. 3.2.3, :meth:`ElasticSupernet.from_scratch`).
        """
        if nested_from is None:
            return self.operator.grow(model, self.adapter, depth, momentum=momentum)
        supernet = ElasticSupernet.from_scratch(self.adapter, model, nested_from, momentum)
        made = supernet.name_map
        return {n: None if o is None else made.get(o) for n, o in supernet.materialise(depth).items()}

    def grow(self, depth: int, nested_from: int | None = None) -> bool:
        """Reshape the model (and its momentum copy) to ``depth`` blocks and rebuild; ``False`` when
        it already has that depth (nothing changes)."""
        if depth == self.depth:
            return False
        self.rebuild(self.reshape(self.model, self.momentum, depth, nested_from))
        return True

    def rebuild(self, name_map: NameMap, old_state: dict | None = None) -> None:
        """After a change of shape: move, re-pair the momentum copy by name, rebuild the optimizer
        (state carried by ``name_map``, new -> old names, from ``old_state`` or the current
        optimizer; learning rates per group when the layout is unchanged, else the first group's)."""
        self.to_device()
        if self.ema is not None:
            self.ema.module.to(self.device or next(self.model.parameters()).device)
            self.ema.rebuild(self.model)
        old_state = state_by_name(self.optimizer) if old_state is None else old_state
        old_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.optimizer = self.optimizer_factory(self.model)
        new_groups = self.optimizer.param_groups
        for i, g in enumerate(new_groups):  # per group when the layout is the same, else the first's
            g["lr"] = old_lrs[i] if len(old_lrs) == len(new_groups) else old_lrs[0]
        if self.carry_optimizer_state:
            carry_state(old_state, self.optimizer, name_map)
        self.version += 1

    def snapshot(self) -> Snapshot:
        """Copies of the network, its momentum copy and the optimizer state (:meth:`restore`)."""
        if self.ema is None:
            raise ConfigError("a snapshot of the growing model needs its momentum copy")
        return Snapshot(
            copy.deepcopy(self.model), copy.deepcopy(self.ema.module), clone_state(state_by_name(self.optimizer))
        )

    def restore(self, snapshot: Snapshot, depth: int, afresh: bool = False) -> None:
        """Come back to ``snapshot``'s network, grown to ``depth`` with the operator, with its
        optimizer state (the supernet ablation without weight recycling, Tab. XI). ``afresh``: there
        was no trained network to come back to; start a fresh one of ``depth`` blocks instead.
        The model's current blocks must already number ``depth`` (a materialised sub-network)."""
        assert self.ema is not None
        pre_model, pre_ema = snapshot.model, snapshot.momentum
        if afresh:
            pre_model = self.adapter.create_model(depth)
            pre_ema = copy.deepcopy(pre_model)
        for net, src in ((self.model, pre_model), (self.ema.module, pre_ema)):
            self.adapter.set_blocks(net, [copy.deepcopy(b) for b in self.adapter.get_blocks(src)])
            net.load_state_dict(src.state_dict())
        name_map = self.operator.grow(self.model, self.adapter, depth, momentum=self.ema.module)
        self.rebuild(name_map, old_state=snapshot.optimizer_state)

    def to_device(self) -> None:
        if self.device is not None:
            self.model.to(self.device)

    # -- the momentum copy -----------------------------------------------------------------------

    def ema_decay(self, step: int) -> float:
        """The momentum copy's decay at optimizer step ``step``."""
        assert self.ema is not None
        return ema_warmup_decay(self.ema.decay, step) if self.ema_warmup else self.ema.decay

    def update_ema(self, step: int) -> None:
        """One step of Eq. 3 after the optimizer step ``step`` (nothing without a momentum copy)."""
        if self.ema is not None:
            self.ema.update(self.model, decay=self.ema_decay(step))

    # -- checkpointing ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The version, shape (:func:`~autoprog.growth.structure.block_structure`), weights, momentum
        copy and optimizer state by name: plain tensors and values only."""
        return {
            "version": self.version,
            "structure": block_structure(self.adapter, self.model),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": named_state_dict(self.optimizer),
        }

    def load_state_dict(self, state: dict[str, Any]) -> ElasticSupernet | None:
        """Rebuild the model to the saved shape, then load everything. Returns the elastic supernet
        when the saved blocks were one (a checkpoint taken mid-search), else ``None``. The version
        moves on past the saved one: the model is a new object, wrappers must be rebuilt."""
        structure = state["structure"]
        self.model = model_from_structure(self.adapter, structure)
        self.to_device()
        if self.ema is not None:
            self.ema = ModelEma(self.model, self.ema.decay)
        supernet = None
        if structure["sources"] is not None:
            supernet = ElasticSupernet(self.adapter, self.model, structure["sources"], self.momentum)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise ConfigError(
                f"cannot rebuild the checkpoint's grown model with {type(self.adapter).__name__} "
                f"(its blocks differ from a fresh model of the same depth): {str(e).splitlines()[0]}"
            ) from None
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
            self.ema.module.to(self.device or next(self.model.parameters()).device)
            self.ema.rebuild(self.model)
        self.optimizer = self.optimizer_factory(self.model)
        load_named_state_dict(self.optimizer, state["optimizer"])
        self.version = state["version"] + 1
        return supernet


__all__ = ["GrowingModel", "Snapshot", "ema_warmup_decay"]
