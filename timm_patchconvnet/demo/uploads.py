"""What the demo does with an upload before the model sees it: the header checked before decoding (size, bombs,
non-images), a truncated file caught as it is decoded, and a private folder for Gradio's uploads and results."""
import atexit
import os
import shutil
import signal
import sys
import tempfile
import warnings

import gradio as gr
from PIL import Image, UnidentifiedImageError

__all__ = ['MAX_FILE_SIZE', 'MAX_PIXELS', 'MAX_SIDE', 'MIN_SIDE', 'check_image_file', 'checked_image_input',
           'private_temp_dir']

MIN_SIDE = 8  # pixels: below this an image has no shape to look at
MAX_PIXELS = 40_000_000  # refused before decoding: a decompression bomb never reaches memory
# refused before decoding too: the map drawn at the image's size costs memory with its long side (an 8 x 5,000,000
# PNG of 303 KB, 40 megapixels, peaked at 6.3 GB for 52 s in issue 26), and no photo or scan is longer
MAX_SIDE = 16_384
MAX_FILE_SIZE = '50mb'


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
    if max(width, height) > MAX_SIDE:
        raise gr.Error(f'This image is {width}x{height} pixels; the demo takes up to {MAX_SIDE} pixels a side. '
                       'Crop or downscale it first.')
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
