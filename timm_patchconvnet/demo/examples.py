"""The demo's example images: which files count as one, and where they come from. Free of Gradio, so that the
Space's export (`hub/space.py`) takes the same images as the demo shows."""
from pathlib import Path
from typing import List, Optional

__all__ = ['CHECKOUT_EXAMPLES', 'EXAMPLE_SUFFIXES', 'example_images']

# the real digits shipped in a checkout's demo/examples/, there for `patchconvnet-demo` of an editable install;
# demo/app.py (and the Space's app.py) passes the examples/ folder beside itself
CHECKOUT_EXAMPLES = Path(__file__).resolve().parents[2] / 'demo' / 'examples'
EXAMPLE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp')


def example_images(folder: Optional[Path] = None) -> List[str]:
    """Real images only: those in `folder` (default: the digits in a checkout's demo/examples/, when there), and
    scikit-learn's two sample photos when installed."""
    folder = CHECKOUT_EXAMPLES if folder is None else Path(folder)
    paths = sorted(str(p) for p in folder.glob('*') if p.suffix.lower() in EXAMPLE_SUFFIXES)
    try:
        import sklearn.datasets
    except ImportError:
        return paths
    photos = Path(sklearn.datasets.__file__).parent / 'images'
    return paths + [str(photos / name) for name in ('china.jpg', 'flower.jpg') if (photos / name).exists()]
