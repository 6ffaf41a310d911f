"""Attention maps of PatchConvNet's pooling: where the class token(s) looked, as heatmaps."""
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import create_transform, resolve_data_config

from .patchconvnet import PatchConvNet

__all__ = ['get_attention_map', 'overlay_attention']

ImageInput = Union[Image.Image, np.ndarray, torch.Tensor]


def _to_batch(model: PatchConvNet, img: ImageInput) -> torch.Tensor:
    if isinstance(img, torch.Tensor):  # already preprocessed
        if img.ndim == 3:
            img = img.unsqueeze(0)
        if img.ndim != 4:
            raise ValueError(f'A tensor image must be (C, H, W) or (B, C, H, W), got shape {tuple(img.shape)}.')
        return img
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8 or img.ndim != 3:
            raise ValueError(f'An array image must be H x W x C uint8, got {img.dtype} of shape {img.shape}.')
        img = Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img)
    if not isinstance(img, Image.Image):
        raise TypeError(f'Expected a PIL image, an HxWxC uint8 array or a tensor, got {type(img).__name__}.')
    if model.in_chans == 3:
        img = img.convert('RGB')
    elif model.in_chans == 1:
        img = img.convert('L')
    transform = create_transform(**resolve_data_config(model=model))
    return transform(img).unsqueeze(0)


@torch.no_grad()
def get_attention_map(
        model: PatchConvNet,
        img: ImageInput,
        *,
        class_index: Optional[int] = None,
        upsample: bool = True,
        normalize: bool = True,
) -> torch.Tensor:
    """The attention-based pooling's weight on each patch of `img`, as a map (H, W), or (B, H, W) for a batch.

    Args:
        model: A PatchConvNet with attention pooling (global_pool='token').
        img: A PIL image or an HxWxC uint8 array (preprocessed with the model's data config: timm's
            resolve_data_config / create_transform), or a (C, H, W) / (B, C, H, W) tensor taken as preprocessed.
        class_index: For per-class tokens, the class whose map is returned (default: the predicted class).
        upsample: Resize the token-grid map to the size of the image the model saw (bilinear).
        normalize: Scale each map to [0, 1].

    With `upsample=False, normalize=False` the map is exactly the softmax weight the pooling gives each patch
    token (mean over heads), on the token grid in row-major order; a single class token's weight on itself is
    left out. The model runs in eval mode; its training mode is restored afterwards.
    """
    if not isinstance(model, PatchConvNet) or model.attn_pool is None:
        raise ValueError('get_attention_map needs a PatchConvNet with attention pooling (global_pool="token").')
    single = not (isinstance(img, torch.Tensor) and img.ndim == 4)
    param = next(model.parameters())
    x = _to_batch(model, img).to(device=param.device, dtype=param.dtype)

    was_training = model.training
    model.eval()
    try:
        features = model.forward_features(x)
        attn = model.forward_attention(features).mean(1)  # (B, num_class_tokens, h, w)
        if model.class_tokens == 'per_class':
            num_tokens = attn.shape[1]
            if class_index is None:
                if model.num_classes == 0:
                    raise ValueError('This per-class-token model has no classifier to predict a class: '
                                     'pass class_index.')
                index = model.forward_head(features).argmax(-1)
            elif not 0 <= class_index < num_tokens:
                raise ValueError(f'class_index={class_index} is out of range for {num_tokens} class tokens.')
            else:
                index = torch.full((x.shape[0],), class_index, device=x.device)
            maps = attn[torch.arange(x.shape[0], device=x.device), index]
        else:
            if class_index not in (None, 0):
                raise ValueError('class_index only applies to models with per-class tokens.')
            maps = attn[:, 0]
    finally:
        model.train(was_training)

    if upsample:
        maps = F.interpolate(maps.unsqueeze(1), size=x.shape[-2:], mode='bilinear', align_corners=False).squeeze(1)
    if normalize:
        low = maps.amin(dim=(-2, -1), keepdim=True)
        high = maps.amax(dim=(-2, -1), keepdim=True)
        maps = (maps - low) / (high - low).clamp_min(torch.finfo(maps.dtype).eps)
    return maps[0] if single else maps


def overlay_attention(
        image: Image.Image,
        attention: torch.Tensor,
        *,
        alpha: float = 0.5,
        colormap: str = 'jet',
) -> Image.Image:
    """Blend an attention map over `image` as a colour heatmap (PIL in, PIL out, the image's size).

    `attention` is an (H, W) map, any size (it is resized to the image) and any range (it is scaled to [0, 1]).
    """
    from matplotlib import colormaps  # only needed for drawing

    if attention.ndim != 2:
        raise ValueError(f'Expected one (H, W) attention map, got shape {tuple(attention.shape)}.')
    if not 0. <= alpha <= 1.:
        raise ValueError(f'alpha={alpha} must be within [0, 1].')
    heat = attention.detach().float().cpu()[None, None]
    heat = F.interpolate(heat, size=(image.height, image.width), mode='bilinear', align_corners=False)[0, 0]
    heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)
    colours = colormaps[colormap](heat.numpy())[..., :3]  # H x W x RGB in [0, 1]
    heat_image = Image.fromarray((colours * 255).round().astype(np.uint8))
    return Image.blend(image.convert('RGB'), heat_image, alpha)
