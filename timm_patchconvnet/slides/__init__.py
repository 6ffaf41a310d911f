"""Whole-slide maps: IDC patients' patches stitched back at their slide coordinates (`patches`), a patient uploaded
as a zip (`upload`) and the demo's "Whole slide" tab (`demo_tab`, Gradio)."""
from .patches import (
    SLIDES_DIR, Slide, SlideError, SlidePrediction, make_slide, patch_layer, predict_slide, region_scores,
    render_slide, slide_from_rows, stitch)

__all__ = ['SLIDES_DIR', 'Slide', 'SlideError', 'SlidePrediction', 'make_slide', 'patch_layer', 'predict_slide',
           'region_scores', 'render_slide', 'slide_from_rows', 'stitch']
