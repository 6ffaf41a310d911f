"""The tiles of a slide: a grid at the model's scale, the tissue tiles chosen from the mask, and a streaming data set
that reads them with one OpenSlide handle per DataLoader worker (OpenSlide handles are not shared across processes).

Tiles cover the slide to its right and bottom edges: the part of an edge tile beyond the slide reads as white, so a
slide smaller than one tile is one tile.
"""
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import openslide
import torch
from PIL import Image
from torch.utils.data import Dataset

from .wsi import ReadPlan, read_rgb

__all__ = ['MIN_TISSUE_SHARE', 'TileDataset', 'TileGrid', 'tile_grid', 'tissue_share']

MIN_TISSUE_SHARE = 0.5  # a tile is classified when at least half of its stride cell is tissue


@dataclass(frozen=True)
class TileGrid:
    """Tiles every `stride` level-0 pixels, each `size` wide; cell (row, col) is the stride-sized square at the
    tile's centre, so that cells tile the slide without overlap whatever the tiles' overlap."""
    rows: int
    columns: int
    size: float
    stride: float

    @property
    def cell_offset(self) -> float:
        """Level-0 pixels from a tile's corner to its cell's."""
        return (self.size - self.stride) / 2

    def tile_origins(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """(N, 2) level-0 x, y of the tiles' top-left corners."""
        return np.stack([np.floor(columns * self.stride), np.floor(rows * self.stride)], 1).astype(np.int64)


def tile_grid(dimensions: Tuple[int, int], plan: ReadPlan) -> TileGrid:
    width, height = dimensions
    columns = max(1, math.ceil((width - plan.tile_level0) / plan.stride_level0) + 1)
    rows = max(1, math.ceil((height - plan.tile_level0) / plan.stride_level0) + 1)
    return TileGrid(rows, columns, plan.tile_level0, plan.stride_level0)


def tissue_share(mask: np.ndarray, grid: TileGrid, downsample: float) -> np.ndarray:
    """(rows, columns): the tissue share of each tile's cell, from the mask at `downsample` from level 0, by a
    summed-area table."""
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    table[1:, 1:] = mask.cumsum(0).cumsum(1)
    starts_x = (np.arange(grid.columns) * grid.stride + grid.cell_offset) / downsample
    starts_y = (np.arange(grid.rows) * grid.stride + grid.cell_offset) / downsample
    x0 = np.clip(np.round(starts_x), 0, mask.shape[1]).astype(int)
    y0 = np.clip(np.round(starts_y), 0, mask.shape[0]).astype(int)
    x1 = np.clip(np.round(starts_x + grid.stride / downsample), 0, mask.shape[1]).astype(int)
    y1 = np.clip(np.round(starts_y + grid.stride / downsample), 0, mask.shape[0]).astype(int)
    inside = table[y1][:, x1] - table[y0][:, x1] - table[y1][:, x0] + table[y0][:, x0]
    cell_pixels = (grid.stride / downsample) ** 2  # the whole cell: a cell past the slide's edge has less tissue
    return (inside / max(cell_pixels, 1.)).astype(np.float32)


class TileDataset(Dataset):
    """The tiles at `origins` (level-0 x, y), read at the plan's level and resized to the model's input:
    (uint8 (3, S, S) tensor, its index, '' or the reason it could not be read). A read error is returned, not
    raised: a worker's exception would reach the caller as a multi-line traceback."""

    def __init__(self, path: Path, plan: ReadPlan, origins: np.ndarray, interpolation: int = Image.BICUBIC):
        self.path, self.plan, self.origins, self.interpolation = str(path), plan, origins, interpolation
        self._handle: Optional[openslide.OpenSlide] = None
        self._pid: Optional[int] = None

    def __len__(self) -> int:
        return len(self.origins)

    def handle(self) -> openslide.OpenSlide:
        """This process's own handle, opened on first use (each worker opens its own)."""
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = openslide.OpenSlide(self.path), os.getpid()
        return self._handle

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int, str]:
        size, side = self.plan.read_size, self.plan.tile_px
        try:
            x, y = (int(v) for v in self.origins[index])
            tile = read_rgb(self.handle(), (x, y), self.plan.level, (size, size))
            if tile.size != (side, side):
                tile = tile.resize((side, side), resample=self.interpolation)
            return torch.from_numpy(np.array(tile)).permute(2, 0, 1).contiguous(), index, ''
        except (openslide.OpenSlideError, OSError, ValueError) as err:
            return torch.zeros((3, side, side), dtype=torch.uint8), index, f'{type(err).__name__}: {err}'
