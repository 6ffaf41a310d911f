"""A model over a whole slide: tissue found on a thumbnail, its tiles streamed by DataLoader workers at the model's
scale, classified in batches under `torch.inference_mode` on the model's device, and the result (`WsiResult`):
per-tile probability and attention grids, the predicted regions and `save(folder)`.

Memory is bounded whatever the slide's size: the thumbnail, the grids (tile resolution) and the per-tile table
grow with its area; the pixels are read a batch of tiles at a time.
"""
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import openslide
import torch
from shapely.geometry import Polygon
from timm.data import resolve_data_config
from timm.data.transforms import str_to_pil_interp
from torch.utils.data import DataLoader

from ..attention import attention_and_logits
from ..demo.models import class_names
from ..errors import one_line
from ..patchconvnet import PatchConvNet
from .regions import regions_from_grid
from .tiles import MIN_TISSUE_SHARE, TileDataset, TileGrid, tile_grid, tissue_share
from .tissue import read_thumbnail, tissue_mask
from .wsi import ReadPlan, WsiError, open_wsi, read_plan

__all__ = ['WsiResult', 'predict_wsi']

@dataclass
class WsiResult:
    """What `predict_wsi` found on one slide. Grids are (rows, columns) over the tile grid, NaN off the tissue;
    `attention` stitches each tile's token-grid map (its pooling weights, scaled to [0, 1] per tile)."""
    path: Path
    vendor: str
    dimensions: tuple  # level-0 (width, height)
    mpp: float  # microns per level-0 pixel used
    plan: ReadPlan
    grid: TileGrid
    thumbnail: np.ndarray  # RGB, `thumbnail_downsample` level-0 pixels per pixel
    thumbnail_downsample: float
    tissue: np.ndarray  # bool, the thumbnail's tissue mask
    probability: np.ndarray
    attention: np.ndarray  # (rows * h, columns * w)
    tiles: Dict[str, np.ndarray]  # the tile table: row, column, x, y, size, probability, attention peak and entropy
    threshold: float
    class_name: str
    model_id: str
    seconds: float = 0.
    regions: List[Polygon] = field(default_factory=list)

    @property
    def tissue_mm2(self) -> float:
        return float(self.tissue.sum()) * (self.thumbnail_downsample * self.mpp) ** 2 / 1e6

    @property
    def region_mm2(self) -> float:
        return sum(polygon.area for polygon in self.regions) * self.mpp ** 2 / 1e6

    def summary(self) -> Dict[str, Any]:
        tissue = self.tissue_mm2
        return {
            'slide': self.path.name, 'vendor': self.vendor, 'dimensions': list(self.dimensions),
            'mpp': self.mpp, 'model_mpp': self.plan.model_mpp, 'level': self.plan.level,
            'tile_um': self.plan.tile_um, 'stride_um': self.grid.stride * self.mpp,
            'tissue_mm2': tissue, 'region_mm2': self.region_mm2,
            'region_share_of_tissue': self.region_mm2 / tissue if tissue > 0 else 0.,
            'class': self.class_name, 'regions': len(self.regions), 'model': self.model_id,
            'threshold': self.threshold, 'tiles': int(len(self.tiles['x'])), 'seconds': round(self.seconds, 3)}

    def save(self, folder: Path) -> Path:
        """Write the five outputs into `folder` (`wsi_outputs.OUTPUT_FILES`), each atomically, summary.json last."""
        from .wsi_outputs import save_result
        return save_result(self, Path(folder))


