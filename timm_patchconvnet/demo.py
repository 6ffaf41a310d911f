"""Where PatchConvNet looked: a Gradio demo of its attention-based pooling, and the app of the Hugging Face Space.

    patchconvnet-demo --checkpoint runs/digits                  # a training output folder; offline, on 127.0.0.1
    patchconvnet-demo --checkpoint runs/idc --checkpoint hf-hub:timm-patchconvnet/patchconvnet_s60_p4.cifar10
    patchconvnet-demo --checkpoint patchconvnet_s60_p16.fb_in1k --share    # a timm name with its pretrained tag
    python demo/app.py --checkpoint runs/digits                 # the same from a checkout (the Space's app.py)

A checkpoint is a training folder, `local-dir:FOLDER`, `hf-hub:ORG/NAME` or a timm model name (with tag). Without
`--checkpoint` the models come from the PATCHCONVNET_CHECKPOINTS variable (comma-separated; a Space sets it in its
settings), else the official ImageNet S60. Upload an image or pick an example: the top classes, the pooling's
attention over the image and its raw token-grid map. Images are checked before they are decoded; a bad one gets a
message in the page and the server goes on serving. A queue runs at most `--concurrency` predictions at once.
The examples are the images of `--examples` (default: the digits in a checkout's demo/examples/, or examples/
beside the Space's app.py) and scikit-learn's two sample photos. Needs the `demo` extra (Gradio).
"""
import argparse
import os
import sys
import warnings

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # no usage reports unless the host asks for them
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import gradio as gr
import numpy as np
import timm
import torch
from PIL import Image, UnidentifiedImageError
from timm.data import ImageNetInfo, infer_imagenet_subset

from .attention import explain_image, overlay_attention
from .patchconvnet import PatchConvNet, PretrainedWeightsUnavailableError

MIN_SIDE = 8  # pixels: below this an image has no shape to look at
MAX_PIXELS = 40_000_000  # refused before decoding: a decompression bomb never reaches memory
MAX_FILE_SIZE = '50mb'
TOP_K = 5
COLORMAPS = ('jet', 'turbo', 'viridis', 'inferno', 'magma')
PREDICTED = 'predicted class'
GRID_PIXELS = 256  # the token-grid map is drawn this wide, one flat square per token
DEFAULT_CHECKPOINTS = ('patchconvnet_s60_p16.fb_in1k',)
# the real digits shipped in a checkout's demo/examples/, there for `patchconvnet-demo` of an editable install;
# demo/app.py (and the Space's app.py) passes the examples/ folder beside itself
CHECKOUT_EXAMPLES = Path(__file__).resolve().parents[1] / 'demo' / 'examples'
EXAMPLE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp')


@dataclass
class DemoModel:
    name: str
    model: PatchConvNet
    labels: List[str]

    @property
    def per_class(self) -> bool:
        return self.model.class_tokens == 'per_class'


class DemoError(ValueError):
    """A checkpoint that cannot be served: the message says which and why."""


def load_checkpoint(spec: str) -> DemoModel:
    """Build the model named by `spec`: a folder, `local-dir:`/`hf-hub:` id, or a timm name with optional tag."""
    name = spec
    if Path(spec).expanduser().is_dir():
        spec = f'local-dir:{Path(spec).expanduser()}'
    try:
        model = timm.create_model(spec, pretrained=True)
    except PretrainedWeightsUnavailableError as err:
        raise DemoError(str(err)) from err
    except (RuntimeError, OSError, ValueError) as err:  # unknown name, missing or broken files, Hub errors
        raise DemoError(f'Cannot load checkpoint {name!r}: {type(err).__name__}: {err}') from err
    if not isinstance(model, PatchConvNet) or model.attn_pool is None or model.num_classes == 0:
        raise DemoError(f'{name!r} is not a PatchConvNet classifier with attention pooling: it has no map to show.')
    return DemoModel(name, model.eval(), class_names(model))


def class_names(model: PatchConvNet) -> List[str]:
    """Label names saved with the weights (train.py writes them), ImageNet's from timm, else the class indices."""
    names = model.pretrained_cfg.get('label_names')
    if names and len(names) == model.num_classes:
        return [str(n) for n in names]
    subset = infer_imagenet_subset(model)
    if subset:
        info = ImageNetInfo(subset)
        return [info.index_to_description(i) for i in range(model.num_classes)]
    return [f'class {i}' for i in range(model.num_classes)]


