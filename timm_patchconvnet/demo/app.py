"""Where PatchConvNet looked: a Gradio demo of its attention-based pooling, and the app of the Hugging Face Space.

    patchconvnet-demo --model runs/digits                  # a training output folder; offline, on 127.0.0.1
    patchconvnet-demo --model runs/idc --model hf-hub:timm-patchconvnet/patchconvnet_s60_p4.cifar10
    patchconvnet-demo --model patchconvnet_s60_p16.fb_in1k --share    # a timm name with its pretrained tag
    python demo/app.py --model runs/digits                 # the same from a checkout (the Space's app.py)

A model is a training folder, `local-dir:FOLDER`, `hf-hub:ORG/NAME` or a timm model name (with tag). Without
`--model` the models come from the PATCHCONVNET_MODELS variable (comma-separated; a Space sets it in its settings;
PATCHCONVNET_CHECKPOINTS, its name before 0.2, is read too), else the official ImageNet S60. Upload an image or
pick an example: the top classes, the pooling's attention (or Grad-CAM) over the image and its raw token-grid map;
the "Whole slide" tab draws an IDC patient's slide from a zip of its patches (or a patient of `--slide-data`); with
the slides extra, the "Whole-slide image" tab runs a slide file, uploaded or from `--wsi-folder`.
Images are checked before they are decoded; a bad one gets a message in the page and the server goes on serving.
A queue runs at most `--concurrency` predictions at once.
Models are shown by name (a folder's name, never its path); uploads go to a private folder (GRADIO_TEMP_DIR when
set), and a session keeps only its last result at display size, for an hour: the API keeps nothing.
The examples are the images of `--examples` (default: the digits in a checkout's demo/examples/, or examples/
beside the Space's app.py) and scikit-learn's two sample photos. Needs the `demo` extra (Gradio).
"""
import argparse
import os
import sys

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # no usage reports unless the host asks for them
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import gradio as gr

from ..errors import install_hint, one_line
from ..slides import SlideError
from ..slides.demo_tab import load_slide_data, whole_slide_tab
from ..slides.wsi_tab import slides_extra_installed, whole_slide_image_tab
from .examples import example_images
from .explain import ATTENTION, COLORMAPS, GRADCAM, PREDICTED, Explanation, draw, explain
from .memory import bound_allocator, trimmed
from .models import MESSAGE_LIMIT, DemoError, DemoModel, load_all
from .uploads import MAX_FILE_SIZE, checked_image_input, private_temp_dir

TOP_K = 5
DEFAULT_MODELS = ('patchconvnet_s60_p16.fb_in1k',)
MODELS_VARIABLES = ('PATCHCONVNET_MODELS', 'PATCHCONVNET_CHECKPOINTS')  # the second: its name before 0.2
# a session keeps its last result (`explain.DisplayView`) for an hour, so that memory does not grow with sessions
# never closed (API clients, scripts)
VIEW_SECONDS = 3600
CACHE_CLEANUP = (3600, 3600)  # every hour, delete uploads and results older than an hour


@dataclass
class ImageInputs:
    """The image tab's controls: `explain`'s arguments after the models, in its order, and the button."""
    image: gr.Image
    model_name: gr.Dropdown
    class_choice: gr.Dropdown
    colormap: gr.Dropdown
    opacity: gr.Slider
    map_source: gr.Radio
    run: gr.Button

    def of_explain(self) -> List[gr.components.Component]:
        return [self.image, self.model_name, self.class_choice, self.colormap, self.opacity, self.map_source]


@dataclass
class ImageOutputs:
    """The image tab's answers, in the order of the API's outputs (`answer`)."""
    label: gr.Label
    overlay: gr.Image
    grid: gr.Image
    probabilities: gr.JSON
    notes: gr.Markdown

    def components(self) -> List[gr.components.Component]:
        return [self.label, self.overlay, self.grid, self.probabilities, self.notes]

    @staticmethod
    def answer(result: Explanation) -> list:
        """The values of `components`: gr.Label keeps the top classes, the JSON all of them."""
        return [result.probabilities, result.overlay, result.grid, result.probabilities, result.notes]


def class_choices(models: Dict[str, DemoModel], model_name: str) -> List[str]:
    """The class menu of `model_name`: a per-class-token model has one map per class, any other one map only."""
    served = models.get(model_name)
    return [PREDICTED] + served.labels if served is not None and served.per_class else [PREDICTED]


