"""Each split decoded once into a uint8 (N, 3, H, W) array on disk, memory-mapped by every run and process after.

Decoding and resizing images in Python (PIL) costs far more than a training step of a small model on a GPU, and
it is the same work every epoch. `decode_split` does it once per split: each image is made 8-bit RGB (`to_rgb`)
and resized to the model's input size exactly as the evaluation transform does (`exact_size_transform`), then
stored. Augmentation and normalisation then run on whole batches on the training device (`batch_transforms`).

An entry of the cache is a folder named by a hash of its key: the split's `datasets` fingerprint, a key of the
source (for a folder of files: its listing with sizes, times and inodes), the decode settings and the format
version. A changed source, other settings or another version give another key, so a stale entry is never used;
an entry whose recorded key or files do not match is rebuilt. Entries are built under a file lock into a temporary
folder and renamed into place, so processes building the same entry at once end with one whole entry, and a failed
build (a full disk) leaves none; the staging folder of a killed build is removed by the next one.

`meta.json` records each file's size and an xxh3 checksum of each (xxhash: 17x faster than CRC-32 here). The
sizes, the labels and the index of readable rows are checked at every open (a tampered or truncated file is
found, and the entry rebuilt), the pixels when the entry is built (read back) and when asked (`verify=True`,
train.py's --verify-cache).
"""
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Optional, Sequence, Tuple, Union

import datasets
import numpy as np
import torch
import xxhash
from filelock import FileLock, Timeout
from PIL import Image
from timm.data.transforms import str_to_interp_mode
from torchvision import transforms

from ..images import to_rgb
from .splits import column

__all__ = ['CACHE_ENV', 'DecodeCacheError', 'DecodeSettings', 'DecodedImages', 'ImageReadError', 'cache_root',
           'decode_split', 'keep_batch', 'open_rgb', 'readable_files']

_logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when the stored layout or the decoding changes: older entries are then rebuilt
CACHE_ENV = 'PATCHCONVNET_CACHE'
IMAGES_FILE, LABELS_FILE, READABLE_FILE, META_FILE = 'images.npy', 'labels.npy', 'readable.npy', 'meta.json'
# how PIL reports a broken file besides an OSError without errno (one with an errno is the file system's: open_rgb)
DECODE_ERRORS = (SyntaxError, ValueError, Image.DecompressionBombError)
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
CHUNK = 512  # images per task of the decoding threads
STAGING = '.tmp-'  # in the name of an entry's folder while it is built


class DecodeCacheError(OSError):
    """The decoded cache cannot be written or read: the message says where and what to do."""


class DamagedEntryError(ValueError):
    """An entry's files do not match the sizes and checksums its meta.json recorded."""


class ImageReadError(OSError):
    """An image file cannot be read at all (missing, no permission, an I/O error): not a broken image, so it is
    not skipped and never recorded as unreadable."""


@dataclass(frozen=True)
class DecodeSettings:
    """How images are stored: resized to height x width with timm's `interpolation` name (the model's data config)."""
    height: int
    width: int
    interpolation: str = 'bicubic'

    @classmethod
    def from_data_config(cls, data_config: Dict[str, Any], native_size: Optional[int] = None) -> 'DecodeSettings':
        """At the model's input size, or at the data set's own `native_size` (square images of one size) where the
        model's is larger: the batches are then resized on the device (`BatchPreprocess`). CIFAR-10's training
        split takes 7.5 GB stored at 224 x 224, 150 MB at 32 x 32."""
        _, height, width = data_config['input_size']
        if native_size is not None and native_size < min(height, width):
            height = width = native_size
        return cls(height, width, data_config['interpolation'])


def cache_root(cache_dir: Optional[str] = None) -> Path:
    """Where decoded splits live: `cache_dir`/timm_patchconvnet, else $PATCHCONVNET_CACHE, else
    $XDG_CACHE_HOME/timm_patchconvnet (~/.cache/timm_patchconvnet)."""
    if cache_dir:
        return Path(cache_dir).expanduser() / 'timm_patchconvnet'
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'timm_patchconvnet'