def check_image_file(path: str) -> None:
    """Open only the header: a clear gr.Error for a non-image, a too small or a too large image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)  # the size check below decides
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError as err:
        raise gr.Error(f'This image has over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (refused as a '
                       f'possible decompression bomb); the demo takes up to {MAX_PIXELS / 1e6:.0f}.') from err
    except (UnidentifiedImageError, OSError) as err:
        raise gr.Error('This file is not an image that can be read (PNG, JPEG, WebP, BMP, TIFF, GIF...).') from err
    if min(width, height) < MIN_SIDE:
        raise gr.Error(f'This image is {width}x{height} pixels: at least {MIN_SIDE}x{MIN_SIDE} is needed.')
    if width * height > MAX_PIXELS:
        raise gr.Error(f'This image is {width}x{height} = {width * height / 1e6:.0f} megapixels; the demo takes up '
                       f'to {MAX_PIXELS / 1e6:.0f}. Downscale it first.')


def checked_image_input(**kwargs) -> gr.Image:
    """A gr.Image upload that `check_image_file` vets before Gradio decodes it (an instance hook, because a
    subclass of a Gradio component makes Gradio write a .pyi stub beside this file)."""
    image = gr.Image(**kwargs)
    decode = image.preprocess

    def preprocess(payload):
        if payload is not None and payload.path:
            check_image_file(payload.path)
        return decode(payload)

    image.preprocess = preprocess
    return image


def grid_picture(grid: torch.Tensor, colormap: str) -> Image.Image:
    """The raw token-grid map, colour-mapped, each token a flat square."""
    from matplotlib import colormaps

    h, w = grid.shape
    scaled = (grid - grid.min()) / (grid.max() - grid.min()).clamp_min(1e-12)
    pixels = (colormaps[colormap](scaled.numpy())[..., :3] * 255).round().astype(np.uint8)
    side = max(1, GRID_PIXELS // max(h, w))
    return Image.fromarray(pixels).resize((w * side, h * side), Image.Resampling.NEAREST)


def explain(
        models: Dict[str, DemoModel],
        image: Optional[Image.Image],
        model_name: str,
        class_choice: str,
        colormap: str,
        opacity: float,
) -> Tuple[Dict[str, float], Image.Image, Image.Image, Dict[str, float], dict, str]:
    if image is None:
        raise gr.Error('Upload an image or pick an example first.')
    if model_name not in models:
        raise gr.Error(f'Unknown model {model_name!r}: choose one of the list.')
    served = models[model_name]
    notes = []
    if image.mode != 'RGB':
        notes.append(f'The image was {image.mode}; the model sees it as RGB'
                     + (' on white.' if _has_alpha(image) else '.'))
        image = _to_rgb(image)
    class_index = None
    if served.per_class and class_choice not in (None, PREDICTED):
        if class_choice not in served.labels:
            raise gr.Error(f'{class_choice!r} is not a class of {model_name}.')
        class_index = served.labels.index(class_choice)
    result = explain_image(served.model, image, class_index=class_index)
    probabilities = result.probabilities
    label = dict(zip(served.labels, probabilities.tolist()))  # gr.Label keeps the top ones; the JSON all of them
    shown = served.labels[class_index if class_index is not None else int(probabilities.argmax())]
    whose = f'the class token of "{shown}"' if served.per_class else 'the class token'
    h, w = result.grid.shape
    notes.append(f'Attention of {whose} over a {h}x{w} token grid; '
                 f'the model saw the image at {served.model.pretrained_cfg["input_size"][-1]} px.')
    view = {'image': image, 'on_image': result.on_image, 'grid': result.grid}
    overlay, grid = draw(view, colormap, opacity)
    return label, overlay, grid, label, view, ' '.join(notes)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ('RGBA', 'LA', 'PA') or 'transparency' in image.info


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB as a viewer sees it: transparent parts on white, not on whatever colour they hide."""
    if not _has_alpha(image):
        return image.convert('RGB')
    rgba = image.convert('RGBA')
    return Image.alpha_composite(Image.new('RGBA', rgba.size, 'white'), rgba).convert('RGB')


def draw(view: Optional[dict], colormap: str, opacity: float) -> Tuple[Optional[Image.Image], Optional[Image.Image]]:
    """Redraw the last result's pictures with another colour map or opacity, without running the model again."""
    if not view:
        return None, None
    return (overlay_attention(view['image'], view['on_image'], alpha=opacity, colormap=colormap),
            grid_picture(view['grid'], colormap))


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