def class_menu(models: Dict[str, DemoModel], model_name: str) -> gr.Dropdown:
    """The class menu's update when another model is chosen: shown for per-class-token models only."""
    choices = class_choices(models, model_name)
    return gr.Dropdown(choices=choices, value=PREDICTED, visible=len(choices) > 1)


def image_inputs(models: Dict[str, DemoModel]) -> ImageInputs:
    names = list(models)
    image = checked_image_input(label='Image', type='pil', image_mode=None, sources=['upload', 'clipboard'],
                                height=360, elem_id='image')
    model_name = gr.Dropdown(names, value=names[0], label='Model')
    first = class_choices(models, names[0])
    # any class name of any model is a valid value: `explain` checks it against the chosen model
    class_choice = gr.Dropdown(first, value=PREDICTED, visible=len(first) > 1, allow_custom_value=True,
                               label='Class whose map is shown')
    map_source = gr.Radio([ATTENTION, GRADCAM], value=ATTENTION, label='Map', elem_id='map-source',
                          info="the attention pooling's weights, or Grad-CAM of the class on the last trunk block "
                               '(needs the explain extra)')
    colormap = gr.Dropdown(list(COLORMAPS), value=COLORMAPS[0], label='Colour map')
    opacity = gr.Slider(0., 1., value=.5, step=.05, label='Heatmap opacity')
    run = gr.Button('Explain', variant='primary')
    return ImageInputs(image, model_name, class_choice, colormap, opacity, map_source, run)


def image_outputs() -> ImageOutputs:
    label = gr.Label(num_top_classes=TOP_K, label='Top classes', elem_id='top-classes')
    overlay = gr.Image(label='Map over the image', type='pil', format='png', height=360, elem_id='overlay')
    grid = gr.Image(label='Token-grid map', type='pil', format='png', height=280, elem_id='grid')
    notes = gr.Markdown(elem_id='notes')
    with gr.Accordion('All class probabilities', open=False):
        probabilities = gr.JSON(label='Probabilities')
    return ImageOutputs(label, overlay, grid, probabilities, notes)


def image_tab(models: Dict[str, DemoModel], example_paths: List[str]) -> Tuple[ImageInputs, ImageOutputs, gr.State]:
    """The image tab's components, and the session's last result (`explain.DisplayView`) that redrawing reads."""
    with gr.Row():
        with gr.Column():
            inputs = image_inputs(models)
        with gr.Column():
            outputs = image_outputs()
    view = gr.State(None, time_to_live=VIEW_SECONDS)
    if example_paths:
        gr.Examples(example_paths, inputs=inputs.image)
    return inputs, outputs, view


def connect_image_tab(models: Dict[str, DemoModel], inputs: ImageInputs, outputs: ImageOutputs, view: gr.State,
                      concurrency: int) -> None:
    """The image tab's events: the page's Explain (which keeps the view to redraw), the API's `explain` (which keeps
    nothing) and the redrawing of the pictures when the colour map or the opacity changes."""
    @trimmed
    def explain_in_page(image, model, class_name, colormap, opacity, map_source):
        result = explain(models, image, model, class_name, colormap, opacity, map_source)
        return ImageOutputs.answer(result) + [result.view]

    @trimmed
    def explain_request(image, model, class_name, colormap, opacity, map_source):  # the API's parameter names
        return ImageOutputs.answer(explain(models, image, model, class_name, colormap, opacity, map_source))

    inputs.model_name.change(lambda name: class_menu(models, name), inputs.model_name, inputs.class_choice,
                             queue=False, api_visibility='private')
    results = outputs.components() + [view]
    # clear the last results first: a refused image must not leave another image's answer on show
    inputs.run.click(lambda: [None] * len(results), None, results, queue=False, api_visibility='private').then(
        explain_in_page, inputs.of_explain(), results, concurrency_limit=concurrency, concurrency_id='model',
        api_visibility='private')
    # the API is its own event, with the same answers and no session state: a client that never closes its
    # sessions (Gradio keeps up to 10,000) then holds no memory on the server
    api = gr.Button(visible=False)
    api.click(explain_request, inputs.of_explain(), outputs.components(), concurrency_limit=concurrency,
              concurrency_id='model', api_name='explain')
    for control in (inputs.colormap, inputs.opacity):
        control.change(draw, [view, inputs.colormap, inputs.opacity], [outputs.overlay, outputs.grid], queue=False,
                       api_visibility='private')