class DecodedImages(torch.utils.data.Dataset):
    """A decoded split: (uint8 image (3, H, W), label) pairs read from a memory-mapped entry of the cache.

    `__getitems__` reads a whole batch at once, (uint8 (B, 3, H, W), int64 (B,)); give the DataLoader
    `collate_fn=keep_batch`. Pickling (DataLoader workers) passes the folder, not the pixels."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / META_FILE).read_text())
        self.images = np.load(self.folder / IMAGES_FILE, mmap_mode='r')
        self.rows = np.load(self.folder / READABLE_FILE)  # unreadable images are left out
        labels = np.load(self.folder / LABELS_FILE)
        _check_recorded(self.folder, self.meta, {LABELS_FILE: labels, READABLE_FILE: self.rows})
        self.stored_rows = len(labels)
        self.labels = labels[self.rows]

    @property
    def unreadable(self) -> int:
        return len(self.images) - len(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self.images[self.rows[index]])), int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        indices = np.asarray(indices)
        return torch.from_numpy(self.images[self.rows[indices]]), torch.from_numpy(self.labels[indices])

    def __getstate__(self) -> Dict[str, Any]:
        return {'folder': self.folder}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(state['folder'])


def keep_batch(batch: Any) -> Any:
    """The DataLoader `collate_fn` for `DecodedImages`, whose `__getitems__` already returns a batch."""
    return batch


def decode_split(split: datasets.Dataset, settings: DecodeSettings, root: Path, source_key: str = '',
                 name: str = 'split', verify: bool = False) -> DecodedImages:
    """The decoded cache entry of `split` (its `image` and `label` columns), built if it is missing or invalid.

    `source_key` identifies what the split's rows point to when the fingerprint alone cannot (image files named by
    path: their listing with sizes, times and inodes). `name` prefixes the entry's folder name, for people looking.
    `verify`: check the pixels against their recorded checksum too (reads the whole entry), rebuilding on a mismatch."""
    key = dict(version=CACHE_VERSION, fingerprint=split._fingerprint, source=source_key, rows=len(split),
               **asdict(settings))
    folder = Path(root) / f'{name}-{_digest(key)}'
    _refuse_links(folder)
    entry = _valid_entry(folder, key, verify)
    if entry is not None:
        return entry
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder) + '.lock')
        lock.acquire()
    except OSError as err:
        raise DecodeCacheError(f'Cannot create the decoded cache in {folder.parent} ({err.strerror or err}): '
                               'set --cache-dir (or $PATCHCONVNET_CACHE) to a writable folder.') from err
    try:
        entry = _valid_entry(folder, key, verify)  # another process may have built it while this one waited
        if entry is not None:
            return entry
        _remove_staging(folder)
        if folder.exists():  # a damaged or foreign entry
            _logger.warning('The decoded cache %s does not match its key or its recorded sizes and checksums '
                            '(another version, or damaged): rebuilding it.', folder)
            shutil.rmtree(folder)
        _build(split, settings, folder, key)
    finally:
        lock.release()
    entry = DecodedImages(folder)
    if entry.unreadable:
        _logger.warning('%d image(s) of %s could not be decoded and are left out.', entry.unreadable, name)
    return entry


def open_rgb(file: Union[str, Path, BinaryIO]) -> Optional[Image.Image]:
    """The image file as training reads it (decoded, `to_rgb`), or None where PIL cannot decode it to a non-empty
    image (a broken or truncated file, NaN pixels, a decompression bomb)."""
    try:
        with Image.open(file) as image:
            image.load()
            if image.width == 0 or image.height == 0:
                return None
            return to_rgb(image)  # raises for NaN pixels, which would train on an arbitrary gray
    except OSError as err:
        if err.errno is not None:  # a passing or fixable failure: caching it as a broken image would hide it for good
            raise ImageReadError(f'Cannot read {err.filename or getattr(file, "name", file)}: {err.strerror}. Fix '
                                 'the file or its permissions; nothing was recorded about it.') from err
        return None
    except DECODE_ERRORS:
        return None


def readable_files(files: Sequence[Union[str, Path]]) -> np.ndarray:
    """Whether each image file decodes (`open_rgb`), checked on a thread per core."""
    def readable(chunk: Sequence[Union[str, Path]]) -> List[bool]:
        return [open_rgb(file) is not None for file in chunk]
    chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]
    with ThreadPoolExecutor(_threads()) as pool:
        return np.array([ok for part in pool.map(readable, chunks) for ok in part], dtype=bool)


def _valid_entry(folder: Path, key: Dict[str, Any], verify: bool = False) -> Optional[DecodedImages]:
    """The entry in `folder` if it is whole and was built for `key`; None otherwise (missing, foreign, damaged).
    `verify`: its pixels' checksum is checked as well."""
    try:
        entry = DecodedImages(folder)
    except (OSError, ValueError, KeyError, IndexError, TypeError):  # missing, truncated or mismatched files
        return None
    shape = (key['rows'], 3, key['height'], key['width'])
    if (entry.meta.get('key') != key or entry.images.shape != shape or entry.images.dtype != np.uint8
            or entry.stored_rows != key['rows']):
        return None
    if verify and _file_checksum(folder / IMAGES_FILE, entry.images.offset) != entry.meta['xxh3_64'][IMAGES_FILE]:
        _logger.warning('The pixels of the decoded cache %s do not match their checksum: rebuilding it.', folder)
        return None
    return entry


