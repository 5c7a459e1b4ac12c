"""The shape of a grown model beyond its ``state_dict``, so a checkpoint can rebuild it (Sec. 3.1.3, 3.2.3).

A progressive run's model may be deeper than a fresh one, hold :class:`ReZeroBlock` wrappers
(nested when a wrapped block is copied and grown again), or be an elastic supernet mid-search;
its blocks may also carry state its family sets at growth (a ViT block's drop-path rates) or be
split in groups unlike a fresh model of the same depth (a ResNet's stages). :func:`block_structure`
records all of that as plain values, :func:`model_from_structure` builds a fresh model of that
shape, ready for ``load_state_dict`` (the elastic layout is applied by
:class:`~autoprog.growth.elastic.ElasticSupernet` from ``structure["sources"]``).

What belongs to the core is recorded here (ReZero wrappers, the supernet's sources); what belongs
to a model family is the adapter's to describe and restore (the optional
:class:`~autoprog.adapters.base.DescribesBlocks` and :class:`~autoprog.adapters.base.HasBlockLayout`
methods), so a model without either works as it is.

The format (``torch.load(weights_only=True)``-safe)::

    {"blocks": [{"rezero": 0, **adapter.block_state(block)}, ...],  # ViT: {"rezero": 0, "drop_path": [0.0, 0.1]}
     "sources": [0, 0, 1, 1] | None,                                 # the elastic supernet's sources
     "layout": [1, 0, 3, 0] | None}                                  # adapter.block_layout(model)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from autoprog.adapters.base import DescribesBlocks, HasBlockLayout, ModelAdapter
from autoprog.errors import ConfigError
from autoprog.growth.elastic import ElasticBlocks
from autoprog.growth.operators import ReZeroBlock


def block_structure(adapter: ModelAdapter, model: nn.Module) -> dict[str, Any]:
    """The shape of ``model``: per block how many times it is wrapped in :class:`ReZeroBlock` and
    the adapter's :meth:`~autoprog.adapters.base.DescribesBlocks.block_state` of the block inside,
    the supernet's source indices when the blocks are elastic, the adapter's block layout."""
    try:
        container = adapter.get_block_container(model)
    except AttributeError:  # an adapter whose blocks have no container of their own until elastic
        container = None
    blocks = []
    for block in adapter.get_blocks(model):
        wraps, inner = 0, block
        while isinstance(inner, ReZeroBlock):  # a copy of a ReZero block grown again is wrapped twice
            wraps, inner = wraps + 1, inner.block
        spec: dict[str, Any] = {"rezero": wraps}
        if isinstance(adapter, DescribesBlocks):
            spec.update(adapter.block_state(inner))
        blocks.append(spec)
    sources = list(container.sources) if isinstance(container, ElasticBlocks) else None
    layout = adapter.block_layout(model) if isinstance(adapter, HasBlockLayout) else None
    return {"blocks": blocks, "sources": sources, "layout": layout}


def apply_block_structure(adapter: ModelAdapter, model: nn.Module, structure: dict[str, Any]) -> None:
    """Give a freshly created model (of the right depth) the block state and ReZero wrappers of
    :func:`block_structure` (the elastic layout is applied by :class:`ElasticSupernet`). Entries an
    adapter does not describe are ignored (a ResNet checkpoint's empty ``drop_path`` lists)."""
    out = []
    for block, spec in zip(adapter.get_blocks(model), structure["blocks"], strict=True):
        if isinstance(adapter, DescribesBlocks):
            adapter.restore_block_state(block, {k: v for k, v in spec.items() if k != "rezero"})
        for _ in range(int(spec["rezero"])):
            block = ReZeroBlock(block)
        out.append(block)
    adapter.set_blocks(model, out)


def model_from_structure(adapter: ModelAdapter, structure: dict[str, Any]) -> nn.Module:
    """A freshly initialised model of the recorded shape (depth or block layout, block state,
    ReZero wrappers), ready to load the checkpoint's weights.

    Raises:
        ConfigError: the structure has a block layout the adapter cannot build.
    """
    layout = structure.get("layout")
    if layout is None:
        model = adapter.create_model(len(structure["blocks"]))
    elif isinstance(adapter, HasBlockLayout):
        model = adapter.create_model_from_layout(layout)
    else:
        raise ConfigError(
            f"the checkpoint's model has its blocks in groups {layout}, which {type(adapter).__name__} "
            "cannot build (it has no create_model_from_layout)"
        )
    apply_block_structure(adapter, model, structure)
    return model


__all__ = ["apply_block_structure", "block_structure", "model_from_structure"]
