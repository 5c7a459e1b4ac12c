"""Lightning integration: AutoProgCallback (pre-training) and ProgressiveUnfreezing (fine-tuning)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning")

from autoprog.adapters import TimmViTAdapter  # noqa: E402
from autoprog.adapters.base import resize_input  # noqa: E402
from autoprog.controller import GrowthController, create_plan  # noqa: E402
from autoprog.errors import ConfigError  # noqa: E402
from autoprog.growth.schedule import GrowthSpace, prog_schedule  # noqa: E402
from autoprog.integrations.lightning import AutoProgCallback, ProgressiveUnfreezing  # noqa: E402
from autoprog.optim import build_optimizer  # noqa: E402
from autoprog.proxies import ntk_condition_number, zico  # noqa: E402
from autoprog.search.zero_shot import zero_shot_search  # noqa: E402
from autoprog.unfreeze import UnfreezeSpace, level_blocks, prog_unfreeze_schedule  # noqa: E402

EPOCHS = 4


def trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def loader(n: int, batch: int, size: int, classes: int = 3, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(
        torch.randn(n, 1, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)
    )
    return DataLoader(data, batch_size=batch, shuffle=False)


# -- pre-training ----------------------------------------------------------------------------


def tiny_vit() -> TimmViTAdapter:
    return TimmViTAdapter(
        "vit_tiny_patch16_224", img_size=16, in_chans=1, num_classes=3, patch_size=4, depth=4
    )


class GrowingClassifier(L.LightningModule):
    """The user's module: holds controller.model as ``self.model``, reads ``self.autoprog_config``."""

    def __init__(self, ctl: GrowthController, optimizer: str = "controller") -> None:
        super().__init__()
        self.ctl = ctl
        self.model = ctl.model
        self.optimizer_kind = optimizer
        self.seen: list[tuple[int, int, int]] = []  # (epoch, input resolution, depth)
        self.stepped_controllers: list[bool] = []
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        config = self.autoprog_config
        x = self.ctl.adapter.prepare_input(x, config.resolution)
        self.seen.append((self.current_epoch, x.shape[-1], len(self.model.blocks)))
        return F.cross_entropy(self.model(x), y)

    def on_before_optimizer_step(self, optimizer):
        opt = self.trainer.optimizers[0]
        held = {id(p) for g in opt.param_groups for p in g["params"]}
        self.stepped_controllers.append(
            opt is self.ctl.optimizer and held == {id(p) for p in self.model.parameters()}
        )
        self.lrs.append(opt.param_groups[0]["lr"])

    def configure_optimizers(self):
        opt = self.ctl.optimizer
        if self.optimizer_kind.startswith("placeholder"):  # replaced by the controller's at train start
            opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        if not self.optimizer_kind.endswith("+scheduler"):
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5**e)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


SPACE = GrowthSpace(16, 4, resolution_step=4)  # resolutions 8/12/12/16, depths 2/3/3/4


def test_prog_pretraining_grows_through_lightning():
    ctl = GrowthController(tiny_vit(), create_plan("prog", SPACE, epochs=EPOCHS), steps_per_epoch=2)
    module = GrowingClassifier(ctl, optimizer="controller+scheduler")
    callback = AutoProgCallback(ctl)
    t = trainer(max_epochs=EPOCHS, callbacks=[callback])
    t.fit(module, loader(16, 8, 16))

    assert t.state.finished
    assert len(ctl.model.blocks) == SPACE.full_depth and module.model is ctl.model
    assert ctl.schedule.to_list() == prog_schedule(SPACE, EPOCHS).to_list()
    expected = [
        (s.start_epoch, s.resolution, s.depth) for s in prog_schedule(SPACE, EPOCHS) for _ in range(2)
    ]
    assert module.seen == expected
    assert all(module.stepped_controllers) and len(module.stepped_controllers) == 8
    assert t.optimizers[0] is ctl.optimizer
    # the epoch scheduler followed the rebuilt optimizers: lr 1e-3 * 0.5**epoch
    assert module.lrs == pytest.approx([1e-3 * 0.5**e for e in range(EPOCHS) for _ in range(2)])
    assert t.lr_scheduler_configs[0].scheduler.optimizer is ctl.optimizer
    assert [e.kind for e in callback.events].count("grow") == 2  # depth 2 -> 3 -> (3) -> 4
    assert callback.state_dict()["schedule"] == ctl.schedule.to_list()


