"""Re-encode a collection for fast clip loading: short side 256, a keyframe every second, audio kept.

Seeking lands on the keyframe before a clip, so decoding cost grows with keyframe spacing; typical
web video has 2-10 s spacing at 720p or more. Between references, ``bframes`` B-frames that no other frame
refers to (x264's ``b-pyramid=none``): the loader tells the decoder to drop those no picked frame needs
(avssl/data/decode.py), so that a clip decodes the keyframe's P-frames and its own frames, not every frame
from the keyframe on. Timestamps are kept, so clips stay in sync.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter

from ..fileio import publish, temp_path
from .decode import DecodeError, output_size
from ..progress import track

__all__ = ["ReencodeConfig", "reencode_file", "reencode_many"]


@dataclass(frozen=True)
class ReencodeConfig:
    short_side: int = 256
    keyframe_interval: float = 1.0  # seconds
    crf: int = 23
    preset: str = "veryfast"
    bframes: int = 3  # non-reference B-frames between references (0: none)
    # AAC with at most this many channels is copied; other audio (5.1, 7.1, or not AAC) is encoded as AAC with
    # at most this many (training downmixes to mono anyway, and decoding 6 channels costs 3x decoding 2)
    audio_channels: int = 2
    audio_bitrate: int = 128_000  # used only when the audio is not copied


def reencode_file(src: str | os.PathLike, dst: str | os.PathLike, cfg: ReencodeConfig = ReencodeConfig()) -> None:
    """Re-encode ``src`` to H.264 MP4 at ``dst`` (written to a temporary name, then renamed)."""
    src, dst = os.fspath(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dst, suffix=".tmp.mp4")  # unique: two writers of one output never share a temporary
    try:
        with av.open(src) as inp, av.open(str(tmp), "w") as out:
            if not inp.streams.video:
                raise DecodeError(src, "no video stream")
            vin = inp.streams.video[0]
            ain = inp.streams.audio[0] if inp.streams.audio else None
            fps = vin.average_rate or vin.guessed_rate or 25
            h, w = output_size(vin.codec_context.height, vin.codec_context.width, cfg.short_side)
            h, w = h + h % 2, w + w % 2  # yuv420p needs even sizes
            vout = out.add_stream("libx264", rate=fps)
            vout.width, vout.height, vout.pix_fmt = w, h, "yuv420p"
            vout.time_base = vin.time_base
            vout.codec_context.time_base = vin.time_base
            keyint = max(1, round(float(fps) * cfg.keyframe_interval))
            vout.options = {
                "crf": str(cfg.crf),
                "preset": cfg.preset,
                "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes={cfg.bframes}:b-adapt=0:b-pyramid=none",
            }
            vout.codec_context.max_b_frames = cfg.bframes
            aout, copy_audio = None, False
            if ain is not None:
                channels = ain.codec_context.channels
                copy_audio = ain.codec_context.name == "aac" and 0 < channels <= cfg.audio_channels
                if copy_audio:
                    aout = out.add_stream_from_template(ain)
                else:
                    layout = ain.codec_context.layout if 0 < channels <= cfg.audio_channels else (
                        "mono" if cfg.audio_channels == 1 else "stereo")
                    aout = out.add_stream("aac", rate=ain.codec_context.sample_rate, layout=layout)
                    aout.bit_rate = cfg.audio_bitrate
            rotation_set = False
            scaler = VideoReformatter()  # one swscale context for the whole file
            streams = [vin] + ([ain] if ain is not None else [])
            for packet in inp.demux(*streams):
                if packet.stream is vin:
                    for frame in packet.decode():
                        if not rotation_set:
                            if frame.rotation:
                                vout.set_display_rotation(frame.rotation)
                            rotation_set = True
                        small = scaler.reformat(frame, width=w, height=h, format="yuv420p", threads=1)
                        small.pts, small.time_base = frame.pts, frame.time_base
                        small.pict_type = PictureType.NONE  # the encoder chooses (a source's types would be forced)
                        out.mux(vout.encode(small))
                elif copy_audio:
                    if packet.dts is None:
                        continue
                    packet.stream = aout
                    out.mux(packet)
                else:
                    for frame in packet.decode():
                        out.mux(aout.encode(frame))
            out.mux(vout.encode(None))
            if aout is not None and not copy_audio:
                out.mux(aout.encode(None))
        publish(tmp, dst)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DecodeError(src, f"re-encoding failed: {e}") from e
    finally:
        if tmp.exists():
            tmp.unlink()


def _job(args: tuple[str, str, ReencodeConfig]) -> tuple[str, str | None]:
    src, dst, cfg = args
    try:
        reencode_file(src, dst, cfg)
        return src, None
    except DecodeError as e:
        return src, e.reason


def reencode_many(
    sources: list[str], output_dir: str | os.PathLike, root: str | None = None,
    cfg: ReencodeConfig = ReencodeConfig(), workers: int = 1, progress: bool = True,
) -> dict[str, str]:
    """Re-encode files into ``output_dir`` (mirroring paths under ``root``); existing outputs are kept.

    Returns ``{source: reason}`` for the files that failed.
    """
    out = Path(output_dir)
    jobs = []
    for s in sources:
        rel = Path(os.path.relpath(s, root)) if root else Path(Path(s).name)
        dst = (out / rel).with_suffix(".mp4")
        if not dst.exists():
            jobs.append((s, str(dst), cfg))
    failed: dict[str, str] = {}
    with ProcessPoolExecutor(max(1, workers)) as ex:
        for src, reason in track(ex.map(_job, jobs), total=len(jobs), desc="reencode", enabled=progress):
            if reason:
                failed[src] = reason
    return failed
