"""The demo's "Whole-slide image" tab: a slide file uploaded (within the demo's upload limit) or picked from the
folder the demo was started with (`--wsi-folder`, for slides of any size), run through a two-class model by
`predict_wsi`; the overlay is shown (full screen to zoom) and the GeoJSON and summary offered for download. Shown
when the `slides` extra is installed; whole-slide inference is imported only when a slide is run."""
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import gradio as gr

from ..demo.memory import trimmed

__all__ = ['folder_slides', 'run_whole_slide', 'slides_extra_installed', 'whole_slide_image_tab']


def slides_extra_installed() -> bool:
    return importlib.util.find_spec('openslide') is not None


def folder_slides(folder: Optional[Path]) -> List[str]:
    """The file names offered from `folder` (not hidden); a name picked must be one of these: no path escapes it."""
    if folder is None:
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith('.'))


def run_whole_slide(models: Dict[str, Any], model_name: str, upload: Optional[str], picked: Optional[str],
                    folder: Optional[Path], model_mpp: Optional[float], slide_mpp: Optional[float],
                    threshold: float) -> Tuple[str, List[str], str]:
    """The overlay PNG, the GeoJSON and summary files, and a note, for the uploaded slide (else `picked`)."""
    from .predict_wsi import predict_wsi
    from .wsi import WsiError, model_mpp as recorded_mpp

    served = models.get(model_name)
    if served is None or served.model.num_classes != 2:
        raise gr.Error(f'{model_name!r} is not a two-class model: a whole-slide map needs one (class 1: IDC).')
    if upload:
        path = Path(upload)
    elif picked and picked in folder_slides(folder):
        path = folder / picked
    else:
        raise gr.Error('Upload a slide' + (' or choose one of the folder' if folder is not None else '') + '.')
    scale = model_mpp or recorded_mpp(None, served.model.pretrained_cfg)
    if not scale:
        raise gr.Error(f"{model_name} records no microns per pixel of its training images: give the model's µm/px.")
    try:
        result = predict_wsi(served.runner, path, model_mpp=scale, mpp=slide_mpp or None, threshold=threshold,
                             model_id=model_name)
        # into Gradio's folder (the demo's private one): served from there, removed with it
        out = result.save(Path(tempfile.mkdtemp(prefix='wsi-', dir=os.environ.get('GRADIO_TEMP_DIR'))))
    except WsiError as err:
        raise gr.Error(str(err).replace(str(path.parent) + '/', '')) from err  # the file's name, not its folder
    summary = result.summary()
    note = (f"{path.name}: {summary['tiles']} tiles at {scale:g} µm/px, {summary['regions']} region(s) of "
            f"{summary['class']}, {summary['region_mm2']:.3f} mm² of {summary['tissue_mm2']:.3f} mm² tissue "
            f"(threshold {threshold:.2f}), {summary['seconds']:.1f} s.")
    return str(out / 'overlay.png'), [str(out / 'regions.geojson'), str(out / 'summary.json')], note


def whole_slide_image_tab(models: Dict[str, Any], folder: Optional[Path] = None) -> None:
    """The tab's components and events, inside the app's Blocks."""
    names = [name for name, served in models.items() if served.model.num_classes == 2] or list(models)
    slides = folder_slides(folder)
    with gr.Row():
        with gr.Column():
            model_name = gr.Dropdown(names, value=names[0], label='Two-class (IDC) model')
            upload = gr.File(label='A slide file (.svs, .tif, .ndpi, ...: any single-file format OpenSlide reads)',
                             type='filepath', elem_id='wsi-file')
            picked = gr.Dropdown(slides, value=None, label='...or a slide of the folder', visible=bool(slides))
            model_mpp = gr.Number(None, label="the model's µm per pixel (empty: what it records; IDC: about 4)")
            slide_mpp = gr.Number(None, label="the slide's µm per pixel (empty: its file's)")
            threshold = gr.Slider(0., 1., value=.5, step=.01, label='probability threshold of a region')
            run = gr.Button('Run the slide', variant='primary')
        with gr.Column():
            overlay = gr.Image(label='Probability overlay', type='filepath', format='png', elem_id='wsi-overlay')
            files = gr.File(label='QuPath GeoJSON and summary', file_count='multiple', elem_id='wsi-files')
            notes = gr.Markdown(elem_id='wsi-notes')

    @trimmed  # the largest arrays of any request (thumbnail, grids, figures): freed memory handed back
    def run_slide(model, uploaded, chosen, model_scale, slide_scale, cut):
        return run_whole_slide(models, model, uploaded, chosen, folder, model_scale, slide_scale, cut)

    run.click(run_slide, [model_name, upload, picked, model_mpp, slide_mpp, threshold], [overlay, files, notes],
              api_name='whole_slide_image')