def test_autoprog_one_pretraining_searches_through_lightning():
    adapter = tiny_vit()
    g = torch.Generator().manual_seed(1)
    x_fix, y_fix = torch.randn(8, 1, 16, 16, generator=g), torch.randint(0, 3, (8,), generator=g)

    def score(net: nn.Module, config) -> float:
        return float(F.cross_entropy(net(adapter.prepare_input(x_fix, config.resolution)), y_fix))

    def measure(model: nn.Module, config) -> float:
        return 1e-3 * config.depth * config.resolution**2  # a stand-in cost: never sampled candidates

    ctl = GrowthController(
        adapter,
        create_plan("autoprog-one", SPACE, epochs=EPOCHS),
        steps_per_epoch=4,
        score_fn=score,
        measure_fn=measure,
    )
    module = GrowingClassifier(ctl, optimizer="placeholder")
    callback = AutoProgCallback(ctl)
    t = trainer(max_epochs=EPOCHS, callbacks=[callback])
    t.fit(module, loader(16, 4, 16))

    assert t.state.finished
    kinds = [e.kind for e in callback.events]
    assert "supernet" in kinds and "search" in kinds
    searched = [e for e in callback.events if e.kind == "search" and len(e.detail["candidates"]) > 1]
    assert searched
    assert len(ctl.model.blocks) == SPACE.full_depth and module.model is ctl.model
    assert ctl.schedule[-1].config == SPACE.full
    assert all(module.stepped_controllers)
    assert t.optimizers[0] is ctl.optimizer


def test_autoprog_callback_refuses_what_it_cannot_follow():
    ctl = GrowthController(tiny_vit(), create_plan("prog", SPACE, epochs=EPOCHS), steps_per_epoch=2)
    with pytest.raises(ConfigError, match="parameter group"):  # a scheduler on a placeholder optimizer
        trainer(max_epochs=EPOCHS, callbacks=[AutoProgCallback(ctl)]).fit(
            GrowingClassifier(ctl, optimizer="placeholder+scheduler"), loader(16, 8, 16)
        )
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        trainer(max_epochs=EPOCHS, callbacks=[AutoProgCallback(ctl)]).fit(
            GrowingClassifier(ctl), loader(24, 8, 16)
        )
    with pytest.raises(ConfigError, match="max_epochs"):
        trainer(max_epochs=EPOCHS + 1, callbacks=[AutoProgCallback(ctl)]).fit(
            GrowingClassifier(ctl), loader(16, 8, 16)
        )
    no_recycle = GrowthController(
        tiny_vit(), create_plan("prog", SPACE, epochs=EPOCHS), steps_per_epoch=2, recycle=False
    )
    with pytest.raises(ConfigError, match="recycl"):
        AutoProgCallback(no_recycle)


# -- fine-tuning -----------------------------------------------------------------------------


