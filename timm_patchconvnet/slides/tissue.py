"""Tissue detection on a low-resolution view of a slide: which parts hold stained tissue, so that only those tiles
are read and classified.

The mask follows CLAM's (an Otsu threshold of the saturation, then morphological clean-up and a minimum area) with
LazySlide's ink rule (green, cyan and blue pen strokes are not tissue: H&E and IHC stains are red to violet or
brown). Glass is white and unsaturated; the black of an empty scan area or a slide label is dark, and is dropped
too, as are blank regions (low saturation whatever the brightness).
"""
from typing import Tuple

import numpy as np
from PIL import Image
from skimage import color, filters, morphology

from .wsi import ReadPlan, WholeSlide, read_rgb

__all__ = ['MASK_PIXELS_PER_STRIDE', 'read_thumbnail', 'tissue_mask']

MASK_PIXELS_PER_STRIDE = 8  # the mask's resolution: 8 x 8 mask pixels per tile stride
STRIP_PIXELS = 1 << 24  # pixels of one strip read for the thumbnail: memory stays bounded whatever the slide
# saturation thresholds: never below the glass's noise, never above weakly stained tissue (Otsu of a slide that is
# nearly all tissue would otherwise split the tissue itself)
MIN_SATURATION, MAX_SATURATION = 0.04, 0.1
DARK = 0.15  # a brightness below which a pixel is black background, not tissue
INK_HUES = (0.2, 0.6)  # hue (of 1) from yellow-green through cyan to blue: pen ink, not stain
INK_SATURATION = 0.3  # ink is vivid; the blue of haematoxylin is pale
MIN_TISSUE_UM2 = 200. * 200.  # tissue pieces and holes smaller than this are dropped or filled


def read_thumbnail(slide: WholeSlide, plan: ReadPlan) -> Tuple[np.ndarray, float]:
    """The slide as an RGB array at `MASK_PIXELS_PER_STRIDE` pixels per tile stride, and its downsampling from level
    0. Read from the coarsest level fine enough, in strips, so no more than `STRIP_PIXELS` are held at once."""
    downsample = max(plan.stride_level0 / MASK_PIXELS_PER_STRIDE, 1.)
    width0, height0 = slide.dimensions
    out_w, out_h = max(1, round(width0 / downsample)), max(1, round(height0 / downsample))
    level = slide.handle.get_best_level_for_downsample(downsample)
    level_w, _ = slide.handle.level_dimensions[level]
    factor = slide.handle.level_downsamples[level]
    thumbnail = np.empty((out_h, out_w, 3), np.uint8)
    rows_per_strip = max(1, int(STRIP_PIXELS // max(level_w, 1) * factor / downsample))
    for top in range(0, out_h, rows_per_strip):
        bottom = min(out_h, top + rows_per_strip)
        y0 = int(top * downsample)
        read_h = max(1, round((bottom - top) * downsample / factor))
        strip = read_rgb(slide.handle, (0, y0), level, (level_w, read_h))
        thumbnail[top:bottom] = np.asarray(strip.resize((out_w, bottom - top), resample=Image.BILINEAR))
    return thumbnail, downsample


def tissue_mask(rgb: np.ndarray, mpp: float) -> np.ndarray:
    """A boolean mask of the stained tissue of `rgb` (H, W, 3 uint8), at `mpp` microns per pixel of it."""
    hsv = color.rgb2hsv(rgb)
    hue, value = hsv[..., 0], hsv[..., 2]
    radius = max(1, int(round(10. / mpp)))  # 10 µm: bridges the gaps between cells, not between tissue pieces
    saturation = filters.median(hsv[..., 1], morphology.disk(radius))  # as CLAM: pale gaps inside tissue count
    lit = value > DARK
    threshold = MIN_SATURATION
    if lit.sum() > 16 and np.ptp(saturation[lit]) > 0:
        threshold = float(np.clip(filters.threshold_otsu(saturation[lit]), MIN_SATURATION, MAX_SATURATION))
    ink = (hue > INK_HUES[0]) & (hue < INK_HUES[1]) & (hsv[..., 1] > INK_SATURATION)
    mask = morphology.closing(lit & (saturation > threshold) & ~ink, morphology.disk(radius))
    min_pixels = max(1, int(MIN_TISSUE_UM2 / mpp ** 2))
    mask = morphology.remove_small_holes(mask, max_size=min_pixels)
    return morphology.remove_small_objects(mask, max_size=min_pixels)
