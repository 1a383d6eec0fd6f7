"""Sound-source localization annotations: VGG-SS and Flickr-SoundNet, as lists of boxes per sample.

- VGG-SS (``vggss.json``, also what ``avssl data compose`` writes): a JSON list of ``{"file", "class",
  "bbox": [[x1, y1, x2, y2], ...]}`` with coordinates normalized to [0, 1]; the ground truth is the union
  of the boxes.
- Flickr-SoundNet: a folder of ``<id>.xml`` files, one ``bbox`` element per annotator's box
  (``xmin, ymin, xmax, ymax`` in pixels of the ``size`` element's frame, 256x256 when it is absent); the
  ground truth is the consensus ``min(sum / 2, 1)``.

Media: ``<file>`` with any video extension under the media folder, or a still image with its sound in a
file of the same name (``<id>.jpg`` + ``<id>.wav``). The annotated frame is the middle of a video.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..collection import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from .base import index_files

__all__ = ["LocalizationSample", "LocalizationSet", "read_flickr", "read_localization", "read_vggss"]



@dataclass
class LocalizationSample:
    """``boxes``: normalized ``[x1, y1, x2, y2]``; ``consensus``: Flickr's ``min(sum / 2, 1)`` over the boxes
    (one per annotator) instead of their union."""

    id: str
    video: str
    audio: str
    boxes: list[list[float]]
    consensus: bool = False
    class_name: str = ""


@dataclass
class LocalizationSet:
    samples: list[LocalizationSample]
    missing: list[str] = field(default_factory=list)  # annotated ids without media

    def summary(self) -> str:
        s = f"{len(self.samples)} annotated samples"
        if self.missing:
            s += f", {len(self.missing)} without media (e.g. {self.missing[0]})"
        return s


def _find_media(files: dict[str, list[Path]], key: str) -> tuple[str, str] | None:
    """(video or image, audio) for an annotated id; None when absent."""
    cands = files.get(Path(key).stem, [])
    by_ext = {p.suffix.lower(): p for p in cands}
    video = next((by_ext[e] for e in VIDEO_EXTENSIONS if e in by_ext), None)
    if video is not None:
        return str(video), str(video)
    image = next((by_ext[e] for e in IMAGE_EXTENSIONS if e in by_ext), None)
    audio = next((by_ext[e] for e in AUDIO_EXTENSIONS if e in by_ext), None)
    if image is not None and audio is not None:
        return str(image), str(audio)
    return None


def read_vggss(annotations: str | os.PathLike, media: str | os.PathLike) -> LocalizationSet:
    """Samples of a VGG-SS style JSON whose media are under ``media``."""
    rows = json.loads(Path(annotations).read_text())
    if not isinstance(rows, list):
        raise ValueError(f"{annotations}: expected a JSON list of {{file, class, bbox}} objects")
    files = index_files(media)
    samples, missing = [], []
    for r in rows:
        found = _find_media(files, str(r["file"]))
        if found is None:
            missing.append(str(r["file"]))
            continue
        boxes = [[min(max(float(v), 0.0), 1.0) for v in b] for b in r["bbox"]]
        if any(len(b) != 4 for b in boxes):
            raise ValueError(f"{annotations}: {r['file']}: every bbox needs 4 values [x1, y1, x2, y2]")
        samples.append(LocalizationSample(str(r["file"]), *found, boxes, False, str(r.get("class", ""))))
    return LocalizationSet(samples, missing)


def _xml_boxes(path: Path) -> list[list[float]]:
    root = ET.parse(path).getroot()
    size = root.find("size")
    width = float(size.findtext("width", "256")) if size is not None else 256.0
    height = float(size.findtext("height", "256")) if size is not None else 256.0
    boxes = []
    for bb in root.iter("bbox"):
        named = [bb.findtext(k) for k in ("xmin", "ymin", "xmax", "ymax")]
        if all(v is not None for v in named):
            vals = [float(v) for v in named]
        else:  # positional: a first element (a label) then xmin, ymin, xmax, ymax
            vals = [float(ch.text) for ch in list(bb)[1:5]]
        if len(vals) != 4:
            raise ValueError(f"{path}: a bbox without xmin, ymin, xmax, ymax")
        boxes.append([vals[0] / width, vals[1] / height, vals[2] / width, vals[3] / height])
    return boxes


def read_flickr(annotations: str | os.PathLike, media: str | os.PathLike) -> LocalizationSet:
    """Samples of a folder of Flickr-SoundNet ``<id>.xml`` files whose media are under ``media``."""
    files = index_files(media)
    samples, missing = [], []
    for xml in sorted(Path(annotations).glob("*.xml")):
        found = _find_media(files, xml.stem)
        if found is None:
            missing.append(xml.stem)
            continue
        samples.append(LocalizationSample(xml.stem, *found, _xml_boxes(xml), True))
    return LocalizationSet(samples, missing)


def read_localization(fmt: Literal["vggss", "flickr"], annotations: str | os.PathLike,
                      media: str | os.PathLike) -> LocalizationSet:
    """``vggss`` (a JSON file) or ``flickr`` (a folder of XML files)."""
    if fmt == "vggss":
        return read_vggss(annotations, media)
    if fmt == "flickr":
        return read_flickr(annotations, media)
    raise ValueError(f"unknown localization format {fmt!r} (vggss, flickr)")
