"""ONNX export: the model's logits and, from the same forward pass, the attention pooling's maps, for onnxruntime
or any other ONNX runtime."""
import os
from pathlib import Path
from typing import List, Optional, Tuple, Union

import torch
from timm.data import resolve_model_data_config
from torch import nn

from .attention import eval_mode
from .errors import install_hint
from .patchconvnet import PatchConvNet

__all__ = ['export_onnx']

# The ONNX file format is one protobuf message, which cannot exceed 2 GiB: larger weights go to a file beside it.
_PROTOBUF_LIMIT = 2 ** 31 - 2 ** 26  # with room for the graph itself


class _OutputsAndAttention(nn.Module):
    """The exported function: the model's output and its attention maps, both from one trunk pass."""

    def __init__(self, model: PatchConvNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_features(x)
        # the mean over heads, as get_attention_map(..., upsample=False, normalize=False) takes it
        maps = self.model.forward_attention(features).mean(1)  # (B, num_class_tokens, h, w)
        if self.model.class_tokens == 'single':
            maps = maps[:, 0]
        return self.model.forward_head(features), maps


def _require_onnx() -> None:
    # torch.onnx.export(dynamo=True) imports these only midway, with a message that does not name our extra
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ImportError(f'export_onnx needs the onnx and onnxscript packages ({err}): {install_hint("onnx")}') from err


def _example_size(model: nn.Module, img_size: Optional[Union[int, Tuple[int, int]]]) -> Tuple[int, int, int]:
    channels, height, width = resolve_model_data_config(model)['input_size']
    if img_size is not None:
        height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    return channels, height, width


def export_onnx(
        model: nn.Module,
        path: Union[str, os.PathLike],
        *,
        img_size: Optional[Union[int, Tuple[int, int]]] = None,
        batch_size: int = 2,
        attention: Optional[bool] = None,
        dynamic_size: bool = False,
        opset: Optional[int] = None,
) -> Path:
    """Export `model` in eval mode to an ONNX file with `torch.onnx.export(..., dynamo=True)`; returns the path.

    The graph has one input, `input` (B, C, H, W) float32, with a dynamic batch size B; H and W are `img_size`
    (default: the model's pretrained cfg input size), or dynamic too with `dynamic_size=True` (any size from the
    patch size up). Its outputs are:

    - `logits` (B, num_classes): what `model(input)` returns (`features`, the pre-logits, for num_classes=0);
    - `attention`, for a PatchConvNet with attention pooling (global_pool='token'): with one class token, (B, h, w),
      exactly `get_attention_map(model, input, upsample=False, normalize=False)`; with per-class tokens,
      (B, num_classes, h, w), one map per class: `attention[:, k]` is the same call with `class_index=k` (its
      default, the predicted class's map, is `attention[arange(B), logits.argmax(1)]`).

    `attention=None` (default) adds the maps when the model has attention pooling, so any timm model exports (its
    logits only); `True` requires them (ValueError otherwise); `False` exports the logits only. A model fused by
    `timm.utils.reparameterize_model` exports too, computing the same function with ONNX's public operators.
    `batch_size` is the example batch the graph is traced with (at least 2: torch.export would fix a batch of 1).
    `opset`: the ONNX opset version (default: torch's recommended one). The weights are stored in the file,
    or in `<path>.data` beside it for models over 2 GiB. Needs onnx and onnxscript (the `onnx` extra).
    """
    _require_onnx()
    if batch_size < 2:
        raise ValueError(f'batch_size={batch_size}: export needs an example batch of at least 2, since torch.export '
                         'specialises a dimension of size 1 to a constant.')
    pooled = isinstance(model, PatchConvNet) and model.attn_pool is not None
    if attention and not pooled:
        raise ValueError('attention=True needs a PatchConvNet with attention pooling (global_pool="token"); pass '
                         'attention=False (or None) to export the logits only.')
    with_attention = pooled if attention is None else attention
    graph = _OutputsAndAttention(model) if with_attention else model
    output_names: List[str] = ['logits' if getattr(model, 'num_classes', 1) > 0 else 'features']
    if with_attention:
        output_names.append('attention')

    channels, height, width = _example_size(model, img_size)
    param = next(model.parameters())
    example = torch.randn(batch_size, channels, height, width, device=param.device, dtype=param.dtype)
    dims = {0: torch.export.Dim('batch', min=1)}
    if dynamic_size:
        smallest = getattr(model, 'patch_size', 1)  # PatchConvNet refuses images smaller than a patch
        dims.update({2: torch.export.Dim('height', min=smallest), 3: torch.export.Dim('width', min=smallest)})
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    path = Path(path)
    with eval_mode(graph):  # every submodule back in its own mode afterwards, as after get_attention_map
        torch.onnx.export(
            graph, (example,), path, dynamo=True, input_names=['input'], output_names=output_names,
            dynamic_shapes=(dims,), opset_version=opset, external_data=weight_bytes > _PROTOBUF_LIMIT,
            verbose=False)
    return path
