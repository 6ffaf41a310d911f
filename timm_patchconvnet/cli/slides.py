"""Whole-slide maps of IDC patients: the patches stitched back at their slide coordinates, a model's IDC probability
per patch with the annotated region's outline, and the pooling's attention inside each patch.

    patchconvnet-slides --model runs/idc --data-dir IDC/ --patient 9382 --patient 12909 --out slides/
    patchconvnet-slides --model hf-hub:ORG/NAME --hub-id ORG/IDC --patient 9382

--model is a training output folder (its threshold, chosen on validation, is used), `local-dir:DIR`,
`hf-hub:ORG/NAME` or a timm name with tag. The data is the Kaggle folder, a folder of parquet files or a Hub data
set with patient_id, x and y (patchconvnet-push-idc writes one). Prints each slide's Dice and IoU between the
predicted IDC region (patches at or over the threshold) and the annotated one (class-1 patches). Needs the `train`
extra (`datasets` reads the data).

Whole-slide images (any format OpenSlide reads; the `slides` extra):

    patchconvnet-slides --wsi slides/*.svs --model runs/idc --out predictions/

reads each slide's tissue at the model's microns per pixel (--model-mpp; the slide's own from its file, or --mpp)
and writes into predictions/<slide file>/: overlay.png, attention.png, tiles.parquet, regions.geojson (QuPath
annotations) and summary.json. Slides whose outputs are complete are skipped; a slide that fails is listed at the
end while the others finish.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from ..errors import one_line
from ..model_ref import ModelRef, ModelRefError, parse_model_ref
from ..safe_paths import UnsafePathError, plain_name
from . import OneLineErrorParser, add_option_arguments, missing_dependency
from .slides_wsi import add_wsi_arguments, wsi_main


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', required=True, help='a training output folder, local-dir:DIR, hf-hub:ORG/NAME or '
                                                       'a timm name with tag')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--data-dir', help='the Kaggle IDC folder or a folder of parquet files with patient ids')
    source.add_argument('--hub-id', help='a Hub data set with patient_id, x and y')
    source.add_argument('--wsi', nargs='+', metavar='PATH', help='whole-slide images: files, folders or globs')
    parser.add_argument('--patient', action='append', help='a patient id; repeatable (with --data-dir or --hub-id)')
    parser.add_argument('--out', default='slides', help='folder of the maps, one PNG per patient (default: slides)')
    parser.add_argument('--threshold', type=float, help="IDC probability threshold (default: the run's, else 0.5)")
    parser.add_argument('--batch-size', type=int, default=256, help='patches per forward pass (default: 256)')
    parser.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'bf16', 'fp16'),
                        help='auto: bf16 where the CPU or GPU runs it natively, else fp32 (default: auto; printed)')
    add_wsi_arguments(parser.add_argument_group('whole-slide images (--wsi)'))
    add_option_arguments(parser, ('cache_dir',), helps=dict(
        cache_dir="where the check of an IDC folder's files is kept, shared with patchconvnet-train (default: "
                  "$PATCHCONVNET_CACHE or ~/.cache/timm_patchconvnet); also datasets' cache_dir"))
    return parser


def run_threshold(model: ModelRef) -> Optional[float]:
    """The threshold a training run chose on validation, from its metrics.json, if --model is such a folder."""
    if model.run_folder is None:
        return None
    try:
        return float(json.loads((model.run_folder / 'metrics.json').read_text())['test']['threshold'])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f'argument --batch-size: must be >= 1, got {args.batch_size}')
    if args.wsi:
        return wsi_main(parser, args)
    if not (args.data_dir or args.hub_id) or not args.patient:
        parser.error('give --wsi PATH..., or --data-dir/--hub-id with --patient')
    try:
        from ..data import DataError, load_idc_patches
        from ..precision import PrecisionError, describe_choice, detect_hardware, optimize_for_inference
        from ..pretrained import PretrainedWeightsUnavailableError, create_pretrained
        from ..slides import SlideError, predict_slide, render_slide, slide_from_rows
    except ModuleNotFoundError as err:
        return missing_dependency(err, 'whole-slide maps', 'train')
    try:  # each patient names its map's file
        for patient in args.patient:
            plain_name(patient, 'argument --patient:')
    except UnsafePathError as err:
        parser.error(str(err))
    try:
        model_ref = parse_model_ref(args.model)
    except ModelRefError as err:
        parser.error(f'argument --model: {err}')
    threshold = args.threshold if args.threshold is not None else run_threshold(model_ref) or 0.5
    if not 0 <= threshold <= 1:
        parser.error(f'argument --threshold: must be in [0, 1], got {threshold}')
    try:
        source = create_pretrained(model_ref.timm_name).eval()
        model = optimize_for_inference(source, args.precision)
        print(describe_choice(args.precision, model, detect_hardware('cpu')))
        patches = load_idc_patches(args.data_dir, args.hub_id, args.cache_dir)
        missing = [c for c in ('patient_id', 'x', 'y') if c not in patches.column_names]
        if missing:
            raise SlideError(f'The data has no {", ".join(missing)} column: slides need patient ids and positions '
                             '(the Kaggle folder, or a copy written by patchconvnet-push-idc).')
        for patient in args.patient:
            slide = slide_from_rows(patches, patient)
            path = Path(args.out) / f'{patient}.png'
            scores = render_slide(slide, predict_slide(model, slide, args.batch_size), path, threshold,
                                  title=f'patient {patient}; threshold {threshold:.2f}')
            region = (f"; Dice {scores['dice']:.3f}, IoU {scores['iou']:.3f}" if scores.get('dice') is not None
                      else '')
            print(f'{path}: {len(slide.patches)} patches{region}')
    except (DataError, SlideError, PretrainedWeightsUnavailableError, PrecisionError, RuntimeError, OSError) as err:
        print(f'error: {one_line(err)}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
