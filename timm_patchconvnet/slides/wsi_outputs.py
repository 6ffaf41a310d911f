"""The files of a whole-slide prediction, one folder per slide, each written atomically: the overlay (thumbnail,
probability heatmap, colour bar, scale bar in mm), the attention overlay, the tile table (parquet), the regions
(QuPath GeoJSON) and summary.json, written last: a folder with a readable summary.json is complete, so a killed
batch run resumes after it.
"""
import json
from pathlib import Path
from typing import List

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..model_folder import atomic_file, atomic_write_json
from .regions import feature_collection, region_features

__all__ = ['OUTPUT_FILES', 'SUMMARY_FILE', 'is_complete', 'save_result']

SUMMARY_FILE = 'summary.json'
OUTPUT_FILES = ('overlay.png', 'attention.png', 'tiles.parquet', 'regions.geojson', SUMMARY_FILE)


def is_complete(folder: Path) -> bool:
    """Whether `folder` holds every output of a finished slide (summary.json, written last, readable)."""
    if not all((folder / name).is_file() for name in OUTPUT_FILES):
        return False
    try:
        return isinstance(json.loads((folder / SUMMARY_FILE).read_text()), dict)
    except (OSError, ValueError):
        return False


def save_result(result, folder: Path) -> Path:
    """Write `result`'s (a `predict_wsi.WsiResult`) outputs into `folder`; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SUMMARY_FILE).unlink(missing_ok=True)  # the folder is incomplete until the new summary is written
    _draw(result, folder / 'overlay.png', result.probability, 'inferno', f'{result.class_name} probability')
    _draw(result, folder / 'attention.png', result.attention, 'jet', "the pooling's attention inside each tile")
    table = pa.table({name: np.asarray(values) for name, values in result.tiles.items()})
    atomic_file(folder / 'tiles.parquet', lambda tmp: pq.write_table(table, tmp))
    features = region_features(result.regions, result.probability, result.grid, result.mpp, result.class_name)
    text = json.dumps(feature_collection(features))
    atomic_file(folder / 'regions.geojson', lambda tmp: tmp.write_text(text))
    atomic_write_json(folder / SUMMARY_FILE, result.summary())
    return folder


def _draw(result, path: Path, layer: np.ndarray, colormap: str, label: str) -> None:
    """The thumbnail in mm with `layer` (over the tile grid) on top, a colour bar and a scale bar."""
    from matplotlib.figure import Figure
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    mm = result.mpp / 1000  # mm per level-0 pixel
    height, width = result.thumbnail.shape[:2]
    fig = Figure(figsize=(8, 8 * height / width + 0.6) if width >= height else (8 * width / height + 1.5, 8))
    ax = fig.subplots()
    ax.imshow(result.thumbnail, extent=_extent(0, width * result.thumbnail_downsample, 0,
                                               height * result.thumbnail_downsample, mm))
    grid, offset = result.grid, result.grid.cell_offset
    shown = ax.imshow(layer, cmap=colormap, vmin=0, vmax=1, alpha=0.55, interpolation='nearest',
                      extent=_extent(offset, offset + grid.columns * grid.stride, offset,
                                     offset + grid.rows * grid.stride, mm))
    ax.set_xlim(0, result.dimensions[0] * mm)
    ax.set_ylim(result.dimensions[1] * mm, 0)
    fig.colorbar(shown, ax=ax, fraction=0.04, label=label)
    bar_mm = _round_length(result.dimensions[0] * mm / 5)
    ax.add_artist(AnchoredSizeBar(ax.transData, bar_mm, f'{bar_mm:g} mm', 'lower right', frameon=True))
    ax.set_xlabel('mm')
    ax.set_title(f'{result.path.name}: {len(result.regions)} region(s), {result.region_mm2:.2f} mm² of '
                 f'{result.tissue_mm2:.2f} mm² tissue', fontsize=9)
    atomic_file(path, lambda tmp: fig.savefig(tmp, dpi=100, format='png'))


def _extent(left: float, right: float, top: float, bottom: float, mm: float) -> List[float]:
    return [left * mm, right * mm, bottom * mm, top * mm]


def _round_length(length: float) -> float:
    """1, 2 or 5 times a power of ten, at most `length` (a scale bar's length)."""
    power = 10 ** np.floor(np.log10(max(length, 1e-9)))
    return float(max(f for f in (1, 2, 5) if f * power <= length) * power) if length >= power else float(power)
