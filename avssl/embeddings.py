"""``avssl embed``: the clip embeddings of a collection, written as Parquet parts (and :func:`embed_arrays` in memory).

A collection is a folder, a list file or a manifest (its videos probed once into ``OUT/manifest.jsonl``; files
that fail go to ``rejected.jsonl`` with the reason), or WebDataset shards. Each video gives clips of the model's
clip spec: ``clips_per_video`` uniformly spaced ones, or one per window of ``window`` seconds every ``stride``
seconds over the whole video (per-second features: ``window=stride=1``), the clip centred on its window. A clip's
row holds the video's ``key`` and ``path``, the clip's number, ``start`` and ``end`` (its window, or its frames'
span) and, per modality asked, the embedding: ``layer="head"`` the joint embedding (unit norm, what the loss
compares), ``"pooled"`` the encoder's pooled features; in ``float32`` or ``float16``. With ``video_means`` a second
table holds each video's mean embedding (renormalized for ``head``).

Output (``OUT/``): ``clips/part-NNNNNN.parquet`` (one part per ``part_size`` videos of the listing, or per shard),
``videos/part-NNNNNN.parquet`` with ``video_means``, ``rejected.jsonl``, ``embed.json`` (what was done). Under
torchrun each process embeds the parts ``k % world == rank``. Each file of a part is written whole (temporary file,
rename) and ``done/part-NNNNNN.json`` last, so a killed run started again skips exactly the finished parts. Before
the first part, ``plan.json`` records what the parts are of (the model's weights, the options that change them,
the inputs' listing, kept in ``listing.tsv``: :mod:`avssl.outputs`); a run into a folder holding finished parts of
other inputs, another model or other options ends with one line saying what differs, and reuses nothing.
``pyarrow.parquet.read_table("OUT/clips")`` (or pandas' ``read_parquet``) reads them back,
``np.stack(table["video"].to_numpy(zero_copy_only=False))`` gives the matrix. A segment row of a manifest (``start``,
``end``) is a video of its own: its windows lie inside its segment, its key is ``stem@start-end``.

Decoding runs in loader workers (each a share of the parts), the per-pixel and spectrogram work per batch on the
device where there is a GPU (the preprocessing training uses), the model in eval mode without gradients.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from . import distributed as dist
from .config import InputError, Interrupted
from .data.clips import ClipSpec, UniformClipSampler, segment_of
from .data.collection import build_manifest, read_jsonl, read_manifest, rejected_path, resolve_media
from .data.datasets import BatchPreprocess, ClipMaker, DataConfig, av_collate
from .data.decode import DecodeError, probe
from .data.shards import load_shard_index, read_samples, sample_entry
from .fileio import atomic_write, publish, temp_path, write_json
from .models.avmodel import AVModel
from .outputs import differences, file_listing, listing_sha256, model_sha256, read_record, write_record
from .progress import Progress, counted

__all__ = ["EmbedSpec", "clip_windows", "embed_arrays", "embed_collection", "score_collection"]


@dataclass
class EmbedSpec:
    """What ``avssl embed`` computes and writes (see the module's description)."""

    clips_per_video: int = 1
    window: float | None = None  # seconds: a clip per window over the whole video instead
    stride: float | None = None  # seconds between windows (default: the window)
    layer: Literal["head", "pooled"] = "head"
    modalities: tuple[str, ...] = ("video", "audio")
    dtype: Literal["float32", "float16"] = "float32"
    video_means: bool = False
    batch_size: int = 32
    num_workers: int = 2
    part_size: int = 64  # videos per part of a file collection (a shard is a part of its own)
    max_clips_per_item: int = 32  # a long video's clips reach the model in items of at most this many

    def __post_init__(self) -> None:
        bad = [m for m in self.modalities if m not in ("video", "audio")]
        if bad or not self.modalities:
            raise InputError(f"--modality: video and/or audio, got {','.join(self.modalities) or 'nothing'}")
        if self.window is not None and not self.window > 0:
            raise InputError(f"--window: seconds > 0, got {self.window}")
        if self.stride is not None and not self.stride > 0:
            raise InputError(f"--stride: seconds > 0, got {self.stride}")
        for key in ("clips_per_video", "batch_size", "part_size", "max_clips_per_item"):
            if getattr(self, key) < 1:
                raise InputError(f"--{key.replace('_', '-')}: at least 1, got {getattr(self, key)}")


def clip_windows(duration: float, spec: EmbedSpec, data: DataConfig) -> list[tuple[ClipSpec, float, float]]:
    """Each clip of a video of ``duration`` seconds: (where its frames start, the start and end a row reports)."""
    clip = data.clip
    if spec.window is None:
        return [(s, s.start, s.start + clip.video_duration)
                for s in UniformClipSampler(clip, spec.clips_per_video)(duration)]
    stride = spec.stride or spec.window
    n = max(1, int(math.floor((duration - spec.window) / stride + 1e-6)) + 1) if duration >= spec.window else 1
    out = []
    for k in range(n):
        lo = k * stride
        hi = min(lo + spec.window, duration) if duration >= spec.window else duration
        out.append((ClipSpec((lo + hi) / 2 - clip.video_duration / 2, clip.audio_offset), lo, hi))
    return out


@dataclass
class _Video:
    key: str
    path: str
    entry: dict[str, Any]


@dataclass
class _Part:
    number: int
    videos: list[_Video] = field(default_factory=list)
    shard: str | None = None  # a shard's URL: its videos are read from it
    rejected: list[dict[str, Any]] = field(default_factory=list)


class _Clips(IterableDataset):
    """Decoded clips of the parts, a worker's share of them (part ``k`` goes to worker ``k % workers``): items
    ``{"part", "video", "first", "windows", "last", "batch"}`` (the clips of a video, at most ``max_clips_per_item``
    at a time; ``last``: its last ones), ``{"part", "failed"}`` for a video that does not decode, and ``{"part",
    "done"}`` after a part's last video."""

    def __init__(self, parts: list[_Part], maker: ClipMaker, spec: EmbedSpec, data: DataConfig) -> None:
        self.parts, self.maker, self.spec, self.data = parts, maker, spec, data

    def _videos(self, part: _Part) -> Iterator[_Video | dict[str, Any]]:
        if part.shard is None:
            yield from part.videos
            return
        try:
            for sample in read_samples(part.shard):
                yield _shard_video(part.shard, sample)
        except Exception as e:  # a truncated or unreadable shard: its rest is recorded, not a crash
            yield {"path": part.shard, "reason": f"unreadable shard: {type(e).__name__}: {e}"}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        for part in self.parts[worker::workers]:
            for v in self._videos(part):
                if isinstance(v, dict):
                    yield {"part": part.number, "failed": v}
                    continue
                try:
                    duration = float(v.entry.get("duration") or probe(v.entry["path"]).duration)
                    lo, hi = segment_of(v.entry, duration)  # a segment row: its windows inside the segment
                    windows = [(ClipSpec(c.start + lo, c.audio_offset), a + lo, b + lo)
                               for c, a, b in clip_windows(hi - lo, self.spec, self.data)]
                    for lo in range(0, len(windows), self.spec.max_clips_per_item):
                        chunk = windows[lo : lo + self.spec.max_clips_per_item]
                        items = [self.maker.item(v.entry, 0, lo + j, spec=w[0]) for j, w in enumerate(chunk)]
                        for it in items:
                            it["failures"] = []
                        yield {"part": part.number, "video": v, "first": lo, "windows": chunk,
                               "last": lo + len(chunk) >= len(windows), "batch": av_collate(items)}
                except DecodeError as e:
                    yield {"part": part.number, "failed": {"path": e.path, "reason": e.reason}}
            yield {"part": part.number, "done": True}


def _shard_video(url: str, sample: dict[str, Any]) -> _Video | dict[str, Any]:
    """A shard's sample as a video to embed (its bytes, its audio beside it where it has one)."""
    try:
        entry, _ = sample_entry(url, sample)
    except DecodeError as e:
        return {"path": e.path, "reason": e.reason}
    return _Video(sample["__key__"], f"{url}:{sample['__key__']}", entry)


class _Embedder:
    """The model's embeddings of batches of clips, with the batch preprocessing on the device where it runs."""

    def __init__(self, model: AVModel, data: DataConfig, spec: EmbedSpec, device: torch.device, defer: bool) -> None:
        self.model, self.spec, self.device = model.to(device).eval(), spec, device
        self.pre = BatchPreprocess(data, train=False).to(device) if defer else None
        self.dtype = np.float16 if spec.dtype == "float16" else np.float32

    @torch.no_grad()
    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        if self.pre is not None:
            video, audio = self.pre(batch, self.device)
        else:
            video = batch["video"].to(self.device)
            audio = batch["audio"].to(self.device) if "audio" in batch else None
        out = {}
        if "video" in self.spec.modalities:
            pooled = self.model.video(video)[1]
            out["video"] = pooled if self.spec.layer == "pooled" else self.model.video_head(pooled)
        if "audio" in self.spec.modalities:
            if audio is None:
                raise InputError("--modality audio: this model's clip spec has no audio (data.clip.audio_duration 0)")
            pooled = self.model.audio(audio)[1]
            out["audio"] = pooled if self.spec.layer == "pooled" else self.model.audio_head(pooled)
        return {k: v.float().cpu().numpy().astype(self.dtype) for k, v in out.items()}


def _concat(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """One batch of several items' clips (their tensors concatenated)."""
    keys = [k for k, v in batches[0].items() if isinstance(v, torch.Tensor)]
    return {k: torch.cat([b[k] for b in batches]) for k in keys}


def _is_shards(text: str) -> bool:
    return text.endswith(".tar") or ".tar " in text or "{" in text or text.startswith("pipe:") or "://" in text


@dataclass
class _Source:
    """A collection as given: its inputs' listing (what the output folder's record names) before anything is probed,
    and how it becomes parts."""

    text: str
    listing: list[tuple[str, int | None]]
    files: list[str] | None = None  # a folder or list: probed into OUT/manifest.jsonl
    rows: list[dict[str, Any]] | None = None  # a manifest's rows
    shards: Any = None  # a shard index


def _source(source: str, out: Path) -> _Source:
    """The collection's inputs (a folder or list listed, a manifest read, shards indexed), nothing probed yet."""
    text = str(source)
    if _is_shards(text):
        try:
            index = load_shard_index(text, fallback_dir=out)
        except (OSError, ValueError) as e:
            raise InputError(f"{source}: {e}") from None
        return _Source(text, [(s["url"], s.get("size")) for s in index.shards], shards=index)
    path = Path(source)
    if not path.exists():
        raise InputError(f"{source}: no such folder, file or shard")
    if path.suffix == ".jsonl":
        rows = read_manifest(path)
        return _Source(str(path.resolve()), file_listing([r["path"] for r in rows]), rows=rows)
    files = resolve_media(path)
    return _Source(str(path.resolve()), file_listing(files), files=files)


def _parts(src: _Source, spec: EmbedSpec, out: Path, progress: bool) -> tuple[list[_Part], list[dict]]:
    """The collection cut into parts, and the files rejected while listing it (a folder or list is probed into
    ``out/manifest.jsonl``; shards the index pass found damaged)."""
    if src.shards is not None:
        # a shard with no readable sample has no part (one damaged part-way is read, and its reader records it)
        rejected = [{"path": s["url"], "reason": s["damaged"]} for s in src.shards.shards
                    if s.get("damaged") and int(s["count"]) == 0]
        return [_Part(k, shard=s["url"]) for k, s in enumerate(src.shards.shards) if int(s["count"]) > 0], rejected
    rejected: list[dict[str, Any]] = []
    if src.rows is not None:
        rows = src.rows
    else:
        manifest = out / "manifest.jsonl"
        if dist.is_main():
            build_manifest(src.files, manifest, progress=progress)
        dist.barrier()
        rows = read_manifest(manifest)
        rejected = _rejected(manifest)
    videos = [_Video(_row_key(r), r["path"], r) for r in rows]
    if not videos and not rejected:
        raise InputError(f"{src.text}: no video to embed")
    return [_Part(k // spec.part_size, videos[k : k + spec.part_size]) for k in range(0, len(videos), spec.part_size)
            ], rejected


# the options that change what embed writes, and their names on the command line
_OPTION_NAMES = {"spec.clips_per_video": "--clips-per-video", "spec.window": "--window", "spec.stride": "--stride",
                 "spec.layer": "--layer", "spec.modalities": "--modality", "spec.dtype": "--dtype",
                 "spec.video_means": "--video-means", "spec.part_size": "--part-size"}


def _record(src: _Source, model: AVModel, data: DataConfig, spec: EmbedSpec, about: dict[str, Any] | None
            ) -> dict[str, Any]:
    """What this run's results are of: the model's weights, the options that change them, the inputs' listing."""
    from .config import to_dict

    fields = asdict(spec)
    options = {"spec": {k.split(".", 1)[1]: fields[k.split(".", 1)[1]] for k in _OPTION_NAMES},
               "data": {k: to_dict(getattr(data, k)) if is_dataclass(getattr(data, k)) else getattr(data, k)
                        for k in ("clip", "video_aug", "spectrogram", "missing_audio")}}
    record = {"version": 1, "model_sha256": model_sha256(model), "checkpoint": (about or {}).get("checkpoint"),
              "source": src.text, "inputs": len(src.listing), "listing_sha256": listing_sha256(src.listing),
              "options": options}
    return json.loads(json.dumps(record))  # as it reads back from plan.json (tuples as lists)


def _done(out: Path) -> list[Path]:
    return sorted((out / "done").glob("part-*.json")) if (out / "done").is_dir() else []


def _claim(out: Path, src: _Source, record: dict[str, Any]) -> None:
    """Make sure the folder's parts are of this run's inputs, model and options: finished parts of another run end
    the command with one line naming what differs; a folder with nothing finished is taken over (its stray files
    removed) and the record written. Every process checks; rank 0 writes."""
    old = read_record(out)
    finished = _done(out)
    stray = [p for d in ("clips", "videos", "rejected") if (out / d).is_dir() for p in (out / d).glob("part-*")]
    if finished or (stray and old is None):
        if old is None:
            raise InputError(f"{out} holds embeddings written without a record of their inputs (by an older avssl, "
                             "or not by avssl embed): they cannot be shown to be this run's; give another --output-dir, "
                             f"or remove {out} to start fresh")
        diff = differences(old, record, out, src.listing, _OPTION_NAMES)
        if diff:
            raise InputError(f"{out} holds embeddings of another run ({'; '.join(diff)}): they are not reused; give "
                             f"another --output-dir, or remove {out} to start fresh")
    dist.barrier()  # every process has looked before anything is changed
    if dist.is_main() and (not finished or old != record):
        if not finished:
            for p in stray:
                p.unlink(missing_ok=True)
        write_record(out, record, src.listing)
    dist.barrier()


def _rejected(manifest: Path) -> list[dict[str, Any]]:
    p = rejected_path(manifest)
    return [{"path": r["path"], "reason": r["reason"]} for r in read_jsonl(p)] if p.exists() else []


def _key(path: str) -> str:
    return Path(path).stem


def _row_key(row: dict[str, Any]) -> str:
    """A row's key: its file's stem, with its segment for a segment row (``film@120-130``)."""
    key = _key(row["path"])
    if "start" in row and "end" in row:
        key += f"@{float(row['start']):g}-{float(row['end']):g}"
    return key


def _rows(spec: EmbedSpec) -> dict[str, list[Any]]:
    return {"key": [], "path": [], "clip": [], "start": [], "end": [], **{m: [] for m in spec.modalities}}


def _iterate(parts: list[_Part], model: AVModel, data: DataConfig, spec: EmbedSpec, device: torch.device,
             progress: bool) -> Iterator[tuple[_Part, dict[str, list[Any]]]]:
    """(part, its rows) for each part once its last video is embedded; clips of several videos share batches."""
    defer = device.type == "cuda"
    maker = ClipMaker(replace(data, cache=False), train=False, defer=defer)
    embedder = _Embedder(model, data, spec, device, defer)
    loader = DataLoader(_Clips(parts, maker, spec, data), batch_size=None,
                        num_workers=min(spec.num_workers, len(parts)), pin_memory=defer)
    by_number = {p.number: p for p in parts}
    rows = {p.number: _rows(spec) for p in parts}
    pending: list[dict[str, Any]] = []  # items whose clips wait for a full batch
    bar = Progress(sum(len(p.videos) for p in parts) or None, "embed", "video", enabled=progress)

    def flush() -> None:
        if not pending:
            return
        emb = embedder(_concat([it["batch"] for it in pending]))
        at = 0
        for it in pending:
            n = len(it["windows"])
            r = rows[it["part"]]
            for j, (_, lo, hi) in enumerate(it["windows"]):
                r["key"].append(it["video"].key)
                r["path"].append(it["video"].path)
                r["clip"].append(it["first"] + j)
                r["start"].append(float(lo))
                r["end"].append(float(hi))
                for m in spec.modalities:
                    r[m].append(emb[m][at + j])
            at += n
        pending.clear()

    it_ = iter(loader)
    try:
        for item in it_:
            part = by_number[item["part"]]
            if "failed" in item:
                part.rejected.append(item["failed"])
                bar.update(1)
            elif "done" in item:
                flush()
                yield part, rows.pop(part.number)
            else:
                pending.append(item)
                if item["last"]:  # the video's last clips
                    bar.update(1)
                if sum(len(p["windows"]) for p in pending) >= spec.batch_size:
                    flush()
    finally:
        getattr(it_, "_shutdown_workers", lambda: None)()
        bar.close()


def _table(rows: dict[str, list[Any]], spec: EmbedSpec) -> Any:
    import pyarrow as pa

    cols = {"key": pa.array(rows["key"], pa.string()), "path": pa.array(rows["path"], pa.string()),
            "clip": pa.array(rows["clip"], pa.int32()), "start": pa.array(rows["start"], pa.float64()),
            "end": pa.array(rows["end"], pa.float64())}
    for m in spec.modalities:
        cols[m] = _vectors(rows[m], spec)
    return pa.table(cols)


def _vectors(vectors: list[np.ndarray], spec: EmbedSpec) -> Any:
    """Embeddings as a Parquet column: fixed-size lists of ``spec.dtype``; for a part with none (every video
    failed), an empty list column, which reads back together with the other parts whatever their size."""
    import pyarrow as pa

    value = pa.float16() if spec.dtype == "float16" else pa.float32()
    if not vectors:
        return pa.array([], pa.list_(value))
    flat = np.stack(vectors)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), value), flat.shape[1])


