"""Zero-shot proxies of a partly frozen network (AutoProg-Zero, Sec. 4.2.2): NTK condition number, ZiCo."""

from autoprog.proxies.ntk import (
    NTKFallbackWarning,
    NTKMethod,
    gram_condition_number,
    learnable_parameters,
    ntk_condition_number,
    ntk_gram,
    rademacher,
    requires_grad_only,
)
from autoprog.proxies.zico import ZICO_LAYER_TYPES, zico, zico_from_gradients, zico_layers

__all__ = [
    "NTKFallbackWarning",
    "NTKMethod",
    "ZICO_LAYER_TYPES",
    "gram_condition_number",
    "learnable_parameters",
    "ntk_condition_number",
    "ntk_gram",
    "rademacher",
    "requires_grad_only",
    "zico",
    "zico_from_gradients",
    "zico_layers",
]
