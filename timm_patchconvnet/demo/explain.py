"""One image through one served model: the prediction, the map (the pooling's attention or Grad-CAM), the notes on
what was shown, and the pictures, redrawn from a small display view when only the colours change."""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import gradio as gr
import numpy as np
import torch
from PIL import Image

from ..attention import ImageExplanation, explain_image, overlay_attention
from ..gradcam import GRADCAM_NEEDS, gradcam_explanation
from ..images import is_high_bit_depth, to_rgb
from .models import DemoModel

__all__ = ['ATTENTION', 'COLORMAPS', 'DISPLAY_SIDE', 'DisplayView', 'Explanation', 'GRADCAM', 'PREDICTED', 'draw',
           'explain']

COLORMAPS = ('jet', 'turbo', 'viridis', 'inferno', 'magma')
PREDICTED = 'predicted class'
ATTENTION, GRADCAM = 'attention', 'Grad-CAM'  # the map sources: the pooling's weights, or Grad-CAM of the class
GRID_PIXELS = 256  # the token-grid map is drawn this wide, one flat square per token
# what a session keeps to redraw its last result: the picture at display size, so that memory does not grow with
# the size of uploads
DISPLAY_SIDE = 1024


@dataclass
class DisplayView:
    """What redrawing needs, at most DISPLAY_SIDE on the long side: the image, the map over it, the token grid."""
    image: Image.Image
    on_image: torch.Tensor
    grid: torch.Tensor


@dataclass
class Explanation:
    """The answer for one image: every class's probability, the two pictures, what redraws them, and notes."""
    probabilities: Dict[str, float]
    overlay: Image.Image
    grid: Image.Image
    view: DisplayView
    notes: str


def explain(models: Dict[str, DemoModel], image: Optional[Image.Image], model_name: str, class_choice: str,
            colormap: str, opacity: float, map_source: str = ATTENTION) -> Explanation:
    """`image` through `models[model_name]`, the map of `class_choice` (a class of a per-class-token model, else the
    predicted one) from `map_source`, drawn with `colormap` at `opacity`. Bad choices are a gr.Error."""
    if image is None:
        raise gr.Error('Upload an image or pick an example first.')
    if model_name not in models:
        raise gr.Error(f'Unknown model {model_name!r}: choose one of the list.')
    served = models[model_name]
    notes = []
    if image.mode != 'RGB':
        notes.append(mode_note(image))
        image = to_rgb(image)
    class_index = chosen_class(served, model_name, class_choice)
    result = explain_map(served, image, class_index, map_source)
    probabilities = result.probabilities
    shown = served.labels[class_index if class_index is not None else int(probabilities.argmax())]
    whose = f'the class token of "{shown}"' if served.per_class else 'the class token'
    h, w = result.grid.shape
    what = f'Grad-CAM of "{shown}" on the last trunk block' if map_source == GRADCAM else f'Attention of {whose}'
    notes.append(f'{what} over a {h}x{w} token grid; '
                 f'the model saw the image at {served.model.pretrained_cfg["input_size"][-1]} px, in '
                 f'{served.precision if map_source == ATTENTION else "fp32 (torch)"}.')
    view = display_view(image, result.on_image, result.grid)
    overlay, grid = draw(view, colormap, opacity)
    return Explanation(dict(zip(served.labels, probabilities.tolist())), overlay, grid, view, ' '.join(notes))


def chosen_class(served: DemoModel, model_name: str, class_choice: Optional[str]) -> Optional[int]:
    """The index of the class whose map is asked for: only per-class-token models have one map per class."""
    if not served.per_class or class_choice in (None, PREDICTED):
        return None
    if class_choice not in served.labels:
        raise gr.Error(f'{class_choice!r} is not a class of {model_name}.')
    return served.labels.index(class_choice)


def explain_map(served: DemoModel, image: Image.Image, class_index: Optional[int],
                map_source: str) -> ImageExplanation:
    """`explain_image`'s answer with the map chosen: the pooling's attention (at the served precision), or Grad-CAM
    of the same class (the chosen one for per-class tokens, else the predicted one; float32, it needs gradients)."""
    if map_source == ATTENTION:
        return explain_image(served.runner, image, class_index=class_index)
    if map_source != GRADCAM:
        raise gr.Error(f'Unknown map {map_source!r}: choose {ATTENTION!r} or {GRADCAM!r}.')
    try:
        return gradcam_explanation(served.model, image, class_index=class_index)
    except ImportError as err:  # the `explain` extra is optional: say what to install, in the page
        raise gr.Error(GRADCAM_NEEDS) from err


def mode_note(image: Image.Image) -> str:
    """What the model was shown instead of a non-RGB image, in the words of `images.to_rgb`."""
    if is_high_bit_depth(image):
        depth = {'I': '32-bit integer', 'F': 'floating-point'}.get(image.mode, '16-bit')
        return (f'The image was {image.mode} ({depth} grayscale); the model sees it as 8-bit RGB, its bit depth '
                f'scaled (not clipped) to 8 bits.')
    has_alpha = image.mode in ('RGBA', 'LA', 'PA') or 'transparency' in image.info
    return f'The image was {image.mode}; the model sees it as RGB' + (' on white.' if has_alpha else '.')


def display_view(image: Image.Image, on_image: torch.Tensor, grid: torch.Tensor) -> DisplayView:
    """The view of a result at display size: a session then keeps a few MB whatever the upload's size, not the full
    image and a same-size float map."""
    scale = DISPLAY_SIDE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
        on_image = torch.nn.functional.interpolate(on_image[None, None], size=size[::-1], mode='area')[0, 0]
    return DisplayView(image, on_image.clone(), grid.clone())


def draw(view: Optional[DisplayView], colormap: str,
         opacity: float) -> Tuple[Optional[Image.Image], Optional[Image.Image]]:
    """The map over the image and the token-grid map of `view`; redrawing with another colour map or opacity does
    not run the model again."""
    if not view:
        return None, None
    return (overlay_attention(view.image, view.on_image, alpha=opacity, colormap=colormap),
            grid_picture(view.grid, colormap))


def grid_picture(grid: torch.Tensor, colormap: str) -> Image.Image:
    """The raw token-grid map, colour-mapped, each token a flat square."""
    from matplotlib import colormaps

    h, w = grid.shape
    scaled = (grid - grid.min()) / (grid.max() - grid.min()).clamp_min(1e-12)
    pixels = (colormaps[colormap](scaled.numpy())[..., :3] * 255).round().astype(np.uint8)
    side = max(1, GRID_PIXELS // max(h, w))
    return Image.fromarray(pixels).resize((w * side, h * side), Image.Resampling.NEAREST)
