"""Data sets that tests write themselves, in the real layouts and schemas (no network)."""
import functools
import io
import shutil
import struct
import zlib
from pathlib import Path
from typing import Optional

import datasets
import numpy as np
from PIL import Image

CIFAR10_NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
# IDC patients: id -> (negative, positive) patch counts, positive shares from 1/8 to 7/8
IDC_PATIENTS = {str(10253 + i): (8 - k, k) for i, k in enumerate([1, 2, 3, 4, 5, 6, 7, 1, 3, 5])}
IDC_EDGE_PATCH = ('10253', 1001, 2451, 0)  # patient, x, y, class of the 50x31 edge patch


def save_random_png(path: Path, size=(50, 50), mode='RGB', seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {'RGB': 3, 'RGBA': 4, 'L': 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path)


def save_png_declaring(path: Path, width: int, height: int) -> None:
    """A small valid PNG whose header then claims `width` x `height` (CRC fixed), as a decompression-bomb attack
    sends it: PIL refuses it on opening, before any pixel is read."""
    buffer = io.BytesIO()
    Image.new('RGB', (8, 8), (200, 30, 90)).save(buffer, format='PNG')
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack('>II', width, height)  # IHDR's width and height follow the signature and chunk head
    data[29:33] = struct.pack('>I', zlib.crc32(bytes(data[12:29])))  # the CRC of 'IHDR' and its 13 bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))


def save_16_bit_png(path: Path, value: int, size=(20, 20)) -> None:
    """A 16-bit grayscale PNG of one value (PIL reopens it as mode I;16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint16)).save(path)


def random_images(n: int, size=(32, 32)) -> list:
    rng = np.random.default_rng(n)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def write_idc_patients(root: Path, patients: dict) -> None:
    for patient, counts in patients.items():
        for label, count in enumerate(counts):
            for i in range(count):
                name = f'{patient}_idx5_x{50 * i}_y{100 * label}_class{label}.png'
                save_random_png(root / patient / str(label) / name, seed=int(patient) + 31 * i + label)


def write_idc_kaggle_folder(root: Path) -> Path:
    """The Kaggle layout, with an edge patch, a corrupt file and the archive's duplicate copy of some patients."""
    write_idc_patients(root, IDC_PATIENTS)
    patient, x, y, label = IDC_EDGE_PATCH
    save_random_png(root / patient / str(label) / f'{patient}_idx5_x{x}_y{y}_class{label}.png', size=(50, 31))
    (root / '10254' / '1' / '10254_idx5_x999_y999_class1.png').write_bytes(b'not a png at all')
    for patient in ('10253', '10254', '10255'):
        shutil.copytree(root / patient, root / 'IDC_regular_ps50_idx5' / patient)
    return root


def write_cifar10_parquet(root: Path, num_train: int = 200, num_test: int = 50) -> Path:
    """A local copy of the Hub's uoft-cs/cifar10 layout: plain_text/{train,test}-00000-of-00001.parquet."""
    features = datasets.Features(img=datasets.Image(), label=datasets.ClassLabel(names=CIFAR10_NAMES))
    for split, n in (('train', num_train), ('test', num_test)):
        data = datasets.Dataset.from_dict({'img': random_images(n), 'label': [i % 10 for i in range(n)]},
                                          features=features)
        data.to_parquet(root / 'plain_text' / f'{split}-00000-of-00001.parquet')
    return root


def write_idc_slides(root: Path, patients, grid: int = 6, seed: int = 0) -> dict:
    """A Kaggle-layout IDC folder where each patient is a slide: a `grid` x `grid` raster of patches at
    x, y = 1 + 50 * i (as in the real file names; the last column cut to 31 px wide, as edge patches are), with one
    elliptical IDC region whose patches are class 1. IDC tissue is dense and purple, the rest pale pink stroma, so
    a small model learns to tell them apart in a few epochs. Returns {patient: set of (x, y) of class-1 patches}."""
    rng = np.random.default_rng(seed)
    regions = {}
    for n, patient in enumerate(patients):
        centre = rng.uniform(1.5, grid - 1.5, 2)
        radii = rng.uniform(1.2, 2.0, 2)
        positive = set()
        for i in range(grid):
            for j in range(grid):
                x, y = 1 + 50 * i, 1 + 50 * j
                inside = ((i + .5 - centre[0]) / radii[0]) ** 2 + ((j + .5 - centre[1]) / radii[1]) ** 2 <= 1
                colour = (150, 60, 160) if inside else (235, 190, 210)
                width = 31 if i == grid - 1 else 50
                pixels = np.clip(rng.normal(colour, 18, (50, width, 3)), 0, 255).astype(np.uint8)
                path = root / patient / str(int(inside)) / f'{patient}_idx5_x{x}_y{y}_class{int(inside)}.png'
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path)
                if inside:
                    positive.add((x, y))
        regions[patient] = positive
    return regions


