"""Where PatchConvNet looked: a Gradio demo of its attention-based pooling, and the app of the Hugging Face Space.

    patchconvnet-demo --model runs/digits                  # a training output folder; offline, on 127.0.0.1
    patchconvnet-demo --model runs/idc --model hf-hub:timm-patchconvnet/patchconvnet_s60_p4.cifar10
    patchconvnet-demo --model patchconvnet_s60_p16.fb_in1k --share    # a timm name with its pretrained tag
    python demo/app.py --model runs/digits                 # the same from a checkout (the Space's app.py)

A model is a training folder, `local-dir:FOLDER`, `hf-hub:ORG/NAME` or a timm model name (with tag). Without
`--model` the models come from the PATCHCONVNET_MODELS variable (comma-separated; a Space sets it in its settings;
PATCHCONVNET_CHECKPOINTS, its name before 0.2, is read too), else the official ImageNet S60. Upload an image or
pick an example: the top classes, the pooling's attention (or Grad-CAM) over the image and its raw token-grid map;
the "Whole slide" tab draws an IDC patient's slide from a zip of its patches (or a patient of `--slide-data`).
Images are checked before they are decoded; a bad one gets a message in the page and the server goes on serving.
A queue runs at most `--concurrency` predictions at once.
Models are shown by name (a folder's name, never its path); uploads go to a private folder (GRADIO_TEMP_DIR when
set), and a session keeps only its last result at display size, for an hour: the API keeps nothing.
The examples are the images of `--examples` (default: the digits in a checkout's demo/examples/, or examples/
beside the Space's app.py) and scikit-learn's two sample photos. Needs the `demo` extra (Gradio).
"""
import argparse
import atexit
import os
import shutil
import signal
import sys
import tempfile
import warnings

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # no usage reports unless the host asks for them
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import gradio as gr
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..attention import ImageExplanation, explain_image, overlay_attention
from ..errors import install_hint, one_line
from ..gradcam import GRADCAM_NEEDS, gradcam_explanation
from ..images import is_high_bit_depth, to_rgb
from ..patchconvnet import PatchConvNet
from ..slides import SlideError
from ..slides.demo_tab import load_slide_data, whole_slide_tab
from .models import MESSAGE_LIMIT, DemoError, DemoModel, load_all

MIN_SIDE = 8  # pixels: below this an image has no shape to look at
MAX_PIXELS = 40_000_000  # refused before decoding: a decompression bomb never reaches memory
MAX_FILE_SIZE = '50mb'
TOP_K = 5
COLORMAPS = ('jet', 'turbo', 'viridis', 'inferno', 'magma')
PREDICTED = 'predicted class'
ATTENTION, GRADCAM = 'attention', 'Grad-CAM'  # the map sources: the pooling's weights, or Grad-CAM of the class
GRID_PIXELS = 256  # the token-grid map is drawn this wide, one flat square per token
DEFAULT_MODELS = ('patchconvnet_s60_p16.fb_in1k',)
MODELS_VARIABLES = ('PATCHCONVNET_MODELS', 'PATCHCONVNET_CHECKPOINTS')  # the second: its name before 0.2
# the real digits shipped in a checkout's demo/examples/, there for `patchconvnet-demo` of an editable install;
# demo/app.py (and the Space's app.py) passes the examples/ folder beside itself
CHECKOUT_EXAMPLES = Path(__file__).resolve().parents[2] / 'demo' / 'examples'
EXAMPLE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp')
# what a session keeps to redraw its last result: the picture at display size, for an hour, so that memory does not
# grow with the size of uploads nor with sessions never closed (API clients, scripts)
DISPLAY_SIDE = 1024
VIEW_SECONDS = 3600
CACHE_CLEANUP = (3600, 3600)  # every hour, delete uploads and results older than an hour


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
        try:
            image = decode(payload)
            if isinstance(image, Image.Image):
                image.load()  # PIL decodes lazily: a truncated file fails here, not deep inside the model
        except (OSError, SyntaxError, ValueError) as err:  # what PIL raises for damaged data
            raise gr.Error('This image file is damaged or truncated: it cannot be decoded.') from err
        return image

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
        map_source: str = ATTENTION,
) -> Tuple[Dict[str, float], Image.Image, Image.Image, Dict[str, float], dict, str]:
    if image is None:
        raise gr.Error('Upload an image or pick an example first.')
    if model_name not in models:
        raise gr.Error(f'Unknown model {model_name!r}: choose one of the list.')
    served = models[model_name]
    notes = []
    if image.mode != 'RGB':
        notes.append(mode_note(image))
        image = to_rgb(image)
    class_index = None
    if served.per_class and class_choice not in (None, PREDICTED):
        if class_choice not in served.labels:
            raise gr.Error(f'{class_choice!r} is not a class of {model_name}.')
        class_index = served.labels.index(class_choice)
    result = explain_map(served.model, image, class_index, map_source)
    probabilities = result.probabilities
    label = dict(zip(served.labels, probabilities.tolist()))  # gr.Label keeps the top ones; the JSON all of them
    shown = served.labels[class_index if class_index is not None else int(probabilities.argmax())]
    whose = f'the class token of "{shown}"' if served.per_class else 'the class token'
    h, w = result.grid.shape
    what = f'Grad-CAM of "{shown}" on the last trunk block' if map_source == GRADCAM else f'Attention of {whose}'
    notes.append(f'{what} over a {h}x{w} token grid; '
                 f'the model saw the image at {served.model.pretrained_cfg["input_size"][-1]} px.')
    view = display_view(image, result.on_image, result.grid)
    overlay, grid = draw(view, colormap, opacity)
    return label, overlay, grid, label, view, ' '.join(notes)


