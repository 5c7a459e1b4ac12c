"""Adapter for class-conditional DiT denoisers from diffusers (``DiTTransformer2DModel``).

Paper Sec. 4.1 on diffusers' DiT. What the adapter knows about this model family:

* **Blocks** for progressive unfreezing: ``transformer.transformer_blocks.{i}``.
* **Embedders always learn**: unlike the original DiT, diffusers gives *every* block its own
  timestep + class embedder (``transformer_blocks[i].norm1.emb``), and the final layer reads the
  condition from block 0's. Those per-block embedders learn at every level (reference facts).
* **Classifier-free guidance**: diffusers drops labels inside each block's ``LabelEmbedding``
  independently, so one sample could be conditional in one block and unconditional in the next.
  :class:`DiTDenoiser` turns that off and the training step drops each sample's label once.
* **Unique Stage Identifier** (Sec. 4.1.2): a learnable ``nn.Embedding(num_stages + 1, hidden)``
  (the last row is the null id) added to the class embedding wherever the condition is formed
  (every block). The stage travels with the class label as one index ``label + (C + 1) * stage`` so
  the model keeps diffusers' ``forward(x, t, class_labels)`` signature and parameter names.
* **Resolution** is elastic: diffusers' patch embedding recomputes its sin-cos grid for any
  multiple of the patch size.
* **Pipelines.** A ``DiTPipeline`` folder (``model_index.json``, ``transformer/``, ``vae/``,
  ``scheduler/``: the layout of ``facebook/DiT-XL-2-256``) holds a *latent* DiT; :func:`check_dit_source`
  reads its parts (:class:`DiTSource`) and :func:`save_dit_pipeline` writes a fine-tuned one back so
  that ``DiTPipeline.from_pretrained`` loads it (:func:`export_transformer` folds the method's extras
  into a plain transformer).
* **Learned sigma** (``out_channels = 2 x in_channels``, DiT-XL/2): the second half of the output
  is the variance; :class:`DiTDenoiser` returns the first half (epsilon) unless asked for both.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprog.adapters.diffusers_vae import check_vae_folder, read_config
from autoprog.errors import ConfigError, DatasetNotFoundError

BLOCKS = "transformer.transformer_blocks"

#: The folder layout of a latent DiT, as refusals name it.
DIT_PIPELINE_LAYOUT = (
    "a DiTPipeline folder: model_index.json, transformer/, vae/ (AutoencoderKL), scheduler/, as facebook/DiT-XL-2-256"
)


#: ``_class_name`` values of a diffusers DiT's ``config.json`` (``Transformer2DModel`` in older
#: pipelines such as ``facebook/DiT-XL-2-256``).
DIT_CLASS_NAMES: tuple[str, ...] = ("DiTTransformer2DModel", "Transformer2DModel")


def _require_diffusers():
    try:
        import diffusers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError("diffusion fine-tuning needs diffusers: pip install 'autoprog[diffusion]'") from e
    return diffusers


def create_dit(
    *,
    in_channels: int = 1,
    sample_size: int = 28,
    patch_size: int = 4,
    hidden: int = 128,
    heads: int = 4,
    depth: int = 8,
    num_classes: int = 10,
) -> nn.Module:
    """A freshly initialised diffusers ``DiTTransformer2DModel`` (pixel space, epsilon prediction)."""
    diffusers = _require_diffusers()
    if hidden % heads:
        raise ConfigError(f"hidden size {hidden} is not divisible by {heads} heads")
    if sample_size % patch_size:
        raise ConfigError(f"sample size {sample_size} is not a multiple of the patch size {patch_size}")
    return diffusers.DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=hidden // heads,
        in_channels=in_channels,
        out_channels=in_channels,
        num_layers=depth,
        sample_size=sample_size,
        patch_size=patch_size,
        num_embeds_ada_norm=num_classes,
        norm_num_groups=1,
    )


def check_dit_folder(path: str | os.PathLike[str]) -> Path:
    """The folder ``from_pretrained`` should read for ``path``, after checks that build nothing.

    ``path`` is a diffusers DiT folder (``config.json`` + weights) or a pipeline folder with a
    ``transformer/`` subfolder. The class is checked first: ``from_pretrained`` would build a
    *random* DiT from another model's folder (a UNet's, say) and only log that none of its weights
    were used. An unconditional DiT is refused (fine-tuning needs the class embedder).

    Raises:
        DatasetNotFoundError: no ``config.json`` there.
        ConfigError: not a (class-conditional) diffusers DiT, or no weights file.
    """
    p = Path(path)
    if (p / "transformer" / "config.json").is_file():
        p = p / "transformer"
    if not (p / "config.json").is_file():
        raise DatasetNotFoundError(
            f"no diffusers model at {path} (expected config.json); make the default source with "
            "`autoprog source` or pass a folder saved by save_pretrained"
        )
    try:
        config = json.loads((p / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{p / 'config.json'} is not a readable model config: {e}") from None
    kind = config.get("_class_name") if isinstance(config, dict) else None
    if not isinstance(config, dict) or kind not in (None, *DIT_CLASS_NAMES):
        raise ConfigError(
            f"{path} holds a {kind or 'config without a model class'}, not a diffusers DiT "
            f"({' / '.join(DIT_CLASS_NAMES)}): autoprog unfreezes a DiT's transformer_blocks and "
            "needs its class embedder"
        )
    if "num_embeds_ada_norm" in config and config["num_embeds_ada_norm"] is None:
        raise ConfigError(
            f"{path} is an unconditional DiT (num_embeds_ada_norm is null): autoprog fine-tunes "
            "class-conditional DiTs (it needs the class embedder for classifier-free guidance)"
        )
    if not any(f.name.startswith("diffusion_pytorch_model") for f in p.iterdir()):
        raise ConfigError(
            f"{p} has a config.json but no weights (diffusion_pytorch_model.safetensors or .bin)"
        )
    return p


def from_pretrained_exactly(cls: Any, folder: Path) -> nn.Module:
    """``cls.from_pretrained(folder)`` (a diffusers or transformers model class), refusing a folder
    whose ``config.json`` and weights disagree.

    diffusers leaves the tensors a config describes but the weights lack on the meta device (the run
    then fails at its first ``.to()``: "Cannot copy out of meta tensor") and drops weights the
    config's model has no place for; transformers initialises the missing ones at random. Either
    way the model would not be the folder's.

    Raises:
        ConfigError: naming the folder and the first missing or unused tensor.
    """
    import importlib

    # their warnings about these tensors would be a second message: the error below says it
    loggers = []
    for name in ("diffusers.utils.logging", "transformers.utils.logging"):
        with contextlib.suppress(ImportError):
            loggers.append(importlib.import_module(name))
    levels = [(lib, lib.get_verbosity()) for lib in loggers]
    try:
        for lib, _ in levels:
            lib.set_verbosity_error()
        model, info = cls.from_pretrained(str(folder), output_loading_info=True)
    except ValueError as e:  # diffusers: "Cannot load <path> because <tensor> expected shape ..., but got ..."
        shape = re.search(r"because\s+(\S+ expected shape .*?but got torch\.Size\(\[[^\]]*\]\))", str(e))
        if shape is None:
            raise
        raise ConfigError(f"{folder}: config.json and the weights disagree: {shape.group(1)}") from None
    finally:
        for lib, level in levels:
            lib.set_verbosity(level)
    missing = sorted(info.get("missing_keys") or [])
    unused = sorted(info.get("unexpected_keys") or [])
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) of the model its config describes are not in the weights (e.g. {missing[0]})")
    if unused:
        problems.append(f"{len(unused)} tensor(s) in the weights have no place in that model (e.g. {unused[0]})")
    if problems:
        raise ConfigError(f"{folder}: config.json and the weights disagree: {'; '.join(problems)}")
    return model


def load_dit(path: str | os.PathLike[str]) -> nn.Module:
    """``DiTTransformer2DModel.from_pretrained(path)``: a local diffusers folder (``config.json`` +
    weights), or a pipeline folder with a ``transformer/`` subfolder (as ``facebook/DiT-XL-2-256``),
    checked by :func:`check_dit_folder` first."""
    diffusers = _require_diffusers()
    p = check_dit_folder(path)
    try:
        return from_pretrained_exactly(diffusers.DiTTransformer2DModel, p)
    except ConfigError:
        raise
    except (OSError, ValueError, TypeError, RuntimeError, KeyError) as e:
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ConfigError(f"cannot load the DiT in {p}: {first}") from e


@dataclass(frozen=True)
class DiTSource:
    """The parts of a DiT source folder, read from its files (nothing built).

    Attributes:
        root: the folder given.
        transformer: the folder ``DiTTransformer2DModel.from_pretrained`` reads.
        vae: the ``AutoencoderKL`` folder of a latent DiT, ``None`` in pixel space.
        scheduler_config: ``scheduler/scheduler_config.json``, ``None`` when the folder has none
            (the DiT defaults then: linear betas 1e-4 .. 0.02 over 1,000 steps).
        model_index: the pipeline's ``model_index.json`` (``{}`` without one).
    """

    root: Path
    transformer: Path
    vae: Path | None
    scheduler_config: dict[str, Any] | None
    model_index: dict[str, Any]


def check_dit_source(path: str | os.PathLike[str]) -> DiTSource:
    """:func:`check_dit_folder` plus the pipeline's other parts: a ``vae/`` whose latents the
    transformer takes, a readable ``scheduler/``, and every part ``model_index.json`` lists.

    A transformer with other than 1 or 3 input channels works on latents and needs its VAE. The
    output is epsilon-sized (``out_channels = in_channels``) or learned-sigma (twice that).

    Raises:
        DatasetNotFoundError: no ``config.json`` there.
        ConfigError: a part missing or of another kind (one line naming the layout expected).
    """
    from autoprog.train.diffusion import PREDICTION_TYPES

    p = Path(path)
    index: dict[str, Any] = {}
    if (p / "model_index.json").is_file():
        index = read_config(p / "model_index.json")
        kind = index.get("_class_name")
        if kind not in (None, "DiTPipeline"):
            raise ConfigError(f"{p} holds a {kind} (model_index.json), not a DiTPipeline ({DIT_PIPELINE_LAYOUT})")
        for part in ("transformer", "vae", "scheduler"):
            if part in index and not (p / part).is_dir():
                raise ConfigError(
                    f"{p}/model_index.json lists {part} but {p / part} is missing ({DIT_PIPELINE_LAYOUT})"
                )
    transformer = check_dit_folder(p)
    config = read_config(transformer / "config.json")
    in_channels = int(config.get("in_channels") or 4)
    out_channels = int(config.get("out_channels") or in_channels)
    if out_channels not in (in_channels, 2 * in_channels):
        raise ConfigError(
            f"{transformer}: {in_channels} input but {out_channels} output channels; autoprog trains DiTs "
            "predicting epsilon (out = in) or epsilon and the variance (out = 2 x in, learned sigma)"
        )
    vae = p / "vae" if (p / "vae").is_dir() and transformer != p else None
    if vae is not None:
        vae_config = check_vae_folder(vae)
        if vae_config.get("latent_channels", 4) != in_channels:
            raise ConfigError(
                f"{p}: the VAE has {vae_config.get('latent_channels', 4)} latent channels, the transformer "
                f"{in_channels} input channels"
            )
        if vae_config.get("in_channels", 3) not in (1, 3):
            raise ConfigError(f"{vae}: images of {vae_config.get('in_channels')} channels (autoprog reads 1 or 3)")
    elif in_channels not in (1, 3):
        where = f"{p} is a latent DiT's transformer" if transformer == p else f"{p} holds a latent DiT but no vae/"
        raise ConfigError(
            f"{where} ({in_channels}-channel latents, no VAE to make them): pass the pipeline folder, "
            f"{DIT_PIPELINE_LAYOUT}"
        )
    scheduler = None
    if (p / "scheduler").is_dir() and transformer != p:
        file = p / "scheduler" / "scheduler_config.json"
        if not file.is_file():
            raise ConfigError(f"{p / 'scheduler'} has no scheduler_config.json ({DIT_PIPELINE_LAYOUT})")
        scheduler = read_config(file)
        if scheduler.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
            raise ConfigError(
                f"{file}: prediction_type {scheduler.get('prediction_type')!r}; autoprog trains "
                f"{' or '.join(PREDICTION_TYPES)} models"
            )
        steps = scheduler.get("num_train_timesteps", 1000)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ConfigError(f"{file}: num_train_timesteps must be a positive integer, got {steps!r}")
    return DiTSource(p, transformer, vae, scheduler, index)


class _StageAwareLabelEmbedding(nn.Module):
    """Class swapped onto diffusers' ``LabelEmbedding`` instances when SID is on: decodes the joint
    index, embeds the class with the original table and adds the owner's stage embedding."""

    _owner: DiTDenoiser

    def forward(self, labels: torch.Tensor, force_drop_ids=None) -> torch.Tensor:
        n = self.embedding_table.num_embeddings  # classes + the null class
        cls, sid = labels % n, torch.div(labels, n, rounding_mode="floor")
        return self.embedding_table(cls) + self._owner.stage_embedding(sid)


