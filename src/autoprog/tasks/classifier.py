"""Transfer fine-tuning of a pre-trained classifier as a :class:`~autoprog.tasks.base.FinetuneTask`
(paper Sec. 5.2.2 for the transfer setting, Sec. 4 for progressive unfreezing and AutoProg-Zero).

A source (:class:`ClassifierSource`) is one of three layouts:

* ``pretrain-run``: the folder of an ``autoprog pretrain`` run (``summary.json`` + ``model.pt``), or
  of a fine-tuning run of such a source (same files);
* ``timm-folder``: a timm hub folder, ``config.json`` (``architecture``, ``num_classes``,
  ``pretrained_cfg``, and ``model_args`` in recent timm) with ``model.safetensors`` or
  ``pytorch_model.bin``, as ``timm.models.save_for_hf`` / ``push_to_hf_hub`` write it;
* ``timm-name``: ``--model timm:NAME --weights FILE``, a timm ViT architecture name and a state-dict
  file (``.safetensors``, ``.bin``, ``.pth``); patch size, depth, input channels, classes and the
  trained resolution are read from the weights' shapes, the rest is the name's.

The network is rebuilt as a timm ViT/DeiT (the blocks ``blocks.{i}`` unfreeze; patch embedding,
position embedding, class token, final norm and head lie outside the blocks and always learn) at
the fine-tuning resolution (``--img-size``, default: the source's), the absolute position
embedding resampled bicubically to that patch grid on load, every other weight loaded as it is,
and the head replaced for the target's classes. Inputs are normalised with a timm folder's
``pretrained_cfg`` mean and std, otherwise with the target data's. The objective is cross-entropy; the NTK of the zero-shot search is
taken on the logits (Eq. 12-16) and ZiCo on the cross-entropy's gradients (Eq. 17). A classifier has
no Unique Stage Identifier (the paper uses SID for diffusion models only). The evaluation is top-1 on
the target data's test split at full resolution.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoprog.adapters.base import ModelAdapter, check_model_name, create_adapter
from autoprog.adapters.timm_vit import VIT_PREFIXES
from autoprog.data.datasets import DatasetInfo
from autoprog.errors import ConfigError
from autoprog.train.source import TIMM_PREFIX

if TYPE_CHECKING:
    from autoprog.train.config import FinetuneConfig

#: Weights files of a timm hub folder, in timm's order of preference.
TIMM_WEIGHTS: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
#: The layout of a timm hub folder, as refusals name it.
TIMM_FOLDER_LAYOUT = (
    "a timm folder: config.json with architecture (+ num_classes, pretrained_cfg) and model.safetensors or "
    "pytorch_model.bin, as timm's save_for_hf / push_to_hf_hub write it"
)
#: create_model arguments the task sets itself (the rest of a folder's ``model_args`` pass through).
_OWN_ARGS = frozenset({"img_size", "in_chans", "num_classes", "patch_size", "depth", "dynamic_img_size",
                       "drop_path_rate", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay"})  # fmt: skip


@dataclass(frozen=True)
class ClassifierSource:
    """Where a classifier to fine-tune comes from, read from its files (the weights not loaded).

    Attributes:
        layout: ``pretrain-run``, ``timm-folder`` or ``timm-name`` (see the module docstring).
        spec: the ``--model`` value.
        architecture: the timm model name.
        weights: the state-dict file.
        model_args: ``create_model`` arguments the source declares (``img_size``, ``patch_size``,
            ``depth``, ...); the others are read from the weights' shapes.
        mean, std: the source's input normalisation (a timm folder's ``pretrained_cfg``), ``None``:
            the target data's.
    """

    layout: Literal["pretrain-run", "timm-folder", "timm-name"]
    spec: str
    architecture: str
    weights: Path
    model_args: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def is_timm_name(spec: str | Path) -> bool:
    """Whether ``--model`` names a timm architecture (``timm:NAME``) rather than a folder."""
    return str(spec).startswith(TIMM_PREFIX)


def classifier_layout(path: str | Path) -> str | None:
    """``pretrain-run``, ``timm-folder``, ``timm-name`` or ``None``, from the files alone (a timm
    folder's ``config.json`` names an ``architecture`` and, unlike a diffusers one, no ``_class_name``)."""
    if is_timm_name(path):
        return "timm-name"
    p = Path(path)
    if (p / "summary.json").is_file() and (p / "model.pt").is_file():
        return "pretrain-run"
    if (p / "config.json").is_file():
        try:
            config = json.loads((p / "config.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if isinstance(config, dict) and "architecture" in config and "_class_name" not in config:
            return "timm-folder"
    return None


def _check_vit_name(name: Any, where: str) -> str:
    """``name`` if it is a timm ViT/DeiT this task can rebuild, else a one-line ConfigError."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: no timm architecture name ({TIMM_FOLDER_LAYOUT})")
    if not name.startswith(VIT_PREFIXES):
        raise ConfigError(
            f"{where}: timm {name!r} is not a Vision Transformer; autoprog fine-tunes timm ViT/DeiT "
            f"classifiers ({', '.join(p + '*' for p in VIT_PREFIXES)}: blocks + position embedding)"
        )
    check_model_name(name)
    return name


def _square_size(value: Any, where: str) -> int | None:
    """An ``img_size`` (int or ``[h, w]``) as one side; ``None`` when absent."""
    if value is None:
        return None
    sizes = list(value) if isinstance(value, list | tuple) else [value, value]
    if len(sizes) != 2 or sizes[0] != sizes[1] or not isinstance(sizes[0], int) or sizes[0] < 1:
        raise ConfigError(f"{where}: input size {value!r}; autoprog fine-tunes square inputs")
    return int(sizes[0])


def read_classifier_source(spec: str | Path, weights_file: str | None = None) -> ClassifierSource:
    """The :class:`ClassifierSource` of ``--model spec`` (and ``--weights``), after checks that
    build nothing and read no weights.

    Raises:
        ConfigError: not one of the three layouts, a layout's file missing, an architecture that
            is not a timm ViT, ``--weights`` without ``timm:NAME`` or the other way round.
    """
    text = str(spec)
    if is_timm_name(text):
        name = _check_vit_name(text[len(TIMM_PREFIX) :], f"--model {text}")
        if weights_file is None:
            raise ConfigError(
                f"--model {text} needs the weights: add --weights FILE (a state dict: .safetensors, .bin or .pth)"
            )
        try:
            found = bool(weights_file.strip()) and Path(weights_file).is_file()
        except (OSError, ValueError):  # e.g. a NUL byte or a name too long for the file system
            found = False
        if not found:
            raise ConfigError(f"--weights {weights_file!r}: no such file")
        return ClassifierSource("timm-name", text, name, Path(weights_file))
    if weights_file is not None:
        raise ConfigError(
            f"--weights goes with --model timm:NAME; {text} is a folder that holds its own weights"
        )
    p = Path(text)
    layout = classifier_layout(p)
    if layout == "pretrain-run":
        summary = check_pretrain_run(p)
        args = {"img_size": int(summary["full_resolution"]), "patch_size": summary["config"].get("patch_size"),
                "depth": int(summary["full_depth"]), "embed_dim": summary["config"].get("embed_dim"),
                "num_heads": summary["config"].get("num_heads")}  # fmt: skip
        return ClassifierSource("pretrain-run", text, summary["config"]["model"], p / "model.pt", args)
    if layout != "timm-folder":
        raise ConfigError(f"--model {text!r} is not a classifier source: expected {TIMM_FOLDER_LAYOUT}")
    config = json.loads((p / "config.json").read_text())
    where = f"--model {text!r}"
    name = _check_vit_name(config.get("architecture"), where)
    weights = next((p / w for w in TIMM_WEIGHTS if (p / w).is_file()), None)
    if weights is None:
        raise ConfigError(f"{where}: config.json but no {' or '.join(TIMM_WEIGHTS)} ({TIMM_FOLDER_LAYOUT})")
    pretrained = config.get("pretrained_cfg") if isinstance(config.get("pretrained_cfg"), dict) else {}
    args = dict(config["model_args"]) if isinstance(config.get("model_args"), dict) else {}
    size = _square_size(args.get("img_size"), where)
    if size is None and isinstance(pretrained.get("input_size"), list | tuple) and len(pretrained["input_size"]) == 3:
        size = _square_size(list(pretrained["input_size"][1:]), where)
    if size is not None:
        args["img_size"] = size
    mean, std = pretrained.get("mean"), pretrained.get("std")
    ok = all(isinstance(v, list | tuple) and all(isinstance(x, int | float) for x in v) for v in (mean, std))
    return ClassifierSource(
        "timm-folder", text, name, weights, args,
        tuple(float(x) for x in mean) if ok else None, tuple(float(x) for x in std) if ok else None,  # type: ignore[union-attr]
    )  # fmt: skip


def load_state_file(path: Path) -> dict[str, Tensor]:
    """The state dict in ``path``: safetensors, or a torch file loaded with ``weights_only=True``
    (a training checkpoint's ``state_dict_ema`` / ``state_dict`` / ``model`` entry, a ``module.``
    prefix of DDP removed).

    Raises:
        ConfigError: unreadable, or not a mapping of names to tensors.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors, pickle and torch each raise their own types
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ConfigError(f"cannot read the weights in {path}: {first[:200]}") from None
    if isinstance(state, dict):
        for key in ("state_dict_ema", "state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise ConfigError(f"{path} is not a state dict (a mapping of parameter names to tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def vit_args_of_state(state: dict[str, Tensor]) -> dict[str, int]:
    """``patch_size``, ``depth``, ``in_chans``, ``num_classes`` (0: no head) and ``img_size`` (the
    trained resolution: the position embedding's grid times the patch) of a timm ViT state dict;
    ``{}`` when it is not one."""
    proj = state.get("patch_embed.proj.weight")
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    if proj is None or proj.ndim != 4 or not blocks:
        return {}
    args = {"patch_size": int(proj.shape[-1]), "depth": max(blocks) + 1, "in_chans": int(proj.shape[1]),
            "num_classes": int(state["head.weight"].shape[0]) if "head.weight" in state else 0}  # fmt: skip
    if "pos_embed" in state:
        tokens = int(state["pos_embed"].shape[1])
        prefix = int("cls_token" in state) + int("dist_token" in state)
        prefix += int(state["reg_token"].shape[1]) if "reg_token" in state else 0
        side = math.isqrt(max(0, tokens - prefix))
        if side * side != tokens - prefix:
            side = math.isqrt(tokens)  # no_embed_class: the embedding covers the patches only
        args["img_size"] = side * args["patch_size"]
    return args


def fit_pos_embed(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """``state`` with its absolute position embedding resampled (bicubic) to ``model``'s patch grid
    when the sizes differ (the prefix tokens' rows kept as they are)."""
    from autoprog.adapters.timm_vit import resample_pos_embed

    pos = state.get("pos_embed")
    own = getattr(model, "pos_embed", None)
    if pos is None or own is None or pos.shape == own.shape:
        return state
    prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 1))
    grid = tuple(model.patch_embed.grid_size)  # type: ignore[union-attr]
    return {**state, "pos_embed": resample_pos_embed(pos, grid, num_prefix_tokens=prefix)}


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
    """Fine-tuning a pre-trained timm ViT classifier on new data (see the module docstring).

    Args:
        run_dir: the source (``--model``): an ``autoprog pretrain`` run folder, a timm folder, or
            ``timm:NAME`` (then ``cfg.weights_file`` is the weights).
        cfg: the fine-tuning run's configuration (data, seed, ``weights_file``, ``img_size``).
        num_stages: unused (a classifier has no stage identifier); kept for the factory signature.
        device: where the model and the probe tensors live.
    """

    metric = "top1"
    default_lr = 1e-4
    stage_identifiers = False

    def __init__(self, run_dir: Path, cfg: FinetuneConfig, *, num_stages: int, device: torch.device) -> None:
        self.source = read_classifier_source(run_dir, cfg.weights_file)
        src = self.source
        self.cfg = cfg
        self.device = device
        state = load_state_file(src.weights)
        if src.layout == "pretrain-run" and ("head.weight" not in state or "patch_embed.proj.weight" not in state):
            raise ConfigError(f"--model {str(run_dir)!r}: model.pt is not a timm ViT classifier's state")
        inferred = vit_args_of_state(state)
        if not inferred:
            raise ConfigError(f"{src.weights} is not a timm ViT's state dict (no patch_embed.proj.weight / blocks.N)")
        args = {**inferred, **src.model_args}  # what the source declares wins over the shapes
        self.source_classes = int(inferred["num_classes"])
        self.in_chans = int(inferred["in_chans"])
        resolution = int(args["img_size"])
        img_size = cfg.img_size
        if img_size is not None:
            patch = int(args.get("patch_size") or inferred["patch_size"])
            if img_size % patch:
                raise ConfigError(f"--img-size {img_size} is not a multiple of the source's patch size {patch}")
            resolution = int(img_size)
        if src.layout == "pretrain-run":
            self.adapter: ModelAdapter = create_adapter(
                src.architecture, img_size=resolution, in_chans=self.in_chans, num_classes=self.source_classes,
                patch_size=args.get("patch_size"), depth=args["depth"], embed_dim=args.get("embed_dim"),
                num_heads=args.get("num_heads"),
            )  # fmt: skip
        else:
            from autoprog.adapters.timm_vit import TimmViTAdapter

            extra = {k: v for k, v in src.model_args.items() if k not in _OWN_ARGS}
            self.adapter = TimmViTAdapter(
                src.architecture, img_size=resolution, in_chans=self.in_chans, num_classes=self.source_classes,
                patch_size=int(args["patch_size"]), depth=int(args["depth"]), model_args=extra,
            )  # fmt: skip
        self.model = self.adapter.create_model()
        try:
            self.model.load_state_dict(fit_pos_embed(state, self.model))
        except RuntimeError as e:
            lines = str(e).splitlines()
            first = lines[1].strip() if len(lines) > 1 else str(e)
            if src.layout == "pretrain-run":
                raise ConfigError(
                    f"--model {str(run_dir)!r}: model.pt does not fit a fresh {src.architecture} of depth "
                    f"{args['depth']} ({first}); runs grown with --operator identity keep ReZero gates "
                    "and cannot be transferred yet"
                ) from None
            raise ConfigError(
                f"--model {src.spec}: {src.weights.name} does not fit timm {src.architecture} with patch "
                f"{args['patch_size']}, depth {args['depth']} ({first})"
            ) from None
        self.full_resolution = resolution
        self.channels = self.in_chans
        self.patch_size = self.adapter.resolution_step
        self.block_paths = [f"blocks.{i}" for i in range(len(self.adapter.get_blocks(self.model)))]
        self.mean = torch.zeros(1, self.channels, 1, 1, device=device)
        self.std = torch.ones(1, self.channels, 1, 1, device=device)
        self.num_classes = self.source_classes
        self.class_names: list[str] = []

    def bind_data(self, info: DatasetInfo) -> None:
        """Normalise with the target data's statistics (a timm folder's own mean and std when it
        declares them) and give the model a new head for its classes (seeded by the run's seed: the
        target's classes are new even when as many)."""
        if info.in_chans != self.channels:
            raise ConfigError(f"{info.name} has {info.in_chans} channels, the source model {self.channels}")
        mean, std = info.mean, info.std
        if self.source.mean is not None and len(self.source.mean) == self.channels == len(self.source.std or ()):
            mean, std = self.source.mean, self.source.std  # the timm folder's own preprocessing
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.num_classes = info.num_classes
        self.class_names = list(info.classes)
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
        """The source's own layout, so the folder is itself a source for this task: ``model.pt`` +
        ``summary.json`` for an ``autoprog pretrain`` run, a timm folder (``config.json`` +
        ``model.safetensors``, with the class names and the normalisation used) for a timm source."""
        path.mkdir(parents=True, exist_ok=True)
        if self.source.layout != "pretrain-run":
            from timm.models import save_for_hf

            data = {"mean": tuple(self.mean.flatten().tolist()), "std": tuple(self.std.flatten().tolist())}
            save_for_hf(model, str(path), model_config={"label_names": self.class_names} if self.class_names else None,
                        safe_serialization=True, data_config=data)  # fmt: skip
            return
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
    """The transfer fine-tuning task of a classifier source (see :class:`ClassifierTask`)."""
    return ClassifierTask(run_dir, cfg, num_stages=num_stages, device=device)


__all__ = [
    "TIMM_FOLDER_LAYOUT",
    "TIMM_PREFIX",
    "ClassifierSource",
    "ClassifierTask",
    "check_pretrain_run",
    "classifier_layout",
    "create_classifier_task",
    "fit_pos_embed",
    "is_timm_name",
    "load_state_file",
    "read_classifier_source",
    "vit_args_of_state",
]
