"""One patient's IDC patches uploaded as a zip, read into a `slides.Slide` without trusting the archive.

Nothing is extracted to disk. Before any entry is decompressed the archive is checked against limits on its entry
count, each entry's size and compression ratio (a zip bomb is refused from its directory), and entry names that
climb out of the archive or are absolute are refused. Each entry is then read with a byte limit, whatever its header
claims. Files outside the IDC naming pattern are skipped and listed; patches of several patients are refused.
"""
import io
import re
import zipfile
from pathlib import PurePosixPath
from typing import List, NamedTuple

from PIL import Image

from ..dataset_specs import IDC_PATCH_NAME
from .patches import Slide, SlideError, make_slide

__all__ = ['MAX_ENTRIES', 'MAX_ENTRY_BYTES', 'MAX_TOTAL_BYTES', 'UploadedSlide', 'read_patient_zip']

MAX_ENTRIES = 20_000  # the largest real patient has about 2,200 patches
MAX_ENTRY_BYTES = 1 << 20  # a 50x50 RGB PNG is under 10 KB
MAX_TOTAL_BYTES = 256 << 20
MAX_RATIO = 100  # uncompressed / compressed size of one entry; PNG barely compresses further
MAX_PATCH_SIDE = 512


class UploadedSlide(NamedTuple):
    slide: Slide
    skipped: List[str]  # entries outside the naming pattern


def read_patient_zip(file: str) -> UploadedSlide:
    """The slide of the one patient whose patches (`<patient>_idx5_x<X>_y<Y>_class<k>.png`, any folders) the zip
    `file` holds; SlideError with a clear message for anything else."""
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError) as err:
        raise SlideError(f'Not a readable zip file ({err}): upload a .zip of one patient\'s patch PNGs.') from err
    with archive:
        entries = [info for info in archive.infolist() if not info.is_dir()]
        _check_directory(entries)
        patches, names, skipped = [], [], []
        for info in entries:
            match = IDC_PATCH_NAME.fullmatch(PurePosixPath(info.filename).name)
            if match is None:
                skipped.append(info.filename)
                continue
            names.append(info.filename)
            patches.append((match, _read_image(archive, info)))
    if not patches:
        raise SlideError('No IDC patches in the zip: their names must be <patient>_idx5_x<X>_y<Y>_class<0|1>.png'
                         + (f' (found e.g. {skipped[0]!r})' if skipped else '') + '.')
    patients = sorted({m['patient'] for m, _ in patches})
    if len(patients) > 1:
        raise SlideError(f'The zip holds patches of {len(patients)} patients ({", ".join(patients[:5])}): upload one '
                         'patient per zip.')
    slide = make_slide(patients[0], [image for _, image in patches], [int(m['x']) for m, _ in patches],
                       [int(m['y']) for m, _ in patches], [int(m['label']) for m, _ in patches], names)
    return UploadedSlide(slide, skipped)


def _check_directory(entries: List[zipfile.ZipInfo]) -> None:
    """Refuse, from the archive's directory alone, what would be unsafe or absurd to decompress."""
    if len(entries) > MAX_ENTRIES:
        raise SlideError(f'The zip holds {len(entries)} files, more than the {MAX_ENTRIES} a patient can have.')
    for info in entries:
        path = PurePosixPath(info.filename.replace('\\', '/'))
        if path.is_absolute() or '..' in path.parts or re.match(r'^[A-Za-z]:', info.filename):
            raise SlideError(f'Refused: the zip entry {info.filename!r} points outside the archive.')
        if info.file_size > MAX_ENTRY_BYTES or info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise SlideError(f'Refused: the zip entry {info.filename!r} unpacks to {info.file_size} bytes from '
                             f'{info.compress_size} (a zip bomb?); a patch PNG is a few KB.')
    total = sum(info.file_size for info in entries)
    if total > MAX_TOTAL_BYTES:
        raise SlideError(f'Refused: the zip unpacks to {total} bytes, more than {MAX_TOTAL_BYTES}.')


def _read_image(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Image.Image:
    """The entry decoded as an RGB image, reading at most MAX_ENTRY_BYTES whatever its header says."""
    with archive.open(info) as entry:
        data = entry.read(MAX_ENTRY_BYTES + 1)
    if len(data) > MAX_ENTRY_BYTES:
        raise SlideError(f'Refused: the zip entry {info.filename!r} is larger than its header says.')
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise SlideError(f'{info.filename!r} is not a readable PNG ({type(err).__name__}).') from err
    if max(image.size) > MAX_PATCH_SIDE:
        raise SlideError(f'{info.filename!r} is {image.width}x{image.height}: not a 50x50 patch.')
    return image.convert('RGB')
