"""Model adapters: all model-specific knowledge lives here, behind :class:`ModelAdapter`."""

from autoprog.adapters.base import ModelAdapter, create_adapter, resize_input
from autoprog.adapters.timm_vit import TimmViTAdapter, resample_pos_embed
from autoprog.adapters.torchvision_resnet import TorchvisionResNetAdapter

__all__ = ["ModelAdapter", "TimmViTAdapter", "TorchvisionResNetAdapter", "create_adapter", "resample_pos_embed", "resize_input"]
