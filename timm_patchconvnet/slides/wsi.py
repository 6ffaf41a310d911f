"""A whole-slide image opened with OpenSlide (every format it reads), its physical scale, and where a model's tiles
are read from: the pyramid level just finer than the model's microns per pixel, resized to the model's input.

A model's scale (`model_mpp`) comes from its data set (`DatasetSpec.mpp`): a training run's recorded data set, a
registered tag named after one (`.idc`), or an `mpp` key in a saved model's config.json; `--model-mpp` overrides it.
A slide's scale comes from its file (`openslide.mpp-x`); a file without one is refused unless `--mpp` is given.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import openslide
from PIL import Image

from ..dataset_specs import DATASETS, dataset_spec
from ..errors import one_line
from ..model_ref import ModelRef

__all__ = ['MAX_SLIDE_PIXELS', 'ReadPlan', 'WholeSlide', 'WsiError', 'model_mpp', 'open_wsi', 'read_plan',
           'read_rgb']

# level 0 larger than this (about 316,000 pixels square, several times the largest scanned slide) is refused as a
# corrupt or hostile header before anything is read
MAX_SLIDE_PIXELS = 10 ** 11


class WsiError(ValueError):
    """A slide that cannot be read or used: the message (one line) names the file and says why."""


@dataclass(frozen=True)
class WholeSlide:
    """An open slide: its file, OpenSlide handle, vendor (OpenSlide's format name) and scale at level 0."""
    path: Path
    handle: openslide.OpenSlide
    vendor: str
    mpp: float  # microns per level-0 pixel
    mpp_from_file: bool

    @property
    def dimensions(self) -> Tuple[int, int]:
        return self.handle.dimensions

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> 'WholeSlide':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_wsi(path: Path, mpp: Optional[float] = None) -> WholeSlide:
    """Open `path` with OpenSlide; `mpp` (microns per level-0 pixel) overrides the file's, and is required when
    the file records none. Raises WsiError naming the file for anything that is not a usable slide."""
    path = Path(path)
    if not path.is_file():
        raise WsiError(f'{path}: no such file' + (' (a folder)' if path.is_dir() else ''))
    try:
        handle = openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError:
        raise WsiError(f'{path}: OpenSlide cannot read it: not a slide format it reads (Aperio .svs, generic tiled '
                       'TIFF, Hamamatsu, Leica, MIRAX, Philips, Sakura, Trestle, Ventana, Zeiss, DICOM), or a '
                       'truncated or corrupt slide file') from None
    except (openslide.OpenSlideError, OSError) as err:
        raise WsiError(f'{path}: cannot be read as a slide: {one_line(err)}') from None
    try:
        width, height = handle.dimensions
        if width < 1 or height < 1 or width * height > MAX_SLIDE_PIXELS:
            raise WsiError(f'{path}: its header claims {width} x {height} pixels at level 0, outside what a slide '
                           f'can be (1 to {MAX_SLIDE_PIXELS:.0e} pixels): a corrupt or hostile file')
        scale = _file_mpp(handle)
        if mpp is None and scale is None:
            raise WsiError(f'{path}: the file records no microns per pixel (openslide.mpp-x), so its physical scale '
                           'is unknown: give --mpp (e.g. 0.25 for a 40x scan, 0.5 for 20x) if you know it')
        if mpp is not None and not mpp > 0:
            raise WsiError(f'{path}: --mpp must be > 0, got {mpp}')
        vendor = handle.properties.get(openslide.PROPERTY_NAME_VENDOR, 'unknown')
        return WholeSlide(path, handle, vendor, float(mpp if mpp is not None else scale), mpp is None)
    except BaseException:
        handle.close()
        raise


def _file_mpp(handle: openslide.OpenSlide) -> Optional[float]:
    """The mean of the file's x and y microns per pixel; None where it records none (or nonsense)."""
    values = []
    for key in (openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y):
        try:
            values.append(float(handle.properties[key]))
        except (KeyError, ValueError):
            pass
    values = [v for v in values if 0 < v < 1e4]
    return sum(values) / len(values) if values else None


# a slide may be at most this much coarser than the model's scale (tiles enlarged 2x at most)
MIN_DOWNSAMPLE = 0.5


@dataclass(frozen=True)
class ReadPlan:
    """Where a model's tiles come from: `level` (microns per pixel `level_mpp`), `read_size` pixels square read
    there per tile, spanning `tile_level0` level-0 pixels; tiles start every `stride_level0` level-0 pixels."""
    level: int
    level_mpp: float
    read_size: int
    tile_level0: float
    stride_level0: float
    model_mpp: float
    tile_px: int  # the model's input size

    @property
    def tile_um(self) -> float:
        return self.tile_px * self.model_mpp


def read_plan(slide: WholeSlide, model_mpp: float, tile_px: int, overlap: float = 0.) -> ReadPlan:
    """The level just finer than (or at) `model_mpp`, the size to read there, and the tiles' level-0 span and
    stride (`overlap`: the share of a tile its neighbour covers, in [0, 1))."""
    if not model_mpp > 0:
        raise WsiError(f'the model scale must be > 0 microns per pixel, got {model_mpp}')
    if not 0 <= overlap < 1:
        raise WsiError(f'--overlap must be in [0, 1), got {overlap}')
    wanted = model_mpp / slide.mpp  # the downsampling from level 0 to the model's scale
    if wanted < MIN_DOWNSAMPLE:  # tiles of a few level-0 pixels: a mistyped scale, and a mask and grid of level 0
        raise WsiError(f'{slide.path}: at {slide.mpp:g} microns per pixel the slide is coarser than the model\'s '
                       f'{model_mpp:g} by {1 / wanted:.3g}x: its tiles would be enlarged from {tile_px * wanted:.3g} '
                       'pixels. Check --mpp (microns, e.g. 0.25 for a 40x scan) and --model-mpp.')
    downsamples = slide.handle.level_downsamples
    # the coarsest level not coarser than the model (a rounding error of the file's downsample is no coarser)
    finer = [level for level, factor in enumerate(downsamples) if factor <= wanted * (1 + 1e-6)]
    level = max(finer, key=lambda lv: downsamples[lv]) if finer else 0
    tile_level0 = tile_px * wanted
    read_size = max(1, round(tile_level0 / downsamples[level]))
    return ReadPlan(level, slide.mpp * downsamples[level], read_size, tile_level0, tile_level0 * (1 - overlap),
                    model_mpp, tile_px)


def read_rgb(handle: openslide.OpenSlide, location: Tuple[int, int], level: int, size: Tuple[int, int]) -> Image.Image:
    """`read_region` as RGB: `location` in level-0 pixels, `size` in pixels of `level` (OpenSlide's convention).
    Outside the scanned area OpenSlide gives transparent pixels: they become white, the glass's colour."""
    region = handle.read_region(location, level, size)
    white = Image.new('RGB', region.size, (255, 255, 255))
    white.paste(region, mask=region.getchannel('A'))
    return white


def model_mpp(ref: Optional[ModelRef], pretrained_cfg: dict) -> Optional[float]:
    """The microns per pixel of the images a model was trained on, where it is known: the `mpp` of a saved model's
    config.json (training writes it; a Hub model's is read from the local cache), the data set a training run
    recorded, or a registered tag named after a data set (`.idc`)."""
    recorded = _saved_config(ref, pretrained_cfg).get('mpp')
    if isinstance(recorded, (int, float)) and recorded > 0:
        return float(recorded)
    if ref is not None and ref.run_folder is not None:
        try:
            data = json.loads((ref.run_folder / 'metrics.json').read_text())['data']
            return dataset_spec(data.get('dataset') or data.get('kind') or '').mpp
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    tag = (ref.tag if ref is not None and ref.source == 'timm' else '') or pretrained_cfg.get('tag') or ''
    return DATASETS[tag].mpp if tag in DATASETS else None


def _saved_config(ref: Optional[ModelRef], pretrained_cfg: dict) -> dict:
    """The config.json of a model folder or of a Hub model in the local cache (named by `ref`, else by where timm
    loaded the model from: its `pretrained_cfg`); {} for any other model."""
    source = ref.source if ref is not None else pretrained_cfg.get('source')
    path = None
    if source == 'local-dir':
        path = (ref.path if ref is not None else Path(pretrained_cfg.get('file') or '.')) / 'config.json'
    elif source == 'hf-hub':
        from huggingface_hub import try_to_load_from_cache  # timm's own dependency
        repo, _, revision = (ref.name if ref is not None else pretrained_cfg.get('hf_hub_id') or '').partition('@')
        cached = try_to_load_from_cache(repo, 'config.json', revision=revision or None) if repo else None
        path = Path(cached) if isinstance(cached, str) else None
    try:
        config = json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}
