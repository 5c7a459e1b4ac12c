"""Growth operators in depth (paper Sec. 3.1.3, Eq. 3-4, Appendix A Eq. 20-22).

A growth operator maps the blocks of a network of depth ``l`` to the blocks of a deeper network of
depth ``l' > l``. Every operator here is described by a *source list*: for each new block
(bottom-up, index 0 next to the input) the index of the old block it copies, or ``None`` for a
freshly initialised block. :func:`depth_sources` computes it; the operators apply it.

Conventions (Appendix A, footnote: layer indices start from the layer next to the classifier):

* **RandInit** (Eq. 20): the old blocks keep their places counted from the classifier; the new,
  randomly initialised blocks sit below them, next to the input.
* **Stacking** (Eq. 21): the old stack is duplicated on top of itself: new block ``i`` copies old
  block ``i mod l``.
* **Interpolation** (Eq. 22): each new block copies its nearest old neighbour, so every copy sits
  directly beside its source. Which old blocks receive a copy follows a fixed priority, starting at
  the classifier and spreading evenly (positions 0, 1/2, 1/4, 3/4, ... of the stack counted from
  the classifier). This priority makes growth *nested*: the copies added to reach depth ``d`` are a
  subset of those added to reach any ``d' > d``. That is what the weight-nesting of the elastic
  supernet (Def. 3.1, Sec. 3.2.3) needs, and for the growth steps of a Prog schedule (one or two
  added blocks, or a doubling) it coincides with Eq. 22's nearest-neighbour rule
  ``new j <- old floor(j * l / l')`` counted from the classifier.
* **Identity**: Interpolation, with every added copy wrapped in a :class:`ReZeroBlock` whose
  learnable residual scale starts at zero, so the grown network computes exactly the old function.
* **MoGrow** (Eq. 3-4): Interpolation applied to the momentum (EMA) copy of the network; the online
  network is then set to the grown momentum copy.

Groups. A model whose blocks come in groups of different shapes (a ResNet's stages, each with its
own width) grows every group towards its own size in the grown network: the adapter says how many
blocks each group has at each depth (``stage_depths``) and the rules above apply inside each group
(:func:`layout_sources`), so a copy always stays in its source's group and the full depth is the
named architecture. A group that has no block yet gets freshly initialised ones; under a copying
operator these are initialised to compute the identity (the adapter's ``new_block(..., identity=True)``),
so growth still keeps the network's function there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from fractions import Fraction

import torch
from torch import nn

from autoprog.errors import ConfigError

Sources = list[int | None]


def _interpolation_priority(depth: int) -> list[int]:
    """Bottom-up indices of the old blocks in the order they receive a copy (see module docstring)."""
    order: list[int] = []
    seen: set[int] = set()
    k = 0
    while len(order) < depth:
        # van der Corput (base 2) fraction of k: 0, 1/2, 1/4, 3/4, 1/8, 5/8, ...
        f, denom, n = Fraction(0), 1, k
        while n:
            denom *= 2
            f += Fraction(n % 2, denom)
            n //= 2
        top_index = int(f * depth)  # counted from the classifier
        if top_index not in seen:
            seen.add(top_index)
            order.append(depth - 1 - top_index)
        k += 1
    return order


def depth_sources(kind: str, old_depth: int, new_depth: int) -> Sources:
    """Which old block each block of the grown network copies (bottom-up), ``None`` = new random block.

    Args:
        kind: ``"randinit"``, ``"stacking"`` or ``"interpolation"`` (Identity and MoGrow use
            ``"interpolation"``).
        old_depth: depth ``l`` before growth.
        new_depth: depth ``l'`` after growth, ``>= l``.

    Example:
        >>> depth_sources("interpolation", 3, 6)
        [0, 0, 1, 1, 2, 2]
        >>> depth_sources("stacking", 3, 6)
        [0, 1, 2, 0, 1, 2]
        >>> depth_sources("randinit", 2, 4)
        [None, None, 0, 1]
    """
    if old_depth < 1:
        raise ConfigError(f"cannot grow a network of depth {old_depth}")
    if new_depth < old_depth:
        raise ConfigError(f"growth cannot shrink depth {old_depth} to {new_depth}")
    extra = new_depth - old_depth
    if kind == "randinit":
        return [None] * extra + list(range(old_depth))
    if kind == "stacking":
        return [i % old_depth for i in range(new_depth)]
    if kind == "interpolation":
        priority = _interpolation_priority(old_depth)
        copies = [0] * old_depth
        for n in range(extra):
            copies[priority[n % old_depth]] += 1
        return [i for i in range(old_depth) for _ in range(1 + copies[i])]
    raise ConfigError(f"unknown depth growth kind {kind!r}")


def layout_sources(kind: str, old_layout: list[int], new_layout: list[int]) -> Sources:
    """:func:`depth_sources` group by group: blocks of group ``g`` of the grown network copy blocks of
    group ``g`` only. Indices are into the flat old block list (groups in order, input side first);
    a group with no old block gets fresh blocks (``None``). One group is :func:`depth_sources` itself.

    Example:
        >>> layout_sources("interpolation", [0, 1, 2], [1, 2, 3])
        [None, 0, 0, 1, 2, 2]
    """
    if len(old_layout) != len(new_layout):
        raise ValueError(f"layouts {old_layout} and {new_layout} have different numbers of groups")
    out: Sources = []
    offset = 0
    for old, new in zip(old_layout, new_layout, strict=True):
        if new < old:
            raise ConfigError(f"growth cannot shrink blocks per group {old_layout} to {new_layout}")
        if old == 0:
            out += [None] * new
        else:
            out += [None if s is None else offset + s for s in depth_sources(kind, old, new)]
        offset += old
    return out


def block_layout(adapter, model: nn.Module) -> list[int]:
    """Blocks per group of ``model``: the adapter's ``block_layout`` (a ResNet's stages), else one group."""
    layout = getattr(adapter, "block_layout", None)
    return list(layout(model)) if layout is not None else [len(adapter.get_blocks(model))]


def depth_layout(adapter, depth: int) -> list[int]:
    """Blocks per group of the sub-network of ``depth`` blocks: the adapter's ``stage_depths``, else ``[depth]``."""
    layout = getattr(adapter, "stage_depths", None)
    return list(layout(depth)) if layout is not None else [depth]