def _means(rows: dict[str, list[Any]], spec: EmbedSpec) -> dict[str, list[Any]]:
    """Each video's mean embedding per modality (renormalized for the joint embedding)."""
    out: dict[str, list[Any]] = {"key": [], "path": [], "clips": [], **{m: [] for m in spec.modalities}}
    order: dict[tuple[str, str], list[int]] = {}
    for i, pk in enumerate(zip(rows["path"], rows["key"])):  # a file's segments are videos of their own
        order.setdefault(pk, []).append(i)
    for (p, key), idx in order.items():
        out["key"].append(key)
        out["path"].append(p)
        out["clips"].append(len(idx))
        for m in spec.modalities:
            v = np.stack([rows[m][i] for i in idx]).astype(np.float32).mean(0)
            if spec.layer == "head":
                v = v / max(float(np.linalg.norm(v)), 1e-12)
            out[m].append(v.astype(np.float16 if spec.dtype == "float16" else np.float32))
    return out


def _write_parquet(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    tmp = temp_path(path, suffix=".parquet")
    try:
        pq.write_table(table, tmp)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def embed_collection(source: str | os.PathLike, model: AVModel, data: DataConfig, out_dir: str | os.PathLike,
                     spec: EmbedSpec | None = None, device: str | torch.device = "cpu", progress: bool = True,
                     about: dict[str, Any] | None = None) -> dict[str, Any]:
    """Embed ``source`` into ``out_dir`` (see the module's description); returns the summary (``embed.json``)."""
    spec = spec or EmbedSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = dist.rank(), dist.world_size()
    device = torch.device(device)
    data = _for_modalities(data, spec)
    src = _source(str(source), out)
    _claim(out, src, _record(src, model, data, spec, about))
    parts, rejected = _parts(src, spec, out, progress and dist.is_main())
    mine = [p for p in parts if p.number % world == rank]
    finished = {p.stem for p in _done(out)}
    todo = [p for p in mine if _name(p) not in finished]
    if dist.is_main() and len(todo) < len(mine):
        print(f"embed: {counted(len(mine) - len(todo), 'part')} already written, {len(todo)} to go", flush=True)
    t0, clips = time.perf_counter(), 0
    try:
        for part, rows in _iterate(todo, model, data, spec, device, progress and dist.is_main()):
            _write_part(out, part, rows, spec)
            clips += len(rows["key"])
    except KeyboardInterrupt:
        kept = len(_done(out))
        raise Interrupted(f"interrupted: {kept} of {counted(len(parts), 'part')} finished and kept in {out}; the same "
                          "command goes on from there (finished parts are not embedded again)") from None
    seconds = time.perf_counter() - t0
    dist.barrier()
    summary: dict[str, Any] = {}
    if dist.is_main():
        summary = _summary(out, parts, rejected, spec, about, clips, seconds)
    dist.barrier()
    return summary


def _for_modalities(data: DataConfig, spec: EmbedSpec) -> DataConfig:
    """Embedding pictures only, a video without sound is as good as any (its clips are placed as with sound)."""
    return data if "audio" in spec.modalities else replace(data, missing_audio="silence")


def _name(part: _Part) -> str:
    return f"part-{part.number:06d}"


def _write_part(out: Path, part: _Part, rows: dict[str, list[Any]], spec: EmbedSpec) -> None:
    """A part's files (clips, video means, rejected files), then its marker ``done/part-NNNNNN.json``, written last:
    a part counts as finished only once every one of its files is in place."""
    name = _name(part)
    _write_parquet(_table(rows, spec), out / "clips" / f"{name}.parquet")
    means = _means(rows, spec) if spec.video_means else None
    if means is not None:
        _write_parquet(_means_table(means, spec), out / "videos" / f"{name}.parquet")
    with atomic_write(out / "rejected" / f"{name}.jsonl") as f:
        for r in part.rejected:
            f.write(json.dumps(r) + "\n")
    with atomic_write(out / "done" / f"{name}.json") as f:
        json.dump({"clips": len(rows["key"]), "videos": len(means["key"]) if means is not None else None,
                   "rejected": len(part.rejected)}, f)


def _means_table(means: dict[str, list[Any]], spec: EmbedSpec) -> Any:
    import pyarrow as pa

    table = {"key": pa.array(means["key"], pa.string()), "path": pa.array(means["path"], pa.string()),
             "clips": pa.array(means["clips"], pa.int32())}
    for m in spec.modalities:
        table[m] = _vectors(means[m], spec)
    return pa.table(table)


def _summary(out: Path, parts: list[_Part], listed: list[dict[str, Any]], spec: EmbedSpec,
             about: dict[str, Any] | None, clips: int, seconds: float) -> dict[str, Any]:
    """``rejected.jsonl`` (the listing's and every finished part's) and ``embed.json``."""
    failed = list(listed)
    finished = {p.stem: json.loads(p.read_text()) for p in _done(out)}
    for p in parts:
        f = out / "rejected" / f"{_name(p)}.jsonl"
        if _name(p) in finished and f.exists():
            failed += read_jsonl(f)
    with atomic_write(out / "rejected.jsonl") as f:
        for r in failed:
            f.write(json.dumps(r) + "\n")
    rows = sum(int(finished[_name(p)]["clips"]) for p in parts if _name(p) in finished)
    written = sum(1 for p in parts if _name(p) in finished)
    summary = {"output_dir": str(out), "parts": len(parts), "parts_written": written, "clips": rows,
               "rejected": len(failed), "spec": asdict(spec), **(about or {}),
               "this_run": {"clips": clips, "seconds": round(seconds, 3),
                            "clips_per_s": round(clips / seconds, 3) if seconds > 0 and clips else None}}
    write_json(out / "embed.json", summary)
    return summary


def embed_arrays(source: str | os.PathLike, checkpoint: str | os.PathLike | None = None, *,
                 model: AVModel | None = None, data: DataConfig | None = None, device: str | None = None,
                 progress: bool = False, **options: Any) -> dict[str, Any]:
    """:func:`embed_collection` in memory, for small inputs: ``{"key", "path", "clip", "start", "end"`` (arrays, a row
    per clip), ``"video"``, ``"audio"`` (``(clips, dim)`` arrays), ``"rejected"`` (files left out, with why)``}``.
    ``checkpoint``: a path or a released model's name (or pass ``model`` and its ``data`` config); ``options``: the
    fields of :class:`EmbedSpec` (``clips_per_video``, ``window``, ``stride``, ``layer``, ``modalities``, ...)."""
    import tempfile

    if model is None:
        from .hub import checkpoint_path
        from .train.checkpoint import pretrained_model

        model, cfg = pretrained_model(checkpoint_path(checkpoint))
        data = cfg.data
    spec = EmbedSpec(**{"num_workers": 0, **options})
    data = _for_modalities(data, spec)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with tempfile.TemporaryDirectory(prefix="avssl_embed_") as tmp:
        parts, rejected = _parts(_source(str(source), Path(tmp)), spec, Path(tmp), progress)
        rows = _rows(spec)
        for part, part_rows in _iterate(parts, model, replace(data, num_workers=0), spec, dev, progress):
            for k in rows:
                rows[k] += part_rows[k]
            rejected += part.rejected
    result: dict[str, Any] = {k: np.asarray(rows[k]) for k in ("key", "path", "clip", "start", "end")}
    for m in spec.modalities:
        result[m] = np.stack(rows[m]) if rows[m] else np.zeros((0, 0), np.float32)
    result["rejected"] = rejected
    return result


def score_collection(source: str | os.PathLike, model: AVModel, data: DataConfig, out_dir: str | os.PathLike,
                     clips_per_video: int = 3, below: float | None = None, device: str | torch.device = "cpu",
                     progress: bool = True, about: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """``avssl score``: each video's audio-visual correspondence
    (:func:`~avssl.evaluation.correspondence.correspondence_scores`) from the mean joint embeddings of
    ``clips_per_video`` clips (computed by :func:`embed_collection` into ``OUT/embeddings``, resumable), written to
    ``OUT/scores.csv`` and ``OUT/scores.json`` from the least to the most corresponding; with ``below``, the videos
    scoring below it are left out of ``OUT/kept.jsonl`` (the manifest rows of the rest, for ``avssl pretrain``) and
    listed in ``OUT/dropped.jsonl``."""
    import csv

    import pyarrow.parquet as pq

    from .evaluation.correspondence import correspondence_scores, ranked

    out = Path(out_dir)
    spec = EmbedSpec(clips_per_video=clips_per_video, layer="head", video_means=True, **options)
    embed_collection(source, model, data, out / "embeddings", spec, device, progress, about)
    if not dist.is_main():
        return {}
    means = pq.read_table(out / "embeddings" / "videos").to_pydict()
    failed = read_jsonl(out / "embeddings" / "rejected.jsonl")
    silent = [{"key": _key(r["path"]), "path": r["path"], "score": None, "rank": None, "rank_score": None,
               "note": "no audio track"} for r in failed if r.get("reason") == "no audio stream"]
    if not means["key"] and not silent:
        raise InputError(f"{source}: no video could be embedded (see {out / 'embeddings' / 'rejected.jsonl'})")
    rows = []
    if means["key"]:
        scores = correspondence_scores(np.stack(means["video"]), np.stack(means["audio"]))
        rows = [dict(r, note="") for r in ranked(means["key"], means["path"], scores)]
    rows = silent + rows  # a video with no sound at all matches its pictures least
    with atomic_write(out / "scores.csv") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_json(out / "scores.json", rows)
    unreadable = len(failed) - len(silent)
    summary: dict[str, Any] = {"videos": len(rows), "scored": len(rows) - len(silent), "no_audio": len(silent),
                               "unreadable": unreadable, "scores": str(out / "scores.csv"), "least": rows[0],
                               "most": rows[-1], **(about or {})}
    if silent and progress:
        print(f"score: {counted(len(silent), 'video')} without an audio track, listed first in scores.csv (e.g. "
              f"{silent[0]['path']})", file=sys.stderr, flush=True)
    if unreadable and progress:
        print(f"score: {counted(unreadable, 'file')} could not be read, listed with why in "
              f"{out / 'embeddings' / 'rejected.jsonl'}", file=sys.stderr, flush=True)
    if below is not None:
        manifest = out / "embeddings" / "manifest.jsonl"
        source_rows = read_manifest(source) if str(source).endswith(".jsonl") else (
            read_manifest(manifest) if manifest.exists() else [{"path": r["path"]} for r in rows])
        keep = {r["path"] for r in rows if r["score"] is not None and r["score"] >= below}
        with atomic_write(out / "kept.jsonl") as f:
            for r in source_rows:
                if r["path"] in keep:
                    f.write(json.dumps(r) + "\n")
        with atomic_write(out / "dropped.jsonl") as f:
            for r in rows:
                if r["path"] not in keep:
                    f.write(json.dumps(r) + "\n")
        summary.update(below=below, kept=len(keep), dropped=len(rows) - len(keep), manifest=str(out / "kept.jsonl"))
    return summary
