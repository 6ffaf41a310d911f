"""Where PatchConvNet looked: the Gradio demo of its attention-based pooling, and the app of the Hugging Face Space.

    python demo/app.py --model runs/digits           # from a checkout: the same as `patchconvnet-demo`
    python app.py                                    # in the Space, which holds its own copy of the package

The app is `timm_patchconvnet.demo.app` (options: `--help`); this file gives it the examples/ folder beside it.
"""
import sys
from pathlib import Path

from timm_patchconvnet.demo.app import main

if __name__ == '__main__':
    sys.exit(main(examples=Path(__file__).resolve().parent / 'examples'))
