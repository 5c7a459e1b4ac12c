"""Elastic supernet with interpolation (paper Sec. 3.2.3, Def. 3.1, Fig. 4).

Starting from the current network of depth ``l``, the supernet is the network grown by
Interpolation (or MoGrow) to the largest candidate depth ``D``. Every block of the supernet is
either an original block or the ``r``-th copy of one. The sub-network of depth ``d`` keeps the
originals and, for each original, the copies that Interpolation growth ``l -> d`` would add; all
other copies are skipped (identity). Because the Interpolation order is nested (see
:mod:`autoprog.growth.operators`), sub-networks are weight-nesting: the sub-network of depth
``d`` is a subset of that of any ``d' > d``, and, at construction, equals parameter for parameter
the network that Interpolation growth to ``d`` produces.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from autoprog.growth.operators import depth_sources


class ElasticBlocks(nn.Sequential):
    """A ``Sequential`` of blocks that runs only its ``active`` positions (the others are skipped).

    Parameter names stay those of the full supernet (``blocks.{p}.…``) whichever sub-network runs,
    so the optimizer and the EMA copy stay paired by name while sub-networks are sampled.
    """

    def __init__(self, blocks: Sequence[nn.Module], sources: Sequence[int]) -> None:
        super().__init__(*blocks)
        if len(sources) != len(blocks):
            raise ValueError("one source index per block is needed")
        self.sources = list(sources)
        self.base_depth = max(self.sources) + 1
        self.ranks = [self.sources[:p].count(s) for p, s in enumerate(self.sources)]
        self.active: list[int] = list(range(len(blocks)))

    @property
    def max_depth(self) -> int:
        return len(self.sources)

    def positions(self, depth: int) -> list[int]:
        """Supernet positions of the sub-network of ``depth`` blocks (Interpolation ``l -> depth``)."""
        if not self.base_depth <= depth <= self.max_depth:
            raise ValueError(f"depth {depth} is outside the supernet's range [{self.base_depth}, {self.max_depth}]")
        wanted = depth_sources("interpolation", self.base_depth, depth)
        copies = [wanted.count(i) for i in range(self.base_depth)]
        return [p for p, (s, r) in enumerate(zip(self.sources, self.ranks, strict=True)) if r < copies[s]]

    def set_depth(self, depth: int) -> None:
        self.active = self.positions(depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for p in self.active:
            x = self[p](x)
        return x


class ElasticSupernet:
    """Turns a model (and its momentum copy) into an elastic-depth supernet and back.

    Args:
        adapter: the model adapter (``get_blocks`` / ``set_blocks``).
        model: the online network, already holding the supernet's blocks (grown to ``max_depth``).
        sources: for each supernet block, the index of the base block it copies.
        momentum: the EMA / momentum network, with the same blocks (or ``None``).
    """

    def __init__(self, adapter, model: nn.Module, sources: Sequence[int], momentum: nn.Module | None = None) -> None:
        self.adapter = adapter
        self.model = model
        self.momentum = momentum
        self.sources = list(sources)
        self.nets = [model] + ([momentum] if momentum is not None else [])
        before = {id(p): n for n, p in model.named_parameters()}
        for net in self.nets:
            adapter.set_blocks(net, ElasticBlocks(adapter.get_blocks(net), self.sources))
        #: new -> old parameter names of the change that made the supernet
        self.name_map: dict[str, str | None] = {n: before.get(id(p)) for n, p in model.named_parameters()}

    @classmethod
    def grow(
        cls, adapter, model: nn.Module, max_depth: int, operator, momentum: nn.Module | None = None
    ) -> ElasticSupernet:
        """Grow the current network to ``max_depth`` with ``operator`` and make it elastic (Fig. 4)."""
        base = len(adapter.get_blocks(model))
        grown = operator.grow(model, adapter, max_depth, momentum=momentum)
        plain = {id(p): n for n, p in model.named_parameters()}
        supernet = cls(adapter, model, depth_sources("interpolation", base, max_depth), momentum)
        # compose: supernet name -> grown name -> pre-growth name (the container may rename blocks)
        supernet.name_map = {n: grown.get(plain[id(p)]) for n, p in model.named_parameters()}
        return supernet

    @classmethod
    def from_scratch(cls, adapter, model: nn.Module, min_depth: int, momentum: nn.Module | None = None) -> ElasticSupernet:
        """A freshly initialised full-depth model as a supernet whose smallest sub-network has ``min_depth``.

        Used for the first stage, where there is no smaller trained network to grow from; the
        nesting structure is the one Interpolation from ``min_depth`` would give.
        """
        depth = len(adapter.get_blocks(model))
        return cls(adapter, model, depth_sources("interpolation", min_depth, depth), momentum)

    def _containers(self) -> list[ElasticBlocks]:
        return [self.adapter.get_block_container(net) for net in self.nets]

    @property
    def depth_range(self) -> tuple[int, int]:
        c = self._containers()[0]
        return c.base_depth, c.max_depth

    def set_depth(self, depth: int) -> None:
        """Run the sub-network of ``depth`` blocks (in the online and momentum networks)."""
        for c in self._containers():
            c.set_depth(depth)

    def materialise(self, depth: int) -> dict[str, str | None]:
        """Keep only the sub-network of ``depth`` (weight recycling: it inherits the supernet's weights).

        Returns the new -> old parameter names (``blocks.{j}`` <- ``blocks.{p_j}``) for the optimizer.
        """
        old_names = {id(p): n for n, p in self.model.named_parameters()}
        for net, c in zip(self.nets, self._containers(), strict=True):
            self.adapter.set_blocks(net, [c[p] for p in c.positions(depth)])
        return {n: old_names.get(id(p)) for n, p in self.model.named_parameters()}
