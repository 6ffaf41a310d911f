""" PatchConvNet

Paper: `Augmenting Convolutional networks with attention-based aggregation` - https://arxiv.org/abs/2112.13692
Official code and weights: https://github.com/facebookresearch/deit (patchconvnet_models.py, Apache-2.0).

An independent implementation for timm. It computes what the official model computes and loads its checkpoints
(`checkpoint_filter_fn`), without the official limits: any input size and aspect ratio, /8 and /4 stems that
keep the ImageNet parameter shapes, per-class tokens for any number of classes, and the paper's ablations
(average pooling, BatchNorm trunk, multi-head pooling, linear patch stem) as options.

The trunk runs on NCHW feature maps, so `forward_features` returns an unpooled (B, C, H, W) map like any timm
convnet; the attention-based pooling and the final norm belong to `forward_head`.
"""
import math
import re
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, LayerNorm2d, Mlp, _assert, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from .dataset_specs import DATASETS, DatasetSpec
from .fusion import FusedConvBlock, FusedConvStem, fold_input_affine, fold_output_scale
from .pretrained import HUB_NAMESPACE, build_with_weights_help

__all__ = ['PatchConvNet', 'checkpoint_filter_fn']

# Strides of the four stem convs for each patch size: the parameter shapes never change, so ImageNet weights fit.
STEM_STRIDES = {16: (2, 2, 2, 2), 8: (2, 2, 2, 1), 4: (2, 2, 1, 1)}
GLOBAL_POOLS = ('token', 'avg', '')
CLASS_TOKENS = ('single', 'per_class')
TRUNK_NORMS = ('layernorm', 'batchnorm')
STEM_TYPES = ('conv', 'linear')


def _check_choice(name: str, value: Any, choices: Tuple) -> None:
    if value not in choices:
        raise ValueError(f'{name}={value!r} is not supported; choose one of {choices}.')


