"""Whole-slide inference on a stand-in slide: the whole pipeline (open, tissue mask, tiles read by DataLoader workers,
model, the five outputs) against the model alone on the same tiles, in the same run, and the peak RSS of the
process while the pipeline runs (Linux: the peak is reset after the stand-in slide is written).

    python benchmarks/wsi.py                                  # 20 x 15 mm of tissue at 0.25 µm/px, ti12 /4
    python benchmarks/wsi.py --model patchconvnet_s60_p4 --tissue-mm 10 7.5 --workers 2

The stand-in is a pyramidal tiled TIFF (as tests/test_wsi.py writes them): scikit-image's IHC photograph tiled up
on the levels at 2 µm/px or coarser (what the tissue mask and an IDC model at 4 µm/px read), flat tissue colour on
the finer ones (never read here; flat compresses, so the file stays small and quick to write). The model is
untrained at the IDC size (50x50, 4 µm/px): the time does not depend on its weights. Prints a markdown table.
"""
import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, List, Tuple

import numpy as np
import timm
import torch
from torch.utils.data import DataLoader

import timm_patchconvnet  # noqa: F401  (registers the models)
from timm_patchconvnet.attention import attention_and_logits
from timm_patchconvnet.slides.predict_wsi import predict_wsi
from timm_patchconvnet.slides.tiles import TileDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))
from datagen import slide_pixels, write_pyramid_slide  # noqa: E402

IDC_MPP = 4.0  # DatasetSpec('idc').mpp, the scale the model reads


def stand_in_pixels(tissue_um):
    def pixels(x0: int, y0: int, width: int, height: int, mpp: float) -> np.ndarray:
        if mpp >= 2:
            return slide_pixels(x0, y0, width, height, mpp, tissue_um=tissue_um, tumour_um=(0, 0, 0, 0))
        block = np.full((height, width, 3), 248, np.uint8)
        xs, ys = (np.arange(x0, x0 + width) + .5) * mpp, (np.arange(y0, y0 + height) + .5) * mpp
        inside = ((ys >= tissue_um[1]) & (ys < tissue_um[3]))[:, None] & ((xs >= tissue_um[0]) & (xs < tissue_um[2]))
        block[inside] = (190, 110, 160)
        return block
    return pixels


def tiles_of(result) -> torch.Tensor:
    """The pipeline's own tiles (uint8), read into memory for the model-alone timing."""
    data = TileDataset(result.path, result.plan, np.stack([result.tiles['x'], result.tiles['y']], 1))
    return torch.cat([pixels for pixels, _, _ in DataLoader(data, batch_size=256)])


def model_alone(model, tiles: torch.Tensor, batch_size: int) -> float:
    """Seconds of the model alone over `tiles`, normalised and batched as the pipeline does."""
    mean = torch.tensor(model.pretrained_cfg['mean']).view(1, -1, 1, 1) * 255
    std = torch.tensor(model.pretrained_cfg['std']).view(1, -1, 1, 1) * 255
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, len(tiles), batch_size):
            batch = (tiles[first:first + batch_size].float() - mean) / std
            attention_and_logits(model, batch.contiguous(memory_format=torch.channels_last))
    return time.perf_counter() - start


def pipeline_seconds(model, path: Path, out: Path, args) -> Tuple[float, Any]:
    """Seconds of the whole pipeline, the five outputs written included, and its result."""
    start = time.perf_counter()
    result = predict_wsi(model, path, model_mpp=IDC_MPP, batch_size=args.batch_size, num_workers=args.workers)
    result.save(out)
    return time.perf_counter() - start, result


def timed_rounds(model, path: Path, folder: Path, args) -> Tuple[List[float], List[float], Any]:
    """`args.rounds` rounds of the pipeline and the model alone, in alternating order (a machine shared with other
    work slows whichever runs while it is busy)."""
    _, result = pipeline_seconds(model, path, folder / 'out', args)  # warm-up, and the tiles to time alone
    tiles = tiles_of(result)
    Path('/proc/self/clear_refs').write_text('5')  # Linux: the peak RSS starts again (the writer's is not ours)
    pipelines, alones = [], []
    for round_index in range(args.rounds):
        for step in ('pipeline', 'alone') if round_index % 2 == 0 else ('alone', 'pipeline'):
            if step == 'pipeline':
                pipelines.append(pipeline_seconds(model, path, folder / 'out', args)[0])
            else:
                alones.append(model_alone(model, tiles, args.batch_size))
    return pipelines, alones, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='patchconvnet_ti12_p4')
    parser.add_argument('--tissue-mm', type=float, nargs=2, default=(20., 15.), metavar=('WIDTH', 'HEIGHT'))
    parser.add_argument('--mpp', type=float, default=0.25, help="the stand-in slide's level-0 scale")
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--workers', type=int, default=1)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--rounds', type=int, default=3, help='timed rounds of each, alternating (default: 3)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    margin_um = 1000.
    tissue_um = (margin_um, margin_um, margin_um + args.tissue_mm[0] * 1000, margin_um + args.tissue_mm[1] * 1000)
    width, height = (round((2 * margin_um + mm * 1000) / args.mpp) for mm in args.tissue_mm)
    model = timm.create_model(args.model, num_classes=2, pretrained_cfg_overlay=dict(
        input_size=(3, 50, 50), crop_pct=1.0)).eval()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        path = write_pyramid_slide(Path(folder) / 'stand_in.tif', width, height, args.mpp, tile=1024,
                                   pixels=stand_in_pixels(tissue_um))
        written = time.perf_counter() - start
        pipelines, alones, result = timed_rounds(model, path, Path(folder), args)
    tiles = len(result.tiles['x'])
    peak_mb = int(re.search(r'VmHWM:\s+(\d+) kB', Path('/proc/self/status').read_text()).group(1)) / 1024
    print(f'{args.model} at 50x50 ({IDC_MPP} µm/px); stand-in slide {width} x {height} px at {args.mpp} µm/px '
          f'({args.tissue_mm[0]:g} x {args.tissue_mm[1]:g} mm of tissue, written in {written:.0f} s); batch '
          f'{args.batch_size}, {args.workers} worker(s), {args.threads} thread(s), medians of {args.rounds} rounds, '
          f'torch {torch.__version__}\n')
    ratios = sorted(a / p for a, p in zip(alones, pipelines))
    pipeline, alone = statistics.median(pipelines), statistics.median(alones)
    print('| tiles | pipeline s | pipeline tiles/s | model alone tiles/s | pipeline / model (range) | tissue mm² '
          '| peak RSS MB |')
    print('|---|---|---|---|---|---|---|')
    print(f'| {tiles} | {pipeline:.1f} | {tiles / pipeline:.0f} | {tiles / alone:.0f} | '
          f'{statistics.median(ratios):.0%} ({ratios[0]:.0%}-{ratios[-1]:.0%}) | {result.tissue_mm2:.0f} '
          f'| {peak_mb:.0f} |')

if __name__ == '__main__':
    main()