class TinyNet(nn.Module):
    """A stem, 4 residual blocks (LayerNorm + Linear, so blocks share parameter *values*) and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.blocks = nn.Sequential(*[nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8)) for _ in range(4)])
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x).flatten(2).transpose(1, 2)
        for block in self.blocks:
            h = h + torch.tanh(block(h))
        return self.head(h.mean(1))


BLOCKS = [f"net.blocks.{i}" for i in range(4)]
FT_SPACE = UnfreezeSpace(full_resolution=8, resolution_step=2, ratio=0.5)  # resolutions 4/6/8, levels 1-4


class FineTuner(L.LightningModule):
    """Reads ``self.autoprog_resolution``; records what learned in every epoch."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = TinyNet()
        self.seen: list[
            tuple[int, int, int, tuple[bool, ...]]
        ] = []  # epoch, stage, resolution, blocks learning
        self.frozen_without_state: list[bool] = []
        self.optimizer_ids: set[int] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(resize_input(x, self.autoprog_resolution))

    def training_step(self, batch, batch_idx):
        x, y = batch
        if batch_idx == 0:
            learning = tuple(all(p.requires_grad for p in self.net.blocks[i].parameters()) for i in range(4))
            self.seen.append((self.current_epoch, self.autoprog_stage, self.autoprog_resolution, learning))
        return F.cross_entropy(self(x), y)

    def on_train_epoch_end(self):
        opt = self.trainer.optimizers[0]
        self.optimizer_ids.add(id(opt))
        self.frozen_without_state.append(
            all(p not in opt.state for p in self.parameters() if not p.requires_grad)
        )

    def configure_optimizers(self):
        opt = build_optimizer(self, 1e-2, 0.05)  # learnable parameters only; decay / no-decay groups
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.9**step)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_prog_unfreezing_through_lightning():
    module = FineTuner()
    callback = ProgressiveUnfreezing(FT_SPACE, BLOCKS, method="prog")
    t = trainer(max_epochs=EPOCHS, callbacks=[callback])
    t.fit(module, loader(8, 4, 8))

    assert t.state.finished
    expected = [(0, 0, 4, (True, False, False, False)), (1, 1, 6, (True, True, False, False)),
                (2, 2, 6, (True, True, True, False)), (3, 3, 8, (True, True, True, True))]  # fmt: skip
    assert module.seen == expected
    assert all(p.requires_grad for p in module.parameters())
    assert module.frozen_without_state == [True] * EPOCHS
    assert len(module.optimizer_ids) == 1  # one optimizer throughout: its state survived
    opt = t.optimizers[0]
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in module.parameters()}
    for group in opt.param_groups:  # new parameters joined groups like their counterparts'
        for name in group["names"]:
            is_decayed = (
                name.endswith(".1.weight") or name.endswith("stem.weight") or name.endswith("head.weight")
            )
            assert group["weight_decay"] == (0.05 if is_decayed else 0.0), name
    lrs = {g["lr"] for g in opt.param_groups}  # the step scheduler drives the added groups too
    assert len(lrs) == 1 and lrs.pop() == pytest.approx(1e-2 * 0.9 ** (2 * EPOCHS))
    assert [(s.resolution, s.level) for s in callback.schedule] == [(4, 1), (6, 2), (6, 3), (8, 4)]


def test_a_schedule_in_steps_is_replayed_over_epochs():
    module = FineTuner()
    callback = ProgressiveUnfreezing(prog_unfreeze_schedule(FT_SPACE, 800), BLOCKS)  # e.g. a finetune run's
    t = trainer(max_epochs=EPOCHS, callbacks=[callback])
    t.fit(module, loader(8, 4, 8))
    assert [(s.start_step, s.end_step) for s in callback.schedule] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert [(res, learning.count(True)) for _, _, res, learning in module.seen] == [
        (4, 1),
        (6, 2),
        (6, 3),
        (8, 4),
    ]
    assert callback.state_dict()["schedule"] == callback.schedule.to_list()