def build_app(models: Dict[str, DemoModel], concurrency: int = 1, examples: Optional[Path] = None,
              slide_data: Any = None, wsi_folder: Optional[Path] = None) -> gr.Blocks:
    """The app serving `models`; `examples`: the folder of example images (see `examples.example_images`);
    `slide_data`: IDC patches with patient ids for the whole-slide tab's patient menu (`demo_tab.load_slide_data`);
    `wsi_folder`: slide files offered in the "Whole-slide image" tab (shown with the slides extra)."""
    with gr.Blocks(title='PatchConvNet attention', delete_cache=CACHE_CLEANUP) as app:
        gr.Markdown('# Where PatchConvNet looked\nThe attention-based pooling of PatchConvNet (Touvron et al. 2021) '
                    'weighs every patch of the image; the heatmap shows those weights.')
        with gr.Tab('Image'):
            inputs, outputs, view = image_tab(models, example_images(examples))
        with gr.Tab('Whole slide'):
            whole_slide_tab(models, slide_data)
        if slides_extra_installed():
            with gr.Tab('Whole-slide image'):
                whole_slide_image_tab(models, wsi_folder)
        connect_image_tab(models, inputs, outputs, view, concurrency)
    answer_malformed_inputs(app)
    return app.queue(max_size=64)


def answer_malformed_inputs(app: gr.Blocks) -> None:
    """An API call whose inputs do not fit (a number for the image, text for a slider) gets a one-line message:
    Gradio reports a failure of its own input checks as `{"error": null}`, and `show_error` would show every
    exception, paths included. One hook on the app covers every event and input."""
    preprocess_data = app.preprocess_data

    async def checked(block_fn, inputs, *args, **kwargs):
        try:
            return await preprocess_data(block_fn, inputs, *args, **kwargs)
        except gr.Error:
            raise
        except Exception as err:  # pydantic's ValidationError of a file input, Gradio's ComponentProcessingError
            api = getattr(block_fn, 'api_name', None) or getattr(block_fn, 'name', None) or 'this call'
            raise gr.Error(f'The inputs do not fit /{api}: {one_line(err, MESSAGE_LIMIT)}') from err

    app.preprocess_data = checked


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
    parser.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'bf16', 'fp16'),
                        help="of the attention maps: auto is bf16 where the CPU or GPU runs it natively, else fp32 "
                             "(default: auto); each answer's notes say which ran")
    parser.add_argument('--wsi-folder', type=Path, metavar='DIR',
                        help='whole-slide images offered in the "Whole-slide image" tab, any size (uploads are '
                             f'limited to {MAX_FILE_SIZE}; needs the slides extra)')
    parser.add_argument('--examples', type=Path, metavar='DIR',
                        help="a folder of example images (PNG, JPEG, WebP), offered beside scikit-learn's sample "
                             "photos (default: examples/ beside app.py, or a checkout's demo/examples/)")
    return parser.parse_args(argv)


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
    if args.wsi_folder is not None and not (args.wsi_folder.is_dir() and slides_extra_installed()):
        print(f'error: --wsi-folder {args.wsi_folder} ' + ('needs the slides extra: ' + install_hint('slides')
              if args.wsi_folder.is_dir() else 'is not a folder'), file=sys.stderr)
        return 2
    try:
        models = load_all(specs, args.precision)
        slide_data = load_slide_data(args.slide_data) if args.slide_data else None
    except (DemoError, SlideError) as err:
        print(f'error: {one_line(err, MESSAGE_LIMIT)}', file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:  # --slide-data reads with `datasets`, of the train extra
        print(f'error: --slide-data needs {err.name!r}: {install_hint("train")}', file=sys.stderr)
        return 2
    for name, served in models.items():
        print(f'{name}: precision {served.precision}')
    private_temp_dir()
    bound_allocator()  # before the server's threads: see demo/memory.py
    app = build_app(models, args.concurrency, args.examples or examples, slide_data, args.wsi_folder)
    app.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_FILE_SIZE)
    return 0
