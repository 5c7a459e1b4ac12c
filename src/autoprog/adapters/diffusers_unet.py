"""Adapter for text-to-image diffusion models: diffusers' ``UNet2DConditionModel`` + a CLIP text encoder.

Paper Sec. 4.1 and 5.3.2-5.3.3 on Stable Diffusion. What the adapter knows about this model family:

* **The folder** is a diffusers pipeline folder, as Stable Diffusion v1.x is distributed and as
  ``save_pretrained`` writes it: ``unet/``, ``text_encoder/`` (``CLIPTextModel``), ``tokenizer/``,
  optionally ``vae/`` (``AutoencoderKL``: the UNet then works in its latent space; without one it
  works on pixels), ``scheduler/`` and ``model_index.json``. Every part is loaded with its class's
  ``from_pretrained`` (:func:`load_text_to_image_pipeline`) after checks that build nothing
  (:func:`check_text_to_image_folder`).
* **Blocks** for progressive unfreezing (:func:`unet_block_paths`): every ResNet block, transformer
  (cross-attention) block and down/up-sampler of the down, mid and up paths, in the order the
  forward pass runs them, so that level ``k`` of ``L`` (``i % L < k``) interleaves over the whole
  depth as it does for DiT (Sec. 4.1.1). The stem and head (``conv_in``, the timestep embedding,
  ``conv_norm_out``, ``conv_out``) are outside every block and learn at every level.
* **The text encoder** is frozen by default (as in the paper's Stable Diffusion runs); it then lives
  outside the trained module (:class:`TextConditionedUNet`), shared by the EMA copy, and the
  condition passed to the module is its output, computed once per caption, rather than token ids.
* **Unique Stage Identifier** (Sec. 4.1.2): a rare token per stage in the caption. A tokenizer that
  does not hold one as a single token gets it added, with a new embedding row
  (:func:`ensure_single_tokens`), so the stage identifier is a new word of the model's "dictionary".
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprog.errors import ConfigError, DatasetNotFoundError

__all__ = [
    "DEFAULT_SCHEDULER",
    "TextConditionedUNet",
    "TextToImagePipeline",
    "add_difffit_scales_unet",
    "add_lora_unet",
    "build_stand_in_tokenizer",
    "check_text_to_image_folder",
    "create_text_encoder",
    "create_unet",
    "downsample_factor",
    "ensure_single_tokens",
    "export_unet",
    "is_text_to_image_folder",
    "load_text_to_image_pipeline",
    "save_text_to_image_pipeline",
    "unet_block_paths",
]

#: ``_class_name`` of the UNets this adapter fine-tunes.
UNET_CLASS_NAMES: tuple[str, ...] = ("UNet2DConditionModel",)
#: ``model_type`` of the text encoders it reads (``CLIPTextModel``, Stable Diffusion v1.x and v2.x).
TEXT_ENCODER_TYPES: tuple[str, ...] = ("clip_text_model",)
#: Special tokens of the stand-in tokenizer (CLIP's begin / end of text; the end token also pads).
BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<|unk|>"

#: The noise schedule of a pipeline folder without ``scheduler/``: DiT's linear betas, 1000 steps.
DEFAULT_SCHEDULER: dict[str, Any] = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "clip_sample": False,
    "prediction_type": "epsilon",
}


def _require() -> tuple[Any, Any]:
    try:
        import diffusers
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError(
            f"text-to-image fine-tuning needs diffusers and transformers ({e}): pip install 'autoprog[diffusion]'"
        ) from e
    return diffusers, transformers


# ----------------------------------------------------------------------------------------------------
# Creating the stand-in parts (no Stable Diffusion or CLIP weights exist offline).


def create_unet(
    *,
    in_channels: int = 1,
    sample_size: int = 28,
    block_out_channels: Sequence[int] = (32, 64),
    cross_attention_dim: int = 64,
    heads: int = 4,
    layers_per_block: int = 1,
    norm_num_groups: int = 8,
) -> nn.Module:
    """A freshly initialised text-conditional ``UNet2DConditionModel`` (epsilon prediction).

    The first (full-resolution) level is a plain ``DownBlock2D`` / ``UpBlock2D`` and every deeper one
    a cross-attention block (``CrossAttnDownBlock2D`` / ``CrossAttnUpBlock2D``). Stable Diffusion does
    the reverse (attention at every level but the lowest), but on a CPU attention over 28 x 28 = 784
    tokens costs seconds per step, over 14 x 14 a fraction of one.
    """
    diffusers, _ = _require()
    levels = len(block_out_channels)
    if levels < 2:
        raise ConfigError("a text-conditional UNet needs at least 2 levels (block_out_channels)")
    if any(c % heads or c % norm_num_groups for c in block_out_channels):
        raise ConfigError(
            f"block_out_channels {tuple(block_out_channels)} must be multiples of heads ({heads}) and "
            f"norm groups ({norm_num_groups})"
        )
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1)
    up = ("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",)
    return diffusers.UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=tuple(block_out_channels),
        down_block_types=down,
        up_block_types=up,
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=heads,  # diffusers' legacy name: the number of heads
        norm_num_groups=norm_num_groups,
    )


def build_stand_in_tokenizer(words: Sequence[str], max_length: int = 16) -> Any:
    """A word-level tokenizer over ``words`` (``tokenizers``), wrapped for ``transformers``.

    Lower-cases, splits on whitespace and isolates every punctuation character, adds CLIP's
    ``<|startoftext|>`` / ``<|endoftext|>`` around each caption and pads with ``<|endoftext|>``.
    ``save_pretrained(dir)`` writes it so that ``AutoTokenizer.from_pretrained(dir)`` loads it.

    Args:
        words: the vocabulary (e.g. :func:`autoprog.data.captions.stand_in_words`).
        max_length: the longest caption in tokens, special tokens included.
    """
    _, transformers = _require()
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(dict.fromkeys([BOS, EOS, UNK, *words]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=UNK,
        model_max_length=max_length,
    )


def create_text_encoder(tokenizer: Any, *, hidden: int = 64, layers: int = 2, heads: int = 2) -> nn.Module:
    """A freshly initialised ``CLIPTextModel`` for ``tokenizer`` (its vocabulary, length and special ids)."""
    _, transformers = _require()
    config = transformers.CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=int(tokenizer.model_max_length),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return transformers.CLIPTextModel(config)


# ----------------------------------------------------------------------------------------------------
# The pipeline folder.


def is_text_to_image_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like a text-to-image pipeline folder (``unet/`` and ``text_encoder/``)."""
    try:
        p = Path(path)
        return (p / "unet").is_dir() and (p / "text_encoder").is_dir()
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' per-file progress bars off while loading or saving (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is not a readable model config: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} is not a model config (a JSON object)")
    return config


