"""`patchconvnet-slides --wsi`: whole-slide images through a model, many slides per run (see cli/slides.py)."""
import argparse
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import one_line
from ..model_ref import parse_model_ref
from . import missing_dependency

__all__ = ['add_wsi_arguments', 'wsi_main']


def add_wsi_arguments(group) -> None:
    group.add_argument('--model-mpp', type=float, help="microns per pixel of the model's training images (default: "
                                                        "its data set's, e.g. IDC's)")
    group.add_argument('--mpp', type=float, help="microns per level-0 pixel of the slides, over their files' "
                                                 '(required for a file that records none)')
    group.add_argument('--overlap', type=float, default=0., help="share of a tile its neighbour covers, in [0, 1) "
                                                                 '(default: 0)')
    group.add_argument('--workers', type=int, default=min(4, max(1, (os.cpu_count() or 2) - 1)),
                       help='DataLoader workers reading tiles, each with its own OpenSlide handle (default: CPUs - 1, '
                            'at most 4)')
    group.add_argument('--device', help='where the model runs (default: cuda when there is one, else cpu)')


def wsi_main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run --wsi: 0 when every slide is written (or was already), 2 when any failed (listed at the end)."""
    try:
        from ..demo.models import DemoError, load_model
        from ..precision import PrecisionError, describe_choice, detect_hardware, optimize_for_inference
        from ..slides.predict_wsi import predict_wsi
        from ..slides.wsi import model_mpp
        from ..slides.wsi_batch import expand_slide_paths, run_slides
    except ModuleNotFoundError as err:
        return missing_dependency(err, 'whole-slide inference', 'slides')
    from .slides import run_threshold
    _check_arguments(parser, args)
    paths, unmatched = expand_slide_paths(args.wsi)
    _refuse_shared_names(parser, paths)
    device = _device(parser, args.device)
    try:
        served = load_model(args.model, precision=None)
        if served.model.num_classes != 2:
            raise DemoError(f'{args.model} has {served.model.num_classes} classes: whole-slide maps take a model of '
                            'two (IDC negative and positive)')
        model = optimize_for_inference(served.model.to(device), args.precision)
    except (DemoError, PrecisionError) as err:
        print(f'error: {one_line(err)}', file=sys.stderr)
        return 2
    print(describe_choice(args.precision, model, detect_hardware(device)))
    ref = parse_model_ref(args.model)  # load_model has read it: it parses
    scale = args.model_mpp or model_mpp(ref, served.model.pretrained_cfg)
    if scale is None:
        parser.error(f'argument --model-mpp: {args.model} records no microns per pixel of its training images: '
                     'give --model-mpp (IDC patches: about 4)')
    threshold = args.threshold if args.threshold is not None else run_threshold(ref) or 0.5
    if not 0 <= threshold <= 1:
        parser.error(f'argument --threshold: must be in [0, 1], got {threshold}')

    def predict(path: Path):
        return predict_wsi(model, path, model_mpp=scale, mpp=args.mpp, threshold=threshold, overlap=args.overlap,
                           batch_size=args.batch_size, num_workers=args.workers, model_id=served.name,
                           progress=True)
    report = run_slides(paths, Path(args.out), predict)
    failed = [(pattern, 'names no file') for pattern in unmatched] + report.failed
    print(f'{len(report.written)} written, {len(report.skipped)} complete already, {len(failed)} failed')
    for path, why in failed:
        print(f'error: {path}: {why}' if not why.startswith(str(path)) else f'error: {why}', file=sys.stderr)
    return 2 if failed else 0


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The --wsi options' values, before a model is loaded."""
    for name in ('mpp', 'model_mpp'):
        if getattr(args, name) is not None and not getattr(args, name) > 0:
            parser.error(f'argument --{name.replace("_", "-")}: must be > 0, got {getattr(args, name)}')
    if args.workers < 0:
        parser.error(f'argument --workers: must be >= 0, got {args.workers}')
    if not 0 <= args.overlap < 1:
        parser.error(f'argument --overlap: must be in [0, 1), got {args.overlap}')
    if args.patient:
        parser.error('argument --patient: only with --data-dir or --hub-id (the patch folders of IDC), not --wsi')


def _refuse_shared_names(parser: argparse.ArgumentParser, paths: List[Path]) -> None:
    """Each slide's outputs go to a folder named after its file: two slides of one name would share it."""
    seen: Dict[str, Path] = {}
    for path in paths:
        if path.name in seen:
            parser.error(f'argument --wsi: {seen[path.name]} and {path} share the file name {path.name}, and so '
                         'would their output folder: run them with separate --out folders')
        seen[path.name] = path


def _device(parser: argparse.ArgumentParser, name: Optional[str]):
    """--device as torch reads it, checked to exist here: default cuda when there is one, else cpu."""
    import torch
    try:
        device = torch.device(name or ('cuda' if torch.cuda.is_available() else 'cpu'))
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        parser.error(f'argument --device: {one_line(err)}')
    return device