# longer than 50 lines: one pass over the slide, read top to bottom: open, plan, mask, stream, assemble
def predict_wsi(model: PatchConvNet, path: Path, *, model_mpp: float, mpp: Optional[float] = None,
                threshold: float = 0.5, overlap: float = 0., batch_size: int = 64, num_workers: int = 0,
                positive_class: int = 1, model_id: str = '', progress: bool = False) -> WsiResult:
    """Classify the tissue tiles of the slide at `path`. `model_mpp`: the microns per pixel the model was trained
    at (`wsi.model_mpp`); `mpp`: the slide's, over its file's; `threshold`: on the `positive_class` probability;
    `overlap`: the share of a tile shared with its neighbour. The model is used as given (device, dtype, mode)."""
    started = time.perf_counter()
    class_name = _class_name(model, positive_class)  # before the slide is read: a model of one class stops here
    config = resolve_data_config(model=model)
    tile_px = config['input_size'][-1]
    with open_wsi(path, mpp) as slide:
        plan = read_plan(slide, model_mpp, tile_px, overlap)
        grid = tile_grid(slide.dimensions, plan)
        try:
            thumbnail, downsample = read_thumbnail(slide, plan)
        except openslide.OpenSlideError as err:
            raise WsiError(f'{path}: cannot be read ({one_line(err)}): a truncated or corrupt file?') from None
        tissue = tissue_mask(thumbnail, downsample * slide.mpp)
        dimensions, vendor, scale = slide.dimensions, slide.vendor, slide.mpp
    rows, columns = np.nonzero(tissue_share(tissue, grid, downsample) >= MIN_TISSUE_SHARE)
    origins = grid.tile_origins(rows, columns)
    data = TileDataset(Path(path), plan, origins, str_to_pil_interp(config.get('interpolation') or 'bicubic'))
    param = next(model.parameters())
    loader = DataLoader(data, batch_size=batch_size, num_workers=num_workers, pin_memory=param.device.type == 'cuda',
                        persistent_workers=False)
    mean = torch.tensor(config['mean'], device=param.device).view(1, -1, 1, 1) * 255
    std = torch.tensor(config['std'], device=param.device).view(1, -1, 1, 1) * 255
    probabilities = np.full(len(data), np.nan, np.float32)
    maps: Optional[np.ndarray] = None
    bar = _progress_bar(len(data), Path(path).name, progress)
    with torch.inference_mode():
        for pixels, indices, errors in loader:
            failed = [(int(i), e) for i, e in zip(indices, errors) if e]
            if failed:
                x, y = origins[failed[0][0]]
                raise WsiError(f'{path}: the tile at level-0 x={x}, y={y} cannot be read ({failed[0][1]}): a '
                               'truncated or corrupt file?')
            batch = ((pixels.to(param.device, non_blocking=True).float() - mean) / std).to(param.dtype)
            grid_maps, logits = attention_and_logits(model, batch.contiguous(memory_format=torch.channels_last),
                                                     class_index=_class_index(model, positive_class))
            probabilities[indices.numpy()] = logits.float().softmax(-1)[:, positive_class].cpu().numpy()
            grid_maps = grid_maps.float().cpu().numpy()
            if maps is None:
                maps = np.zeros((len(data), *grid_maps.shape[1:]), np.float32)
            maps[indices.numpy()] = grid_maps
            bar.update(len(indices))
    bar.close()
    result = _assemble(grid, rows, columns, origins, probabilities, maps, plan)
    positive = np.isfinite(result['probability']) & (result['probability'] >= threshold)
    return WsiResult(Path(path), vendor, dimensions, scale, plan, grid, thumbnail, downsample, tissue,
                     threshold=threshold, class_name=class_name, model_id=model_id,
                     regions=regions_from_grid(positive, grid), seconds=time.perf_counter() - started, **result)


def _class_index(model: PatchConvNet, positive_class: int) -> Optional[int]:
    return positive_class if model.class_tokens == 'per_class' else None  # the positive class's own map


def _class_name(model: PatchConvNet, positive_class: int) -> str:
    if not 0 <= positive_class < model.num_classes:
        raise WsiError(f'positive class {positive_class} is out of range for a model of {model.num_classes} classes')
    return class_names(model)[positive_class]


def _progress_bar(total: int, name: str, shown: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=name, unit='tile', disable=not shown, dynamic_ncols=True)


def _assemble(grid: TileGrid, rows: np.ndarray, columns: np.ndarray, origins: np.ndarray, probabilities: np.ndarray,
              maps: Optional[np.ndarray], plan: ReadPlan) -> Dict[str, Any]:
    """The grids and the tile table from the per-tile results."""
    probability = np.full((grid.rows, grid.columns), np.nan, np.float32)
    probability[rows, columns] = probabilities
    h, w = maps.shape[1:] if maps is not None else (1, 1)
    attention = np.full((grid.rows, h, grid.columns, w), np.nan, np.float32)
    peak = entropy = np.zeros(0, np.float32)
    if maps is not None:
        weights = maps.reshape(len(maps), -1)
        weights = weights / np.clip(weights.sum(1, keepdims=True), 1e-12, None)
        peak = weights.max(1)
        entropy = -(weights * np.log(np.clip(weights, 1e-12, None))).sum(1) / np.log(weights.shape[1])
        low, high = maps.min((1, 2), keepdims=True), maps.max((1, 2), keepdims=True)
        attention[rows, :, columns, :] = (maps - low) / np.clip(high - low, 1e-12, None)
    tiles = {'row': rows, 'column': columns, 'x': origins[:, 0], 'y': origins[:, 1],
             'size': np.full(len(rows), round(plan.tile_level0), np.int64), 'probability': probabilities,
             'attention_peak': peak, 'attention_entropy': entropy}
    return {'probability': probability, 'attention': attention.reshape(grid.rows * h, grid.columns * w),
            'tiles': tiles}
