"""A grid of attention heatmaps over test images with their true and predicted labels."""
from pathlib import Path
from typing import Callable, Sequence

import torch
from matplotlib.figure import Figure
from PIL import Image

from ..attention import eval_mode, get_attention_map, overlay_attention
from ..images import to_rgb
from ..model_folder import atomic_file
from ..patchconvnet import PatchConvNet

__all__ = ['save_attention_grid']


@torch.no_grad()
def save_attention_grid(
        model: PatchConvNet,
        images: Sequence[Image.Image],
        labels: Sequence[int],
        label_names: Sequence[str],
        transform: Callable[[Image.Image], torch.Tensor],
        path: Path,
        columns: int = 4,
) -> None:
    """Draw each image with the pooling's attention over it, titled `true / predicted`, into the PNG `path`."""
    param = next(model.parameters())
    images = [to_rgb(image) for image in images]  # 16-bit grayscale scaled to 8 bits, as in training
    batch = torch.stack([transform(image) for image in images]).to(param.device, param.dtype)
    with eval_mode(model):
        predicted = model(batch).argmax(-1).tolist()
    maps = get_attention_map(model, batch)

    rows = -(-len(images) // columns)
    fig = Figure(figsize=(2.2 * columns, 2.4 * rows))  # no pyplot: no global backend or figure state
    axes = fig.subplots(rows, columns, squeeze=False)
    size = tuple(batch.shape[-2:])[::-1]
    for ax, image, label, pred, heat in zip(axes.flat, images, labels, predicted, maps):
        ax.imshow(overlay_attention(image.resize(size, Image.BILINEAR), heat, alpha=0.45))
        ax.set_title(f'{label_names[label]} / {label_names[pred]}', fontsize=8,
                     color='black' if label == pred else 'red')
    for ax in axes.flat:
        ax.axis('off')
    fig.suptitle('attention of the pooling (true / predicted)', fontsize=9)
    fig.tight_layout()
    atomic_file(path, lambda tmp: fig.savefig(tmp, dpi=110, format='png'))
