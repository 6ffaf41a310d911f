"""Time of one whole-slide map: a slide of about 2,000 IDC-sized patches stitched, run through a model in batches
(probability and attention per patch) and drawn, on this machine's CPU.

    python benchmarks/slides.py                                   # patchconvnet_ti12_p4, 45 x 45 = 2,025 patches
    python benchmarks/slides.py --model patchconvnet_s60_p4 --grid 20 --threads 2

The patches are synthetic (random tissue colours; the time does not depend on the pixels); the model is untrained
at the IDC tag's input size (50x50). Prints one markdown table of the steps' wall times.
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

import timm_patchconvnet  # noqa: F401  (registers the models)
from timm_patchconvnet.slides import make_slide, predict_slide, render_slide, stitch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='patchconvnet_ti12_p4')
    parser.add_argument('--grid', type=int, default=45, help='patches per side of the square slide (default: 45)')
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    positions = [(1 + 50 * i, 1 + 50 * j) for i in range(args.grid) for j in range(args.grid)]
    patches = [Image.fromarray(rng.integers(120, 255, (50, 50, 3), dtype=np.uint8)) for _ in positions]
    labels = rng.integers(0, 2, len(positions))
    model = timm.create_model(args.model, num_classes=2, pretrained_cfg_overlay=dict(
        input_size=(3, 50, 50), crop_pct=1.0)).eval()

    times = {}
    start = time.perf_counter()
    slide = make_slide('benchmark', patches, *zip(*positions), labels)
    stitch(slide)
    times['stitch'] = time.perf_counter() - start
    start = time.perf_counter()
    prediction = predict_slide(model, slide, args.batch_size)
    times['predict (probability and attention per patch)'] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        render_slide(slide, prediction, Path(folder) / 'slide.png')
        times['draw (three panels, PNG)'] = time.perf_counter() - start
    times['total'] = sum(times.values())
    print(f'{args.model}, {len(positions)} patches of 50x50, batch {args.batch_size}, {args.threads} thread(s), '
          f'torch {torch.__version__}\n')
    print('| step | seconds |\n|---|---|')
    for step, seconds in times.items():
        print(f'| {step} | {seconds:.2f} |')


if __name__ == '__main__':
    main()