def _check_recorded(folder: Path, meta: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
    """DamagedEntryError unless every file has the size recorded in `meta` and `arrays` (read from their files)
    the recorded checksums: cheap enough for every open (the index and labels are 16 bytes a row)."""
    sizes = {name: (folder / name).stat().st_size for name in (IMAGES_FILE, LABELS_FILE, READABLE_FILE)}
    if sizes != meta['sizes'] or any(_checksum(array) != meta['xxh3_64'][name] for name, array in arrays.items()):
        raise DamagedEntryError(f'{folder}: the files do not match the sizes and checksums of {META_FILE}')


def _checksum(array: np.ndarray) -> int:
    return xxhash.xxh3_64_intdigest(memoryview(np.ascontiguousarray(array)).cast('B'))


def _file_checksum(path: Path, offset: int, chunk: int = 2 ** 24) -> int:
    """The checksum of `path` from byte `offset` (the pixels after the .npy header), read in chunks."""
    hasher = xxhash.xxh3_64()
    with open(path, 'rb') as file:
        file.seek(offset)
        while block := file.read(chunk):
            hasher.update(block)
    return hasher.intdigest()


def _refuse_links(folder: Path) -> None:
    """An entry is a folder the cache built, of plain files: a link there would read or clear what it points at."""
    for path in (folder, folder / META_FILE, folder / IMAGES_FILE, folder / LABELS_FILE, folder / READABLE_FILE):
        if path.is_symlink():
            raise DecodeCacheError(f'{path} in the decoded cache is a symbolic link: the cache holds only what it '
                                   'built. Remove the link (the entry is then built again).')


def _remove_staging(folder: Path) -> None:
    """The staging folders of killed builds: of `folder`'s entry (whose lock this process holds), and of any other
    entry whose lock is free (no one is building it)."""
    for staging in folder.parent.glob(f'*{STAGING}*'):
        entry = staging.name.split(STAGING)[0]
        if entry == folder.name:
            shutil.rmtree(staging, ignore_errors=True)
            continue
        try:
            with FileLock(str(folder.parent / entry) + '.lock', timeout=0):
                shutil.rmtree(staging, ignore_errors=True)
        except (Timeout, OSError):  # being built, or not ours to lock: left alone
            pass


def _build(split: datasets.Dataset, settings: DecodeSettings, folder: Path, key: Dict[str, Any]) -> None:
    """Decode `split` into a temporary folder beside `folder`, then rename it into place."""
    staging = folder.with_name(f'{folder.name}{STAGING}{uuid.uuid4().hex[:8]}')
    shape = (len(split), 3, settings.height, settings.width)
    files = split.select_columns(['image']).cast_column('image', datasets.Image(decode=False))
    resize = transforms.Resize((settings.height, settings.width),
                               interpolation=str_to_interp_mode(settings.interpolation))
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN) if _main_thread() else None
    try:
        staging.mkdir()
        readable = np.zeros(len(split), dtype=bool)
        with open(staging / IMAGES_FILE, 'wb') as out, ThreadPoolExecutor(_threads()) as pool:
            np.lib.format.write_array_header_1_0(out, {'descr': '|u1', 'fortran_order': False, 'shape': shape})
            if hasattr(os, 'posix_fallocate'):  # the space claimed first: a full disk fails here, not halfway
                os.posix_fallocate(out.fileno(), 0, out.tell() + int(np.prod(shape)))
            starts, pixels_hash = range(0, len(split), CHUNK), xxhash.xxh3_64()

            def decode_chunk(start: int) -> np.ndarray:
                images = np.zeros((min(CHUNK, len(split) - start), *shape[1:]), dtype=np.uint8)
                for i, file in enumerate(files[start:start + CHUNK]['image']):
                    pixels = _decode_one(file, resize)
                    if pixels is not None:
                        images[i], readable[start + i] = pixels, True
                return images

            for images in pool.map(decode_chunk, starts):  # in order: written as the array's rows
                out.write(images.tobytes())
                pixels_hash.update(images)
            out.flush()
            os.fsync(out.fileno())
        _write_index(staging, column(split, 'label').astype(np.int64), readable, key, pixels_hash.intdigest())
        try:
            staging.rename(folder)
        except OSError:  # another builder without our lock (another machine on a shared disk) was first
            if _valid_entry(folder, key) is None:
                raise
    except ImageReadError:
        raise
    except OSError as err:
        need = int(np.prod(shape)) / 2 ** 30
        advice = 'free space, ' if err.errno in DISK_FULL else 'check the folder\'s permissions, '
        raise DecodeCacheError(
            f'Cannot write the decoded cache {folder} ({err.strerror or err}; it needs {need:.2f} GiB): {advice}set '
            '--cache-dir (or $PATCHCONVNET_CACHE) to another disk, or use --loader pil. Nothing half-written was '
            'kept.') from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if previous_handler is not None:
            signal.signal(signal.SIGXFSZ, previous_handler)


