"""The demo's "Whole slide" tab: one IDC patient's patches, uploaded as a zip or picked from a data set the demo was
started with (`--slide-data`), stitched into the slide and drawn with a two-class model's IDC probability, the
annotated region and the pooling's attention (`slides.patches`). Every refusal is a message in the page."""
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import gradio as gr
from PIL import Image

from ..demo.memory import trimmed
from .upload import read_patient_zip
from .patches import SlideError, predict_slide, render_slide, slide_from_rows

__all__ = ['draw_slide', 'load_slide_data', 'whole_slide_tab']

SKIPPED_SHOWN = 5


def load_slide_data(folder: str) -> Any:
    """The patches of an IDC source (the Kaggle folder or parquet files with patient ids) for the patient menu."""
    from ..data import DataError, load_idc_patches  # `datasets`: only when the demo is started with --slide-data

    try:
        patches = load_idc_patches(folder)
    except DataError as err:
        raise SlideError(f'--slide-data: {err}') from err
    if 'patient_id' not in patches.column_names:
        raise SlideError(f'--slide-data {folder} has no patient ids: pass the Kaggle folder or a patchconvnet-push-idc '
                         'export.')
    return patches


def draw_slide(models: Dict[str, Any], model_name: str, upload: Optional[str], patient: Optional[str],
               threshold: float, slide_data: Any = None) -> Tuple[Image.Image, str]:
    """The slide map of the uploaded zip (else of `patient` in `slide_data`) and a note on what was drawn."""
    served = models.get(model_name)
    if served is None:
        raise gr.Error(f'Unknown model {model_name!r}.')
    if served.model.num_classes != 2:
        raise gr.Error(f'{model_name} has {served.model.num_classes} classes: a whole-slide map needs a two-class '
                       'IDC model (class 1: IDC).')
    skipped: List[str] = []
    try:
        if upload:
            slide, skipped = read_patient_zip(upload)
        elif patient and slide_data is not None:
            slide = slide_from_rows(slide_data, patient)
        else:
            raise SlideError("Upload a zip of one patient's patches" + (' or choose a patient'
                                                                         if slide_data is not None else '') + '.')
        prediction = predict_slide(served.model, slide)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / 'slide.png'
            scores = render_slide(slide, prediction, path, threshold, title=f'{model_name}: patient {slide.patient_id}')
            picture = Image.open(path)
            picture.load()
    except SlideError as err:
        raise gr.Error(str(err)) from err
    notes = [f'Patient {slide.patient_id}: {len(slide.patches)} patches, threshold {threshold:.2f}.']
    if scores.get('dice') is not None:
        notes.append(f"Predicted against annotated IDC region: Dice {scores['dice']:.3f}, IoU {scores['iou']:.3f}.")
    if skipped:
        notes.append(f'{len(skipped)} file(s) outside the naming pattern skipped: '
                     + ', '.join(skipped[:SKIPPED_SHOWN]) + (', ...' if len(skipped) > SKIPPED_SHOWN else '') + '.')
    return picture, ' '.join(notes)


def whole_slide_tab(models: Dict[str, Any], slide_data: Any = None) -> None:
    """The tab's components and events, inside the app's Blocks."""
    names = [name for name, served in models.items() if served.model.num_classes == 2] or list(models)
    patients = sorted(set(slide_data['patient_id'])) if slide_data is not None else []
    with gr.Row():
        with gr.Column():
            model_name = gr.Dropdown(names, value=names[0], label='Two-class (IDC) model')
            upload = gr.File(label="A zip of one patient's patches (<patient>_idx5_x<X>_y<Y>_class<k>.png)",
                             file_types=['.zip'], type='filepath', elem_id='slide-zip')
            patient = gr.Dropdown(patients, value=None, label='...or a patient of the loaded data set',
                                  visible=bool(patients))
            threshold = gr.Slider(0., 1., value=.5, step=.01, label='IDC probability threshold')
            run = gr.Button('Draw the slide', variant='primary')
        with gr.Column():
            picture = gr.Image(label='Whole slide', type='pil', format='png', elem_id='slide')
            notes = gr.Markdown(elem_id='slide-notes')

    @trimmed
    def draw(model_name, upload, patient, threshold):
        return draw_slide(models, model_name, upload, patient, threshold, slide_data)

    run.click(draw, [model_name, upload, patient, threshold], [picture, notes], api_name='slide')
