"""CLIP-T and DINO scores of generated images, from model folders on disk (paper Sec. 5.3.2-5.3.3).

* **CLIP-T** (text fidelity, Tab. VII and VIII): the mean cosine similarity between the CLIP image
  embedding of each generated image and the CLIP text embedding of its prompt (raw cosine, so
  values are around 0.2-0.35 for real CLIP models, as the paper reports them).
* **DINO** (subject fidelity, Tab. VIII; Ruiz et al. 2023): the mean cosine similarity between the
  DINO ViT ``[CLS]`` embeddings of every (generated, real) image pair.

Nothing is downloaded: ``model_dir`` is a folder written by ``save_pretrained`` (e.g. of
``openai/clip-vit-large-patch14`` and ``facebook/dino-vits16``). A CLIP folder must hold its
tokenizer. Images are resized (bicubic, antialiased) to the model's input side and normalised with
the folder's ``preprocessor_config.json`` mean / std when it has one (CLIP's or ImageNet's
otherwise); grey images are repeated to RGB.

Example::

    from autoprog.eval.clip_score import clip_t_score, dino_score

    clip_t = clip_t_score(samples, ["a dog"] * len(samples), "/models/clip-vit-large-patch14")
    dino = dino_score(samples, real_images, "/models/dino-vits16")
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from autoprog.errors import ConfigError

__all__ = ["check_score_model", "clip_t_score", "dino_score"]

#: CLIP's normalisation (OpenAI), the default for a CLIP folder without a preprocessor config.
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
#: ImageNet's, the default for a DINO folder without one.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def check_score_model(path: str, kind: str) -> Path:
    """Check that ``path`` is a model folder of ``kind`` (``"clip"`` or ``"dino"``); loads nothing.

    Raises:
        ConfigError: not a folder, no ``config.json``, a model of another type, or (CLIP) no tokenizer.
    """
    option = f"--{kind}-model"
    p = Path(path)
    try:
        exists = p.is_dir()
    except (OSError, ValueError):
        exists = False
    if not exists:
        raise ConfigError(f"{option} {path!r} is not a folder (a model saved with save_pretrained)")
    if not (p / "config.json").is_file():
        raise ConfigError(f"{option} {path!r} has no config.json (a model saved with save_pretrained)")
    try:
        model_type = json.loads((p / "config.json").read_text()).get("model_type")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise ConfigError(f"{option} {path!r}: config.json is not readable ({e})") from None
    want = ("clip",) if kind == "clip" else ("vit", "dinov2")
    if model_type not in want:
        raise ConfigError(f"{option} {path!r} holds a {model_type!r} model, not {' / '.join(want)}")
    if kind == "clip" and not any(
        (p / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")
    ):
        raise ConfigError(
            f"{option} {path!r} has no tokenizer (save the CLIP processor or tokenizer there too)"
        )
    return p


@functools.lru_cache(maxsize=2)
def _load(path: str, kind: str, device: str) -> tuple[Any, Any, tuple[float, ...], tuple[float, ...], int]:
    """The model (eval mode), tokenizer (CLIP), normalisation and input side of a folder, once per process."""
    import transformers

    p = check_score_model(path, kind)
    try:
        if kind == "clip":
            model = transformers.CLIPModel.from_pretrained(path)
            tokenizer = transformers.AutoTokenizer.from_pretrained(path)
            side = int(model.config.vision_config.image_size)
            mean, std = CLIP_MEAN, CLIP_STD
        else:
            model = transformers.AutoModel.from_pretrained(path)
            tokenizer = None
            side = int(model.config.image_size)
            mean, std = IMAGENET_MEAN, IMAGENET_STD
    except (OSError, ValueError, TypeError, RuntimeError, KeyError) as e:
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ConfigError(f"cannot load the {kind.upper()} model in {path}: {first}") from e
    pre = p / "preprocessor_config.json"
    if pre.is_file():
        try:
            config = json.loads(pre.read_text())
            mean, std = tuple(config.get("image_mean", mean)), tuple(config.get("image_std", std))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            pass
    return model.eval().to(device), tokenizer, mean, std, side


def _pixels(images: torch.Tensor, side: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(N, 1|3, H, W)`` -> normalised float ``(N, 3, side, side)``."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be uint8 (N, 1|3, H, W), got {images.dtype} {tuple(images.shape)}")
    x = images.float().div(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def _features(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor in transformers 4 and an output with ``pooler_output`` in 5."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def clip_t_score(
    images: torch.Tensor,
    prompts: Sequence[str],
    model_dir: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
) -> float:
    """CLIP-T: mean cosine similarity of each image's CLIP embedding and its prompt's.

    Args:
        images: uint8 ``(N, 1|3, H, W)``.
        prompts: one prompt per image.
        model_dir: a ``CLIPModel`` folder with its tokenizer.
        device: where CLIP runs.
        batch_size: images per forward pass.

    Raises:
        ValueError: bad images, or not one prompt per image.
        ConfigError: ``model_dir`` is not a CLIP folder.
    """
    if len(prompts) != len(images):
        raise ValueError(f"CLIP-T needs one prompt per image: {len(prompts)} prompts, {len(images)} images")
    model, tokenizer, mean, std, side = _load(str(model_dir), "clip", str(torch.device(device)))
    total = 0.0
    for lo in range(0, len(images), batch_size):
        x = _pixels(images[lo : lo + batch_size], side, mean, std).to(device)
        text = tokenizer(
            list(prompts[lo : lo + batch_size]), padding=True, truncation=True, return_tensors="pt"
        )
        image_emb = F.normalize(_features(model.get_image_features(pixel_values=x)).float(), dim=-1)
        text_emb = _features(
            model.get_text_features(
                input_ids=text.input_ids.to(device), attention_mask=text.attention_mask.to(device)
            )
        )
        total += float((image_emb * F.normalize(text_emb.float(), dim=-1)).sum(-1).sum())
    return total / len(images)


@torch.no_grad()
def dino_score(
    generated: torch.Tensor,
    real: torch.Tensor,
    model_dir: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
) -> float:
    """DINO score: mean cosine similarity of the ``[CLS]`` embeddings over all (generated, real) pairs.

    Args:
        generated: uint8 ``(N, 1|3, H, W)``.
        real: uint8 ``(M, 1|3, H', W')``, the subject's images.
        model_dir: a DINO ViT folder (``ViTModel``, e.g. ``facebook/dino-vits16``).
        device: where the ViT runs.
        batch_size: images per forward pass.
    """
    model, _, mean, std, side = _load(str(model_dir), "dino", str(torch.device(device)))

    def embed(images: torch.Tensor) -> torch.Tensor:
        out = []
        for lo in range(0, len(images), batch_size):
            x = _pixels(images[lo : lo + batch_size], side, mean, std).to(device)
            out.append(model(pixel_values=x).last_hidden_state[:, 0].float())
        return F.normalize(torch.cat(out), dim=-1)

    return float((embed(generated) @ embed(real).T).mean())
