"""AutoProg-One (searched growth of a timm ViT) from your own PyTorch loop.

The loop below is yours: data, loss, learning rate and logging stay in your hands. The
:class:`autoprog.GrowthController` owns what changes shape (the model, its momentum copy, the
optimizer) and tells the loop, per epoch and per step, which sub-network to train. At each stage's
start it trains an elastic supernet (those epochs count: weight recycling), scores the candidates
with ``score`` below and their measured step times, and grows into the winner (paper Sec. 3.2).

Runs as is on a synthetic 10-class task (``python examples/own_loop_autoprog_one.py``); swap in your
loader. Under ``torchrun``, wrap ``ctl.model`` in DDP after every event and pass
``broadcast=autoprog.distributed.init_distributed().broadcast`` (see README, "Scaling out").
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from autoprog import GrowthController, GrowthSpace, TimmViTAdapter, create_plan
from autoprog.optim import build_optimizer, cosine_lr, set_lr


def synthetic_batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey 28x28 images whose class is where a bright 7x7 cell is (a stand-in for your data)."""
    y = torch.randint(0, 10, (n,), generator=generator)
    x = torch.rand(n, 1, 28, 28, generator=generator) * 0.2
    for i, c in enumerate(y.tolist()):
        r, q = divmod(c, 4)
        x[i, :, 7 * r : 7 * r + 7, 7 * q : 7 * q + 7] = 1.0
    return x, y


def main(
    epochs: int = 6, steps_per_epoch: int = 8, depth: int = 4, batch_size: int = 16, lr: float = 1e-3
) -> dict:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    adapter = TimmViTAdapter(
        "vit_tiny_patch16_224", img_size=28, in_chans=1, num_classes=10, patch_size=4, depth=depth
    )
    space = GrowthSpace(
        adapter.full.resolution, adapter.full.depth, adapter.resolution_step, ratio=0.5, num_stages=3
    )
    fixed_x, fixed_y = synthetic_batch(64, g)  # the search scores candidates on fixed data

    @torch.no_grad()
    def score(momentum_net: torch.nn.Module, config) -> float:
        """Search loss of a candidate: the momentum copy on fixed data at the candidate's resolution."""
        return F.cross_entropy(
            momentum_net(adapter.prepare_input(fixed_x, config.resolution)), fixed_y
        ).item()

    ctl = GrowthController(
        adapter,
        create_plan("autoprog-one", space, epochs),
        steps_per_epoch=steps_per_epoch,
        operator="mogrow",  # grow from the momentum copy (Tab. X)
        optimizer_factory=lambda model: build_optimizer(model, lr=lr, weight_decay=0.05),
        score_fn=score,
        search_epochs=1,
    )
    total, step = epochs * steps_per_epoch, 0
    while (spec := ctl.begin_epoch()) is not None:  # grows / builds a supernet at a stage's start
        for _ in range(steps_per_epoch):
            x, y = synthetic_batch(batch_size, g)  # your data here
            config = ctl.next_config()  # this step's resolution and depth
            t0 = time.perf_counter()
            set_lr(ctl.optimizer, cosine_lr(step, total, lr, warmup_steps=2))
            loss = F.cross_entropy(ctl.model(adapter.prepare_input(x, config.resolution)), y)
            ctl.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            ctl.optimizer.step()
            ctl.end_step(time.perf_counter() - t0)  # momentum update; step time for the search
            step += 1
        for event in ctl.end_epoch():  # a search decided: the model and optimizer were rebuilt
            if event.kind == "search":
                print(f"stage {event.stage}: chose {event.config.resolution}px, depth {event.config.depth}")
        print(f"epoch {spec.epoch}: {'supernet' if spec.supernet else spec.config}, loss {loss.item():.3f}")
    return {
        "schedule": ctl.schedule.to_list(),
        "searches": ctl.searches,
        "depth": len(adapter.get_blocks(ctl.model)),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--steps-per-epoch", type=int, default=8)
    a = p.parse_args()
    result = main(a.epochs, a.steps_per_epoch)
    print("schedule:", [(s["resolution"], s["depth"]) for s in result["schedule"]])
