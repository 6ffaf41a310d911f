"""Predicted regions as polygons: the cells of the tiles at or over the threshold merged across tiles (holes kept),
in level-0 pixels, and written as a GeoJSON FeatureCollection that QuPath imports as annotations.

QuPath reads a feature's kind from `properties.objectType` ('annotation', or 'detection' for tiles), its class from
`properties.classification` as {name, color: [r, g, b]} (it throws without `color`) and its numbers from
`properties.measurements`.
"""
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import shapely
from shapely.geometry import Polygon, box, mapping

from .tiles import TileGrid

__all__ = ['REGION_COLOR', 'region_features', 'regions_from_grid', 'feature_collection']

REGION_COLOR = (220, 40, 40)  # the predicted class's colour in QuPath


def regions_from_grid(positive: np.ndarray, grid: TileGrid) -> List[Polygon]:
    """The polygons (level-0 pixels) covered by the cells where `positive` (rows, columns) is true, merged: each
    row's runs of cells as one box, then their union."""
    boxes = []
    offset = grid.cell_offset
    for row in range(positive.shape[0]):
        padded = np.concatenate([[False], positive[row], [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(padded))
        for start, stop in zip(edges[::2], edges[1::2]):
            boxes.append(box(offset + start * grid.stride, offset + row * grid.stride,
                             offset + stop * grid.stride, offset + (row + 1) * grid.stride))
    if not boxes:
        return []
    merged = shapely.union_all(boxes).simplify(0)  # simplify(0): drops the collinear corners of merged boxes
    return [shapely.orient_polygons(p) for p in getattr(merged, 'geoms', [merged]) if not p.is_empty]


def region_features(polygons: Sequence[Polygon], probability: np.ndarray, grid: TileGrid, mpp: float,
                    class_name: str, color: Tuple[int, int, int] = REGION_COLOR) -> List[Dict[str, Any]]:
    """One QuPath annotation per polygon, with its area in mm² and the mean probability of the cells inside."""
    rows, columns = np.nonzero(np.isfinite(probability))
    centres_x = grid.cell_offset + (columns + .5) * grid.stride
    centres_y = grid.cell_offset + (rows + .5) * grid.stride
    features = []
    for polygon in polygons:
        inside = shapely.contains_xy(polygon, centres_x, centres_y)
        mean = float(probability[rows[inside], columns[inside]].mean()) if inside.any() else float('nan')
        features.append({
            'type': 'Feature', 'geometry': mapping(polygon),
            'properties': {
                'objectType': 'annotation',
                'classification': {'name': class_name, 'color': list(color)},
                'measurements': {'Area mm2': polygon.area * mpp ** 2 / 1e6, 'Mean probability': mean},
                'isLocked': False,
            }})
    return features


def feature_collection(features: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    return {'type': 'FeatureCollection', 'features': list(features)}
