"""Transfer fine-tuning of a pre-trained classifier as a :class:`~autoprog.tasks.base.FinetuneTask`
(paper Sec. 5.2.2 for the transfer setting, Sec. 4 for progressive unfreezing and AutoProg-Zero).

The source is the folder of an ``autoprog pretrain`` run (``summary.json`` + ``model.pt``), or of a
fine-tuning run of this task (same files). The network is rebuilt with the run's adapter (a timm
ViT/DeiT: the blocks ``blocks.{i}`` unfreeze; patch embedding, position embedding, class token,
final norm and head lie outside the blocks and always learn), its weights loaded, and the head
replaced for the target's classes. The objective is cross-entropy; the NTK of the zero-shot search is
taken on the logits (Eq. 12-16) and ZiCo on the cross-entropy's gradients (Eq. 17). A classifier has
no Unique Stage Identifier (the paper uses SID for diffusion models only). The evaluation is top-1 on
the target data's test split at full resolution.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoprog.adapters.base import ModelAdapter, check_model_name, create_adapter
from autoprog.data.datasets import DatasetInfo
from autoprog.errors import ConfigError

if TYPE_CHECKING:
    from autoprog.train.config import FinetuneConfig


def check_pretrain_run(path: str | Path) -> dict[str, Any]:
    """The ``summary.json`` of the run folder ``path``, after checks that build nothing.

    Raises:
        ConfigError: no readable ``summary.json``/``model.pt``, or a model this task cannot rebuild.
    """
    p = Path(path)
    try:
        summary = json.loads((p / "summary.json").read_text())
        cfg = summary["config"]
        model, depth, resolution = cfg["model"], int(summary["full_depth"]), int(summary["full_resolution"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"--model {str(p)!r}: not an `autoprog pretrain` run folder ({e})") from None
    if not (p / "model.pt").is_file():
        raise ConfigError(f"--model {str(p)!r}: the run has no model.pt (it did not finish)")
    check_model_name(model)
    if model.startswith("resnet"):
        raise ConfigError(
            f"--model {str(p)!r}: transfer fine-tuning supports timm ViT/DeiT runs, not {model}"
        )
    if depth < 1 or resolution < 1:
        raise ConfigError(f"--model {str(p)!r}: the run's summary has depth {depth}, resolution {resolution}")
    return summary


class ClassifierTask:
    """Fine-tuning a classifier pre-trained by ``autoprog pretrain`` on new data (see the module docstring).

    Args:
        run_dir: the source run folder.
        cfg: the fine-tuning run's configuration (data, seed).
        num_stages: unused (a classifier has no stage identifier); kept for the factory signature.
        device: where the model and the probe tensors live.
    """

    metric = "top1"
    default_lr = 1e-4
    stage_identifiers = False

    def __init__(self, run_dir: Path, cfg: FinetuneConfig, *, num_stages: int, device: torch.device) -> None:
        summary = check_pretrain_run(run_dir)
        src = summary["config"]
        self.cfg = cfg
        self.device = device
        state = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
        if "head.weight" not in state or "patch_embed.proj.weight" not in state:
            raise ConfigError(f"--model {str(run_dir)!r}: model.pt is not a timm ViT classifier's state")
        self.source_classes = int(state["head.weight"].shape[0])
        self.in_chans = int(state["patch_embed.proj.weight"].shape[1])
        self.adapter: ModelAdapter = create_adapter(
            src["model"],
            img_size=int(summary["full_resolution"]),
            in_chans=self.in_chans,
            num_classes=self.source_classes,
            patch_size=src.get("patch_size"),
            depth=int(summary["full_depth"]),
        )
        self.model = self.adapter.create_model()
        try:
            self.model.load_state_dict(state)
        except RuntimeError as e:
            lines = str(e).splitlines()
            first = lines[1].strip() if len(lines) > 1 else str(e)
            raise ConfigError(
                f"--model {str(run_dir)!r}: model.pt does not fit a fresh {src['model']} of depth "
                f"{summary['full_depth']} ({first}); runs grown with --operator identity keep ReZero gates "
                "and cannot be transferred yet"
            ) from None
        self.full_resolution = int(summary["full_resolution"])
        self.channels = self.in_chans
        self.patch_size = self.adapter.resolution_step
        self.block_paths = [f"blocks.{i}" for i in range(len(self.adapter.get_blocks(self.model)))]
        self.mean = torch.zeros(1, self.channels, 1, 1, device=device)
        self.std = torch.ones(1, self.channels, 1, 1, device=device)
        self.num_classes = self.source_classes

    def bind_data(self, info: DatasetInfo) -> None:
        """Normalise with the target data's statistics and give the model a new head for its
        classes (seeded by the run's seed: the target's classes are new even when as many)."""
        if info.in_chans != self.channels:
            raise ConfigError(f"{info.name} has {info.in_chans} channels, the source model {self.channels}")
        self.mean = torch.tensor(info.mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(info.std, device=self.device).view(1, -1, 1, 1)
        self.num_classes = info.num_classes
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            self.model.reset_classifier(info.num_classes)  # type: ignore[operator]
        self.model.to(self.device)

    def always_learnable(self, name: str) -> bool:
        return False  # everything outside the blocks learns anyway (embeddings, norm, head)

    def method_parameters(self, method: str, lora_rank: int) -> Callable[[str], bool] | None:
        if method == "bitfit":
            return lambda n: n.endswith(".bias") or n.startswith("head.")
        if method in ("difffit", "lora"):
            raise ConfigError(
                f"--method {method} is implemented for diffusion models only; use bitfit or full here"
            )
        return None

    def _inputs(self, images: Tensor, resolution: int) -> Tensor:
        x = self.adapter.prepare_input(images.to(self.device).float(), resolution)
        return (x / 255.0 - self.mean) / self.std

    def loss(
        self,
        net: nn.Module,
        images: Tensor,
        labels: Tensor,
        resolution: int,
        stage_id: int | None,
        generator: torch.Generator,
    ) -> Tensor:
        logits = net(self._inputs(images, resolution))
        return F.cross_entropy(logits.float(), labels.to(self.device))

    def probe(
        self, images: Tensor, labels: Tensor, resolution: int, stage_id: int | None, seed: int
    ) -> tuple[Tensor, ...]:
        """``(x, labels)``: normalised probe images at ``resolution`` (nothing random)."""
        return self._inputs(images, resolution), labels.to(self.device)

    def output(self, model: nn.Module, *inputs: Tensor) -> Tensor:
        return model(inputs[0])

    def probe_loss(self, model: nn.Module, probe: tuple[Tensor, ...]) -> Tensor:
        return F.cross_entropy(model(probe[0]), probe[-1])

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, out: Path, stage_id: int | None, log: Callable[[str], None]
    ) -> dict[str, Any]:
        """Top-1 (percent) on the target data's test split at full resolution."""
        from autoprog.data import load_dataset
        from autoprog.train.loader import BatchSource

        test = load_dataset(
            self.cfg.data,
            "test",
            data_dir=self.cfg.data_dir,
            image_size=self.full_resolution,
            in_chans=self.channels,
        )
        was_training = model.training
        model.eval()
        correct = total = 0
        for x, y in BatchSource(test, 256, shuffle=False, drop_last=False).epoch(0, self.full_resolution):
            correct += int((model(self._inputs(x, self.full_resolution)).argmax(-1).cpu() == y).sum())
            total += len(y)
        model.train(was_training)
        top1 = 100.0 * correct / max(1, total)
        log(f"  top-1 {top1:.2f}% on {total} {self.cfg.data} test images")
        return {"top1": top1, "test_samples": total}

    def save(self, model: nn.Module, path: Path) -> None:
        """``model.pt`` + ``summary.json``: the folder is itself a source for this task."""
        path.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path / "model.pt")
        cfg = {"model": self.adapter.model_name, "patch_size": self.patch_size}  # type: ignore[attr-defined]
        meta = {
            "config": cfg,
            "full_depth": len(self.block_paths),
            "full_resolution": self.full_resolution,
            "num_classes": self.num_classes,
            "in_chans": self.channels,
        }
        (path / "summary.json").write_text(json.dumps(meta, indent=2))


def create_classifier_task(
    run_dir: Path, cfg: FinetuneConfig, *, num_stages: int, device: torch.device
) -> ClassifierTask:
    """The transfer fine-tuning task of an ``autoprog pretrain`` run folder (see :class:`ClassifierTask`)."""
    return ClassifierTask(run_dir, cfg, num_stages=num_stages, device=device)


__all__ = ["ClassifierTask", "check_pretrain_run", "create_classifier_task"]