SLIDE_TEXTURE_MPP = 0.25  # scikit-image's immunohistochemistry photograph taken as a 40x scan


@functools.lru_cache(maxsize=1)
def _ihc_texture() -> np.ndarray:
    from skimage.data import immunohistochemistry
    return immunohistochemistry()


def slide_pixels(x0: int, y0: int, width: int, height: int, mpp: float, tissue_um, tumour_um, ink_um=None):
    """The RGB pixels (height, width, 3) at `mpp` from level-0 pixel (x0, y0) of a stand-in slide: white glass,
    a `tissue_um` box (left, top, right, bottom in µm) of scikit-image's IHC photograph tiled up, and inside it a
    `tumour_um` box of the same tissue, denser and purple; `ink_um`: a box of green pen ink on the glass."""
    texture = _ihc_texture()
    xs_um = (np.arange(x0, x0 + width) + .5) * mpp
    ys_um = (np.arange(y0, y0 + height) + .5) * mpp
    tx = (xs_um / SLIDE_TEXTURE_MPP).astype(np.int64) % texture.shape[1]
    ty = (ys_um / SLIDE_TEXTURE_MPP).astype(np.int64) % texture.shape[0]
    pixels = texture[ty][:, tx].copy()

    def inside(box):
        rows = (ys_um >= box[1]) & (ys_um < box[3])
        return rows[:, None] & ((xs_um >= box[0]) & (xs_um < box[2]))[None]
    tumour = inside(tumour_um)
    purple = pixels[tumour].astype(np.float32) * (0.75, 0.35, 0.85)
    pixels[tumour] = purple.astype(np.uint8)
    pixels[~inside(tissue_um)] = 248
    if ink_um is not None:
        pixels[inside(ink_um)] = (40, 170, 60)
    return pixels


def write_pyramid_slide(path: Path, width: int, height: int, mpp: Optional[float], pixels=None, tile: int = 256,
                        levels: int = 99, **content) -> Path:
    """A pyramidal tiled TIFF that OpenSlide reads as a generic-tiff slide: level 0 `width` x `height` at `mpp`
    (in the resolution tags), then each level half the last, every level its own page marked reduced-resolution
    (SubFileType 1), down to one tile or `levels` levels; `mpp` None: no resolution tags. Pixels come from
    `pixels(x0, y0, w, h, mpp)` (default `slide_pixels` with `content`) a tile at a time, so a large slide is never
    held whole."""
    import tifffile
    pixels = pixels or (lambda *args: slide_pixels(*args, **content))
    with tifffile.TiffWriter(path) as tif:
        level, factor = 0, 1
        while True:
            w, h = -(-width // factor), -(-height // factor)
            level_mpp = (mpp or 1.) * factor

            def tiles(w=w, h=h, level_mpp=level_mpp):
                for y0 in range(0, h, tile):
                    for x0 in range(0, w, tile):
                        block = np.full((tile, tile, 3), 248, np.uint8)
                        part = pixels(x0, y0, min(tile, w - x0), min(tile, h - y0), level_mpp)
                        block[:part.shape[0], :part.shape[1]] = part
                        yield block
            scale = dict(resolution=(1e4 / level_mpp, 1e4 / level_mpp), resolutionunit='CENTIMETER') if mpp else {}
            tif.write(tiles(), shape=(h, w, 3), dtype=np.uint8, tile=(tile, tile), photometric='rgb',
                      compression='zlib', compressionargs={'level': 1}, subfiletype=1 if level else 0, **scale)
            if max(w, h) <= tile or level + 1 >= levels:
                return path
            level, factor = level + 1, factor * 2
