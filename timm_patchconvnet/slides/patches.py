"""Whole-slide maps of IDC patients: the patches put back at their slide coordinates, a model run over all of them,
and the predicted IDC probability, the annotated region and the pooling's attention drawn over the tissue.

Works from any source whose rows carry `image`, `label`, `patient_id`, `x` and `y`: the Kaggle folder
(`data.read_idc_kaggle_folder`), the parquet export of `hub.dataset` or a Hub copy of it. A patch's `x`, `y` (from
its file name, `<patient>_idx5_x<X>_y<Y>_class<k>.png`) is the slide pixel of its top-left corner, so the slide is
rebuilt pixel for pixel: each patch lands at (x - min x, y - min y) of the canvas. A slide whose patches span more
than `MAX_CANVAS_PIXELS` is drawn scaled down to fit (a hostile zip of two patches far apart would otherwise ask for
gigabytes), and one that would need more than `MAX_DOWNSCALE` is refused before a patch is decoded.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import resolve_data_config

from ..attention import attention_and_logits
from ..images import exact_size_transform, to_rgb
from ..model_folder import atomic_file
from ..patchconvnet import PatchConvNet

__all__ = ['MAX_CANVAS_PIXELS', 'MAX_DOWNSCALE', 'SLIDES_DIR', 'Slide', 'SlideError', 'SlidePrediction', 'make_slide',
           'patch_layer', 'predict_slide', 'region_scores', 'render_slide', 'slide_from_rows', 'stitch']


SLIDES_DIR = 'slides'  # in a training run's output folder: maps of a few test patients
MAX_CANVAS_PIXELS = 4_000_000  # 2000 x 2000: 12 MB of RGB, 16 MB per float layer; the map shows ~500 pixels a side
MAX_DOWNSCALE = 25  # a 50-pixel patch drawn at 2 pixels: beyond, the map shows nothing and is refused


class SlideError(ValueError):
    """A slide cannot be built: the message says which patient or patches and why."""


@dataclass
class Slide:
    """One patient's patches at their slide positions: `origin` is the slide pixel of the canvas's top-left."""
    patient_id: str
    patches: List[Image.Image]  # RGB, most 50x50 (edge patches smaller)
    xs: np.ndarray  # top-left slide pixel of each patch
    ys: np.ndarray
    labels: Optional[np.ndarray] = None  # annotated class per patch (1: IDC), when known
    names: Optional[List[str]] = None  # where each patch came from, for messages

    @property
    def origin(self) -> Tuple[int, int]:
        return int(self.xs.min()), int(self.ys.min())

    @property
    def extent(self) -> Tuple[int, int]:
        """(width, height) in slide pixels of the region that holds every patch."""
        right = max(int(x) + p.width for x, p in zip(self.xs, self.patches))
        bottom = max(int(y) + p.height for y, p in zip(self.ys, self.patches))
        return right - self.origin[0], bottom - self.origin[1]

    @property
    def scale(self) -> float:
        """Canvas pixels per slide pixel: 1, or less for a slide larger than MAX_CANVAS_PIXELS."""
        width, height = self.extent
        return min(1., math.sqrt(MAX_CANVAS_PIXELS / (width * height)))

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height) of the canvas that holds every patch."""
        width, height = self.extent
        return math.ceil(width * self.scale), math.ceil(height * self.scale)

    def boxes(self) -> List[Tuple[int, int, int, int]]:
        """(left, top, right, bottom) of each patch on the canvas (at least one pixel each when scaled down)."""
        (x0, y0), scale = self.origin, self.scale
        boxes = []
        for x, y, patch in zip(self.xs, self.ys, self.patches):
            left, top = int((int(x) - x0) * scale), int((int(y) - y0) * scale)
            boxes.append((left, top, max(left + 1, round((int(x) - x0 + patch.width) * scale)),
                          max(top + 1, round((int(y) - y0 + patch.height) * scale))))
        return boxes


