"""Model adapters: all model-specific knowledge lives here, behind :class:`ModelAdapter`.

Importing the package registers the growable families (:func:`register_adapter`): each concrete
module registers itself, and this file imports them, so :func:`create_adapter` and
:func:`check_model_name` know every family without :mod:`autoprog.adapters.base` importing any.
"""

from autoprog.adapters.base import (
    AdapterFamily,
    ModelAdapter,
    adapter_family,
    check_model_name,
    create_adapter,
    register_adapter,
    resize_input,
)
from autoprog.adapters.timm_vit import TimmViTAdapter, resample_pos_embed
from autoprog.adapters.torchvision_resnet import TorchvisionResNetAdapter

__all__ = [
    "AdapterFamily",
    "ModelAdapter",
    "TimmViTAdapter",
    "TorchvisionResNetAdapter",
    "adapter_family",
    "check_model_name",
    "create_adapter",
    "register_adapter",
    "resample_pos_embed",
    "resize_input",
]