def check_text_to_image_folder(path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` is a text-to-image pipeline folder this adapter can fine-tune; builds nothing.

    Raises:
        DatasetNotFoundError: ``path`` is not a folder.
        ConfigError: a part is missing or of another kind (one line naming it).
    """
    p = Path(path)
    if not p.is_dir():
        raise DatasetNotFoundError(f"no text-to-image pipeline at {path} (not a folder)")
    layout = "expected a diffusers pipeline folder with unet/, text_encoder/, tokenizer/ (and optional vae/, scheduler/)"
    for part in ("unet", "text_encoder", "tokenizer"):
        if not (p / part).is_dir():
            raise ConfigError(f"{path} is not a text-to-image pipeline: no {part}/ ({layout})")
    for part in ("unet", "text_encoder"):
        if not (p / part / "config.json").is_file():
            raise ConfigError(f"{p / part} has no config.json ({layout})")
    unet = _read_config(p / "unet" / "config.json")
    if unet.get("_class_name") not in UNET_CLASS_NAMES:
        raise ConfigError(
            f"{p / 'unet'} holds a {unet.get('_class_name') or 'model without a class name'}, not a "
            f"{' / '.join(UNET_CLASS_NAMES)}"
        )
    if unet.get("addition_embed_type") or unet.get("class_embed_type"):
        raise ConfigError(
            f"{p / 'unet'} takes extra conditions (addition_embed_type / class_embed_type, as SDXL or an "
            "upscaler): autoprog fine-tunes UNets conditioned on text only"
        )
    if unet.get("in_channels", 4) != unet.get("out_channels", 4):
        raise ConfigError(
            f"{p / 'unet'} has {unet.get('in_channels')} input but {unet.get('out_channels')} output channels "
            "(an inpainting or depth UNet?): autoprog fine-tunes plain text-to-image UNets"
        )
    text = _read_config(p / "text_encoder" / "config.json")
    if text.get("model_type") not in TEXT_ENCODER_TYPES:
        raise ConfigError(
            f"{p / 'text_encoder'} is a {text.get('model_type') or 'model without a model_type'}, not a "
            f"CLIP text encoder ({' / '.join(TEXT_ENCODER_TYPES)})"
        )
    cross = unet.get("cross_attention_dim")
    if isinstance(cross, int) and cross != text.get("hidden_size"):
        raise ConfigError(
            f"{path}: the UNet attends to {cross}-d text features but the text encoder's are "
            f"{text.get('hidden_size')}-d"
        )
    if (p / "vae").is_dir():
        vae = _read_config(p / "vae" / "config.json") if (p / "vae" / "config.json").is_file() else {}
        if vae.get("_class_name") != "AutoencoderKL":
            raise ConfigError(f"{p / 'vae'} is not an AutoencoderKL")
        if vae.get("latent_channels") != unet.get("in_channels"):
            raise ConfigError(
                f"{path}: the VAE has {vae.get('latent_channels')} latent channels, the UNet "
                f"{unet.get('in_channels')} input channels"
            )
    for part in ("unet", "text_encoder") + (("vae",) if (p / "vae").is_dir() else ()):
        names = [f.name for f in (p / part).iterdir()]
        if not any(n.endswith((".safetensors", ".bin")) for n in names):
            raise ConfigError(f"{p / part} has a config.json but no weights (.safetensors or .bin)")
    return p


@dataclass
class TextToImagePipeline:
    """The parts of a text-to-image pipeline folder.

    Attributes:
        unet: the ``UNet2DConditionModel``.
        text_encoder: the ``CLIPTextModel``.
        tokenizer: its tokenizer (``AutoTokenizer``).
        vae: the ``AutoencoderKL``, or ``None`` for a pixel-space model.
        scheduler_config: the noise schedule (``scheduler/scheduler_config.json``, or
            :data:`DEFAULT_SCHEDULER`).
        meta: autoprog's notes (``autoprog_t2i.json``: the source recipe, the last stage's token).
    """

    unet: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    vae: nn.Module | None = None
    scheduler_config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SCHEDULER))
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel (8 for Stable Diffusion's VAE; 1 in pixel space)."""
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def image_channels(self) -> int:
        """Channels of the images the model generates (the VAE's, or the UNet's in pixel space)."""
        return int(self.vae.config.in_channels if self.vae is not None else self.unet.config.in_channels)

    @property
    def full_resolution(self) -> int:
        """The image side the pipeline was trained at, in pixels."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor


def load_text_to_image_pipeline(path: str | os.PathLike[str]) -> TextToImagePipeline:
    """Each part's ``from_pretrained`` on a pipeline folder checked by :func:`check_text_to_image_folder`."""
    diffusers, transformers = _require()
    p = check_text_to_image_folder(path)
    from autoprog.adapters.diffusers_dit import from_pretrained_exactly

    try:
        with _quiet_transformers():
            unet = from_pretrained_exactly(diffusers.UNet2DConditionModel, p / "unet")
            text_encoder = from_pretrained_exactly(transformers.CLIPTextModel, p / "text_encoder")
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(p / "tokenizer"))
            vae = from_pretrained_exactly(diffusers.AutoencoderKL, p / "vae") if (p / "vae").is_dir() else None
    except ConfigError:
        raise
    except (OSError, ValueError, TypeError, RuntimeError, KeyError) as e:
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ConfigError(f"cannot load the text-to-image pipeline in {p}: {first}") from e
    scheduler = dict(DEFAULT_SCHEDULER)
    if (p / "scheduler" / "scheduler_config.json").is_file():
        scheduler = _read_config(p / "scheduler" / "scheduler_config.json")
    if scheduler.get("prediction_type", "epsilon") not in ("epsilon", "v_prediction"):
        raise ConfigError(
            f"{p / 'scheduler'}: prediction_type {scheduler.get('prediction_type')!r}; autoprog trains "
            "epsilon or v_prediction models"
        )
    meta = _read_config(p / "autoprog_t2i.json") if (p / "autoprog_t2i.json").is_file() else {}
    if unet.config.sample_size is None or int(unet.config.sample_size) % downsample_factor(unet):
        raise ConfigError(
            f"{p / 'unet'}: sample_size {unet.config.sample_size} is not a multiple of the UNet's "
            f"downsampling factor {downsample_factor(unet)}"
        )
    return TextToImagePipeline(unet, text_encoder, tokenizer, vae, scheduler, meta)


def save_text_to_image_pipeline(pipe: TextToImagePipeline, path: str | os.PathLike[str]) -> None:
    """``save_pretrained`` of every part into a pipeline folder that :func:`load_text_to_image_pipeline`
    (and, with a VAE, diffusers' ``StableDiffusionPipeline``) reads back.

    LoRA adapters are merged and DiffFit scales folded into the saved UNet (:func:`export_unet`).
    """
    diffusers, _ = _require()
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    export_unet(pipe.unet).save_pretrained(str(p / "unet"))
    with _quiet_transformers():
        pipe.text_encoder.save_pretrained(str(p / "text_encoder"))
    pipe.tokenizer.save_pretrained(str(p / "tokenizer"))
    scheduler_class = pipe.scheduler_config.get("_class_name", "DDPMScheduler")
    (p / "scheduler").mkdir(exist_ok=True)
    (p / "scheduler" / "scheduler_config.json").write_text(json.dumps(pipe.scheduler_config, indent=2))
    pipeline_class = "StableDiffusionPipeline" if pipe.vae is not None else "AutoprogPixelTextToImagePipeline"
    index: dict[str, Any] = {
        "_class_name": pipeline_class,
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", type(pipe.text_encoder).__name__],
        "tokenizer": ["transformers", type(pipe.tokenizer).__name__],
        "scheduler": ["diffusers", scheduler_class],
    }
    if pipe.vae is not None:
        pipe.vae.save_pretrained(str(p / "vae"))
        index.update(
            vae=["diffusers", "AutoencoderKL"],
            safety_checker=[None, None],
            feature_extractor=[None, None],
            requires_safety_checker=False,
        )
    (p / "model_index.json").write_text(json.dumps(index, indent=2))
    if pipe.meta:
        (p / "autoprog_t2i.json").write_text(json.dumps(pipe.meta, indent=2))


# ----------------------------------------------------------------------------------------------------
# Structure: blocks, resolution step.


def unet_block_paths(unet: nn.Module, prefix: str = "") -> list[str]:
    """Module paths of the UNet's unfreezable blocks in forward order (Sec. 4.1.1's interleaving).

    Down blocks run ``resnets.j`` then ``attentions.j`` for each layer, then their downsamplers; the
    mid block ``resnets.0`` then ``attentions.j``, ``resnets.{j+1}``; up blocks like down blocks with
    upsamplers. Blocks are read from diffusers' own ``resnets`` / ``attentions`` / ``*samplers``
    lists, never matched by name.

    Args:
        unet: a ``UNet2DConditionModel``.
        prefix: prepended to every path (``"unet."`` inside :class:`TextConditionedUNet`).
    """
    paths: list[str] = []

    def path_block(name: str, block: nn.Module, samplers: str) -> None:
        attentions = getattr(block, "attentions", None) or []
        for j in range(len(block.resnets)):
            paths.append(f"{prefix}{name}.resnets.{j}")
            if j < len(attentions) and attentions[j] is not None:
                paths.append(f"{prefix}{name}.attentions.{j}")
        for k, sampler in enumerate(getattr(block, samplers, None) or []):
            if sampler is not None:
                paths.append(f"{prefix}{name}.{samplers}.{k}")

    for i, block in enumerate(unet.down_blocks):
        path_block(f"down_blocks.{i}", block, "downsamplers")
    mid = unet.mid_block
    if mid is not None:
        paths.append(f"{prefix}mid_block.resnets.0")
        attentions = getattr(mid, "attentions", None) or []
        for j in range(1, len(mid.resnets)):
            if j - 1 < len(attentions) and attentions[j - 1] is not None:
                paths.append(f"{prefix}mid_block.attentions.{j - 1}")
            paths.append(f"{prefix}mid_block.resnets.{j}")
    for i, block in enumerate(unet.up_blocks):
        path_block(f"up_blocks.{i}", block, "upsamplers")
    return paths


def downsample_factor(unet: nn.Module) -> int:
    """How much the UNet shrinks its input: 2 per down block with a downsampler (8 for Stable Diffusion)."""
    return 2 ** sum(1 for b in unet.down_blocks if getattr(b, "downsamplers", None))


# ----------------------------------------------------------------------------------------------------
# Stage tokens.


def _single_token_id(tokenizer: Any, token: str) -> int | None:
    ids = tokenizer(token, add_special_tokens=False).input_ids
    if len(ids) == 1 and ids[0] != tokenizer.unk_token_id:
        return int(ids[0])
    return None


def ensure_single_tokens(tokenizer: Any, text_encoder: nn.Module, tokens: Sequence[str]) -> list[str]:
    """Make every token of ``tokens`` encode to exactly one known id; returns those it had to add.

    A token the tokenizer splits or does not know is added to it (``add_tokens``) and the text
    encoder's embedding table grows by one row per new token. The new row is drawn from a normal
    distribution with the existing rows' per-dimension mean and spread, seeded by the token's text,
    so a token gets the same embedding in every run (and on resume). With the text encoder frozen
    the stage identifiers then are distinct, fixed words the UNet learns to read (Sec. 4.1.2).
    """
    missing = [t for t in dict.fromkeys(tokens) if _single_token_id(tokenizer, t) is None]
    if not missing:
        return []
    tokenizer.add_tokens(missing)
    old = text_encoder.get_input_embeddings().weight.detach().clone()
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    table = text_encoder.get_input_embeddings().weight
    mean, std = old.float().mean(0), old.float().std(0)
    with torch.no_grad():
        for token in missing:
            g = torch.Generator().manual_seed(zlib.crc32(token.encode()))
            row = mean + std * torch.randn(old.shape[1], generator=g)
            table[tokenizer.convert_tokens_to_ids(token)] = row.to(table.dtype)
    for token in missing:  # a tokenizer that ignores add_tokens would leave one unknown
        if _single_token_id(tokenizer, token) is None:  # pragma: no cover
            raise ConfigError(f"the tokenizer cannot hold {token!r} as a single token")
    return missing


# ----------------------------------------------------------------------------------------------------
# The trained module.


class _Shared:
    """Holds a module outside the module tree: not in ``state_dict``, not copied by ``deepcopy`` (the
    EMA copy shares the frozen text encoder instead of duplicating it)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __deepcopy__(self, memo: dict[int, Any]) -> _Shared:
        return self


class TextConditionedUNet(nn.Module):
    """``eps = net(x_t, t, cond)``: a ``UNet2DConditionModel`` reading a text encoder's features.

    ``cond`` is the captions' token ids ``(N, L)`` (the text encoder runs inside, and learns when
    trained), or, for a frozen text encoder, its features ``(N, L, D)`` computed beforehand with
    :meth:`encode` (the text encoder's cost is then paid once per caption, and the zero-shot proxies'
    per-sample gradients see the UNet alone). The loop, the proxies and DDP see plain tensors.

    Args:
        unet: the ``UNet2DConditionModel``.
        text_encoder: the ``CLIPTextModel``; its ``last_hidden_state`` is the UNet's
            ``encoder_hidden_states`` (as in Stable Diffusion).
        train_text_encoder: ``False`` (default, the paper's setting): the encoder is frozen and kept
            outside this module's parameters; ``True``: it is the submodule ``text_encoder`` and learns
            at every unfreezing level.
    """

    def __init__(self, unet: nn.Module, text_encoder: nn.Module, *, train_text_encoder: bool = False) -> None:
        super().__init__()
        self.unet = unet
        self.text_encoder: nn.Module | None = None
        self._frozen: _Shared | None = None
        if train_text_encoder:
            self.text_encoder = text_encoder
        else:
            text_encoder.requires_grad_(False)
            text_encoder.eval()
            self._frozen = _Shared(text_encoder)

    @property
    def encoder(self) -> nn.Module:
        """The text encoder, trained or frozen."""
        if self.text_encoder is not None:
            return self.text_encoder
        assert self._frozen is not None
        return self._frozen.module

    @property
    def frozen_text_encoder(self) -> bool:
        return self.text_encoder is None

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Text features ``(N, L, D)`` (``last_hidden_state``, as Stable Diffusion) of token ids ``(N, L)``;
        without gradients when the encoder is frozen."""
        if self.text_encoder is not None:
            return self.text_encoder(input_ids)[0]
        encoder = self.encoder
        with torch.no_grad():
            return encoder(input_ids.to(next(encoder.parameters()).device))[0].to(input_ids.device)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        features = cond if cond.is_floating_point() else self.encode(cond)
        return self.unet(x, t, encoder_hidden_states=features.to(x.dtype), return_dict=False)[0]


# ----------------------------------------------------------------------------------------------------
# Parameter-efficient baselines and their export.


def _scale_output(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    gamma = module.difffit_gamma
    return output * (gamma.view(-1, 1, 1) if output.ndim == 4 else gamma)


def add_difffit_scales_unet(unet: nn.Module, prefix: str = "") -> list[str]:
    """DiffFit (Xie et al. 2023) on a UNet: a learnable per-channel scale ``gamma`` (init 1) on the
    output of every transformer block's self-attention, cross-attention and MLP, and of every ResNet
    block's residual branch (``conv2``). The scale lives on the layer it multiplies
    (``difffit_gamma``), so :func:`export_unet` folds it into that layer's weights. Returns the names."""
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D

    targets: list[nn.Module] = []
    for m in unet.modules():
        if isinstance(m, BasicTransformerBlock):
            for attn in (m.attn1, m.attn2):
                if attn is not None:
                    targets.append(attn.to_out[0])
            targets.append([layer for layer in m.ff.net if isinstance(layer, nn.Linear)][-1])
        elif isinstance(m, ResnetBlock2D):
            targets.append(m.conv2)
    for layer in targets:
        channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        layer.register_parameter("difffit_gamma", nn.Parameter(torch.ones(channels)))
        layer.register_forward_hook(_scale_output)
    return [prefix + n for n, _ in unet.named_parameters() if n.endswith("difffit_gamma")]


def add_lora_unet(unet: nn.Module, rank: int = 8, prefix: str = "") -> list[str]:
    """LoRA adapters (``peft``) on every attention projection of the UNet (``to_q``, ``to_k``, ``to_v``,
    ``to_out.0``: the layers Stable Diffusion LoRA training adapts). Returns the LoRA parameters' names."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as e:  # pragma: no cover
        raise ConfigError("LoRA needs peft: pip install 'autoprog[diffusion]'") from e
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    inject_adapter_in_model(config, unet)
    return [prefix + n for n, _ in unet.named_parameters() if "lora_" in n]


def export_unet(unet: nn.Module) -> nn.Module:
    """A plain ``UNet2DConditionModel`` computing what ``unet`` computes: LoRA adapters merged into
    their base layers and DiffFit scales folded into the layers they scale (``unet`` is unchanged).
    Returns ``unet`` itself when it has neither."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # pragma: no cover - no peft, hence no LoRA
        BaseTunerLayer = ()  # noqa: N806 - isinstance(m, ()) is always False
    has_lora = any(isinstance(m, BaseTunerLayer) for m in unet.modules())
    scaled = [name for name, m in unet.named_modules() if "difffit_gamma" in m._parameters]
    if not has_lora and not scaled:
        return unet
    work = copy.deepcopy(unet)
    for m in work.modules():
        if isinstance(m, BaseTunerLayer):
            m.merge()
    state = {}
    for key, value in work.state_dict().items():
        if ".lora_" in key:
            continue
        state[key.replace(".base_layer.", ".")] = value
    for name in scaled:
        gamma = state.pop(f"{name}.difffit_gamma")
        w = state[f"{name}.weight"]
        state[f"{name}.weight"] = w * gamma.view(-1, *([1] * (w.ndim - 1)))
        if f"{name}.bias" in state:
            state[f"{name}.bias"] = state[f"{name}.bias"] * gamma
    clean = type(unet).from_config(unet.config)
    clean.load_state_dict(state)
    return clean
