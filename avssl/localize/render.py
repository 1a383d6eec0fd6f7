"""Show the maps: overlay PNGs, a contact sheet, an MP4 with the compared audio, a GIF, one HTML page.

Per video, in ``OUT/<stem>/``: ``maps.npy`` (float32 ``(T, H, W)`` in [0, 1]), ``times.json``, overlay PNGs
of a few frames (JET colormap blended over the frame), ``contact_sheet.png`` (those frames plain above,
overlaid below), ``overlay.mp4`` (H.264, with the audio that was compared muxed in as AAC), optionally
``overlay.gif``; and ``OUT/index.html`` showing every video side by side with its plain frames.
"""

from __future__ import annotations

import html
import json
import os
import sys
import unicodedata
from pathlib import Path
from urllib.parse import quote
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.io as tvio

from ..data.decode import DecodeError
from ..data.encode import write_av
from .heatmap import Localizer, VideoMaps

__all__ = ["contact_sheet", "jet", "localize_videos", "overlay", "write_index", "write_video_outputs"]


def jet(x: np.ndarray) -> np.ndarray:
    """The JET colormap: values in [0, 1] (any shape) -> uint8 RGB (..., 3), blue (0) to red (1)."""
    x = np.clip(np.asarray(x, np.float32), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], np.float32)  # where red, green and blue peak
    rgb = np.clip(1.5 - np.abs(4.0 * (x - centres)), 0.0, 1.0)
    return (rgb * 255 + 0.5).astype(np.uint8)