def test_autoprog_zero_unfreezing_through_lightning():
    g = torch.Generator().manual_seed(2)
    probe = [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(2)]

    def probe_forward(module, batch):
        return module(batch[0])

    def probe_loss(module, batch):
        return F.cross_entropy(module(batch[0]), batch[1])

    module = FineTuner()
    callback = ProgressiveUnfreezing(
        FT_SPACE,
        BLOCKS,
        method="autoprog-zero",
        probe_batches=probe,
        probe_forward=probe_forward,
        probe_loss=probe_loss,
        ntk_samples=4,
        time_repeats=1,
        search_rule="paper",  # the reference's candidates: every searched stage votes among several
    )
    t = trainer(max_epochs=EPOCHS, callbacks=[callback])
    t.fit(module, loader(8, 4, 8))

    assert t.state.finished
    assert [s["stage"] for s in callback.searches] == [0, 1, 2]
    for record in callback.searches:
        assert len(record["candidates"]) >= 2
        for row in record["candidates"]:
            assert set(row["ranks"]) == {"time", "ntk", "zico"}
            assert row["ntk"] >= 1.0 and math.isfinite(row["zico"]) and row["time"] > 0
    levels = [s.level for s in callback.schedule]
    assert levels == sorted(levels) and callback.schedule[-1].config == FT_SPACE.full
    assert [st for _, st, _, _ in module.seen] == [0, 1, 2, 3]
    for (_, _, res, learning), stage in zip(module.seen, callback.schedule, strict=True):
        assert res == stage.resolution
        assert learning == tuple(i in level_blocks(4, stage.level) for i in range(4))
    assert module.frozen_without_state == [True] * EPOCHS
    assert all(p.requires_grad for p in module.parameters())


def test_unfreezing_rejects_a_schedule_longer_than_the_run():
    with pytest.raises(ConfigError, match="epochs"):
        trainer(max_epochs=2, callbacks=[ProgressiveUnfreezing(FT_SPACE, BLOCKS)]).fit(
            FineTuner(), loader(8, 4, 8)
        )
    with pytest.raises(ConfigError, match="probe"):
        ProgressiveUnfreezing(FT_SPACE, BLOCKS, method="autoprog-zero")


# -- the model-agnostic zero-shot search ---------------------------------------------------------


def test_zero_shot_search_on_a_hand_made_setting():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    model.train()
    learnable = {"last": {"4."}, "all": {"0.", "2.", "4."}}
    seconds = {"last": 0.1, "all": 0.3}

    def configure(c: str) -> None:
        for name, p in model.named_parameters():
            p.requires_grad_(any(name.startswith(prefix) for prefix in learnable[c]))

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g)
    batches = [(torch.randn(6, 4, generator=g), torch.randint(0, 2, (6,), generator=g)) for _ in range(2)]

    def forward(m, inp):
        return m(inp)

    def loss_fn(m, b):
        return F.cross_entropy(m(b[0]), b[1])

    args = dict(configure=configure, forward=forward, loss_fn=loss_fn, ntk_inputs=(x,), zico_batches=batches,
                time_step=lambda c: seconds[c])  # fmt: skip
    index, rows, vote = zero_shot_search(model, ["last", "all"], **args)

    assert model.training and all(p.requires_grad for p in model.parameters())  # restored
    assert all(p.grad is None for p in model.parameters())
    for c, row in zip(["last", "all"], rows, strict=True):
        configure(c)
        assert row["ntk"] == pytest.approx(ntk_condition_number(model.eval(), (x,), forward))
        assert row["zico"] == pytest.approx(zico(model, batches, loss_fn))
        assert row["log_ntk"] == pytest.approx(math.log(row["ntk"])) and row["time"] == seconds[c]
        model.train()
    assert rows[0]["trainable_params"] == 18 and rows[1]["trainable_params"] == 40 + 72 + 18
    assert rows[1]["zico"] > rows[0]["zico"]  # more learnable layers: a larger ZiCo (Eq. 17, B = 2)
    assert vote.ranks["time"] == [1, 2] and vote.ranks["zico"] == [2, 1]
    assert [r["total"] for r in rows] == vote.totals and index == vote.winner
    # one ballot at a time picks its own best
    assert zero_shot_search(model, ["last", "all"], **args, weights={"time": 1.0})[0] == 0
    assert zero_shot_search(model, ["last", "all"], **args, weights={"zico": 1.0})[0] == 1
    best_ntk = min(range(2), key=lambda i: rows[i]["log_ntk"])
    assert zero_shot_search(model, ["last", "all"], **args, weights={"ntk": 1.0})[0] == best_ntk
    with pytest.raises(ValueError, match="at least one candidate"):
        zero_shot_search(model, [], **args)
