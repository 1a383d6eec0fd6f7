"""Show the maps: overlay PNGs, a contact sheet, an MP4 with the compared audio, a GIF, one HTML page.

Per video, in ``OUT/<stem>/``: ``similarity.npy`` (float32 ``(T, h, w)``, the raw cosine on the encoder's grid)
with ``geometry.json`` (where each cell lies on the frame: :func:`~avssl.localize.heatmap.grid_to_frame` projects
the grid onto any frame size, :func:`~avssl.localize.heatmap.normalize_maps` gives the shown [0, 1] maps), or with
``maps="full"`` also ``maps.npy`` (uint8 ``(T, H, W)``, the shown maps x 255, at the frame's size); ``times.json``,
overlay PNGs of a few frames (JET colormap blended over the frame), ``contact_sheet.png`` (those frames plain
above, overlaid below), ``poster.png``, ``overlay.mp4`` (H.264, with the audio that was compared muxed in as AAC),
optionally ``overlay.gif``, and ``info.json`` (what was written; whether the maps listen: how much they change
when the sound is replaced by another file's and by silence; the notes, where the video has no sound, in seconds;
what made the maps). Everything is written as the maps are made, a chunk at a time, so memory does not grow with
the video's length. A time whose audio window holds more silence than sound (past the end of the track) shows its
frame greyed and labelled "no sound" instead of a map (``no_sound_times`` in ``info.json``). ``OUT/index.html``
shows every video of the folder with its plain frames, says whether its maps listen (and that listening is not
pointing at the right place), gives its notes, and lists the files that were skipped and why.
"""

from __future__ import annotations

import html
import json
import os
import shutil
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

from ..config import Interrupted
from ..data.decode import DecodeError, decode_audio, probe
from ..data.encode import write_av
from ..fileio import write_json
from ..progress import counted
from .heatmap import Localizer, MapPlan, VideoMaps

__all__ = ["MAPS", "contact_sheet", "jet", "listening", "localize_video", "localize_videos", "no_sound", "overlay",
           "write_index", "write_video_outputs"]

MAPS = ("grid", "full", "none")  # what `avssl localize --maps` keeps besides the pictures


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


def no_sound(frame: np.ndarray) -> np.ndarray:
    """A frame whose sound was compared as silence: grey and dimmed, labelled "no sound", with no map on it (a map
    there would show where the video encoder looks, not where a sound comes from)."""
    from PIL import Image, ImageDraw, ImageFont

    grey = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    img = Image.fromarray((0.5 * grey + 40).clip(0, 255).astype(np.uint8)).convert("RGB")
    h, w = frame.shape[:2]
    size = max(8, min(h, w) // 8)
    draw = ImageDraw.Draw(img)
    draw.text((size // 2, size // 2), "no sound", fill=(255, 255, 255), font=ImageFont.load_default(size=size),
              stroke_width=max(1, size // 10), stroke_fill=(0, 0, 0))
    return np.array(img)


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


class _Gif:
    """``overlay.gif`` written a frame at a time (at most ``max_side`` pixels on the long side)."""

    def __init__(self, path: Path, fps: float, max_side: int = 320) -> None:
        self.path, self.fps, self.max_side = path, fps, max_side
        self.c: Any = None

    def add(self, img: np.ndarray) -> None:
        if self.c is None:
            h, w = img.shape[:2]
            scale = min(1.0, self.max_side / max(h, w))
            self.size = (max(2, round(h * scale) // 2 * 2), max(2, round(w * scale) // 2 * 2))
            self.c = av.open(os.fspath(self.path), mode="w")
            self.s = self.c.add_stream("gif", rate=max(1, round(self.fps)))
            self.s.height, self.s.width = self.size
            self.s.pix_fmt = "rgb8"
        small = _fit_height(img, self.size[0])[:, : self.size[1]]
        small = np.pad(small, ((0, 0), (0, self.size[1] - small.shape[1]), (0, 0)), mode="edge")
        self.c.mux(self.s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(small), format="rgb24")))

    def close(self) -> None:
        if self.c is not None:
            self.c.mux(self.s.encode(None))
            self.c.close()


def _spread(n: int, k: int) -> list[int]:
    """Up to ``k`` indices of ``range(n)`` spread evenly from the first to the last."""
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(k, n))})


def _audio_file(localizer: Localizer, plan: MapPlan, path: Path, window: float = 60.0) -> np.ndarray:
    """The compared audio over the mapped span as a memory-mapped ``(1, samples)`` array, decoded ``window``
    seconds at a time (a film's track is never held whole)."""
    sr = localizer.data.clip.sample_rate
    start, span = localizer.audio_span(plan)
    total = int(round(span * sr))
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(1, total))
    done = 0
    while done < total:
        n = min(int(window * sr), total - done)
        out[0, done : done + n] = decode_audio(plan.source, start + done / sr, n / sr, sr).waveform[:n]
        done += n
    out.flush()
    return out


