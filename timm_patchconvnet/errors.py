"""How this package words a failure for a person: one line, and which extra to install for a missing package.

Every command prints its errors through `one_line` (a library's message may span many lines: a state dict's
missing keys, a Hub error's request id), and every optional feature names its extra through `install_hint`.
"""
from typing import Optional

__all__ = ['EXTRA_PACKAGES', 'install_hint', 'one_line']

# the extras of pyproject.toml whose features are reached from the library, and the packages each brings
EXTRA_PACKAGES = {
    'onnx': ('onnx', 'onnxscript', 'onnxruntime'),
    'explain': ('grad-cam',),
    'openvino': ('openvino',),
    'slides': ('openslide-python', 'openslide-bin', 'scikit-image', 'shapely', 'pyarrow', 'tqdm'),
}


def one_line(message: object, limit: Optional[int] = None) -> str:
    """`message` on one line (white space folded), cut to `limit` characters with '...' when longer."""
    flat = ' '.join(str(message).split())
    if limit is None or len(flat) <= limit:
        return flat
    return flat[:limit - 3] + '...'


def install_hint(extra: str) -> str:
    """What to run for the features of `extra`: `pip install 'timm-patchconvnet[extra]'`, and the bare packages."""
    hint = f"pip install 'timm-patchconvnet[{extra}]'"
    packages = EXTRA_PACKAGES.get(extra)
    return f'{hint} (or: pip install {" ".join(packages)})' if packages else hint
