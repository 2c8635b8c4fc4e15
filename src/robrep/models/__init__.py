"""Models with representations: registry, [0,1]-input contract, checkpoints."""

from . import (
    encoders,  # noqa: F401,E402  (registers dim-encoder)
    formats,  # noqa: E402,F401  (registers the foreign checkpoint loaders)
    sources,  # noqa: E402,F401  (registers the tv:/timm:/hf:/open_clip: model sources)
)
from .base import (
    ModelSpec,
    Normalize,
    Representation,
    RobrepModel,
    Tap,
    check_images,
    describe_layers,
    final_linear_name,
    flush_denormals_,
    head_name,
    layer_taps,
    list_layers,
    representation,
    resize_images,
)
from .checkpoint import LOADERS, load, load_with_meta, read_meta, safe_torch_load, save_model
from .layers import LayerInfo, layer_shapes
from .sources import SOURCES, load_source, set_input_policy, source_schemes, split_source
from .zoo import MODELS, create_model, list_models, model_from_spec, wrap

__all__ = [
    "LOADERS",
    "LayerInfo",
    "MODELS",
    "SOURCES",
    "Tap",
    "describe_layers",
    "head_name",
    "layer_shapes",
    "layer_taps",
    "load_source",
    "resize_images",
    "set_input_policy",
    "source_schemes",
    "split_source",
    "ModelSpec",
    "Normalize",
    "Representation",
    "RobrepModel",
    "check_images",
    "create_model",
    "final_linear_name",
    "flush_denormals_",
    "list_layers",
    "list_models",
    "load",
    "load_with_meta",
    "model_from_spec",
    "read_meta",
    "representation",
    "safe_torch_load",
    "save_model",
    "wrap",
]
