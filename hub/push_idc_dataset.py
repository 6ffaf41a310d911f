"""Publish the Kaggle IDC patches as a Hugging Face data set that keeps the patient ids (none on the Hub does).

    python hub/push_idc_dataset.py IDC/ ORG/NAME --dry-run idc-export/   # write exactly what would be uploaded
    python hub/push_idc_dataset.py IDC/ ORG/NAME                         # upload (token: HF_TOKEN or `hf auth login`)
    python hub/push_idc_dataset.py IDC/ ORG/NAME --no-split              # one `train` split, to split by patient_id

IDC/ is the Kaggle "Breast Histopathology Images" folder (<patient_id>/<0|1>/*.png). The result is parquet shards
`data/<split>-NNNNN-of-NNNNN.parquet` with columns image, label, patient_id, x, y, split by patient as train.py
splits it (--seed, --val-fraction, --test-fraction), and a data set card. `datasets.load_dataset('ORG/NAME')` reads
it; `python train.py --dataset idc --hub-id ORG/NAME` trains on it with the patient-level split. Bad input, a missing
token or a Hub error stop with one `error:` line and exit code 2; a failed upload keeps the local export.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: the package is one folder up

from timm_patchconvnet.data import DataError  # noqa: E402
from timm_patchconvnet.hub import HubError, add_upload_arguments  # noqa: E402
from timm_patchconvnet.hub_dataset import export_idc_dataset, push_idc_dataset  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('kaggle_dir', help='the Kaggle IDC folder: <patient_id>/<0|1>/<name>.png')
    parser.add_argument('repo_id', help='the data set repo, ORG/NAME')
    add_upload_arguments(parser)
    parser.add_argument('--no-split', action='store_true',
                        help='one train split with every patch instead of train/validation/test split by patient')
    parser.add_argument('--seed', type=int, default=0, help='seed of the patient-level split (default: 0)')
    parser.add_argument('--val-fraction', type=float, default=0.1, help='share of patients for validation (0.1)')
    parser.add_argument('--test-fraction', type=float, default=0.2, help='share of patients for test (0.2)')
    parser.add_argument('--shard-size', type=int, default=10_000, help='rows per parquet file (default: 10000)')
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    split = dict(split_by_patient=not args.no_split, seed=args.seed, val_fraction=args.val_fraction,
                 test_fraction=args.test_fraction, shard_size=args.shard_size)
    try:
        if args.dry_run:
            export = export_idc_dataset(args.kaggle_dir, args.dry_run, repo_id=args.repo_id, **split)
            rows = ', '.join(f'{name} {n}' for name, n in export.num_rows.items())
            print(f'wrote {export.folder} ({rows} rows in {len(export.files) - 1} parquet files, README.md); '
                  'nothing uploaded')
        else:
            url = push_idc_dataset(args.kaggle_dir, args.repo_id, export_dir=args.export_dir, token=args.token,
                                   private=args.private, revision=args.revision,
                                   commit_message=args.commit_message, **split)
            print(f'uploaded to {url}')
    except (HubError, DataError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