class DiTDenoiser(nn.Module):
    """``eps = denoiser(x_t, t, labels, stage_ids)`` around a diffusers DiT, with optional SID.

    Args:
        transformer: a ``DiTTransformer2DModel`` (epsilon or v-prediction; a learned-sigma model,
            ``out_channels = 2 x in_channels``, also predicts the variance in its second half).
        num_stages: number of stages for the Unique Stage Identifier, or ``None`` for no SID.
    """

    def __init__(self, transformer: nn.Module, num_stages: int | None = None) -> None:
        super().__init__()
        self.transformer = transformer
        cfg = transformer.config
        self.num_classes = int(cfg.num_embeds_ada_norm)
        self.in_channels = int(cfg.in_channels)
        self.patch_size = int(cfg.patch_size)
        self.sample_size = int(cfg.sample_size)
        self.learned_sigma = int(cfg.out_channels or cfg.in_channels) == 2 * self.in_channels
        hidden = int(cfg.num_attention_heads * cfg.attention_head_dim)
        self.label_embeddings = [m for m in transformer.modules() if type(m).__name__ == "LabelEmbedding"]
        for m in self.label_embeddings:
            if m.embedding_table.num_embeddings != self.num_classes + 1:
                raise ConfigError(
                    "the DiT's class embedder has no null class: it cannot do classifier-free guidance"
                )
            m.dropout_prob = 0.0  # labels are dropped once per sample by the training step
        self.num_stages = num_stages
        self.stage_embedding: nn.Embedding | None = None
        if num_stages is not None:
            self.stage_embedding = nn.Embedding(num_stages + 1, hidden)
            nn.init.normal_(self.stage_embedding.weight, std=0.02)
            for m in self.label_embeddings:
                m.__class__ = type("StageAwareLabelEmbedding", (_StageAwareLabelEmbedding, type(m)), {})
                object.__setattr__(m, "_owner", self)  # not a submodule: no cycle in the module tree

    @property
    def null_class(self) -> int:
        return self.num_classes

    @property
    def null_stage(self) -> int:
        return self.num_stages if self.num_stages is not None else 0

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor,
        stage_ids: torch.Tensor | None = None,
        *,
        variance: bool = False,
    ) -> torch.Tensor:
        """The prediction ``(N, in_channels, h, w)`` (as ``DiTPipeline`` splits a learned-sigma
        output: its first ``in_channels``); ``variance=True`` returns a learned-sigma model's whole
        output ``(N, 2 in_channels, h, w)``, the variance channels second."""
        if self.stage_embedding is not None:
            if stage_ids is None:
                raise ValueError("this denoiser has stage identifiers: pass stage_ids")
            labels = labels + (self.num_classes + 1) * stage_ids
        out = self.transformer(x, t, labels, return_dict=False)[0]
        if variance:
            if not self.learned_sigma:
                raise ValueError("variance=True: this DiT does not predict the variance (out_channels = in_channels)")
            return out
        return out[:, : self.in_channels]

    # -- progressive unfreezing -------------------------------------------------------------------
    def block_paths(self) -> list[str]:
        return [f"{BLOCKS}.{i}" for i in range(len(self.transformer.transformer_blocks))]

    @staticmethod
    def always_learnable(name: str) -> bool:
        """Per-block timestep / class embedders (the original DiT's global embedders) always learn."""
        return name.startswith(BLOCKS + ".") and ".norm1.emb." in name

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """``save_pretrained`` of the transformer, plus ``stage_embedding.pt`` when SID is on.

        LoRA adapters and DiffFit scales are folded into the saved transformer
        (:func:`export_transformer` without the stage embedding, which stays separate), so
        ``from_pretrained`` gives the fine-tuned network and not the base one with its extras dropped."""
        p = Path(path)
        extras = any("difffit_gamma" in m._parameters or ".lora_" in n for n, m in self.transformer.named_modules())
        transformer = export_transformer(self, fold_stage=False) if extras else self.transformer
        transformer.save_pretrained(str(p / "transformer"))
        meta: dict[str, Any] = {"num_stages": self.num_stages}
        if self.stage_embedding is not None:
            torch.save({"weight": self.stage_embedding.weight.detach().cpu()}, p / "stage_embedding.pt")
        (p / "autoprog_denoiser.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DiTDenoiser:
        p = Path(path)
        meta_file = p / "autoprog_denoiser.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {"num_stages": None}
        den = cls(load_dit(p), meta.get("num_stages"))
        if den.stage_embedding is not None:
            state = torch.load(p / "stage_embedding.pt", map_location="cpu", weights_only=True)
            den.stage_embedding.weight.data.copy_(state["weight"])
        return den


def export_transformer(denoiser: DiTDenoiser, stage: int | None = None, *, fold_stage: bool = True) -> nn.Module:
    """A plain ``DiTTransformer2DModel`` computing what ``denoiser`` computes when sampled as the
    evaluation samples it (``denoiser`` is unchanged):

    * LoRA adapters are merged into their base layers;
    * DiffFit scales are folded into the layers whose output they scale (``attn1.to_out.0``, the
      last linear of ``ff``);
    * with SID, the stage embedding of ``stage`` (default: the last stage) is added to every class
      row of each block's label table, and the null stage's to the null-class row, so the
      conditional branch sees ``class + stage`` and the unconditional one ``null + null stage``,
      exactly as :meth:`~autoprog.train.diffusion.GaussianDiffusion.sample` feeds them
      (``fold_stage=False``: left out, for a folder that keeps ``stage_embedding.pt``).
    """
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # pragma: no cover - no peft, hence no LoRA
        BaseTunerLayer = ()  # noqa: N806 - isinstance(m, ()) is always False
    tr = denoiser.transformer
    state = {k.replace(".base_layer.", "."): v.detach().clone() for k, v in tr.state_dict().items() if ".lora_" not in k}
    for name, m in tr.named_modules():
        if isinstance(m, BaseTunerLayer):
            for adapter in m.active_adapters:
                state[f"{name}.weight"] += m.get_delta_weight(adapter).to(state[f"{name}.weight"])
        if "difffit_gamma" in m._parameters:
            gamma = state.pop(f"{name}.difffit_gamma")
            linears = [n for n, sub in m.named_modules() if isinstance(sub, nn.Linear)]
            out = "to_out.0" if name.endswith("attn1") else linears[-1]
            state[f"{name}.{out}.weight"] = state[f"{name}.{out}.weight"] * gamma[:, None]
            if f"{name}.{out}.bias" in state:
                state[f"{name}.{out}.bias"] = state[f"{name}.{out}.bias"] * gamma
    if denoiser.stage_embedding is not None and fold_stage:
        k = denoiser.num_stages - 1 if stage is None else stage  # type: ignore[operator]
        emb = denoiser.stage_embedding.weight.detach()
        for name, m in tr.named_modules():
            if m in denoiser.label_embeddings:
                table = state[f"{name}.embedding_table.weight"]
                table[: denoiser.num_classes] += emb[k]
                table[denoiser.num_classes] += emb[denoiser.null_stage]
    clean = type(tr).from_config(tr.config)
    clean.load_state_dict(state)
    return clean


def save_dit_pipeline(
    path: str | os.PathLike[str],
    transformer: nn.Module,
    vae: nn.Module,
    scheduler_config: dict[str, Any],
    *,
    id2label: dict[int, str] | None = None,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write a folder ``DiTPipeline.from_pretrained`` loads (``model_index.json``, ``transformer/``,
    ``vae/``, ``scheduler/``), with ``id2label`` in ``model_index.json`` as the hub's DiT has it, and
    autoprog's notes ``meta`` in ``autoprog_denoiser.json`` (read by :meth:`DiTDenoiser.load`)."""
    diffusers = _require_diffusers()
    scheduler_class = getattr(diffusers, str(scheduler_config.get("_class_name", "")), None)
    if scheduler_class is None or not hasattr(scheduler_class, "from_config"):
        scheduler_class = diffusers.DDIMScheduler
    config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    scheduler = scheduler_class.from_config(config)
    p = Path(path)
    diffusers.DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler).save_pretrained(str(p))
    if id2label:
        index = json.loads((p / "model_index.json").read_text())
        index["id2label"] = {str(k): v for k, v in id2label.items()}
        (p / "model_index.json").write_text(json.dumps(index, indent=2))
    (p / "autoprog_denoiser.json").write_text(json.dumps({"num_stages": None, **(meta or {})}))


def add_difffit_scales(denoiser: DiTDenoiser) -> list[str]:
    """DiffFit (Xie et al. 2023): a learnable scale ``gamma`` (init 1) on each block's attention and
    MLP branch, applied by forward hooks so the model's own parameter names stay. Returns the names."""
    names = []
    for i, block in enumerate(denoiser.transformer.transformer_blocks):
        dim = block.norm1.linear.in_features
        for branch in ("attn1", "ff"):
            module = getattr(block, branch)
            module.register_parameter("difffit_gamma", nn.Parameter(torch.ones(dim)))
            # The hook reads the scale from the module it runs on, so a copy (the EMA model) uses
            # its own scales, not the original's.
            module.register_forward_hook(_scale_by_difffit_gamma)
            names.append(f"{BLOCKS}.{i}.{branch}.difffit_gamma")
    return names


def _scale_by_difffit_gamma(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    return output * module.difffit_gamma


def add_lora(denoiser: DiTDenoiser, rank: int = 8, alpha: float | None = None) -> list[str]:
    """LoRA adapters (via ``peft``) on every attention projection and MLP linear of the blocks.
    Returns the names of the LoRA parameters."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as e:  # pragma: no cover
        raise ConfigError("LoRA needs peft: pip install 'autoprog[diffusion]'") from e
    targets = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=targets, lora_dropout=0.0)
    inject_adapter_in_model(config, denoiser.transformer)
    return [n for n, _ in denoiser.named_parameters() if "lora_" in n]
