"""Publish the Kaggle IDC patches as a Hugging Face data set that keeps the patient ids (none on the Hub does).

    patchconvnet-push-idc IDC/ ORG/NAME --dry-run idc-export/   # write exactly what would be uploaded
    patchconvnet-push-idc IDC/ ORG/NAME                         # upload (token: HF_TOKEN or `hf auth login`)
    patchconvnet-push-idc IDC/ ORG/NAME --no-split              # one `train` split, to split by patient_id

IDC/ is the Kaggle "Breast Histopathology Images" folder (<patient_id>/<0|1>/*.png). The result is parquet shards
`data/<split>-NNNNN-of-NNNNN.parquet` with columns image, label, patient_id, x, y, split by patient as
patchconvnet-train splits it (--split seeded with --seed, --val-fraction, --test-fraction, or --split janowczyk: the
published patient lists), and a data set card.
`datasets.load_dataset('ORG/NAME')` reads it; `patchconvnet-train --dataset idc --hub-id ORG/NAME` trains on it with
the patient-level split. It needs the `hub` and `train` extras (`datasets` reads and writes the data); from a
checkout, `python hub/push_idc_dataset.py` is the same command. Bad input, a missing token or a Hub error stop
with one `error:` line and exit code 2; a failed upload keeps the local export.
"""
import argparse
import sys

from . import add_option_arguments, check_fractions, missing_dependency, run_upload_command, upload_parser

SPLIT_OPTIONS = ('split', 'allow_missing_patients', 'seed', 'val_fraction', 'test_fraction')  # as training splits


def build_parser() -> argparse.ArgumentParser:
    parser = upload_parser(__doc__, ('kaggle_dir', 'the Kaggle IDC folder: <patient_id>/<0|1>/<name>.png'),
                           ('repo_id', 'the data set repo, ORG/NAME'))
    parser.add_argument('--no-split', action='store_true',
                        help='one train split with every patch instead of train/validation/test split by patient')
    add_option_arguments(parser, SPLIT_OPTIONS, helps=dict(
        seed='seed of the patient-level split',
        allow_missing_patients='with a published --split, go on (with a warning) when listed patients are not in '
                               'the folder'))
    parser.add_argument('--shard-size', type=int, default=10_000, help='rows per parquet file (default: 10000)')
    return parser


def main(argv=None) -> int:
    try:
        from ..data import DataError
        from ..hub import HubError
        from ..hub.dataset import export_idc_dataset, push_idc_dataset
    except ModuleNotFoundError as err:
        return missing_dependency(err, 'publishing the IDC data set', 'hub,train')
    parser = build_parser()
    args = parser.parse_args(argv)
    check_fractions(parser, args)
    split = dict(split_by_patient=not args.no_split, split=args.split,
                 allow_missing_patients=args.allow_missing_patients, seed=args.seed, val_fraction=args.val_fraction,
                 test_fraction=args.test_fraction, shard_size=args.shard_size)

    def export(out: str) -> str:
        written = export_idc_dataset(args.kaggle_dir, out, repo_id=args.repo_id, **split)
        rows = ', '.join(f'{name} {n}' for name, n in written.num_rows.items())
        return (f'wrote {written.folder} ({rows} rows in {len(written.files) - 1} parquet files, README.md); '
                'nothing uploaded')

    return run_upload_command(
        args, (HubError, DataError), export,
        push=lambda **upload: push_idc_dataset(args.kaggle_dir, args.repo_id, **split, **upload))


if __name__ == '__main__':
    sys.exit(main())
