"""Source models the project makes itself (no pretrained weights can be downloaded here).

``autoprog source`` pre-trains a small class-conditional DiT (diffusers ``DiTTransformer2DModel``)
in pixel space on Fashion-MNIST with a versioned recipe, and caches it as a diffusers folder under
``$AUTOPROG_CACHE`` (default ``~/.cache/autoprog``) ``/sources/<name>-v<version>-<hash>/``. Fine-tuning
then loads it with ``from_pretrained(folder)``, exactly as a user loads ``facebook/DiT-XL-2-256``.
The ``t2i-*`` sources (recipe ``"kind": "text-to-image"``) are Stable Diffusion stand-ins: a pipeline
folder with a text-conditional UNet, a CLIP text encoder and its tokenizer, trained on captions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from autoprog.errors import ConfigError

#: ``--model timm:NAME``: a timm architecture by name (its weights from ``--weights``).
TIMM_PREFIX = "timm:"

#: Versioned recipes. Change a recipe's values => its hash (and folder) changes; bump ``version``
#: when the training code changes in a way that alters the weights.
SOURCE_RECIPES: dict[str, dict[str, Any]] = {
    "dit-fmnist": {
        "version": 1, "data": "fashion-mnist", "hidden": 128, "heads": 4, "depth": 8, "patch_size": 4,
        "steps": 1500, "batch_size": 64, "lr": 3e-4, "ema_decay": 0.999, "cfg_dropout": 0.1, "seed": 0,
    },
    # A tiny source for tests and smoke runs: seconds to make.
    "dit-tiny": {
        "version": 1, "data": "fashion-mnist", "hidden": 32, "heads": 2, "depth": 4, "patch_size": 4,
        "steps": 4, "batch_size": 8, "lr": 3e-4, "ema_decay": 0.0, "cfg_dropout": 0.1, "seed": 0,
    },
    # Text-to-image stand-ins for Stable Diffusion (paper Sec. 5.3.2): a UNet2DConditionModel in pixel
    # space and a CLIPTextModel with a word-level tokenizer, trained together on captions "a [class]".
    "t2i-fmnist": {
        "kind": "text-to-image", "version": 1, "data": "fashion-mnist", "block_out_channels": [32, 64],
        "heads": 4, "layers_per_block": 1, "text_hidden": 64, "text_layers": 2, "text_heads": 2,
        "max_tokens": 16, "steps": 600, "batch_size": 64, "lr": 3e-4, "ema_decay": 0.999, "cfg_dropout": 0.1,
        "seed": 0,
    },
    "t2i-tiny": {
        "kind": "text-to-image", "version": 1, "data": "fashion-mnist", "block_out_channels": [16, 32],
        "heads": 2, "layers_per_block": 1, "text_hidden": 32, "text_layers": 1, "text_heads": 2,
        "max_tokens": 16, "steps": 4, "batch_size": 8, "lr": 3e-4, "ema_decay": 0.0, "cfg_dropout": 0.1,
        "seed": 0,
    },
}  # fmt: skip


def cache_root() -> Path:
    return Path(os.environ.get("AUTOPROG_CACHE") or Path.home() / ".cache" / "autoprog")


def source_dir(name: str, recipe: dict[str, Any] | None = None) -> Path:
    recipe = recipe or SOURCE_RECIPES[name]
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:8]
    return cache_root() / "sources" / f"{name}-v{recipe['version']}-{digest}"


def _print(message: str) -> None:
    print(message, flush=True)


def resolve_model(spec: str, *, data_dir: str | None = None, log: Callable[[str], None] = _print) -> Path:
    """A model folder for ``--model``: a built-in source name (made and cached on first use) or a path.

    ``timm:NAME`` is no folder: it comes back as ``Path(spec)`` for the classifier task, which
    reads the weights from ``--weights``."""
    if spec in SOURCE_RECIPES:
        return make_source(spec, data_dir=data_dir, log=log)
    if str(spec).startswith(TIMM_PREFIX):
        return Path(spec)
    path = Path(spec)
    if not path.exists():
        raise ConfigError(
            f"--model {spec!r} is neither a folder nor a built-in source ({', '.join(SOURCE_RECIPES)})"
        )
    return path


def make_source(
    name: str,
    *,
    out: str | os.PathLike[str] | None = None,
    data_dir: str | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = _print,
) -> Path:
    """Pre-train the source ``name`` (or return the cached one) and return its folder."""
    from autoprog.adapters.diffusers_dit import DiTDenoiser, create_dit
    from autoprog.data import load_dataset
    from autoprog.ema import ModelEma
    from autoprog.train.diffusion import Condition, GaussianDiffusion

    if name not in SOURCE_RECIPES:
        raise ConfigError(f"unknown source {name!r}; choose from {', '.join(SOURCE_RECIPES)}")
    r = SOURCE_RECIPES[name]
    folder = Path(out) if out is not None else source_dir(name)
    if (folder / "recipe.json").is_file() and not overwrite:
        return folder
    if r.get("kind") == "text-to-image":
        return _make_text_to_image_source(name, r, folder, data_dir=data_dir, log=log)
    data = load_dataset(r["data"], "train", data_dir=data_dir)
    images, targets = data.images, data.targets  # type: ignore[attr-defined]
    info = data.info
    torch.manual_seed(r["seed"])
    g = torch.Generator().manual_seed(r["seed"])
    transformer = create_dit(
        in_channels=info.in_chans, sample_size=info.image_size, patch_size=r["patch_size"], hidden=r["hidden"],
        heads=r["heads"], depth=r["depth"], num_classes=info.num_classes,
    )  # fmt: skip
    model = DiTDenoiser(transformer)
    ema = ModelEma(model, r["ema_decay"]) if r["ema_decay"] > 0 else None
    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=0.0)
    diffusion = GaussianDiffusion()
    log(
        f"autoprog source {name}: DiT depth {r['depth']} width {r['hidden']} on {r['data']}, {r['steps']} steps"
    )
    final_loss, seconds = _train_source(
        model, ema, opt, images, targets, r, model.null_class,
        lambda x0, y: diffusion.loss(model, x0, Condition(y), generator=g), g, log,
    )  # fmt: skip
    final = ema.module if ema is not None else model
    recipe = {"name": name, **r, "final_loss": final_loss, "train_seconds": seconds, "classes": list(info.classes)}
    return _save_source(folder, final.save, recipe, log)  # type: ignore[arg-type]


def _train_source(
    model: torch.nn.Module,
    ema: Any,
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    targets: torch.Tensor,
    r: dict[str, Any],
    null_label: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    g: torch.Generator,
    log: Callable[[str], None],
) -> tuple[float, float]:
    """The recipe's pre-training loop: random batches of ``images`` in [-1, 1], each label dropped
    to ``null_label`` with probability ``cfg_dropout`` (classifier-free guidance), ``loss_fn(x0, y)``,
    AdamW, EMA with warm-up. Returns the mean loss of the last 50 steps and the seconds taken."""
    from autoprog.train.diffusion import from_uint8

    t0, losses = time.perf_counter(), []
    model.train()
    for step in range(r["steps"]):
        idx = torch.randint(0, len(images), (r["batch_size"],), generator=g)
        x0, y = from_uint8(images[idx]), targets[idx].clone()
        y[torch.rand(len(y), generator=g) < r["cfg_dropout"]] = null_label
        loss = loss_fn(x0, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update(model, decay=min(r["ema_decay"], (1 + step) / (10 + step)))
        losses.append(loss.item())
        if (step + 1) % max(1, r["steps"] // 10) == 0:
            log(
                f"  step {step + 1}/{r['steps']} loss {sum(losses[-50:]) / len(losses[-50:]):.4f} ({time.perf_counter() - t0:.0f}s)"
            )
    return sum(losses[-50:]) / len(losses[-50:]), time.perf_counter() - t0


def _save_source(
    folder: Path, save: Callable[[Path], None], recipe: dict[str, Any], log: Callable[[str], None]
) -> Path:
    """Write the source with ``save(tmp)`` and ``recipe.json`` into a temporary folder, then move it
    into place, so an interrupted run never leaves a half-written cache folder."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save(tmp)
    (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    log(f"  source saved to {folder}")
    return folder


def _make_text_to_image_source(
    name: str, r: dict[str, Any], folder: Path, *, data_dir: str | None, log: Callable[[str], None]
) -> Path:
    """Pre-train a text-to-image stand-in and save it as a pipeline folder (``unet/``,
    ``text_encoder/``, ``tokenizer/``, ``scheduler/``, ``model_index.json``).

    The tokenizer's vocabulary covers the captions of Fashion-MNIST, MNIST and CIFAR-10 (``"a
    [class]"``), the SID tokens and DreamBooth's identifier (:func:`autoprog.data.captions.stand_in_words`);
    the UNet and the text encoder learn together from the training data's captions, each dropped to
    the empty caption with probability ``cfg_dropout`` (classifier-free guidance).
    """
    from diffusers import DDPMScheduler

    from autoprog.adapters.diffusers_unet import (
        DEFAULT_SCHEDULER,
        TextConditionedUNet,
        TextToImagePipeline,
        build_stand_in_tokenizer,
        create_text_encoder,
        create_unet,
        save_text_to_image_pipeline,
    )
    from autoprog.data import load_dataset
    from autoprog.data.captions import caption, stand_in_words
    from autoprog.data.datasets import CIFAR10_CLASSES, FASHION_MNIST_CLASSES
    from autoprog.ema import ModelEma
    from autoprog.tasks.text_to_image import caption_ids, denoising_loss

    data = load_dataset(r["data"], "train", data_dir=data_dir)
    images, targets = data.images, data.targets  # type: ignore[attr-defined]
    info = data.info
    torch.manual_seed(r["seed"])
    g = torch.Generator().manual_seed(r["seed"])
    digits = [str(d) for d in range(10)]
    words = stand_in_words([FASHION_MNIST_CLASSES, digits, CIFAR10_CLASSES, info.classes])
    tokenizer = build_stand_in_tokenizer(words, r["max_tokens"])
    unet = create_unet(
        in_channels=info.in_chans, sample_size=info.image_size, block_out_channels=r["block_out_channels"],
        cross_attention_dim=r["text_hidden"], heads=r["heads"], layers_per_block=r["layers_per_block"],
    )  # fmt: skip
    text_encoder = create_text_encoder(
        tokenizer, hidden=r["text_hidden"], layers=r["text_layers"], heads=r["text_heads"]
    )
    model = TextConditionedUNet(unet, text_encoder, train_text_encoder=True)
    scheduler = DDPMScheduler.from_config(DEFAULT_SCHEDULER)
    ema = ModelEma(model, r["ema_decay"]) if r["ema_decay"] > 0 else None
    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=0.0)
    # Captions "a [class]" of every class, then the empty caption (index = number of classes).
    class_ids = caption_ids(tokenizer, [caption(c, None) for c in info.classes] + [""])
    null = len(info.classes)
    log(
        f"autoprog source {name}: UNet {tuple(r['block_out_channels'])} + CLIP text encoder "
        f"{r['text_layers']}x{r['text_hidden']} on {r['data']} captions, {r['steps']} steps"
    )
    final_loss, seconds = _train_source(
        model, ema, opt, images, targets, r, null,
        lambda x0, y: denoising_loss(model, x0, class_ids[y], scheduler, g), g, log,
    )  # fmt: skip
    final = ema.module if ema is not None else model
    pipe = TextToImagePipeline(
        final.unet, final.encoder, tokenizer, None, dict(DEFAULT_SCHEDULER), {"source": name}
    )
    recipe = {"name": name, **r, "final_loss": final_loss, "train_seconds": seconds,
              "classes": list(info.classes), "vocabulary": words}  # fmt: skip
    return _save_source(folder, lambda tmp: save_text_to_image_pipeline(pipe, tmp), recipe, log)
