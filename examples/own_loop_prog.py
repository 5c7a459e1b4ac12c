"""Progressive training (Prog + Interpolation growth) from your own PyTorch loop.

Runs as is on random data (``python examples/own_loop_prog.py``); swap in your loader. Every call
used here is public autoprog API; the library never owns the loop.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from autoprog import GrowthSpace, ModelEma, TimmViTAdapter, create_operator, prog_schedule
from autoprog.optim import build_optimizer, carry_state, cosine_lr, set_lr, state_by_name


def main(epochs: int = 4, steps_per_epoch: int = 5, depth: int = 4, batch_size: int = 16) -> list[tuple[int, int]]:
    torch.manual_seed(0)
    adapter = TimmViTAdapter("vit_tiny_patch16_224", img_size=28, in_chans=1, num_classes=10, patch_size=4, depth=depth)
    space = GrowthSpace(adapter.full.resolution, adapter.full.depth, adapter.resolution_step, ratio=0.5, num_stages=4)
    schedule = prog_schedule(space, epochs=epochs)
    model = adapter.create_model(schedule[0].depth)
    ema = ModelEma(model, decay=0.99)
    grow = create_operator("interpolation")
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    total = epochs * steps_per_epoch
    seen: list[tuple[int, int]] = []
    step = 0
    for epoch in range(epochs):
        stage = schedule.stage_at(epoch)  # a pure function of the epoch: resumable
        if stage.depth != len(adapter.get_blocks(model)):
            old_state = state_by_name(optimizer)
            name_map = grow.grow(model, adapter, stage.depth, momentum=ema.module)  # grows the EMA too
            ema.rebuild(model)  # re-pair by parameter name
            optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05)
            carry_state(old_state, optimizer, name_map)  # AdamW moments grown with the weights
        for _ in range(steps_per_epoch):
            x, y = torch.rand(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))  # your data here
            set_lr(optimizer, cosine_lr(step, total, 1e-3, warmup_steps=2))
            loss = F.cross_entropy(model(adapter.prepare_input(x, stage.resolution)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ema.update(model)
            step += 1
        seen.append((stage.resolution, len(adapter.get_blocks(model))))
        print(f"epoch {epoch}: resolution {stage.resolution}, depth {seen[-1][1]}, loss {loss.item():.3f}")
    return seen


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps-per-epoch", type=int, default=5)
    a = p.parse_args()
    main(a.epochs, a.steps_per_epoch)
