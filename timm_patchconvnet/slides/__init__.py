"""Whole-slide maps: IDC patients' patches stitched back at their slide coordinates (`patches`), a patient uploaded
as a zip (`upload`) and the demo's "Whole slide" tab (`demo_tab`, Gradio). Whole-slide image files (the `slides`
extra, OpenSlide) are imported from their own modules, not here, so this package imports without OpenSlide:
`predict_wsi.predict_wsi`, `wsi` (opening, scale, level), `tissue`, `tiles`, `regions`, `wsi_outputs`,
`wsi_batch` and the demo's "Whole-slide image" tab (`wsi_tab`)."""
from .patches import (
    SLIDES_DIR, Slide, SlideError, SlidePrediction, make_slide, patch_layer, predict_slide, region_scores,
    render_slide, slide_from_rows, stitch)

__all__ = ['SLIDES_DIR', 'Slide', 'SlideError', 'SlidePrediction', 'make_slide', 'patch_layer', 'predict_slide',
           'region_scores', 'render_slide', 'slide_from_rows', 'stitch']