def is_grouped(adapter) -> bool:
    """Whether the adapter's blocks come in groups (it has ``block_layout`` and ``stage_depths``)."""
    return hasattr(adapter, "block_layout") and hasattr(adapter, "stage_depths")


class ReZeroBlock(nn.Module):
    """ReZero wrapper (Bachlechner et al.): ``x + alpha * (block(x) - x)`` with ``alpha`` starting at 0.

    For a residual block ``block(x) = x + F(x)`` this is ``x + alpha * F(x)``. With ``alpha = 0`` the
    wrapper is the identity map exactly, which makes Interpolation growth function-preserving
    (the *Identity* operator of Sec. 3.1.3 / Sec. 5.4).
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return x + self.alpha * (self.block(x, *args, **kwargs) - x)


NewBlockFactory = Callable[[], nn.Module]


def apply_sources(
    blocks: list[nn.Module],
    sources: Sources,
    new_block: NewBlockFactory | None = None,
    wrap_copies: Callable[[nn.Module], nn.Module] | None = None,
) -> list[nn.Module]:
    """Build the grown block list from a source list.

    The first occurrence of an old block keeps the module itself; later occurrences are deep copies
    (optionally wrapped, e.g. in :class:`ReZeroBlock`); ``None`` entries call ``new_block()``.
    """
    used: set[int] = set()
    out: list[nn.Module] = []
    for s in sources:
        if s is None:
            if new_block is None:
                raise ValueError("sources ask for a new block but no factory was given")
            out.append(new_block())
        elif s not in used:
            used.add(s)
            out.append(blocks[s])
        else:
            dup = copy.deepcopy(blocks[s])
            out.append(wrap_copies(dup) if wrap_copies is not None else dup)
    return out


class GrowableAdapter:
    """What an operator needs from a model adapter (see :mod:`autoprog.adapters.base`).

    An adapter whose blocks come in groups (see the module docstring) also has ``block_layout(model)``
    and ``stage_depths(depth)`` (blocks per group now, and at ``depth``), and its
    ``new_block(model, group, identity)`` makes a block of ``group``, computing the identity if asked.
    """

    def get_blocks(self, model: nn.Module) -> list[nn.Module]:  # pragma: no cover - protocol
        raise NotImplementedError

    def set_blocks(self, model: nn.Module, blocks: list[nn.Module]) -> None:  # pragma: no cover
        raise NotImplementedError

    def new_block(self, model: nn.Module) -> nn.Module:  # pragma: no cover
        raise NotImplementedError


class GrowthOperator:
    """Grows a model (and, if given, its momentum copy) to a new depth, in place.

    Subclasses set ``name`` and ``kind`` (the :func:`depth_sources` rule). After :meth:`grow` the
    caller must rebuild everything keyed on the model's parameters (optimizer, EMA pairing).
    """

    name: str = ""
    kind: str = "interpolation"
    needs_momentum: bool = False

    def sources(self, old_depth: int, new_depth: int) -> Sources:
        return depth_sources(self.kind, old_depth, new_depth)

    def _wrap(self) -> Callable[[nn.Module], nn.Module] | None:
        return None

    def grow(
        self,
        model: nn.Module,
        adapter: GrowableAdapter,
        new_depth: int,
        momentum: nn.Module | None = None,
    ) -> dict[str, str | None]:
        """Grow ``model`` to ``new_depth`` blocks; grow ``momentum`` (an EMA copy) the same way.

        New random blocks (RandInit) are created once for the model and copied into the momentum
        network, so both stay parameter-for-parameter aligned by name.

        Returns:
            For every parameter of the grown model, the name it had before growth (a copy maps to
            its source's name), or ``None`` for a freshly initialised one. Optimizer state can be
            carried across growth by name with it (:func:`autoprog.optim.carry_state`).
        """
        blocks = adapter.get_blocks(model)
        old_names = {id(p): n for n, p in model.named_parameters()}
        if new_depth == len(blocks):
            return {n: n for n in old_names.values()}
        fresh: dict[int, nn.Module] = {}
        if is_grouped(adapter):
            old_layout, new_layout = block_layout(adapter, model), depth_layout(adapter, new_depth)
            sources = layout_sources(self.kind, old_layout, new_layout)
            groups = [g for g, n in enumerate(new_layout) for _ in range(n)]
            fresh_groups = iter([g for g, s in zip(groups, sources, strict=True) if s is None])

            def new_block() -> nn.Module:  # RandInit's blocks are random; a new group's start as the identity
                g = next(fresh_groups)
                return adapter.new_block(model, g, identity=self.kind != "randinit" and old_layout[g] == 0)
        else:
            sources = self.sources(len(blocks), new_depth)

            def new_block() -> nn.Module:
                return adapter.new_block(model)

        def make_new() -> nn.Module:
            b = new_block()
            fresh[len(fresh)] = b
            return b

        new_blocks = apply_sources(blocks, sources, make_new, self._wrap())
        adapter.set_blocks(model, new_blocks)
        name_map = _name_map(model, old_names, new_blocks, blocks, sources)
        if momentum is not None:
            counter = iter(range(len(fresh)))
            m_blocks = apply_sources(
                adapter.get_blocks(momentum),
                sources,
                lambda: copy.deepcopy(fresh[next(counter)]),
                self._wrap(),
            )
            adapter.set_blocks(momentum, m_blocks)
        return name_map


def _name_map(
    model: nn.Module,
    old_names: dict[int, str],
    new_blocks: list[nn.Module],
    old_blocks: list[nn.Module],
    sources: Sources,
) -> dict[str, str | None]:
    """New parameter name -> old parameter name (by identity for kept tensors, by source for copies)."""
    copy_of: dict[int, str | None] = {}
    for block, s in zip(new_blocks, sources, strict=True):
        src = old_blocks[s] if s is not None else None
        inner = block.block if isinstance(block, ReZeroBlock) and src is not None and block is not src else block
        for local, p in inner.named_parameters():
            if id(p) in old_names:
                continue
            copy_of[id(p)] = old_names[id(src.get_parameter(local))] if src is not None else None
    out: dict[str, str | None] = {}
    for name, p in model.named_parameters():
        out[name] = old_names.get(id(p), copy_of.get(id(p)))
    return out


class RandInit(GrowthOperator):
    """Copy the old blocks, initialise the new ones randomly (Appendix A, Eq. 20)."""

    name = "randinit"
    kind = "randinit"


class Stacking(GrowthOperator):
    """Stack a copy of the old blocks on top of them (Appendix A, Eq. 21; Gong et al. 2019)."""

    name = "stacking"
    kind = "stacking"


class Interpolation(GrowthOperator):
    """Insert copies beside their nearest old block (Appendix A, Eq. 22)."""

    name = "interpolation"
    kind = "interpolation"


class Identity(GrowthOperator):
    """Interpolation + ReZero on the added blocks: the grown network computes the old function exactly."""

    name = "identity"
    kind = "interpolation"

    def _wrap(self) -> Callable[[nn.Module], nn.Module] | None:
        return ReZeroBlock


class MoGrow(GrowthOperator):
    """Momentum Growth (Sec. 3.1.3, Eq. 3-4): grow from the momentum network, by Interpolation.

    The momentum (EMA) copy ``theta_m <- m * theta_m + (1 - m) * theta`` is grown by Interpolation,
    then the online network becomes a copy of the grown momentum network (Eq. 4).
    """

    name = "mogrow"
    kind = "interpolation"
    needs_momentum = True

    def grow(
        self,
        model: nn.Module,
        adapter: GrowableAdapter,
        new_depth: int,
        momentum: nn.Module | None = None,
    ) -> None:
        if momentum is None:
            raise ConfigError("MoGrow needs the momentum (EMA) copy of the network")
        name_map = super().grow(model, adapter, new_depth, momentum)
        # Eq. 4: the online network is loaded from the (grown) momentum network.
        model.load_state_dict(momentum.state_dict())
        return name_map


OPERATORS: dict[str, type[GrowthOperator]] = {
    op.name: op for op in (RandInit, Stacking, Interpolation, Identity, MoGrow)
}


def create_operator(name: str) -> GrowthOperator:
    """Factory: ``create_operator("mogrow")``."""
    try:
        return OPERATORS[name]()
    except KeyError:
        raise ConfigError(f"unknown growth operator {name!r}; choose from {', '.join(OPERATORS)}") from None