def build_app(models: Dict[str, DemoModel], concurrency: int = 1, examples: Optional[Path] = None) -> gr.Blocks:
    """The app serving `models`; `examples`: the folder of example images (see `example_images`)."""
    names = list(models)
    example_paths = example_images(examples)

    def class_menu(model_name: str):
        served = models.get(model_name)
        if served is None or not served.per_class:
            return gr.Dropdown(choices=[PREDICTED], value=PREDICTED, visible=False)
        return gr.Dropdown(choices=[PREDICTED] + served.labels, value=PREDICTED, visible=True)

    with gr.Blocks(title='PatchConvNet attention') as app:
        gr.Markdown('# Where PatchConvNet looked\nThe attention-based pooling of PatchConvNet (Touvron et al. 2021) '
                    'weighs every patch of the image; the heatmap shows those weights.')
        with gr.Row():
            with gr.Column():
                image = checked_image_input(label='Image', type='pil', image_mode=None, sources=['upload', 'clipboard'],
                                            height=360, elem_id='image')
                model_name = gr.Dropdown(names, value=names[0], label='Model')
                first = class_menu(names[0])
                # any class name of any model is a valid value: `explain` checks it against the chosen model
                class_choice = gr.Dropdown(first.choices, value=PREDICTED, visible=first.visible,
                                           allow_custom_value=True, label='Class whose map is shown')
                colormap = gr.Dropdown(list(COLORMAPS), value=COLORMAPS[0], label='Colour map')
                opacity = gr.Slider(0., 1., value=.5, step=.05, label='Heatmap opacity')
                run = gr.Button('Explain', variant='primary')
            with gr.Column():
                label = gr.Label(num_top_classes=TOP_K, label='Top classes', elem_id='top-classes')
                overlay = gr.Image(label='Attention over the image', type='pil', format='png', height=360,
                                   elem_id='overlay')
                grid = gr.Image(label='Token-grid map', type='pil', format='png', height=280, elem_id='grid')
                notes = gr.Markdown(elem_id='notes')
                with gr.Accordion('All class probabilities', open=False):
                    probabilities = gr.JSON(label='Probabilities')
        view = gr.State(None)
        if example_paths:
            gr.Examples(example_paths, inputs=image)

        def explain_request(image, model, class_name, colormap, opacity):  # the API's parameter names
            return explain(models, image, model, class_name, colormap, opacity)

        model_name.change(class_menu, model_name, class_choice, queue=False, api_visibility='private')
        results = [label, overlay, grid, probabilities, view, notes]
        # clear the last results first: a refused image must not leave another image's answer on show
        run.click(lambda: [None] * len(results), None, results, queue=False, api_visibility='private').then(
            explain_request, [image, model_name, class_choice, colormap, opacity], results,
            concurrency_limit=concurrency, concurrency_id='model', api_name='explain')
        for control in (colormap, opacity):
            control.change(draw, [view, colormap, opacity], [overlay, grid], queue=False, api_visibility='private')
    return app.queue(max_size=64)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--checkpoint', action='append', metavar='CHECKPOINT',
                        help='a training folder, local-dir:FOLDER, hf-hub:ORG/NAME or a timm name; repeatable')
    parser.add_argument('--host', default=os.environ.get('GRADIO_SERVER_NAME', '127.0.0.1'),
                        help='address to listen on (default 127.0.0.1: this machine only)')
    parser.add_argument('--port', type=int, default=int(os.environ.get('GRADIO_SERVER_PORT', 7860)))
    parser.add_argument('--concurrency', type=int, default=1, help='predictions run at once (default 1)')
    parser.add_argument('--share', action='store_true', help='also serve through a public gradio.live link')
    parser.add_argument('--examples', type=Path, metavar='DIR',
                        help="a folder of example images (PNG, JPEG, WebP), offered beside scikit-learn's sample "
                             "photos (default: examples/ beside app.py, or a checkout's demo/examples/)")
    return parser.parse_args(argv)


def load_all(specs: Sequence[str]) -> Dict[str, DemoModel]:
    models = {}
    for spec in specs:
        served = load_checkpoint(spec)
        models[served.name] = served
    return models


def main(argv: Optional[Sequence[str]] = None, examples: Optional[Path] = None) -> int:
    """Serve the demo as the command line `argv` says; `examples`: the folder of example images unless
    `--examples` names one (app.py passes the examples/ beside itself; default: a checkout's demo/examples/)."""
    args = parse_args(argv)
    specs = args.checkpoint or [s.strip() for s in os.environ.get('PATCHCONVNET_CHECKPOINTS', '').split(',')
                                if s.strip()] or list(DEFAULT_CHECKPOINTS)
    if args.concurrency < 1:
        print('error: --concurrency must be at least 1', file=sys.stderr)
        return 2
    if args.examples is not None and not args.examples.is_dir():
        print(f'error: --examples {args.examples} is not a folder', file=sys.stderr)
        return 2
    try:
        models = load_all(specs)
    except DemoError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    app = build_app(models, args.concurrency, args.examples or examples)
    app.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_FILE_SIZE)
    return 0
