"""Inference-time fusion of PatchConvNet (`timm.utils.reparameterize_model` calls each module's `fuse()`).

The algebra is written once here and used twice: `ConvBlock.forward` folds its parameters on the fly while
training, and the fused modules fold them once into constant weights.

- A per-channel affine `scale * x + shift` before a 1x1 conv is the conv with weight `W * scale` and bias
  `b + W @ shift` (`fold_input_affine`): LayerNorm's affine, or a whole BatchNorm in eval mode.
- A per-channel scale `gamma` after a conv is the conv with weight `gamma * W` and bias `gamma * b`
  (`fold_output_scale`): the layer scale.

On CPU in float32 the fused modules also run each GELU and the residual add inside oneDNN's convolutions
(post-ops), so the activations are not read and written again for them.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['FusedConvBlock', 'FusedConvStem', 'ONEDNN_POST_OPS', 'fold_input_affine', 'fold_output_scale']

# Whether the fused modules use oneDNN's fused convolutions on CPU in float32; False: public ops only, as under
# torch.compile and export (benchmarks/benchmark.py --runtimes fused fused-public compares the two). Read once:
# torch.compile does not trace this check.
ONEDNN_POST_OPS = torch.backends.mkldnn.is_available()
_is_exporting = getattr(torch.compiler, 'is_exporting', lambda: False)  # absent from older torch


def fold_input_affine(weight: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """conv1x1(scale * x + shift) = (W * scale) x + (b + W @ shift): the weight and bias of the one conv."""
    return weight * scale.view(1, -1, 1, 1), bias + weight.flatten(1) @ shift


def fold_output_scale(weight: torch.Tensor, bias: torch.Tensor, gamma: torch.Tensor,
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """gamma * conv(x) = (gamma W) x + gamma b: the weight and bias of the one conv."""
    return weight * gamma.view(-1, 1, 1, 1), bias * gamma


def _conv1x1(weight_and_bias: Tuple[torch.Tensor, torch.Tensor]) -> nn.Conv2d:
    weight, bias = weight_and_bias
    out_chs, in_chs, _, _ = weight.shape
    conv = nn.Conv2d(in_chs, out_chs, 1, device=weight.device, dtype=weight.dtype)
    conv.weight.data.copy_(weight)
    conv.bias.data.copy_(bias)
    return conv


class FusedConvBlock(nn.Module):
    """A ConvBlock for inference (`ConvBlock.fuse()`): the norm's affine (a BatchNorm entirely) folded into conv1, the
    layer scale into conv2, and on CPU in float32 each GELU and the residual add inside oneDNN's convolutions."""

    def __init__(self, block: nn.Module):
        super().__init__()
        with torch.no_grad():
            norm = block.norm
            if isinstance(norm, nn.BatchNorm2d):
                scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                shift = norm.bias - norm.running_mean * scale
                self.eps: Optional[float] = None  # nothing left of the norm
            else:
                scale, shift = norm.weight, norm.bias
                self.eps = norm.eps
            self.conv1 = _conv1x1(fold_input_affine(block.conv1.weight, block.conv1.bias, scale, shift))
            self.conv_dw = block.conv_dw
            self.se = block.se
            self.conv2 = _conv1x1(fold_output_scale(block.conv2.weight, block.conv2.bias, block.gamma))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.eps is not None:  # normalise channels-last: for a channels-last x the permutes are views
            y = F.layer_norm(y.permute(0, 2, 3, 1), y.shape[1:2], None, None, self.eps).permute(0, 3, 1, 2)
        if _onednn_fusable(x):
            # oneDNN adds the residual only when it has its convolution's layout (a no-op after the first block)
            x = x.contiguous(memory_format=torch.channels_last)
            y = _conv_gelu(_conv_gelu(y, self.conv1), self.conv_dw)
            y = y.mul_(self.se.gate(y))  # in place: y is this block's own temporary (inference only)
            return _conv_add(y, self.conv2, x)
        y = F.gelu(self.conv1(y))
        y = self.se(F.gelu(self.conv_dw(y)))
        return x + self.conv2(y)


class FusedConvStem(nn.Module):
    """A ConvStem for inference (`ConvStem.fuse()`): on CPU in float32 each GELU runs inside its convolution."""

    def __init__(self, stem: nn.Module):
        super().__init__()
        self.convs = nn.ModuleList([stem.conv1, stem.conv2, stem.conv3, stem.conv4])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = _onednn_fusable(x)
        for conv in self.convs[:-1]:
            x = _conv_gelu(x, conv) if fused else F.gelu(conv(x))
        return self.convs[-1](x)


def _onednn_fusable(x: torch.Tensor) -> bool:
    # torch.compile, torch.export (so torch.onnx.export) and torch.jit.trace (OpenVINO's converter) get the public
    # ops: compile fuses them itself, neither export has fake kernels for oneDNN's fused ops, and neither ONNX nor
    # OpenVINO has an operator for them. Under torch 2.14's export (strict or
    # not) is_compiling() is True already; is_exporting() states the intent and does not rely on that.
    return (x.device.type == 'cpu' and x.dtype == torch.float32 and ONEDNN_POST_OPS
            and not (torch.compiler.is_compiling() or _is_exporting() or torch.jit.is_tracing()))


# oneDNN's fused convolutions are private ops (torch.ops.mkldnn, what inductor itself emits on CPU). Their arguments
# are positional: input, weight, bias, padding, stride, dilation, groups, then the post-op.


def _conv_gelu(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """gelu(conv(x)) in one oneDNN convolution: the unary post-op 'gelu' with no scalars and the 'none' algorithm
    (erf GELU, as F.gelu's default)."""
    return torch.ops.mkldnn._convolution_pointwise(
        x, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        'gelu', [None], 'none')


def _conv_add(x: torch.Tensor, conv: nn.Conv2d, residual: torch.Tensor) -> torch.Tensor:
    """residual + conv(x) in one oneDNN convolution: the binary post-op 'add' (alpha None), no unary op after it."""
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, residual, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        'add', None, None, [], None)
