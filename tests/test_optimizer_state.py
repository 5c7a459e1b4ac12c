"""AdamW's moments follow the weights across growth (docs/dev-notes.md, "Carry AdamW's state").

Every parameter of the grown network takes the optimizer state of its *growth source* (the old
block :func:`~autoprog.growth.depth_sources` says it copies), never that of the old parameter that
happens to have the same name; brand-new parameters (RandInit's blocks, ReZero's ``alpha``) start
without state. Checked on the functional path (:func:`~autoprog.optim.carry_state` with the
operator's name map) and through :class:`~autoprog.controller.GrowthController` growing a Prog plan.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from autoprog.controller import GrowthController, create_plan
from autoprog.growth import (
    GrowthSchedule,
    GrowthSpace,
    ReZeroBlock,
    SubnetConfig,
    create_operator,
    depth_sources,
)
from autoprog.optim import build_optimizer, carry_state, state_by_name

OPERATORS = ["interpolation", "stacking", "randinit", "identity"]


def _train(model, optimizer, steps: int = 3, resolution: int = 16) -> None:
    """A few AdamW steps on random data, so that every block's moments differ."""
    for _ in range(steps):
        x, y = torch.randn(4, 1, resolution, resolution), torch.randint(0, 10, (4,))
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def _snapshot(optimizer) -> dict[str, dict[str, torch.Tensor]]:
    return {n: {k: v.clone() for k, v in st.items()} for n, st in state_by_name(optimizer).items()}


def _source_name(adapter, model, name: str, sources: list[int | None]) -> str | None:
    """The old parameter ``name`` (of the grown ``model``) was grown from, by the block sources alone."""
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if m is None:
        return name  # outside the blocks: the same parameter before and after growth
    j, local = int(m[1]), m[2]
    if sources[j] is None:
        return None  # RandInit: a fresh block
    if isinstance(adapter.get_blocks(model)[j], ReZeroBlock):
        if local == "alpha":
            return None  # Identity's residual scale is new
        local = local.removeprefix("block.")
    return f"blocks.{sources[j]}.{local}"


def _check_carried(adapter, model, optimizer, old: dict, sources: list[int | None]) -> int:
    """Each parameter of ``optimizer`` holds exactly its growth source's state (or none); returns how
    many carry state."""
    # the test can fail: the blocks' moments differ, and growth moves parameters to other names
    assert not torch.equal(old["blocks.0.attn.qkv.weight"]["exp_avg"], old["blocks.1.attn.qkv.weight"]["exp_avg"])
    names = [n for g in optimizer.param_groups for n in g["names"]]
    assert any(_source_name(adapter, model, n, sources) not in (n, None) for n in names)
    carried = 0
    for group in optimizer.param_groups:
        for name, p in zip(group["names"], group["params"], strict=True):
            src = _source_name(adapter, model, name, sources)
            if src is None:
                assert p not in optimizer.state, f"{name} is new but got optimizer state"
                continue
            assert p in optimizer.state, f"{name} lost the state of its source {src}"
            state = optimizer.state[p]
            for key in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(state[key], old[src][key]), f"{name}: {key} is not that of {src}"
            carried += 1
    # copies of one source hold their own tensors (AdamW updates them in place)
    moments = [st["exp_avg"].data_ptr() for st in optimizer.state.values()]
    assert len(set(moments)) == len(moments)
    return carried


@pytest.mark.parametrize("operator", OPERATORS)
def test_carry_state_gives_each_parameter_its_growth_sources_moments(tiny_adapter, operator):
    model = tiny_adapter.create_model(3)
    optimizer = build_optimizer(model, 1e-3, 0.05)
    _train(model, optimizer)
    old = _snapshot(optimizer)
    op = create_operator(operator)
    name_map = op.grow(model, tiny_adapter, 6)
    grown = build_optimizer(model, 1e-3, 0.05)
    n = carry_state(old, grown, name_map)
    assert n == _check_carried(tiny_adapter, model, grown, old, depth_sources(op.kind, 3, 6)) > 0


@pytest.mark.parametrize("operator", [*OPERATORS, "mogrow"])
def test_controller_growth_carries_the_moments_by_growth_source(tiny_adapter, operator):
    space = GrowthSpace(28, 6, 4, 0.5, 4)
    schedule = GrowthSchedule.from_configs([SubnetConfig(16, 3), SubnetConfig(16, 6)], [0, 1, 2])
    ctl = GrowthController(tiny_adapter, create_plan("prog", space, 2, schedule), steps_per_epoch=3, operator=operator)
    spec = ctl.begin_epoch()
    assert spec is not None and len(tiny_adapter.get_blocks(ctl.model)) == 3
    for _ in range(3):
        config = ctl.next_config()
        x, y = torch.randn(4, 1, config.resolution, config.resolution), torch.randint(0, 10, (4,))
        ctl.optimizer.zero_grad()
        F.cross_entropy(ctl.model(x), y).backward()
        ctl.optimizer.step()
        ctl.end_step()
    ctl.end_epoch()
    old = _snapshot(ctl.optimizer)
    spec = ctl.begin_epoch()
    assert spec is not None and [e.kind for e in spec.events] == ["grow"]
    assert len(tiny_adapter.get_blocks(ctl.model)) == 6
    sources = depth_sources(ctl.operator.kind, 3, 6)
    assert _check_carried(tiny_adapter, ctl.model, ctl.optimizer, old, sources) > 0