def slide_from_rows(rows, patient_id: str) -> Slide:
    """The Slide of `patient_id` from a `datasets.Dataset` (or anything indexable by column) with `image`,
    `patient_id`, `x`, `y` and optionally `label` columns. Duplicate coordinates are refused, naming both rows."""
    ids = np.asarray(rows['patient_id']).astype(str)
    where = np.flatnonzero(ids == str(patient_id))
    if len(where) == 0:
        known = sorted(set(ids.tolist()))
        shown = ', '.join(known[:10]) + (f', ... ({len(known)} in all)' if len(known) > 10 else '')
        raise SlideError(f'No patches of patient {patient_id!r} here; the patients are: {shown or "none"}.')
    selected = rows.select(where) if hasattr(rows, 'select') else [rows[i] for i in where]
    images = list(selected['image'])
    names = [getattr(image, 'filename', '') or f'row {i}' for i, image in zip(where, images)]
    labels = np.asarray(selected['label']) if 'label' in getattr(selected, 'column_names', ()) else None
    return make_slide(str(patient_id), images, selected['x'], selected['y'], labels, names)


def make_slide(patient_id: str, images: Sequence, xs: Sequence[int], ys: Sequence[int],
               labels: Optional[Sequence[int]] = None, names: Optional[Sequence[str]] = None) -> Slide:
    """A Slide from its patches (PIL images or file paths) and their top-left slide pixels."""
    names = list(names) if names is not None else [str(i) for i in range(len(images))]
    seen: Dict[Tuple[int, int], str] = {}
    for x, y, name in zip(xs, ys, names):
        if (int(x), int(y)) in seen:
            raise SlideError(f'Patient {patient_id}: two patches at x={x}, y={y}: {seen[(int(x), int(y))]} and {name}. '
                             'A position holds one patch: remove one of them.')
        seen[(int(x), int(y))] = name
    _check_extent(patient_id, xs, ys)
    patches = [to_rgb(Image.open(image) if isinstance(image, (str, Path)) else image) for image in images]
    return Slide(patient_id, patches, np.asarray(xs, dtype=np.int64), np.asarray(ys, dtype=np.int64),
                 None if labels is None else np.asarray(labels, dtype=np.int64), names)


def _check_extent(patient_id: str, xs: Sequence[int], ys: Sequence[int]) -> None:
    """Refuse, from the coordinates alone (before a patch is decoded), a slide too large to draw even scaled down."""
    if len(xs) == 0:
        return
    width, height = max(xs) - min(xs) + 1, max(ys) - min(ys) + 1
    if width * height > MAX_CANVAS_PIXELS * MAX_DOWNSCALE ** 2:
        raise SlideError(
            f'Patient {patient_id}: the patches span {width} x {height} slide pixels (x {min(xs)}..{max(xs)}, '
            f'y {min(ys)}..{max(ys)}); a slide map covers at most {MAX_CANVAS_PIXELS * MAX_DOWNSCALE ** 2:,} pixels '
            f'({MAX_CANVAS_PIXELS:,} drawn, scaled down at most {MAX_DOWNSCALE}x). Are the x/y coordinates right?')


