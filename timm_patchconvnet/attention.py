"""Attention maps of PatchConvNet's pooling: where the class token(s) looked, as heatmaps."""
from contextlib import contextmanager
from typing import Iterator, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import MaybeToTensor, create_transform, resolve_data_config
from torchvision import transforms

from .images import to_gray, to_rgb
from .patchconvnet import PatchConvNet
from .precision import InferenceModel

__all__ = ['ImageExplanation', 'attention_and_logits', 'explain_image', 'get_attention_map', 'model_input',
           'overlay_attention', 'place_in_image', 'pooling_maps_and_logits', 'scale_to_unit']

ImageInput = Union[Image.Image, np.ndarray, torch.Tensor]


def _to_batch(model: PatchConvNet, img: ImageInput) -> torch.Tensor:
    if isinstance(img, torch.Tensor):  # already preprocessed
        if not img.is_floating_point():  # pixels (uint8), flags or complex numbers are no normalised input
            pixels = (' A uint8 tensor holds pixels: pass it as an H x W x C uint8 array (tensor.permute(1, 2, 0)'
                      '.numpy()) or a PIL image, which go through the model\'s preprocessing.'
                      if img.dtype == torch.uint8 else '')
            raise ValueError(f'A tensor image is taken as preprocessed (normalised floats), got {img.dtype}.{pixels}')
        if img.ndim == 3:
            img = img.unsqueeze(0)
        if img.ndim != 4:
            raise ValueError(f'A tensor image must be (C, H, W) or (B, C, H, W), got shape {tuple(img.shape)}.')
        _check_size(img.shape[-1], img.shape[-2])
        return img
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8 or img.ndim != 3:
            raise ValueError(f'An array image must be H x W x C uint8, got {img.dtype} of shape {img.shape}.')
        img = Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img)
    if not isinstance(img, Image.Image):
        raise TypeError(f'Expected a PIL image, an HxWxC uint8 array or a tensor, got {type(img).__name__}.')
    return _preprocess(model, _eval_transform(model), img)


def _preprocess(model: PatchConvNet, transform: transforms.Compose, image: Image.Image) -> torch.Tensor:
    """The batch of one the model sees: a checked size, the model's mode, the eval transform."""
    _check_size(image.width, image.height)
    return transform(_to_model_mode(model, image)).unsqueeze(0)


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:  # the resize would divide by zero
        raise ValueError(f'The image is {width}x{height} pixels: an attention map needs at least one pixel.')


def _checked_input(model: PatchConvNet, x: torch.Tensor) -> torch.Tensor:
    """`x` on the model's device and dtype; NaN or inf would give a map of NaN without any error."""
    if not torch.isfinite(x).all():
        raise ValueError('The input has NaN or infinite values: the attention map would be NaN.')
    param = next(model.parameters())
    return x.to(device=param.device, dtype=param.dtype)


def _eval_transform(model: PatchConvNet) -> transforms.Compose:
    return create_transform(**resolve_data_config(model=model))


def _to_model_mode(model: PatchConvNet, img: Image.Image) -> Image.Image:
    """8-bit RGB or L as `images.to_rgb` makes it: 16-bit grayscale scaled, not clipped white by PIL's convert."""
    if model.in_chans == 3:
        return to_rgb(img)
    if model.in_chans == 1:
        return to_gray(img)
    return img


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in eval mode, then every submodule back in its own mode: `model.train(flag)` alone would put a
    submodule the user froze in eval (e.g. BatchNorm while fine-tuning) back in train mode."""
    modes = [(module, module.training) for module in model.modules() if module.training]
    if not modes:  # all in eval already (the usual case for maps): nothing to switch or restore
        yield model
        return
    model.eval()
    try:
        yield model
    finally:
        for module, _ in modes:
            module.training = True


def _check_attention_pool(model: PatchConvNet) -> None:
    if isinstance(model, InferenceModel):  # made from a PatchConvNet with attention pooling only
        return
    if not isinstance(model, PatchConvNet) or model.attn_pool is None:
        raise ValueError('This needs a PatchConvNet with attention pooling (global_pool="token").')


@torch.no_grad()
def pooling_maps_and_logits(model: PatchConvNet, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Every class token's map (B, num_class_tokens, h, w), mean over heads, and the logits (None for a model
    without classifier), from one pass of `model` or of an `InferenceModel` (float32 out)."""
    if isinstance(model, InferenceModel):
        return model.attention_and_logits(x)
    with eval_mode(model):
        features = model.forward_features(x)
        attn = model.forward_attention(features).mean(1)
        return attn, model.forward_head(features) if model.num_classes > 0 else None