def localize_video(localizer: Localizer, video: str | os.PathLike, out_dir: str | os.PathLike, *,
                   audio: str | os.PathLike | None = None, audio_offset: float = 0.0, start: float | None = None,
                   duration: float | None = None, maps: str = "grid", gif: bool = False, other: str | None = None,
                   progress: bool = False, sheet_frames: int = 6, made_by: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """One video's maps and files in ``out_dir`` (see the module's description), made and written a chunk at a
    time; ``start``/``duration`` (s) map a segment; ``other``: a file whose sound the listening check compares
    with (default: the video's own sound half its length away, and silence); ``made_by``: what ``info.json``
    records of the model and options that made the maps. Returns what ``info.json`` holds. Raises DecodeError."""
    if maps not in MAPS:
        raise ValueError(f"maps must be one of {MAPS}, got {maps!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = localizer.plan(video, audio=audio, audio_offset=audio_offset, start=start, duration=duration)
    fps, n = localizer.cfg.fps, len(plan.times)
    silent = plan.no_sound
    picks = _spread(n, sheet_frames)
    state: dict[str, Any] = {"k": 0, "sim": None, "full": None, "plain": [], "over": [], "pngs": [], "size": None}
    gif_writer = _Gif(out / "overlay.gif", fps) if gif else None

    def overlays():
        for chunk in localizer.chunks(plan, progress):
            k = state["k"]
            if state["sim"] is None:
                state["sim"] = np.lib.format.open_memmap(out / "similarity.npy", mode="w+", dtype=np.float32,
                                                         shape=(n, *chunk.similarity.shape[1:]))
                state["size"] = list(chunk.maps.shape[1:])
                if maps == "full":
                    state["full"] = np.lib.format.open_memmap(out / "maps.npy", mode="w+", dtype=np.uint8,
                                                              shape=(n, *chunk.maps.shape[1:]))
            state["sim"][k : k + len(chunk.times)] = chunk.similarity
            if chunk.objects is not None:  # OGL: the object maps beside the similarity
                if state.get("obj") is None:
                    state["obj"] = np.lib.format.open_memmap(out / "objects.npy", mode="w+", dtype=np.float32,
                                                             shape=(n, *chunk.objects.shape[1:]))
                state["obj"][k : k + len(chunk.times)] = chunk.objects
            if state["full"] is not None:
                state["full"][k : k + len(chunk.times)] = (chunk.maps * 255 + 0.5).astype(np.uint8)
            for j, (frame, heat) in enumerate(zip(chunk.frames, chunk.maps)):
                over = no_sound(frame) if silent[k + j] else overlay(frame, heat)
                if k + j in picks:
                    name = f"overlay_{k + j:04d}.png"
                    _png(out / name, over)
                    state["pngs"].append(name)
                    state["plain"].append(_fit_height(frame, 160))
                    state["over"].append(_fit_height(over, 160))
                if gif_writer is not None:
                    gif_writer.add(over)
                yield _even(over)
            state["k"] = k + len(chunk.times)

    wave = _audio_file(localizer, plan, out / ".audio.npy")
    try:
        write_av(out / "overlay.mp4", overlays(), fps, wave, localizer.data.clip.sample_rate)
    finally:
        del wave
        (out / ".audio.npy").unlink(missing_ok=True)
        if gif_writer is not None:
            gif_writer.close()
    return _finish(localizer, plan, out, state, maps, gif, picks, other, made_by)


def _finish(localizer: Localizer, plan: MapPlan, out: Path, state: dict[str, Any], maps: str, gif: bool,
            picks: list[int], other: str | None, made_by: dict[str, Any] | None) -> dict[str, Any]:
    """After the last chunk: the contact sheet, the poster, geometry.json, times.json and info.json."""
    state["sim"].flush()
    if state["full"] is not None:
        state["full"].flush()
    _png(out / "contact_sheet.png", contact_sheet(state["plain"], state["over"]))
    _png(out / "poster.png", state["over"][len(state["over"]) // 2])
    g = localizer.geometry
    geometry = {"stride": g.stride, "pad": g.pad, "height": g.height, "width": g.width, "corners": g.corners,
                "mode": g.mode, "frame": state["size"], "norm": localizer.cfg.norm,
                "about": "avssl.localize.heatmap.grid_to_frame(similarity, Geometry(stride, pad, height, width, corners, "
                "mode), *frame) projects the grid onto the frame; normalize_maps(..., norm) gives the shown maps"}
    if state.get("obj") is not None:
        state["obj"].flush()
        c, og = localizer.cfg, localizer.object_geometry
        geometry["ogl"] = {"alpha": c.ogl, "combine": c.ogl_combine, "objects": "objects.npy", "stride": og.stride,
                           "about": "the shown maps are Localizer.finish(projected similarity, projected objects)"}
    write_json(out / "geometry.json", geometry)
    (out / "times.json").write_text(json.dumps([round(float(t), 6) for t in plan.times]))
    files = {"similarity": "similarity.npy", "geometry": "geometry.json", "times": "times.json",
             "overlays": state["pngs"], "contact_sheet": "contact_sheet.png", "poster": "poster.png",
             "video": "overlay.mp4"}
    if maps == "full":
        files["maps"] = "maps.npy"
    if state.get("obj") is not None:
        files["objects"] = "objects.npy"
    if maps == "none":
        (out / "similarity.npy").unlink(missing_ok=True)
        del files["similarity"]
    if gif:
        files["gif"] = "overlay.gif"
    info = {"files": files, "num_maps": len(plan.times), "frame_size": state["size"],
            "span": [round(float(plan.times[0]), 3), round(float(plan.times[-1]), 3)],
            "sheet_times": [round(float(plan.times[i]), 3) for i in picks], "audio": plan.source,
            "audio_offset": plan.audio_offset, "norm": localizer.cfg.norm, "notes": plan.notes,
            "no_sound_times": [round(float(t), 3) for t in plan.times[plan.no_sound]],
            "listening": listening(localizer, plan, other), "made_by": made_by}
    write_json(out / "info.json", info)
    return info


LISTENS_BELOW = 0.9  # correlation of the maps under the own sound and under silence or another (docs/results.md)


def listening(localizer: Localizer, plan: MapPlan, other: str | None = None, times: int = 8) -> dict[str, Any]:
    """Whether the maps depend on the sound: at up to ``times`` of the plan's output times, the map under the
    video's own sound against the map under another sound (``other``'s audio at the same time, or where it has
    none, its middle; without ``other``, the video's own sound half its length away) and under silence, as the
    Pearson correlation of the raw similarity on the encoder's grid (1: the same map whatever the sound)."""
    clip = localizer.data.clip
    sr, n_audio = clip.sample_rate, int(round(clip.audio_duration * clip.sample_rate))
    idx = _spread(len(plan.times), times)
    if other is not None:
        other_len = probe(other).duration or 0.0
        name = other
    else:
        other_len, name = plan.length, f"its own sound {plan.length / 2:.1f} s away"
        if plan.length < 2 * clip.audio_duration:
            name = None  # too short to take another window of its own: silence only
    own, alt = [], []
    for i in idx:
        a = float(plan.a_starts[i])
        own.append(decode_audio(plan.source, a, clip.audio_duration, sr).waveform)
        if name is None:
            continue
        if other is not None:
            b = a if a + clip.audio_duration <= other_len else max(0.0, other_len / 2 - clip.audio_duration / 2)
            alt.append(decode_audio(other, b, clip.audio_duration, sr).waveform)
        else:
            b = (a + plan.length / 2) % max(plan.length - clip.audio_duration, 1e-6)
            alt.append(decode_audio(plan.source, b, clip.audio_duration, sr).waveform)
    clips = localizer._clips(plan.video, plan.starts[idx])
    silence = torch.zeros(len(idx), n_audio)

    def grids(waves: list[np.ndarray] | torch.Tensor) -> torch.Tensor:
        w = waves if isinstance(waves, torch.Tensor) else torch.stack([torch.from_numpy(x) for x in waves])
        return localizer._similarities(clips, w).flatten(1).double()

    def corr(x: torch.Tensor, y: torch.Tensor) -> float:
        x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
        r = (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(1e-12)
        return float(r.mean())

    base = grids(own)
    result: dict[str, Any] = {"times": len(idx), "corr_silence": round(corr(base, grids(silence)), 4)}
    if alt:
        result.update(corr_other=round(corr(base, grids(alt)), 4), other=name)
    # The least alike: a video whose sound is the same all along keeps its map under its own sound elsewhere,
    # rightly; silence (or another video's sound) is what a map that follows the sound must change under.
    least = min(result.get("corr_other", 1.0), result["corr_silence"])
    result["listens"] = bool(least < LISTENS_BELOW)
    against = f"under {name}" if alt and result["corr_other"] <= result["corr_silence"] else "under silence"
    result["verdict"] = (
        f"the maps change with the sound (correlation {least:.3f} with the maps {against})" if result["listens"] else
        f"these maps barely change when the sound is replaced (correlation {least:.3f} with the maps {against}): "
        "they show what the video encoder finds salient, not where the sound comes from")
    return result


def write_video_outputs(result: VideoMaps, out_dir: str | os.PathLike, fps: float, gif: bool = False,
                        sheet_frames: int = 6) -> dict[str, Any]:
    """The pictures of maps already in memory (:class:`~avssl.localize.heatmap.VideoMaps` of a clip): overlay PNGs,
    the contact sheet, ``overlay.mp4``, ``maps.npy`` (uint8 x 255) and ``times.json``; for videos,
    :func:`localize_video` makes and writes them a chunk at a time."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "maps.npy", (result.maps * 255 + 0.5).astype(np.uint8))
    (out / "times.json").write_text(json.dumps([round(float(t), 6) for t in result.times]))
    overlays = [overlay(f, m) for f, m in zip(result.frames, result.maps)]
    picks = _spread(len(overlays), sheet_frames)
    pngs = []
    for i in picks:
        pngs.append(f"overlay_{i:04d}.png")
        _png(out / pngs[-1], overlays[i])
    _png(out / "contact_sheet.png", contact_sheet([result.frames[i] for i in picks], [overlays[i] for i in picks]))
    _png(out / "poster.png", overlays[picks[len(picks) // 2]])
    write_av(out / "overlay.mp4", [_even(o) for o in overlays], fps, result.waveform[None], result.sample_rate)
    files = {"maps": "maps.npy", "times": "times.json", "overlays": pngs, "contact_sheet": "contact_sheet.png",
             "poster": "poster.png", "video": "overlay.mp4"}
    if gif:
        g = _Gif(out / "overlay.gif", fps)
        for o in overlays:
            g.add(o)
        g.close()
        files["gif"] = "overlay.gif"
    info = {"files": files, "num_maps": len(result.maps), "frame_size": list(result.maps.shape[1:]),
            "sheet_times": [round(float(result.times[i]), 3) for i in picks], "audio": result.audio_source,
            "audio_offset": result.audio_offset, "norm": result.norm, "notes": result.notes}
    write_json(out / "info.json", info)
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
{listening}
<div class="row">
<video controls preload="metadata" poster="{url}/poster.png" src="{url}/overlay.mp4"></video>
<div><img src="{url}/contact_sheet.png" alt="{stem}: frames (top) and where the sound comes from (bottom)">
<p class="meta">Top: the frames at {times} s. Bottom: the same frames with the audio-video similarity
(JET colours: red = most similar){links}</p></div>
</div>
</section>"""


_NOT_WHERE = ("Listening is not pointing at the right place: maps that change with the sound may still light up "
              "another object; only annotated boxes tell (avssl evaluate localization).")


def write_index(out_dir: str | os.PathLike, videos: dict[str, dict[str, Any]], title: str, about: str,
                skipped: list[dict[str, str]] | None = None, current: str | None = None) -> Path:
    """``OUT/index.html`` over the videos written by :func:`localize_video` (``stem -> info``): each with its poster,
    its contact sheet, whether its maps listen (and that listening is not pointing at the right place), its notes
    (where it has no sound); then the files that were ``skipped`` and why. A video made by another checkpoint than
    ``current`` says which. The folder is made if it does not exist yet (every input may have been skipped)."""
    e = html.escape
    sections = []
    for stem, info in videos.items():
        u = e(quote(stem))  # in links: percent-encoded ("#", "?", "%" would cut the address), then escaped
        meta = (f"audio: {e(str(info['audio']))}" + (f" shifted by {info['audio_offset']:+.2f} s"
                                                       if info["audio_offset"] else "")
                + f"; normalization: {e(info['norm'])}; {counted(info['num_maps'], 'map')} of "
                f"{info['frame_size'][1]}x{info['frame_size'][0]}")
        files = info["files"]
        links = "".join(f', <a href="{u}/{files[k]}">{k}</a>' for k in ("similarity", "geometry", "maps", "times", "gif")
                        if k in files)
        heard = info.get("listening")
        listening = ""
        if heard:
            style = "" if heard["listens"] else ' style="color:#a00"'
            listening = f'<p class="meta"{style}><b>Does the map listen?</b> {e(heard["verdict"]).capitalize()}.</p>'
            if heard["listens"]:
                listening += f'<p class="meta">{e(_NOT_WHERE)}</p>'
        notes = info.get("notes") or []
        if notes:
            listening += '<ul class="meta notes">' + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>"
        made = (info.get("made_by") or {}).get("checkpoint")
        if made and made != current:
            meta += f"; made earlier by {e(str(made))}"
        sections.append(_SECTION.format(stem=e(stem), url=u, meta=meta, listening=listening,
                                        times=", ".join(map(str, info["sheet_times"])), links=links + "."))
    if skipped:
        items = "".join(f"<li>{e(s['path'])}: {e(s['reason'])}</li>" for s in skipped)
        sections.append(f"<section><h2>Skipped ({len(skipped)})</h2><ul>{items}</ul></section>")
    if not videos:
        sections.insert(0, '<p class="meta">No input could be mapped.</p>')
    page = _PAGE.format(title=e(title), about=e(about), count=len(videos), sections="\n".join(sections))
    path = Path(out_dir) / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
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


def _made_by(localizer: Localizer, model_name: str) -> dict[str, Any]:
    """What makes a localizer's maps what they are: the model's weights (a hash of its state), the map settings and
    the clip spec (JSON as it reads back)."""
    from dataclasses import asdict

    from ..outputs import model_sha256

    cfg = {k: v for k, v in asdict(localizer.cfg).items() if k not in ("batch_size", "chunk")}
    made = {"checkpoint": model_name, "model_sha256": model_sha256(localizer.model), "map": cfg,
            "size": localizer.size, "clip": asdict(localizer.data.clip)}
    return json.loads(json.dumps(made))


def _info(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "info.json").read_text())
    except (OSError, ValueError):
        return None


def _earlier(out: Path, videos: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The videos of this run, then those mapped into the folder before (each a folder with its info.json)."""
    found = dict(videos)
    if out.is_dir():
        for d in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
            info = _info(d) if d.name not in found else None
            if info is not None and "files" in info:
                found[d.name] = info
    return found


def localize_videos(localizer: Localizer, paths: list[str], out_dir: str | os.PathLike, *, audio: str | None = None,
                    audio_offset: float = 0.0, gif: bool = False, model_name: str = "", progress: bool = False,
                    start: float | None = None, duration: float | None = None, maps: str = "grid") -> dict[str, Any]:
    """Maps and their files for each video (``OUT/<stem>/``, :func:`localize_video`; a stem seen twice gets ``_``
    appended), and ``OUT/index.html`` (saying how the maps were made, and from ``model_name``), which also lists the
    videos mapped into the folder before. A file that fails to decode is skipped and listed with its reason, on the
    page too. Each video's listening check compares its sound with the next video's (with several), else with its
    own sound elsewhere and silence.

    A video is made in ``OUT/.<stem>.partial/`` and put in place when whole: a run stopped part-way (Ctrl-C, an
    error) leaves no half-written folder. Its ``info.json`` records what made it (``made_by``: the model's weights,
    the map settings, the video and the options); a video whose folder holds maps made the same way is not mapped
    again, so a stopped run goes on where it stopped."""
    out = Path(out_dir)
    made = _made_by(localizer, model_name)
    videos: dict[str, dict[str, Any]] = {}
    failed, reused = [], 0
    c = localizer.cfg
    shape = (f"resized to {localizer.size}x{localizer.size}" if c.resize == "square" else
             f"at short side {localizer.size}") + (f" (reflect-padded by {c.pad:g} of it)" if c.pad else "")
    about = (f"{model_name}; frames given whole to the video encoder {shape}, last stage stride {c.last_stride}; "
             f"{c.fps:g} maps per second; maps normalized by {c.norm}"
             + (f"; object-guided (OGL, alpha {c.ogl:g}: the map mixed with an ImageNet classifier's object map)"
                if c.ogl is not None else ""))
    title = "avssl localize: where the sound comes from"
    path = ""
    try:
        for i, path in enumerate(paths, 1):
            stem = safe_stem(Path(path).stem)
            while stem in videos:  # same name in two folders
                stem += "_"
            other = paths[i % len(paths)] if len(paths) > 1 and audio is None else None
            if other is not None and probe_audio(other) is None:
                other = None
            record = {**made, "video": str(path), "video_size": _size(path), "audio": audio,
                      "audio_offset": audio_offset, "start": start, "duration": duration, "maps": maps, "gif": gif,
                      "other": other}
            record = json.loads(json.dumps(record))
            earlier = _info(out / stem)
            if earlier is not None and earlier.get("made_by") == record:
                videos[stem], reused = earlier, reused + 1
                print(f"[{i}/{len(paths)}] {path}: already mapped in {out / stem} (the same model, video and "
                      "options)", file=sys.stderr)
                continue
            partial = out / f".{stem}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            try:
                info = localize_video(localizer, path, partial, audio=audio, audio_offset=audio_offset, start=start,
                                      duration=duration, maps=maps, gif=gif, other=other, progress=progress,
                                      made_by=record)
            except DecodeError as e:
                shutil.rmtree(partial, ignore_errors=True)
                failed.append({"path": e.path, "reason": e.reason})
                print(f"avssl localize: skipped {e.path}: {e.reason}", file=sys.stderr)
                continue
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            shutil.rmtree(out / stem, ignore_errors=True)
            partial.rename(out / stem)
            videos[stem] = info
            heard = info["listening"]
            print(f"[{i}/{len(paths)}] {path} -> {out / stem}" + ("" if heard["listens"] else f" ({heard['verdict']})"),
                  file=sys.stderr)
    except KeyboardInterrupt:
        write_index(out, _earlier(out, videos), title, about, failed, current=model_name)
        raise Interrupted(f"avssl localize: interrupted while mapping {path}: {len(videos)} of "
                          f"{counted(len(paths), 'video')} done and kept in {out} (index.html lists them; the unfinished "
                          "one was removed); the same command goes on from there (videos already mapped with the same "
                          "model and options are not mapped again)") from None
    index = write_index(out, _earlier(out, videos), title, about, failed, current=model_name)
    listens = {stem: info["listening"] for stem, info in videos.items()}
    return {"videos": len(videos), "reused": reused, "failed": failed, "index": str(index), "output_dir": str(out),
            "listening": listens}


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def probe_audio(path: str) -> Any:
    """The file's audio stream facts, None where it has none or cannot be read."""
    try:
        return probe(path).audio
    except DecodeError:
        return None