def stitch(slide: Slide, background: Tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """The slide image: every patch pasted at its position on a `background` canvas, unchanged (scaled down with
    the canvas where the slide is larger than MAX_CANVAS_PIXELS)."""
    canvas = Image.new('RGB', slide.size, background)
    for patch, (left, top, right, bottom) in zip(slide.patches, slide.boxes()):
        if patch.size != (right - left, bottom - top):
            patch = patch.resize((right - left, bottom - top), Image.Resampling.BOX)
        canvas.paste(patch, (left, top))
    return canvas


@dataclass
class SlidePrediction:
    probabilities: np.ndarray  # (N,) the model's IDC (class 1) probability per patch
    attention: List[np.ndarray]  # per patch, the pooling's attention at the patch's own pixel size, in [0, 1]


@torch.no_grad()
def predict_slide(model: PatchConvNet, slide: Slide, batch_size: int = 256) -> SlidePrediction:
    """Run `model` over every patch (its eval preprocessing: an exact resize to its input size, then its
    normalisation), in batches: class-1 probabilities and attention maps."""
    transform = exact_size_transform(resolve_data_config(model=model))
    param = next(model.parameters())
    class_index = 1 if model.class_tokens == 'per_class' else None  # the IDC token's map
    probabilities, attention = [], []
    for start in range(0, len(slide.patches), batch_size):
        patches = slide.patches[start:start + batch_size]
        batch = torch.stack([transform(p) for p in patches]).to(param.device, param.dtype)
        batch = batch.contiguous(memory_format=torch.channels_last)  # the trunk's own layout: no conversion inside
        maps, logits = attention_and_logits(model, batch, class_index=class_index)
        probabilities.append(logits.float().softmax(-1)[:, 1].cpu())
        for patch, grid in zip(patches, maps.float()):
            heat = F.interpolate(grid[None, None], size=(patch.height, patch.width), mode='bilinear',
                                 align_corners=False)[0, 0]
            low, high = heat.min(), heat.max()
            attention.append(((heat - low) / (high - low).clamp_min(1e-12)).cpu().numpy())
    return SlidePrediction(torch.cat(probabilities).numpy(), attention)


def region_scores(predicted: np.ndarray, annotated: np.ndarray) -> Dict[str, Optional[float]]:
    """Dice and IoU of two boolean per-patch masks (the predicted and the annotated IDC region); None where both
    are empty (no region to compare)."""
    # here, not at the top: the Hub export imports this module with the hub extra alone, which has no scikit-learn
    from sklearn.metrics import f1_score, jaccard_score

    predicted, annotated = np.asarray(predicted, bool), np.asarray(annotated, bool)
    if not (predicted | annotated).any():
        return {'dice': None, 'iou': None}
    # Dice is the F1 score of the two masks, IoU their Jaccard index
    return {'dice': float(f1_score(annotated, predicted)), 'iou': float(jaccard_score(annotated, predicted))}


def patch_layer(slide: Slide, values: Sequence, fill: float = np.nan) -> np.ndarray:
    """A (H, W) float canvas with each patch's box filled by its value (a number, or an array of the patch's size,
    resized with the canvas)."""
    width, height = slide.size
    layer = np.full((height, width), fill, dtype=np.float32)
    for value, (left, top, right, bottom) in zip(values, slide.boxes()):
        if np.ndim(value) == 2 and np.shape(value) != (bottom - top, right - left):
            value = np.asarray(Image.fromarray(np.asarray(value, np.float32), 'F').resize(
                (right - left, bottom - top), Image.Resampling.BILINEAR))
        layer[top:bottom, left:right] = value
    return layer


def render_slide(slide: Slide, prediction: SlidePrediction, path: Path, threshold: float = 0.5,
                 title: str = '') -> Dict[str, Optional[float]]:
    """Draw the slide side by side: the tissue; the predicted IDC probability per patch with the annotated IDC
    region's outline; the pooling's attention inside each patch. Writes the PNG `path` and returns the region
    scores (Dice, IoU at `threshold`) when the slide has annotations."""
    from matplotlib.figure import Figure

    tissue = np.asarray(stitch(slide))
    probability = patch_layer(slide, prediction.probabilities)
    attention = patch_layer(slide, prediction.attention)
    scores: Dict[str, Optional[float]] = {}
    if slide.labels is not None:
        scores = region_scores(prediction.probabilities >= threshold, slide.labels == 1)
    fig = Figure(figsize=(15, 5.4))
    axes = fig.subplots(1, 3)
    axes[0].imshow(tissue)
    axes[0].set_title(f'patient {slide.patient_id}: tissue ({len(slide.patches)} patches)', fontsize=9)
    axes[1].imshow(tissue)
    shown = axes[1].imshow(probability, cmap='inferno', vmin=0, vmax=1, alpha=0.6)
    fig.colorbar(shown, ax=axes[1], fraction=0.046, label='predicted IDC probability')
    if slide.labels is not None and slide.labels.any():
        annotated = np.nan_to_num(patch_layer(slide, (slide.labels == 1).astype(np.float32), 0.))
        axes[1].contour(annotated, levels=[0.5], colors='cyan', linewidths=1.2)
    dice = scores.get('dice')
    axes[1].set_title('IDC probability; cyan: annotated region' + (f' (Dice {dice:.2f})' if dice is not None
                                                                   else ''), fontsize=9)
    axes[2].imshow(tissue)
    axes[2].imshow(attention, cmap='jet', vmin=0, vmax=1, alpha=0.5)
    axes[2].set_title("the pooling's attention inside each patch", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_file(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format='png'))
    return scores