def overlay(frame: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A frame ``(H, W, 3)`` uint8 blended with the JET colours of a map ``(H, W)``."""
    mixed = (1 - alpha) * frame.astype(np.float32) + alpha * jet(heat).astype(np.float32)
    return (mixed + 0.5).astype(np.uint8)


def _fit_height(img: np.ndarray, height: int) -> np.ndarray:
    if img.shape[0] == height:
        return img
    w = max(1, round(img.shape[1] * height / img.shape[0]))
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    y = F.interpolate(x, size=(height, w), mode="bilinear", antialias=True, align_corners=False)
    return y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def contact_sheet(frames: list[np.ndarray], overlays: list[np.ndarray], height: int = 160, gap: int = 4) -> np.ndarray:
    """Plain frames in the top row, their overlays below, each scaled to ``height`` pixels, white gaps."""
    tiles = [[_fit_height(f, height) for f in frames], [_fit_height(o, height) for o in overlays]]
    rows = []
    for row in tiles:
        parts = []
        for t in row:
            parts += [t, np.full((height, gap, 3), 255, np.uint8)]
        rows.append(np.concatenate(parts[:-1], axis=1))
    sep = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([rows[0], sep, rows[1]], axis=0)


def _png(path: Path, img: np.ndarray) -> None:
    tvio.write_png(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous(), str(path))


def _even(img: np.ndarray) -> np.ndarray:
    """Pad to even height and width (yuv420p needs them) by repeating the last row/column."""
    h, w = img.shape[:2]
    return np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if h % 2 or w % 2 else img


def _gif(path: Path, frames: list[np.ndarray], fps: float, max_side: int = 320) -> None:
    h, w = frames[0].shape[:2]
    scale = min(1.0, max_side / max(h, w))
    size = (max(2, round(h * scale) // 2 * 2), max(2, round(w * scale) // 2 * 2))
    with av.open(os.fspath(path), mode="w") as c:
        s = c.add_stream("gif", rate=max(1, round(fps)))
        s.height, s.width = size
        s.pix_fmt = "rgb8"
        for img in frames:
            small = _fit_height(img, size[0])[:, : size[1]]
            small = np.pad(small, ((0, 0), (0, size[1] - small.shape[1]), (0, 0)), mode="edge")
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(small), format="rgb24")))
        c.mux(s.encode(None))


def write_video_outputs(
    result: VideoMaps, out_dir: str | os.PathLike, fps: float, gif: bool = False, sheet_frames: int = 6
) -> dict[str, Any]:
    """Write one video's files into ``out_dir``; returns what was written (relative names) and facts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "maps.npy", result.maps.astype(np.float32))
    (out / "times.json").write_text(json.dumps([round(float(t), 6) for t in result.times]))
    overlays = [overlay(f, m) for f, m in zip(result.frames, result.maps)]
    picks = sorted({int(round(i)) for i in np.linspace(0, len(overlays) - 1, min(sheet_frames, len(overlays)))})
    pngs = []
    for i in picks:
        name = f"overlay_{i:04d}.png"
        _png(out / name, overlays[i])
        pngs.append(name)
    _png(out / "contact_sheet.png", contact_sheet([result.frames[i] for i in picks], [overlays[i] for i in picks]))
    write_av(out / "overlay.mp4", [_even(o) for o in overlays], fps, result.waveform[None], result.sample_rate)
    files = {"maps": "maps.npy", "times": "times.json", "overlays": pngs, "contact_sheet": "contact_sheet.png",
             "video": "overlay.mp4"}
    if gif:
        _gif(out / "overlay.gif", overlays, fps)
        files["gif"] = "overlay.gif"
    info = {"files": files, "num_maps": len(result.maps), "frame_size": list(result.maps.shape[1:]),
            "sheet_times": [round(float(result.times[i]), 3) for i in picks], "audio": result.audio_source,
            "audio_offset": result.audio_offset, "norm": result.norm, "notes": result.notes}
    (out / "info.json").write_text(json.dumps(info, indent=1))
    return info


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }}
section {{ background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 1em; margin-bottom: 1.5em; }}
.row {{ display: flex; gap: 1em; align-items: flex-start; flex-wrap: wrap; }}
video {{ width: 480px; max-width: 100%; background: #000; }}  /* small clips scaled up to be seen */
img {{ max-width: 100%; image-rendering: auto; }}
.meta {{ color: #555; font-size: 0.9em; }}
</style></head>
<body data-videos="{count}">
<h1>{title}</h1>
<p class="meta">{about}</p>
{sections}
<script>
// Each video's duration once its metadata has loaded, and the images that loaded (read by tests in a
// headless browser).
window.addEventListener("load", () => {{
  const videos = Array.from(document.querySelectorAll("video"));
  const report = () => {{
    document.body.dataset.ready = videos.filter(v => v.duration > 0).length;
    document.body.dataset.images = Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length;
  }};
  for (const v of videos) {{
    const mark = () => {{ v.dataset.duration = v.duration; report(); }};
    v.addEventListener("loadedmetadata", mark);
    if (v.readyState >= 1) mark();
  }}
  report();
}});
</script>
</body></html>
"""

_SECTION = """<section id="{url}">
<h2>{stem}</h2>
<p class="meta">{meta}</p>
<div class="row">
<video controls preload="metadata" src="{url}/overlay.mp4"></video>
<div><img src="{url}/contact_sheet.png" alt="{stem}: frames (top) and where the sound comes from (bottom)">
<p class="meta">Top: the frames at {times} s. Bottom: the same frames with the audio-video similarity
(JET colours: red = most similar){links}</p></div>
</div>
</section>"""


def write_index(out_dir: str | os.PathLike, videos: dict[str, dict[str, Any]], title: str, about: str) -> Path:
    """``OUT/index.html`` over the videos written by :func:`write_video_outputs` (``stem -> info``)."""
    sections = []
    for stem, info in videos.items():
        e = html.escape
        u = e(quote(stem))  # in links: percent-encoded ("#", "?", "%" would cut the address), then escaped
        meta = (f"audio: {e(str(info['audio']))}" + (f" shifted by {info['audio_offset']:+.2f} s"
                                                       if info["audio_offset"] else "")
                + f"; normalization: {e(info['norm'])}; {info['num_maps']} maps of "
                f"{info['frame_size'][1]}x{info['frame_size'][0]}")
        links = f'; <a href="{u}/maps.npy">maps.npy</a>, <a href="{u}/times.json">times.json</a>'
        if "gif" in info["files"]:
            links += f', <a href="{u}/overlay.gif">GIF</a>'
        sections.append(_SECTION.format(stem=e(stem), url=u, meta=meta, times=", ".join(map(str, info["sheet_times"])),
                                        links=links + "."))
    page = _PAGE.format(title=html.escape(title), about=html.escape(about), count=len(videos),
                        sections="\n".join(sections))
    path = Path(out_dir) / "index.html"
    path.write_text(page)
    return path


def safe_stem(name: str) -> str:
    """A folder name for a video's outputs that stays inside the output folder whatever the file is called:
    path separators and control characters (a newline) become ``_``, so do leading dots and dashes; a name
    left with nothing else (``..``, ``.``) becomes ``video``."""
    stem = "".join("_" if ch in "/\\" or unicodedata.category(ch)[0] == "C" else ch for ch in name)
    lead = len(stem) - len(stem.lstrip(".-"))
    stem = "_" * lead + stem[lead:]
    return stem if stem.strip("_") else "video"


def localize_videos(localizer: Localizer, paths: list[str], out_dir: str | os.PathLike, *, audio: str | None = None,
                    audio_offset: float = 0.0, gif: bool = False, model_name: str = "", progress: bool = False
                    ) -> dict[str, Any]:
    """Maps and their files for each video (``OUT/<stem>/``; a stem seen twice gets ``_`` appended), and
    ``OUT/index.html`` (saying how the maps were made, and from ``model_name``). A file that fails to decode
    is skipped and listed with its reason."""
    out = Path(out_dir)
    videos: dict[str, dict[str, Any]] = {}
    failed = []
    for i, path in enumerate(paths, 1):
        stem = safe_stem(Path(path).stem)
        while stem in videos:  # same name in two folders
            stem += "_"
        try:
            result = localizer(path, audio=audio, audio_offset=audio_offset, progress=progress)
        except DecodeError as e:
            failed.append({"path": e.path, "reason": e.reason})
            print(f"avssl localize: skipped {e.path}: {e.reason}", file=sys.stderr)
            continue
        videos[stem] = write_video_outputs(result, out / stem, localizer.cfg.fps, gif=gif)
        print(f"[{i}/{len(paths)}] {path} -> {out / stem}", file=sys.stderr)
    c = localizer.cfg
    about = (f"{model_name}; frames given whole to the video encoder at short side {localizer.size} (reflect-padded "
             f"by {c.pad:g} of it), last stage stride {c.last_stride}; {c.fps:g} maps per second; maps normalized by "
             f"{c.norm}")
    index = write_index(out, videos, "avssl localize: where the sound comes from", about)
    return {"videos": len(videos), "failed": failed, "index": str(index), "output_dir": str(out)}