def _maps_and_logits(
        model: PatchConvNet,
        x: torch.Tensor,
        class_index: Optional[int],
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Token-grid maps (B, h, w), mean over heads, and the logits (None for a model without classifier)."""
    attn, logits = pooling_maps_and_logits(model, x)
    if model.class_tokens == 'per_class':
        num_tokens = attn.shape[1]
        if class_index is None:
            if logits is None:
                raise ValueError('This per-class-token model has no classifier to predict a class: pass class_index.')
            index = logits.argmax(-1)
        elif not 0 <= class_index < num_tokens:
            raise ValueError(f'class_index={class_index} is out of range for {num_tokens} class tokens.')
        else:
            index = torch.full((x.shape[0],), class_index, device=x.device)
        maps = attn[torch.arange(x.shape[0], device=x.device), index]
    else:
        if class_index not in (None, 0):
            raise ValueError('class_index only applies to models with per-class tokens.')
        maps = attn[:, 0]
    if not torch.isfinite(maps).all():  # a finite input can overflow inside the model (float max everywhere)
        raise ValueError(f'The model overflowed on this input (values up to {x.abs().max().item():.3g}): the attention '
                         'map would be NaN. A tensor is taken as preprocessed: normalised, of the order of 1.')
    return maps, logits


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
        model: A PatchConvNet with attention pooling (global_pool='token'), or the `InferenceModel` that
            `optimize_for_inference(model, precision)` makes of one (bf16, int8, ...: maps in float32 either way).
        img: A PIL image or an HxWxC uint8 array (preprocessed with the model's data config: timm's
            resolve_data_config / create_transform), or a (C, H, W) / (B, C, H, W) tensor taken as preprocessed.
        class_index: For per-class tokens, the class whose map is returned (default: the predicted class).
        upsample: Resize the token-grid map to the size of the image the model saw (bilinear).
        normalize: Scale each map to [0, 1].

    With `upsample=False, normalize=False` the map is exactly the softmax weight the pooling gives each patch
    token (mean over heads), on the token grid in row-major order; a single class token's weight on itself is
    left out. The model runs in eval mode; the train/eval mode of it and of each submodule is restored afterwards.
    16-bit grayscale images are scaled to 8 bits (`images.to_rgb`), not clipped. Raises ValueError for an image
    without pixels, an input with NaN or infinite values (or so large that the model overflows) and a tensor that
    is not floating point.
    """
    _check_attention_pool(model)
    single = not (isinstance(img, torch.Tensor) and img.ndim == 4)
    x = _checked_input(model, _to_batch(model, img))
    maps, _ = _maps_and_logits(model, x, class_index)
    if upsample:
        maps = F.interpolate(maps.unsqueeze(1), size=x.shape[-2:], mode='bilinear', align_corners=False).squeeze(1)
    if normalize:
        maps = scale_to_unit(maps)
    return maps[0] if single else maps


def attention_and_logits(model: PatchConvNet, x: torch.Tensor, *, class_index: Optional[int] = None,
                         ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """For a preprocessed batch `x` (B, C, H, W): the pooling's raw token-grid maps (B, h, w), exactly as
    `get_attention_map(model, x, upsample=False, normalize=False)`, and the logits of the same forward pass (None for
    a model without classifier). One pass for both, where a prediction and its map are wanted for many images."""
    _check_attention_pool(model)
    return _maps_and_logits(model, _checked_input(model, x), class_index)


def model_input(model: PatchConvNet, img: ImageInput) -> torch.Tensor:
    """`img` as the checked (B, C, H, W) batch `get_attention_map` feeds the model: a PIL image or array through the
    model's eval transform, a tensor as it is; on the model's device and dtype."""
    return _checked_input(model, _to_batch(model, img))


def place_in_image(model: PatchConvNet, grid: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """A token-grid map (h, w) resampled into the frame of a `width` x `height` image given to the model, where its
    eval transform's view of that image lies (0 where a crop cut the image), scaled to [0, 1]: `explain_image`'s
    `on_image`, for any map of the same grid (Grad-CAM's too)."""
    view = _model_view(_eval_transform(model), width, height)
    return scale_to_unit(_resample_into_image(grid, view, width, height))


def scale_to_unit(maps: torch.Tensor) -> torch.Tensor:
    """Each map (the last two dimensions) scaled to [0, 1]."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - low) / (high - low).clamp_min(torch.finfo(maps.dtype).eps)


class ImageExplanation(NamedTuple):
    """What `explain_image` returns for one image."""
    probabilities: Optional[torch.Tensor]  # (num_classes,) softmax of the logits; None without a classifier
    grid: torch.Tensor  # (h, w) the pooling's raw weight on each patch token, as get_attention_map(normalize=False)
    on_image: torch.Tensor  # (H, W) that map in the frame of the image given, scaled to [0, 1]; 0 where unseen


@torch.no_grad()
def explain_image(model: PatchConvNet, image: Image.Image, *, class_index: Optional[int] = None) -> ImageExplanation:
    """Class probabilities and attention map of one PIL image, in one forward pass.

    The image is preprocessed with the model's data config (timm's eval transform). `on_image` places the map
    where the model's view lies in the image given: a centre crop leaves the cut-off borders at 0, so the map
    lines up with the image whatever its size and aspect.
    """
    _check_attention_pool(model)
    if not isinstance(image, Image.Image):
        raise TypeError(f'explain_image takes a PIL image, got {type(image).__name__}.')
    transform = _eval_transform(model)
    x = _checked_input(model, _preprocess(model, transform, image))
    maps, logits = _maps_and_logits(model, x, class_index)
    grid = maps[0].float().cpu()
    on_image = scale_to_unit(_resample_into_image(grid, _model_view(transform, image.width, image.height),
                                                  image.width, image.height))
    probabilities = None if logits is None else logits[0].float().softmax(-1).cpu()
    return ImageExplanation(probabilities, grid, on_image)


def _model_view(transform: transforms.Compose, width: int, height: int) -> Tuple[float, float, float, float]:
    """(left, top, right, bottom) of the region of a `width` x `height` image that the transform's output covers,
    in source pixel coordinates; found by passing coordinate ramps through the transform's own resize/crop steps,
    so any timm crop mode (centre, squash, border) is handled without restating its arithmetic."""
    spatial = []
    for step in transform.transforms:
        if isinstance(step, (transforms.ToTensor, MaybeToTensor)):
            break
        spatial.append(step)
    ramps = (np.arange(width, dtype=np.float32) + .5)[None].repeat(height, 0), \
        (np.arange(height, dtype=np.float32) + .5)[:, None].repeat(width, 1)
    out_x, out_y = (np.asarray(transforms.Compose(spatial)(Image.fromarray(ramp, mode='F'))) for ramp in ramps)
    out_h, out_w = out_x.shape
    # resampling keeps a linear ramp linear away from the borders: fit it from two interior output pixels
    (u1, u2), (v1, v2) = (out_w // 4, out_w - 1 - out_w // 4), (out_h // 4, out_h - 1 - out_h // 4)
    mid_y, mid_x = out_h // 2, out_w // 2
    scale_x = (out_x[mid_y, u2] - out_x[mid_y, u1]) / (u2 - u1) if u2 > u1 else width / out_w
    scale_y = (out_y[v2, mid_x] - out_y[v1, mid_x]) / (v2 - v1) if v2 > v1 else height / out_h
    left = out_x[mid_y, u1] - scale_x * (u1 + .5)
    top = out_y[v1, mid_x] - scale_y * (v1 + .5)
    return float(left), float(top), float(left + scale_x * out_w), float(top + scale_y * out_h)


def _resample_into_image(grid: torch.Tensor, view: Tuple[float, float, float, float], width: int,
                         height: int) -> torch.Tensor:
    left, top, right, bottom = view
    # where each image pixel centre falls in the model's view, in grid_sample's [-1, 1] coordinates
    xs = (torch.arange(width, dtype=torch.float32) + .5 - left) / (right - left) * 2 - 1
    ys = (torch.arange(height, dtype=torch.float32) + .5 - top) / (bottom - top) * 2 - 1
    where = torch.stack(torch.meshgrid(xs, ys, indexing='xy'), dim=-1)[None]
    # 'border' matches F.interpolate at the view's edges; pixels outside the view are then set to 0
    resampled = F.grid_sample(grid[None, None], where, mode='bilinear', padding_mode='border', align_corners=False)
    inside = (where.abs() <= 1).all(-1)
    return resampled[0, 0] * inside[0]


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
    return Image.blend(to_rgb(image), heat_image, alpha)