def explain_map(model: PatchConvNet, image: Image.Image, class_index: Optional[int],
                map_source: str) -> ImageExplanation:
    """`explain_image`'s answer with the map chosen: the pooling's attention, or Grad-CAM of the same class (the
    chosen one for per-class tokens, else the predicted one)."""
    if map_source == ATTENTION:
        return explain_image(model, image, class_index=class_index)
    if map_source != GRADCAM:
        raise gr.Error(f'Unknown map {map_source!r}: choose {ATTENTION!r} or {GRADCAM!r}.')
    try:
        return gradcam_explanation(model, image, class_index=class_index)
    except ImportError as err:  # the `explain` extra is optional: say what to install, in the page
        raise gr.Error(GRADCAM_NEEDS) from err


def mode_note(image: Image.Image) -> str:
    """What the model was shown instead of a non-RGB image, in the words of `images.to_rgb`."""
    if is_high_bit_depth(image):
        depth = {'I': '32-bit integer', 'F': 'floating-point'}.get(image.mode, '16-bit')
        return (f'The image was {image.mode} ({depth} grayscale); the model sees it as 8-bit RGB, its bit depth '
                f'scaled (not clipped) to 8 bits.')
    has_alpha = image.mode in ('RGBA', 'LA', 'PA') or 'transparency' in image.info
    return f'The image was {image.mode}; the model sees it as RGB' + (' on white.' if has_alpha else '.')


def display_view(image: Image.Image, on_image: torch.Tensor, grid: torch.Tensor) -> dict:
    """What redrawing needs, at most DISPLAY_SIDE on the long side: a session then keeps a few MB whatever the
    upload's size, not the full image and a same-size float map."""
    scale = DISPLAY_SIDE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
        on_image = torch.nn.functional.interpolate(on_image[None, None], size=size[::-1], mode='area')[0, 0]
    return {'image': image, 'on_image': on_image.clone(), 'grid': grid.clone()}


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


