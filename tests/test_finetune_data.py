"""The fine-tuning loop's data stream (autoprog.train.finetune_data.StageBatches): an epoch keeps its
order across a change of resolution, and a checkpointed position continues with the same batches."""

import torch

from autoprog.distributed import DistContext
from autoprog.train.config import FinetuneConfig
from autoprog.train.finetune_data import StageBatches


class Images(torch.utils.data.Dataset):
    """In memory, sample i's pixels all equal i (so a batch names its samples at any size)."""

    def __init__(self, n: int = 20) -> None:
        self.images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 8, 8).contiguous()
        self.targets = torch.arange(n) % 10

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], int(self.targets[i])


def ids(batch) -> list[int]:
    return batch[0][:, 0, 0, 0].tolist()


def test_a_new_resolution_rereads_the_epoch_from_the_same_position():
    cfg = FinetuneConfig(batch_size=4, seed=3)
    plain = StageBatches(Images(), cfg, DistContext())
    order = [ids(plain.next(8)) for _ in range(10)]  # two epochs of 5 batches
    staged = StageBatches(Images(), cfg, DistContext())
    seen = [ids(staged.next(8)) for _ in range(3)] + [ids(staged.next(4)) for _ in range(7)]
    assert seen == order and order[:5] != order[5:]
    assert staged.next(4)[0].shape[-1] == 4 and staged.state_dict() == {"epoch": 2, "batches": 1, "resolution": 4}


def test_a_checkpointed_position_continues_with_the_same_batches():
    cfg = FinetuneConfig(batch_size=4, seed=1)
    first = StageBatches(Images(), cfg, DistContext())
    for _ in range(7):
        first.next(8)
    resumed = StageBatches(Images(), cfg, DistContext())
    resumed.load_state_dict(first.state_dict())
    assert [ids(resumed.next(8)) for _ in range(6)] == [ids(first.next(8)) for _ in range(6)]
