"""Grad-CAM maps of a PatchConvNet, from pytorch-grad-cam: the gradient-based map to set beside the attention map.

`gradcam_map` takes the inputs `get_attention_map` takes and returns a map of the same shape, so the two can be
compared pixel for pixel; `gradcam_explanation` is `explain_image`'s counterpart (the map placed on the image given).
Both need the `explain` extra: `pip install 'timm-patchconvnet[explain]'` (the `grad-cam` package).
"""
import threading
from functools import lru_cache
from typing import Optional, Tuple, Type

import torch
import torch.nn.functional as F
from PIL import Image

from .attention import ImageExplanation, ImageInput, eval_mode, model_input, place_in_image, scale_to_unit
from .errors import install_hint
from .patchconvnet import PatchConvNet

__all__ = ['GRADCAM_NEEDS', 'gradcam_explanation', 'gradcam_map']

GRADCAM_NEEDS = f'Grad-CAM maps need pytorch-grad-cam: {install_hint("explain")}'
# GradCAM hooks the model's own last block: two calls at once on one model (a demo serving requests in threads)
# would each record the other's activations
_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def _grid_gradcam() -> Tuple[Type, Type]:
    """The library's GradCAM, its map left on the token grid, and its class-score target."""
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as err:
        raise ImportError(GRADCAM_NEEDS) from err

    class GridGradCAM(GradCAM):
        """GradCAM as the library computes it (ReLU of the gradient-weighted channel sum, scaled to [0, 1]), with
        the map left at the size of the target layer's output rather than resized to the input with OpenCV: it is
        then upsampled exactly as `get_attention_map` upsamples, so the two maps differ only in what they say."""

        def get_target_width_height(self, input_tensor: torch.Tensor) -> Tuple[int, int]:
            activations = self.activations_and_grads.activations[0]
            return activations.shape[-1], activations.shape[-2]

    return GridGradCAM, ClassifierOutputTarget


def _check_classifier(model: PatchConvNet) -> None:
    if not isinstance(model, PatchConvNet) or model.num_classes == 0:
        raise ValueError('Grad-CAM needs a PatchConvNet with a classifier (num_classes > 0): it follows a class score.')


def _gradcam_grid(
        model: PatchConvNet,
        x: torch.Tensor,
        class_index: Optional[int],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM on the last trunk block's output (B, h, w) in [0, 1], and the logits it followed (B, num_classes).

    The last trunk block is the last layer with a spatial map: after it the attention pooling mixes the patches.
    The model's train/eval modes, `requires_grad` flags, `.grad` tensors and gradient checkpointing are restored,
    and the library's hooks removed, whatever happens.
    """
    gradcam_cls, target_cls = _grid_gradcam()
    if class_index is not None and not 0 <= class_index < model.num_classes:
        raise ValueError(f'class_index={class_index} is out of range for {model.num_classes} classes.')
    params = list(model.parameters())
    saved = [(p, p.requires_grad, p.grad) for p in params]
    checkpointing = model.grad_checkpointing
    with _LOCK, eval_mode(model), torch.enable_grad():
        cam = gradcam_cls(model, target_layers=[model.blocks[-1]])
        try:
            # checkpointing would run the hooked block twice; frozen weights spare the weight gradients (only the
            # block output's gradient is used) and leave the user's .grad alone; the input then carries the graph
            model.grad_checkpointing = False
            for p in params:
                p.requires_grad_(False)
            targets = None if class_index is None else [target_cls(class_index) for _ in range(x.shape[0])]
            grid = cam(x.detach().requires_grad_(True), targets)
            logits = cam.outputs.detach()
        finally:
            cam.activations_and_grads.release()
            model.grad_checkpointing = checkpointing
            for p, requires_grad, grad in saved:  # the library's zero_grad() set every .grad to None
                p.requires_grad_(requires_grad)
                p.grad = grad
    return torch.from_numpy(grid).to(x.device), logits


def gradcam_map(
        model: PatchConvNet,
        img: ImageInput,
        *,
        class_index: Optional[int] = None,
        upsample: bool = True,
) -> torch.Tensor:
    """Grad-CAM of `img` on the model's last trunk block, as a map (H, W), or (B, H, W) for a batch, in [0, 1].

    Args:
        model: A PatchConvNet with a classifier (any pooling, any number of class tokens).
        img: What `get_attention_map` takes: a PIL image or an HxWxC uint8 array (preprocessed with the model's
            data config), or a (C, H, W) / (B, C, H, W) tensor taken as preprocessed.
        class_index: The class whose score the map explains (default: the predicted class).
        upsample: Resize the token-grid map to the size of the image the model saw (bilinear, as
            `get_attention_map`), then scale it to [0, 1] again; False: the token grid (h, w).

    The map is pytorch-grad-cam's `GradCAM` (ReLU of the channels weighted by their mean gradient, scaled to
    [0, 1] per image). It costs a forward and a backward pass. Raises ImportError naming the `explain` extra when
    pytorch-grad-cam is missing.
    """
    _check_classifier(model)
    single = not (isinstance(img, torch.Tensor) and img.ndim == 4)
    x = model_input(model, img)
    maps, _ = _gradcam_grid(model, x, class_index)
    if upsample:
        maps = scale_to_unit(F.interpolate(maps[:, None], size=x.shape[-2:], mode='bilinear',
                                            align_corners=False)[:, 0])
    return maps[0] if single else maps


def gradcam_explanation(model: PatchConvNet, image: Image.Image, *,
                        class_index: Optional[int] = None) -> ImageExplanation:
    """`explain_image` with the Grad-CAM map: the class probabilities, the token-grid Grad-CAM map, and that map
    placed where the model's view lies in `image` (0 where a crop cut the image), in one forward-backward pass."""
    _check_classifier(model)
    if not isinstance(image, Image.Image):
        raise TypeError(f'gradcam_explanation takes a PIL image, got {type(image).__name__}.')
    maps, logits = _gradcam_grid(model, model_input(model, image), class_index)
    grid = maps[0].float().cpu()
    on_image = place_in_image(model, grid, image.width, image.height)
    return ImageExplanation(logits[0].float().softmax(-1).cpu(), grid, on_image)
