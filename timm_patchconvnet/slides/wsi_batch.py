"""Many slides in one run: paths, globs and folders expanded, each slide's outputs in its own folder, slides whose
outputs are complete skipped (a killed run resumes), and a slide that fails set aside while the others finish."""
import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, List, Tuple

from ..errors import one_line
from .predict_wsi import WsiResult
from .wsi import WsiError
from .wsi_outputs import is_complete

__all__ = ['BatchReport', 'expand_slide_paths', 'run_slides']


@dataclass
class BatchReport:
    written: List[Path] = field(default_factory=list)  # the output folders written
    skipped: List[Path] = field(default_factory=list)  # complete already
    failed: List[Tuple[Path, str]] = field(default_factory=list)  # the slide and its one-line reason


def expand_slide_paths(patterns: Iterable[str]) -> Tuple[List[Path], List[str]]:
    """The slide files named by `patterns` (files, folders: their files, not hidden, not recursive; globs), in
    order, each once; and the patterns that name nothing."""
    paths: List[Path] = []
    unmatched: List[str] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith('.'))
        elif path.exists():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        if not found:
            unmatched.append(pattern)
        paths.extend(p for p in found if p not in paths)
    return paths, unmatched


def run_slides(paths: Iterable[Path], out: Path, predict: Callable[[Path], WsiResult],
               log: Callable[[str], None] = print) -> BatchReport:
    """`predict` each slide and save its outputs into out/<file name>/, skipping complete folders; a WsiError or an
    OSError is recorded in the report and the next slide runs."""
    report = BatchReport()
    for path in paths:
        folder = out / path.name
        if is_complete(folder):
            report.skipped.append(folder)
            log(f'{path}: done already ({folder}), skipped')
            continue
        try:
            result = predict(path)
            result.save(folder)
        except (WsiError, OSError) as err:
            report.failed.append((path, one_line(err)))
            continue
        report.written.append(folder)
        summary = result.summary()
        log(f"{folder}: {summary['tiles']} tiles, {summary['regions']} region(s), {summary['region_mm2']:.3f} mm² "
            f"{summary['class']} of {summary['tissue_mm2']:.3f} mm² tissue, {summary['seconds']:.1f} s")
    return report
