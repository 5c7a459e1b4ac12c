"""Elastic supernet with interpolation (paper Sec. 3.2.3, Def. 3.1, Fig. 4).

Starting from the current network of depth ``l``, the supernet is the network grown by
Interpolation (or MoGrow) to the largest candidate depth ``D``. Every block of the supernet is
either an original block or the ``r``-th copy of one. The sub-network of depth ``d`` keeps the
originals and, for each original, the copies that Interpolation growth ``l -> d`` would add; all
other copies are skipped (identity). Because the Interpolation order is nested (see
:mod:`autoprog.growth.operators`), sub-networks are weight-nesting: the sub-network of depth
``d`` is a subset of that of any ``d' > d``, and, at construction, equals parameter for parameter
the network that Interpolation growth to ``d`` produces.

Grouped blocks (a ResNet's stages, :func:`~autoprog.growth.operators.layout_sources`): the rule
applies inside each group, with the adapter's blocks per group at each depth (``stage_depths``); the
blocks of a group the base network has none of are fresh, and the sub-network keeps the first of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from autoprog.errors import ConfigError
from autoprog.growth.operators import block_layout, depth_layout, depth_sources, layout_sources


class ElasticBlocks(nn.Sequential):
    """A ``Sequential`` of blocks that runs only its ``active`` positions (the others are skipped).

    Parameter names stay those of the full supernet (``blocks.{p}.…``) whichever sub-network runs,
    so the optimizer and the EMA copy stay paired by name while sub-networks are sampled.

    Args:
        blocks: the supernet's blocks, input side first.
        sources: for each block, the index of the base block it is (a copy of), or ``None`` for a
            fresh block of a group the base network has no block in.
        groups: each block's group (default: one group).
        layouts: blocks per group of the sub-network of each depth (default: ``{d: [d]}``).
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        sources: Sequence[int | None],
        groups: Sequence[int] | None = None,
        layouts: dict[int, list[int]] | None = None,
    ) -> None:
        super().__init__(*blocks)
        if len(sources) != len(blocks):
            raise ValueError("one source index per block is needed")
        self.sources = list(sources)
        self.groups = [0] * len(blocks) if groups is None else list(groups)
        n_groups = max(self.groups, default=0) + 1
        self.base_layout = [
            len({s for s, g in zip(self.sources, self.groups, strict=True) if g == k and s is not None})
            for k in range(n_groups)
        ]
        self.base_depth = sum(self.base_layout)
        #: the base index of each group's first block
        self.offsets = [sum(self.base_layout[:k]) for k in range(n_groups)]
        for s, g in zip(self.sources, self.groups, strict=True):
            inside = s is None and self.base_layout[g] == 0
            inside = inside or (s is not None and self.offsets[g] <= s < self.offsets[g] + self.base_layout[g])
            if not inside:
                raise ValueError(f"supernet sources {self.sources} do not fit the block groups {self.groups}")
        keys = list(zip(self.sources, self.groups, strict=True))
        self.ranks = [keys[:p].count(key) for p, key in enumerate(keys)]
        self.layouts = (
            {d: [d] for d in range(self.base_depth, len(blocks) + 1)} if layouts is None else dict(layouts)
        )
        sizes = [self.groups.count(k) for k in range(n_groups)]
        for d in range(self.base_depth, len(blocks) + 1):
            target = self.layouts.get(d)
            fits = target is not None and len(target) == n_groups and sum(target) == d
            if not fits or not all(b <= t <= n for b, t, n in zip(self.base_layout, target, sizes, strict=True)):
                raise ValueError(f"depth {d}'s blocks per group {target} do not fit the supernet's groups {sizes}")
        if self.layouts[self.base_depth] != self.base_layout or self.layouts[len(blocks)] != sizes:
            raise ValueError(f"the supernet's groups {sizes} and base {self.base_layout} are not its layouts")
        self.active: list[int] = list(range(len(blocks)))

    @property
    def max_depth(self) -> int:
        return len(self.sources)

    def positions(self, depth: int) -> list[int]:
        """Supernet positions of the sub-network of ``depth`` blocks (Interpolation ``l -> depth``, per group)."""
        if not self.base_depth <= depth <= self.max_depth:
            raise ValueError(f"depth {depth} is outside the supernet's range [{self.base_depth}, {self.max_depth}]")
        target = self.layouts[depth]
        copies: dict[int, int] = {}  # base block -> how many blocks of it the sub-network keeps
        for base, new, offset in zip(self.base_layout, target, self.offsets, strict=True):
            if base:
                wanted = depth_sources("interpolation", base, new)
                copies.update({offset + i: wanted.count(i) for i in range(base)})
        return [
            p
            for p, (s, g, r) in enumerate(zip(self.sources, self.groups, self.ranks, strict=True))
            if r < (target[g] if s is None else copies[s])
        ]

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
        sources: for each supernet block, the index of the base block it copies (``None``: a fresh
            block of a group the base network has no block in).
        momentum: the EMA / momentum network, with the same blocks (or ``None``).
    """

    def __init__(self, adapter, model: nn.Module, sources: Sequence[int | None], momentum: nn.Module | None = None) -> None:
        self.adapter = adapter
        self.model = model
        self.momentum = momentum
        self.sources = list(sources)
        self.nets = [model] + ([momentum] if momentum is not None else [])
        before = {id(p): n for n, p in model.named_parameters()}
        layout = block_layout(adapter, model)
        groups = [g for g, n in enumerate(layout) for _ in range(n)]
        base = len({s for s in self.sources if s is not None})
        layouts = {d: depth_layout(adapter, d) for d in range(base, len(self.sources) + 1)}
        try:
            containers = [ElasticBlocks(adapter.get_blocks(net), self.sources, groups, layouts) for net in self.nets]
        except ValueError as e:
            raise ConfigError(
                f"an elastic supernet with blocks per group {layout} and sources {self.sources} does not follow "
                f"{type(adapter).__name__}'s layouts ({e}; a checkpoint written by an older autoprog?)"
            ) from None
        for net, container in zip(self.nets, containers, strict=True):
            adapter.set_blocks(net, container)
        #: new -> old parameter names of the change that made the supernet
        self.name_map: dict[str, str | None] = {n: before.get(id(p)) for n, p in model.named_parameters()}

    @classmethod
    def grow(
        cls, adapter, model: nn.Module, max_depth: int, operator, momentum: nn.Module | None = None
    ) -> ElasticSupernet:
        """Grow the current network to ``max_depth`` with ``operator`` and make it elastic (Fig. 4)."""
        base = block_layout(adapter, model)
        grown = operator.grow(model, adapter, max_depth, momentum=momentum)
        plain = {id(p): n for n, p in model.named_parameters()}
        supernet = cls(adapter, model, layout_sources("interpolation", base, depth_layout(adapter, max_depth)), momentum)
        # compose: supernet name -> grown name -> pre-growth name (the container may rename blocks)
        supernet.name_map = {n: grown.get(plain[id(p)]) for n, p in model.named_parameters()}
        return supernet

    @classmethod
    def from_scratch(cls, adapter, model: nn.Module, min_depth: int, momentum: nn.Module | None = None) -> ElasticSupernet:
        """A freshly initialised full-depth model as a supernet whose smallest sub-network has ``min_depth``.

        Used for the first stage, where there is no smaller trained network to grow from; the
        nesting structure is the one Interpolation from ``min_depth`` would give.
        """
        layout = block_layout(adapter, model)
        return cls(adapter, model, layout_sources("interpolation", depth_layout(adapter, min_depth), layout), momentum)

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