def build_app(models: Dict[str, DemoModel], concurrency: int = 1, examples: Optional[Path] = None,
              slide_data: Any = None) -> gr.Blocks:
    """The app serving `models`; `examples`: the folder of example images (see `example_images`); `slide_data`:
    IDC patches with patient ids for the whole-slide tab's patient menu (`demo_slides.load_slide_data`)."""
    names = list(models)
    example_paths = example_images(examples)

    def class_menu(model_name: str):
        served = models.get(model_name)
        if served is None or not served.per_class:
            return gr.Dropdown(choices=[PREDICTED], value=PREDICTED, visible=False)
        return gr.Dropdown(choices=[PREDICTED] + served.labels, value=PREDICTED, visible=True)

    with gr.Blocks(title='PatchConvNet attention', delete_cache=CACHE_CLEANUP) as app:
        gr.Markdown('# Where PatchConvNet looked\nThe attention-based pooling of PatchConvNet (Touvron et al. 2021) '
                    'weighs every patch of the image; the heatmap shows those weights.')
        with gr.Tab('Image'):
            with gr.Row():
                with gr.Column():
                    image = checked_image_input(label='Image', type='pil', image_mode=None,
                                                sources=['upload', 'clipboard'], height=360, elem_id='image')
                    model_name = gr.Dropdown(names, value=names[0], label='Model')
                    first = class_menu(names[0])
                    # any class name of any model is a valid value: `explain` checks it against the chosen model
                    class_choice = gr.Dropdown(first.choices, value=PREDICTED, visible=first.visible,
                                               allow_custom_value=True, label='Class whose map is shown')
                    map_source = gr.Radio([ATTENTION, GRADCAM], value=ATTENTION, label='Map',
                                          elem_id='map-source',
                                          info="the attention pooling's weights, or Grad-CAM of the class on the "
                                               'last trunk block (needs the explain extra)')
                    colormap = gr.Dropdown(list(COLORMAPS), value=COLORMAPS[0], label='Colour map')
                    opacity = gr.Slider(0., 1., value=.5, step=.05, label='Heatmap opacity')
                    run = gr.Button('Explain', variant='primary')
                with gr.Column():
                    label = gr.Label(num_top_classes=TOP_K, label='Top classes', elem_id='top-classes')
                    overlay = gr.Image(label='Map over the image', type='pil', format='png', height=360,
                                       elem_id='overlay')
                    grid = gr.Image(label='Token-grid map', type='pil', format='png', height=280, elem_id='grid')
                    notes = gr.Markdown(elem_id='notes')
                    with gr.Accordion('All class probabilities', open=False):
                        probabilities = gr.JSON(label='Probabilities')
            view = gr.State(None, time_to_live=VIEW_SECONDS)
            if example_paths:
                gr.Examples(example_paths, inputs=image)
        with gr.Tab('Whole slide'):
            whole_slide_tab(models, slide_data)

        def explain_in_page(image, model, class_name, colormap, opacity, map_source):
            return explain(models, image, model, class_name, colormap, opacity, map_source)

        def explain_request(image, model, class_name, colormap, opacity, map_source):  # the API's parameter names
            label, overlay, grid, probabilities, _, notes = explain(models, image, model, class_name, colormap,
                                                                    opacity, map_source)
            return label, overlay, grid, probabilities, notes

        model_name.change(class_menu, model_name, class_choice, queue=False, api_visibility='private')
        inputs = [image, model_name, class_choice, colormap, opacity, map_source]
        answers = [label, overlay, grid, probabilities, notes]
        results = [label, overlay, grid, probabilities, view, notes]
        # clear the last results first: a refused image must not leave another image's answer on show
        run.click(lambda: [None] * len(results), None, results, queue=False, api_visibility='private').then(
            explain_in_page, inputs, results, concurrency_limit=concurrency, concurrency_id='model',
            api_visibility='private')
        # the API is its own event, with the same answers and no session state: a client that never closes its
        # sessions (Gradio keeps up to 10,000) then holds no memory on the server
        api = gr.Button(visible=False)
        api.click(explain_request, inputs, answers, concurrency_limit=concurrency, concurrency_id='model',
                  api_name='explain')
        for control in (colormap, opacity):
            control.change(draw, [view, colormap, opacity], [overlay, grid], queue=False, api_visibility='private')
    return app.queue(max_size=64)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', '--checkpoint', dest='models', action='append', metavar='MODEL',
                        help='a training folder, local-dir:FOLDER, hf-hub:ORG/NAME or a timm name; repeatable '
                             '(--checkpoint: its name before 0.2)')
    parser.add_argument('--host', default=os.environ.get('GRADIO_SERVER_NAME', '127.0.0.1'),
                        help='address to listen on (default 127.0.0.1: this machine only)')
    parser.add_argument('--port', type=int, default=int(os.environ.get('GRADIO_SERVER_PORT', 7860)))
    parser.add_argument('--concurrency', type=int, default=1, help='predictions run at once (default 1)')
    parser.add_argument('--share', action='store_true', help='also serve through a public gradio.live link')
    parser.add_argument('--slide-data', metavar='DIR',
                        help="IDC patches with patient ids (the Kaggle folder or a patchconvnet-push-idc export) "
                             "for the whole-slide tab's patient menu (needs the train extra)")
    parser.add_argument('--examples', type=Path, metavar='DIR',
                        help="a folder of example images (PNG, JPEG, WebP), offered beside scikit-learn's sample "
                             "photos (default: examples/ beside app.py, or a checkout's demo/examples/)")
    return parser.parse_args(argv)


def private_temp_dir() -> str:
    """Gradio's upload and result folder: one of this app's own (mode 0700) unless GRADIO_TEMP_DIR names one, since
    the default /tmp/gradio is shared by every Gradio app of the machine, and Gradio serves whatever lies in it.
    Call before the app is built: Gradio reads the variable as it creates its components and routes."""
    if not os.environ.get('GRADIO_TEMP_DIR'):
        folder = tempfile.mkdtemp(prefix='patchconvnet-demo-')
        os.environ['GRADIO_TEMP_DIR'] = folder
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        # a stop by `kill` then also runs the cleanup (SIGTERM would otherwise skip atexit)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return os.environ['GRADIO_TEMP_DIR']


def main(argv: Optional[Sequence[str]] = None, examples: Optional[Path] = None) -> int:
    """Serve the demo as the command line `argv` says; `examples`: the folder of example images unless
    `--examples` names one (app.py passes the examples/ beside itself; default: a checkout's demo/examples/)."""
    args = parse_args(argv)
    listed = next((os.environ[v] for v in MODELS_VARIABLES if os.environ.get(v, '').strip()), '')
    specs = args.models or [s.strip() for s in listed.split(',') if s.strip()] or list(DEFAULT_MODELS)
    if args.concurrency < 1:
        print('error: --concurrency must be at least 1', file=sys.stderr)
        return 2
    if args.examples is not None and not args.examples.is_dir():
        print(f'error: --examples {args.examples} is not a folder', file=sys.stderr)
        return 2
    try:
        models = load_all(specs)
        slide_data = load_slide_data(args.slide_data) if args.slide_data else None
    except (DemoError, SlideError) as err:
        print(f'error: {one_line(err, MESSAGE_LIMIT)}', file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:  # --slide-data reads with `datasets`, of the train extra
        print(f'error: --slide-data needs {err.name!r}: {install_hint("train")}', file=sys.stderr)
        return 2
    private_temp_dir()
    app = build_app(models, args.concurrency, args.examples or examples, slide_data)
    app.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_FILE_SIZE)
    return 0