def _write_index(staging: Path, labels: np.ndarray, readable: np.ndarray, key: Dict[str, Any],
                 pixels_checksum: int) -> None:
    """The labels, the readable rows and meta.json (key, sizes, checksums) beside the pixels written in `staging`,
    whose checksum is checked here by reading them back: a disk that returns other bytes fails the build."""
    rows = np.flatnonzero(readable)
    np.save(staging / LABELS_FILE, labels)
    np.save(staging / READABLE_FILE, rows)
    offset = np.load(staging / IMAGES_FILE, mmap_mode='r').offset
    if _file_checksum(staging / IMAGES_FILE, offset) != pixels_checksum:
        raise DecodeCacheError(f'{staging / IMAGES_FILE} reads back other bytes than were written: check the disk.')
    sizes = {name: (staging / name).stat().st_size for name in (IMAGES_FILE, LABELS_FILE, READABLE_FILE)}
    checksums = {IMAGES_FILE: pixels_checksum, LABELS_FILE: _checksum(labels), READABLE_FILE: _checksum(rows)}
    (staging / META_FILE).write_text(json.dumps({'key': key, 'unreadable': int((~readable).sum()), 'sizes': sizes,
                                                 'xxh3_64': checksums, 'built_by_pid': os.getpid()}, indent=1))


def _decode_one(file: Dict[str, Any], resize: transforms.Resize) -> Optional[np.ndarray]:
    """(3, H, W) uint8 pixels of one `datasets` image ({'path', 'bytes'}), resized; None if it does not decode."""
    rgb = open_rgb(io.BytesIO(file['bytes']) if file['bytes'] is not None else file['path'])
    return None if rgb is None else np.asarray(resize(rgb)).transpose(2, 0, 1)


def _digest(key: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def _threads() -> int:
    """PIL releases the GIL while it decodes and resizes, so threads use the cores without worker processes."""
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
