"""Publish the Kaggle IDC patches as a Hub data set with patient ids, from a checkout: `python hub/push_idc_dataset.py`.

The same command as `patchconvnet-push-idc`; its options and examples: `python hub/push_idc_dataset.py --help`, or
timm_patchconvnet/cli/push_idc_dataset.py.
"""
import sys

from timm_patchconvnet.cli.push_idc_dataset import main

if __name__ == '__main__':
    sys.exit(main())