class ConvStem(nn.Module):
    """Four 3x3 convs of widths d/8, d/4, d/2, d with GELU between them and no normalisation."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        s1, s2, s3, s4 = STEM_STRIDES[patch_size]
        self.conv1 = nn.Conv2d(in_chans, embed_dim // 8, 3, s1, padding=1, bias=False, **dd)
        self.act1 = nn.GELU()
        self.conv2 = nn.Conv2d(embed_dim // 8, embed_dim // 4, 3, s2, padding=1, bias=False, **dd)
        self.act2 = nn.GELU()
        self.conv3 = nn.Conv2d(embed_dim // 4, embed_dim // 2, 3, s3, padding=1, bias=False, **dd)
        self.act3 = nn.GELU()
        self.conv4 = nn.Conv2d(embed_dim // 2, embed_dim, 3, s4, padding=1, bias=False, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        x = self.act3(self.conv3(x))
        return self.conv4(x)

    def fuse(self) -> 'FusedConvStem':
        """The same function for inference with each GELU inside its convolution (`reparameterize_model`)."""
        return FusedConvStem(self)


class LinearStem(nn.Module):
    """Linear projection of non-overlapping patches: the paper's ablation of the conv stem."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, device=None, dtype=None):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation with timm's (and the official checkpoints') parameters, 1x1 convs of the pooled
    map; they run as matrix products of the pooled vectors, which spares oneDNN two convolutions of 1x1 maps per
    block, forward and backward."""

    def __init__(self, dim: int, rd_channels: int, device=None, dtype=None):
        super().__init__()
        self.conv_reduce = nn.Conv2d(dim, rd_channels, 1, device=device, dtype=dtype)
        self.conv_expand = nn.Conv2d(rd_channels, dim, 1, device=device, dtype=dtype)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean((2, 3))
        hidden = F.relu(F.linear(pooled, self.conv_reduce.weight.flatten(1), self.conv_reduce.bias))
        gate = torch.sigmoid(F.linear(hidden, self.conv_expand.weight.flatten(1), self.conv_expand.bias))
        return gate[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class ConvBlock(nn.Module):
    """Trunk block: x + drop_path(gamma * conv1x1(SE(GELU(dwconv3x3(GELU(conv1x1(norm(x))))))))."""

    def __init__(
            self,
            dim: int,
            trunk_norm: str = 'layernorm',
            init_values: float = 1e-4,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.init_values = init_values
        self.norm = LayerNorm2d(dim, eps=1e-6, **dd) if trunk_norm == 'layernorm' else nn.BatchNorm2d(dim, **dd)
        self.conv1 = nn.Conv2d(dim, dim, 1, **dd)
        self.act1 = nn.GELU()
        self.conv_dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, **dd)
        self.act2 = nn.GELU()
        self.se = SqueezeExcite(dim, dim // 4, **dd)
        self.conv2 = nn.Conv2d(dim, dim, 1, **dd)
        self.gamma = nn.Parameter(torch.empty(dim, **dd))
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.constant_(self.gamma, self.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Element-wise products by parameters are moved onto the weights next to them (see fusion.py): one tiny
        # product on the weights instead of a pass over the activations forward and two backward.
        norm = self.norm
        b1, b2 = self.conv1.bias, self.conv2.bias
        assert b1 is not None and b2 is not None  # for TorchScript's type refinement
        if isinstance(norm, LayerNorm2d):
            y = F.layer_norm(x.permute(0, 2, 3, 1), norm.normalized_shape, None, None, norm.eps).permute(0, 3, 1, 2)
            y = F.conv2d(y, *fold_input_affine(self.conv1.weight, b1, norm.weight, norm.bias))
        else:
            y = self.conv1(norm(x))
        y = self.act2(self.conv_dw(self.act1(y)))
        y = F.conv2d(self.se(y), *fold_output_scale(self.conv2.weight, b2, self.gamma))
        # Under autocast the conv's output is bfloat16/float16: the residual stream stays in the parameters'
        # precision, as it does when gamma (a float32 parameter) multiplies the activations (the official code).
        y = y.to(self.gamma.dtype)
        return self.drop_path(y).add_(x)  # in place: no backward needs the branch's output itself

    def fuse(self) -> 'FusedConvBlock':
        """The same function for inference in fewer passes; `timm.utils.reparameterize_model` calls this."""
        return FusedConvBlock(self)


class ClassAttention(nn.Module):
    """Attention whose queries come from the class token(s) only, over a given set of key/value tokens."""

    def __init__(
            self,
            dim: int,
            num_heads: int = 1,
            attn_drop: float = 0.,
            proj_drop: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim, **dd)
        self.k = nn.Linear(dim, dim, **dd)
        self.v = nn.Linear(dim, dim, **dd)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        return x.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)

    def attention_logits(self, x_cls: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        """Scaled query-key products before the softmax, (B, heads, num_cls_tokens, num_kv_tokens)."""
        q = self._split_heads(self.q(x_cls)) * self.scale
        k = self._split_heads(self.k(x_kv))
        return q @ k.transpose(-2, -1)

    def forward(self, x_cls: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        attn = self.attn_drop(self.attention_logits(x_cls, x_kv).softmax(dim=-1))
        x = attn @ self._split_heads(self.v(x_kv))
        x = x.transpose(1, 2).reshape(x_cls.shape)
        return self.proj_drop(self.proj(x))


class AttentionPoolBlock(nn.Module):
    """The class-attention block that aggregates the patch tokens into the class token(s).

    With one class token the keys are the class token and the patches (as in the paper); with per-class tokens
    they are the patches only, so that each class token's attention map covers the image alone.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int = 1,
            mlp_ratio: float = 3.,
            init_values: float = 1e-4,
            class_token_in_keys: bool = True,
            proj_drop: float = 0.,
            attn_drop: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.init_values = init_values
        self.class_token_in_keys = class_token_in_keys
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, **dd)
        self.attn = ClassAttention(dim, num_heads, attn_drop=attn_drop, proj_drop=proj_drop, **dd)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop, **dd)
        self.gamma_1 = nn.Parameter(torch.empty(dim, **dd))
        self.gamma_2 = nn.Parameter(torch.empty(dim, **dd))
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.constant_(self.gamma_1, self.init_values)
        nn.init.constant_(self.gamma_2, self.init_values)

    def _queries_and_keys(self, x: torch.Tensor, x_cls: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # LayerNorm works per token: norm1(cat(cls, x)) == cat(norm1(cls), norm1(x))
        q_tokens = self.norm1(x_cls)
        kv_tokens = self.norm1(x)
        if self.class_token_in_keys:
            kv_tokens = torch.cat((q_tokens, kv_tokens), dim=1)
        return q_tokens, kv_tokens

    def attention(self, x: torch.Tensor, x_cls: torch.Tensor) -> torch.Tensor:
        """Softmax attention weights (B, heads, num_cls_tokens, num_keys); with `class_token_in_keys` key 0 is
        the class token itself and keys 1: are the patches."""
        return self.attn.attention_logits(*self._queries_and_keys(x, x_cls)).softmax(dim=-1)

    def forward(self, x: torch.Tensor, x_cls: torch.Tensor) -> torch.Tensor:
        x_cls = x_cls + self.gamma_1 * self.attn(*self._queries_and_keys(x, x_cls))
        return x_cls + self.gamma_2 * self.mlp(self.norm2(x_cls))


class PerClassHead(nn.Module):
    """One linear unit per class token: the official multi-class head (a ModuleList of Linear(dim, 1)), stacked."""

    def __init__(self, num_classes: int, dim: int, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(num_classes, device=device, dtype=dtype))
        self.init_weights()

    def init_weights(self) -> None:
        trunc_normal_(self.weight, std=.02)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, num_classes, dim) class embeddings -> (B, num_classes) logits."""
        return torch.einsum('bkc,kc->bk', x, self.weight) + self.bias


def _check_arguments(embed_dim: int, depth: int, patch_size: int, num_classes: int, in_chans: int, num_heads: int,
                     global_pool: str, class_tokens: str, trunk_norm: str, stem_type: str) -> None:
    """A ValueError naming the first argument of `PatchConvNet` that cannot build a model."""
    _check_choice('global_pool', global_pool, GLOBAL_POOLS)
    _check_choice('class_tokens', class_tokens, CLASS_TOKENS)
    _check_choice('trunk_norm', trunk_norm, TRUNK_NORMS)
    _check_choice('stem_type', stem_type, STEM_TYPES)
    if stem_type == 'conv':
        _check_choice('patch_size', patch_size, tuple(STEM_STRIDES))
        if embed_dim % 8:
            raise ValueError(f'embed_dim={embed_dim} must be a multiple of 8 (the conv stem has widths d/8 .. d).')
    elif patch_size < 1:
        raise ValueError(f'patch_size={patch_size} must be positive.')
    if depth < 1 or embed_dim < 1 or num_heads < 1 or in_chans < 1 or num_classes < 0:
        raise ValueError('depth, embed_dim, num_heads and in_chans must be positive and num_classes >= 0.')
    if embed_dim % num_heads:
        raise ValueError(f'embed_dim={embed_dim} is not divisible by num_heads={num_heads}.')
    if class_tokens == 'per_class' and global_pool == 'avg':
        raise ValueError("class_tokens='per_class' needs global_pool='token': average pooling has no class tokens.")


class PatchConvNet(nn.Module):
    """PatchConvNet: a columnar convnet trunk pooled by a class-attention block.

    Args:
        embed_dim: Width d of the trunk (the stem's widths are d/8, d/4, d/2, d).
        depth: Number of trunk blocks.
        patch_size: Total stride of the stem: 16, 8 or 4 (any positive size with `stem_type='linear'`).
        num_classes: Number of classes; 0 for no classifier.
        in_chans: Number of input channels.
        num_heads: Heads of the pooling attention (1 in the paper).
        mlp_ratio: Hidden width of the pooling block's MLP, as a multiple of d.
        init_values: Initial value of the layer-scale gammas.
        drop_rate: Dropout before the classifier.
        proj_drop_rate: Dropout in the pooling block (attention output and MLP); the official `drop_rate`.
        attn_drop_rate: Dropout on the pooling attention weights.
        drop_path_rate: Stochastic depth of every trunk block (the same rate in each, as in the paper).
        global_pool: 'token' (class-attention pooling), 'avg' (the average-pooling ablation) or '' (no pooling:
            `forward` returns the feature map, or per-location logits with a classifier).
        class_tokens: 'single' (one class token) or 'per_class' (one token and one attention map per class).
        trunk_norm: 'layernorm' or 'batchnorm' (the BatchNorm ablation) in the trunk blocks.
        stem_type: 'conv' (the paper's stem) or 'linear' (the linear patch projection ablation).
    """

    def __init__(
            self,
            embed_dim: int = 384,
            depth: int = 60,
            patch_size: int = 16,
            num_classes: int = 1000,
            in_chans: int = 3,
            num_heads: int = 1,
            mlp_ratio: float = 3.,
            init_values: float = 1e-4,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            global_pool: str = 'token',
            class_tokens: str = 'single',
            trunk_norm: str = 'layernorm',
            stem_type: str = 'conv',
            device=None,
            dtype=None,
    ):
        super().__init__()
        _check_arguments(embed_dim, depth, patch_size, num_classes, in_chans, num_heads, global_pool, class_tokens,
                         trunk_norm, stem_type)
        dd = {'device': device, 'dtype': dtype}

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim
        self.global_pool = global_pool
        self.class_tokens = class_tokens
        self.grad_checkpointing = False

        stem_cls = ConvStem if stem_type == 'conv' else LinearStem
        self.stem = stem_cls(in_chans, embed_dim, patch_size, **dd)
        self.blocks = nn.Sequential(*[
            ConvBlock(embed_dim, trunk_norm, init_values=init_values, drop_path=drop_path_rate, **dd)
            for _ in range(depth)
        ])
        self.feature_info = [
            dict(num_chs=embed_dim, reduction=patch_size, module=f'blocks.{i}') for i in range(depth)]

        # Pooling parts exist only when used, so that every parameter gets a gradient (DDP) and no weight is dead.
        self.cls_token = None
        self.attn_pool = None
        if global_pool == 'token':
            # Without classes, a per-class model keeps one token (its pre-logits are the mean class embedding).
            num_tokens = max(num_classes, 1) if class_tokens == 'per_class' else 1
            self.cls_token = nn.Parameter(torch.empty(1, num_tokens, embed_dim, **dd))
            self.attn_pool = AttentionPoolBlock(
                embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, init_values=init_values,
                class_token_in_keys=class_tokens == 'single', proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, **dd)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6, **dd) if global_pool else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._create_head(num_classes, **dd)
        self.init_weights()

    def _create_head(self, num_classes: int, device=None, dtype=None) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        if self.attn_pool is not None and self.class_tokens == 'per_class':
            return PerClassHead(num_classes, self.embed_dim, device=device, dtype=dtype)
        return nn.Linear(self.head_hidden_size, num_classes, device=device, dtype=dtype)

    @torch.no_grad()
    def init_weights(self) -> None:
        """The official initialisation: trunc-normal(.02) linears and class tokens, default convs, unit norms."""
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Conv2d, nn.LayerNorm, nn.BatchNorm2d)):
                m.reset_parameters()
            elif isinstance(m, (ConvBlock, AttentionPoolBlock, PerClassHead)):
                m.init_weights()

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {'cls_token'}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        # The class token only enters at the end, so it decays with the pooling block, not with the stem.
        return dict(
            stem=r'^stem',
            blocks=[(r'^blocks\.(\d+)', None), (r'^cls_token|^attn_pool|^norm', (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier. Pooling can be switched to 'avg' or '' (removing the attention pool), not back.

        A per-class-token model gets one new class token per class, each started from the mean of the old ones.
        """
        reference = next(self.stem.parameters())
        dd = {'device': reference.device, 'dtype': reference.dtype}
        if global_pool is not None:
            _check_choice('global_pool', global_pool, GLOBAL_POOLS)
            if global_pool == 'token' and self.attn_pool is None:
                raise ValueError("Cannot switch to global_pool='token': this model has no attention pool "
                                 "(create it with global_pool='token').")
            if global_pool != 'token':
                self.attn_pool, self.cls_token = None, None
            if not global_pool:
                self.norm = nn.Identity().train(self.training)
            self.global_pool = global_pool
        self.num_classes = num_classes
        cls_token = self.cls_token
        if self.class_tokens == 'per_class' and cls_token is not None and num_classes not in (0, cls_token.shape[1]):
            new_tokens = cls_token.detach().mean(1, keepdim=True).expand(-1, num_classes, -1).clone()
            self.cls_token = nn.Parameter(new_tokens, requires_grad=cls_token.requires_grad)
        self.head = self._create_head(num_classes, **dd).train(self.training)

    def _check_input(self, x: torch.Tensor) -> None:
        _assert(x.ndim == 4, f'Expected a (B, C, H, W) image batch, got a tensor of {x.ndim} dims.')
        _assert(x.shape[1] == self.in_chans, f'Expected {self.in_chans} input channels, got {x.shape[1]}.')
        _assert(x.shape[2] >= self.patch_size, f'Image height {x.shape[2]} is below the patch size {self.patch_size}.')
        _assert(x.shape[3] >= self.patch_size, f'Image width {x.shape[3]} is below the patch size {self.patch_size}.')

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward features that returns intermediates.

        Args:
            x: Input image tensor.
            indices: Take last n blocks if int, all if None, select matching indices if sequence.
            norm: Unused: the trunk has no final norm (the model's norm acts on pooled tokens).
            stop_early: Stop iterating over blocks when last desired intermediate hit.
            output_fmt: Shape of intermediate feature outputs, only 'NCHW'.
            intermediates_only: Only return intermediate features.
        """
        _assert(output_fmt == 'NCHW', 'Output format must be NCHW.')
        self._check_input(x)
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)

        x = self._embed(x)
        if torch.jit.is_scripting() or not stop_early:  # can't slice blocks in torchscript
            blocks = self.blocks
        else:
            blocks = self.blocks[:max_index + 1]
        for i, blk in enumerate(blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x)
            else:
                x = blk(x)
            if i in take_indices:
                intermediates.append(x)

        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the blocks after the last wanted intermediate, and with `prune_head` the pooling and classifier."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        # the trunk runs channels-last: LayerNorm2d's permutes are then views, not copies, forward and backward
        return self.stem(x).contiguous(memory_format=torch.channels_last)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's unpooled feature map (B, embed_dim, H / patch_size, W / patch_size)."""
        self._check_input(x)
        x = self._embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

    def _pool_inputs(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # Patch tokens in row-major grid order (as the official flatten(2)) and the class tokens for this batch.
        cls_token = self.cls_token
        _assert(cls_token is not None, 'This model has no class tokens.')
        assert cls_token is not None  # for TorchScript's type refinement
        return x.flatten(2).transpose(1, 2), cls_token.expand(x.shape[0], -1, -1)

    def forward_class_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised class embeddings (B, num_class_tokens, embed_dim) from a `forward_features` map."""
        attn_pool = self.attn_pool
        _assert(attn_pool is not None, "This model has no attention pool (global_pool is not 'token').")
        assert attn_pool is not None
        tokens, cls_tokens = self._pool_inputs(x)
        return self.norm(attn_pool(tokens, cls_tokens))

    def forward_attention(self, x: torch.Tensor) -> torch.Tensor:
        """The pooling's softmax weight on each patch, (B, heads, num_class_tokens, H, W), from a feature map.

        With a single class token, its weight on itself is left out, so each map sums to 1 minus that weight.
        """
        attn_pool = self.attn_pool
        _assert(attn_pool is not None, "This model has no attention pool (global_pool is not 'token').")
        assert attn_pool is not None
        B, _, H, W = x.shape
        attn = attn_pool.attention(*self._pool_inputs(x))
        if attn_pool.class_token_in_keys:
            attn = attn[..., 1:]
        return attn.reshape(B, attn.shape[1], attn.shape[2], H, W)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.attn_pool is not None:
            tokens = self.forward_class_tokens(x)
            if self.class_tokens == 'per_class' and self.num_classes > 0 and not pre_logits:
                return self.head(self.head_drop(tokens))
            x = tokens.mean(1)  # the (single) class embedding; for per-class tokens their mean
        elif self.global_pool == 'avg':
            x = self.norm(x.mean((2, 3)))
        elif pre_logits or self.num_classes == 0:
            return x
        else:  # no pooling: classify every location of the map
            return self.head(self.head_drop(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.forward_head(x)


_OFFICIAL_RENAMES: Tuple[Tuple[str, Union[str, Callable]], ...] = (
    (r'^patch_embed\.proj\.([0246])\.0\.', lambda m: f'stem.conv{int(m[1]) // 2 + 1}.'),
    (r'^blocks\.(\d+)\.gamma_1$', r'blocks.\1.gamma'),
    (r'^blocks\.(\d+)\.norm1\.', r'blocks.\1.norm.'),
    (r'^blocks\.(\d+)\.attn\.qkv_pos\.0\.', r'blocks.\1.conv1.'),
    (r'^blocks\.(\d+)\.attn\.qkv_pos\.2\.', r'blocks.\1.conv_dw.'),
    (r'^blocks\.(\d+)\.attn\.qkv_pos\.4\.', r'blocks.\1.se.'),
    (r'^blocks\.(\d+)\.attn\.qkv_pos\.5\.', r'blocks.\1.conv2.'),
    (r'^blocks_token_only\.0\.', 'attn_pool.'),
)


def _rename_official(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    renamed = {}
    per_class_head = {}
    for key, value in state_dict.items():
        head_unit = re.match(r'^head\.(\d+)\.(weight|bias)$', key)
        if head_unit:  # S60_multi: a ModuleList of Linear(dim, 1), one per class
            per_class_head.setdefault(head_unit[2], {})[int(head_unit[1])] = value
            continue
        for pattern, replacement in _OFFICIAL_RENAMES:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    for name, units in per_class_head.items():
        renamed[f'head.{name}'] = torch.cat([units[i].reshape(-1) if name == 'bias' else units[i]
                                             for i in sorted(units)])
    return renamed


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: PatchConvNet) -> Dict[str, torch.Tensor]:
    """Map an official checkpoint (`{'model': ...}` or bare, optional `module.` prefix) or one of ours onto `model`.

    Class tokens are adapted when their count differs (single <-> per-class, or another number of classes): every
    new token starts from the mean of the checkpoint's. Pooling weights are dropped when the model has no
    attention pool (global_pool 'avg' or '').
    """
    for wrapper in ('model', 'state_dict'):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
    state_dict = {k.removeprefix('module.'): v for k, v in state_dict.items()}
    if 'patch_embed.proj.0.0.weight' in state_dict:
        state_dict = _rename_official(state_dict)

    if model.cls_token is None:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(('cls_token', 'attn_pool.'))}
    elif 'cls_token' in state_dict and state_dict['cls_token'].shape[1] != model.cls_token.shape[1]:
        mean_token = state_dict['cls_token'].mean(1, keepdim=True)
        state_dict['cls_token'] = mean_token.expand(-1, model.cls_token.shape[1], -1).clone()
    if isinstance(model.norm, nn.Identity):
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith('norm.')}
    return state_dict


def _create_patchconvnet(variant: str, pretrained: bool = False, **kwargs) -> PatchConvNet:
    out_indices = kwargs.pop('out_indices', 3)
    return build_with_weights_help(
        variant, pretrained, kwargs, lambda: build_model_with_cfg(
            PatchConvNet,
            variant,
            pretrained,
            pretrained_filter_fn=checkpoint_filter_fn,
            feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
            **kwargs,
        ))


def _grid_size(img_size: int, patch_size: int) -> int:
    for stride in STEM_STRIDES[patch_size]:
        img_size = math.ceil(img_size / stride)  # a 3x3 conv with padding 1 and stride s gives ceil(n / s)
    return img_size


def _cfg(url: str = '', img_size: int = 224, patch_size: int = 16, **kwargs) -> Dict[str, Any]:
    grid = _grid_size(img_size, patch_size)
    return {
        'url': url,
        'num_classes': 1000, 'input_size': (3, img_size, img_size), 'pool_size': (grid, grid),
        'crop_pct': 0.875, 'interpolation': 'bicubic',  # deit's evaluation: resize 256, centre crop 224
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.conv1', 'classifier': 'head', 'license': 'apache-2.0',
        'paper_ids': 'arXiv:2112.13692',
        'paper_name': 'Augmenting Convolutional networks with attention-based aggregation',
        'origin_url': 'https://github.com/facebookresearch/deit',
        **kwargs,
    }


_FB = 'https://dl.fbaipublicfiles.com/deit/'


def _data_cfg(architecture: str, patch_size: int, spec: DatasetSpec) -> Dict[str, Any]:
    """The cfg of a model trained on a data set of `dataset_specs` (a tag named after it, e.g. `.cifar10`): its size,
    labels and normalisation, and this project's Hub repo for its weights. IDC's normalisation is ImageNet's: its
    models are fine-tuned from the ImageNet weights."""
    mean, std = spec.mean_std
    return _cfg(
        img_size=spec.img_size, patch_size=patch_size, crop_pct=1.0, num_classes=len(spec.label_names),
        label_names=spec.label_names, mean=mean, std=std, hf_hub_id=f'{HUB_NAMESPACE}/{architecture}.{spec.name}',
        origin_url=None)


def _data_cfgs(architecture: str, patch_size: int) -> Dict[str, Dict[str, Any]]:
    return {f'{architecture}.{spec.name}': _data_cfg(architecture, patch_size, spec)
            for spec in DATASETS.values() if spec.publishes_tag}


default_cfgs = generate_default_cfgs({
    'patchconvnet_s60_p16.fb_in1k': _cfg(_FB + 's60_224_1k.pth'),
    'patchconvnet_s60_p16.fb_in22k_ft_in1k': _cfg(_FB + 's60_224_21k.pth'),
    'patchconvnet_s60_p16.fb_in22k_ft_in1k_384': _cfg(_FB + 's60_384_21k.pth', img_size=384),
    'patchconvnet_s60_p16.fb_in22k_ft_in1k_512': _cfg(_FB + 's60_512_21k.pth', img_size=512),
    'patchconvnet_s120_p16.fb_in1k': _cfg(_FB + 's120_224_1k.pth'),
    'patchconvnet_b60_p16.fb_in1k': _cfg(_FB + 'b60_224_1k.pth'),
    'patchconvnet_b60_p16.fb_in22k_ft_in1k': _cfg(_FB + 'b60_224_21k.pth'),
    'patchconvnet_b60_p16.fb_in22k_ft_in1k_384': _cfg(_FB + 'b60_384_21k.pth', img_size=384),
    'patchconvnet_b120_p16.fb_in1k': _cfg(_FB + 'b120_224_1k.pth'),
    'patchconvnet_b120_p16.fb_in22k_ft_in1k': _cfg(_FB + 'b120_224_21k.pth'),
    'patchconvnet_b120_p16.fb_in22k_ft_in1k_384': _cfg(_FB + 'b120_384_21k.pth', img_size=384),
    'patchconvnet_l60_p16': _cfg(),
    'patchconvnet_l120_p16': _cfg(),
    'patchconvnet_s60_multi_p16.fb_ft_in1k': _cfg(_FB + 's60_multi_finetune_1k.pth'),
    'patchconvnet_s60_multi_p16.fb_in1k': _cfg(_FB + 's60_multi_scratch_1k.pth'),
    'patchconvnet_s60_p8.fb_in1k': _cfg(_FB + 's60_224_1k.pth', patch_size=8),
    'patchconvnet_s60_p8.fb_in22k_ft_in1k': _cfg(_FB + 's60_224_21k.pth', patch_size=8),
    **_data_cfgs('patchconvnet_s60_p4', patch_size=4),
    'patchconvnet_s60_p4.fb_in1k': _cfg(_FB + 's60_224_1k.pth', patch_size=4),
    'patchconvnet_s60_p4.fb_in22k_ft_in1k': _cfg(_FB + 's60_224_21k.pth', patch_size=4),
    **_data_cfgs('patchconvnet_ti12_p4', patch_size=4),
    'patchconvnet_test_p4': _cfg(img_size=32, patch_size=4, crop_pct=1.0),
})


def _arch(defaults: Dict[str, Any], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    return {**defaults, **kwargs}  # explicit keyword arguments override the variant's defaults


@register_model
def patchconvnet_s60_p16(pretrained: bool = False, **kwargs) -> PatchConvNet:
    """S60: d=384, 60 blocks, /16 stem."""
    model_args = _arch(dict(embed_dim=384, depth=60, init_values=1e-4), kwargs)
    return _create_patchconvnet('patchconvnet_s60_p16', pretrained, **model_args)


@register_model
def patchconvnet_s120_p16(pretrained: bool = False, **kwargs) -> PatchConvNet:
    """S120: d=384, 120 blocks, /16 stem."""
    model_args = _arch(dict(embed_dim=384, depth=120, init_values=1e-6), kwargs)
    return _create_patchconvnet('patchconvnet_s120_p16', pretrained, **model_args)


@register_model
def patchconvnet_b60_p16(pretrained: bool = False, **kwargs) -> PatchConvNet:
    """B60: d=768, 60 blocks, /16 stem."""
    model_args = _arch(dict(embed_dim=768, depth=60, init_values=1e-6), kwargs)
    return _create_patchconvnet('patchconvnet_b60_p16', pretrained, **model_args)


@register_model
def patchconvnet_b120_p16(pretrained: bool = False, **kwargs) -> PatchConvNet:
    """B120: d=768, 120 blocks, /16 stem."""
    model_args = _arch(dict(embed_dim=768, depth=120, init_values=1e-6), kwargs)
    return _create_patchconvnet('patchconvnet_b120_p16', pretrained, **model_args)


@register_model
def patchconvnet_l60_p16(pretrained: bool = False, **kwargs) -> PatchConvNet:
    """L60: d=1024, 60 blocks, /16 stem (no published weights)."""
    model_args = _arch(dict(embed_dim=1024, depth=60, init_values=1e-6), kwargs)
    return _create_patchconvnet('patchconvnet_l60_p16', pretrained, **model_args)


@register_model
def patchconvnet_l120_p16(pretrained: bool = False, **kwargs) -> PatchConvNet:
    """L120: d=1024, 120 blocks, /16 stem (no published weights)."""
    model_args = _arch(dict(embed_dim=1024, depth=120, init_values=1e-6), kwargs)
    return _create_patchconvnet('patchconvnet_l120_p16', pretrained, **model_args)


@register_model
def patchconvnet_s60_multi_p16(pretrained: bool = False, **kwargs) -> PatchConvNet:
    """S60 with one class token (and one attention map) per class."""
    model_args = _arch(dict(embed_dim=384, depth=60, init_values=1e-4, class_tokens='per_class'), kwargs)
    return _create_patchconvnet('patchconvnet_s60_multi_p16', pretrained, **model_args)


@register_model
def patchconvnet_s60_p8(pretrained: bool = False, **kwargs) -> PatchConvNet:
    """S60 with a /8 stem (strides 2, 2, 2, 1): same parameters as S60, 4x the tokens."""
    model_args = _arch(dict(embed_dim=384, depth=60, init_values=1e-4, patch_size=8), kwargs)
    return _create_patchconvnet('patchconvnet_s60_p8', pretrained, **model_args)


@register_model
def patchconvnet_s60_p4(pretrained: bool = False, **kwargs) -> PatchConvNet:
    """S60 with a /4 stem (strides 2, 2, 1, 1), the seed paper's "4x4 patches" for 32x32 images."""
    model_args = _arch(dict(embed_dim=384, depth=60, init_values=1e-4, patch_size=4), kwargs)
    return _create_patchconvnet('patchconvnet_s60_p4', pretrained, **model_args)


@register_model
def patchconvnet_ti12_p4(pretrained: bool = False, **kwargs) -> PatchConvNet:
    """A small CPU-friendly model for small images: d=192, 12 blocks, /4 stem."""
    model_args = _arch(dict(embed_dim=192, depth=12, init_values=1e-4, patch_size=4), kwargs)
    return _create_patchconvnet('patchconvnet_ti12_p4', pretrained, **model_args)


@register_model
def patchconvnet_test_p4(pretrained: bool = False, **kwargs) -> PatchConvNet:
    """A tiny model for tests: d=48, 3 blocks, /4 stem."""
    model_args = _arch(dict(embed_dim=48, depth=3, init_values=1e-4, patch_size=4), kwargs)
    return _create_patchconvnet('patchconvnet_test_p4', pretrained, **model_args)
