"""Train PatchConvNet (or any timm model) from a checkout: `python train.py ...` or `accelerate launch train.py ...`.

The same command as `patchconvnet-train`; its options and examples: `python train.py --help`, or
timm_patchconvnet/cli/train.py.
"""
import sys

from timm_patchconvnet.cli.train import main

if __name__ == '__main__':
    sys.exit(main())
