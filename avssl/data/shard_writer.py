"""``avssl data shard``: a folder, list or manifest written as WebDataset shards (the layout
:mod:`avssl.data.shards` reads), optionally re-encoded for fast decoding.

The plan comes first and depends only on the file list: the files in listing order, each with its
memory-bank index (its position), cut into shards of ``samples_per_shard`` files or of consecutive files
until their source bytes reach ``shard_mb``. The plan is kept as ``plan.json``; a run (or ``--part i/n`` of a
job array: the shards ``[i K / n, (i + 1) K / n)`` of the K planned) writes its shards in parallel processes,
each to a temporary name renamed when whole, with ``NNNNNN.json`` beside it (its samples' indices and its
rejected files) as the mark of a finished shard: a rerun skips finished shards. When every planned shard is
finished, ``shards.json`` (the index readers use) and ``rejected.jsonl`` are written; after a job array,
``avssl data merge OUTPUT_DIR`` writes them. Tar members carry a fixed time and owner, so one run and a job
array write the same bytes.

Segments (``segment``: seconds, or a manifest of segment rows from ``avssl data manifest --segment``): a file is
written once, and its ``KEY.json`` lists its ``segments`` (``[start, end]`` pairs) with ``index`` the memory-bank
slot of the first; every segment is a training instance of its own (slots numbered over the segments of the
listing), its clips drawn inside it (:class:`~avssl.data.shards.ShardStream`).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import atomic_write, publish, temp_path
from ..progress import track
from .collection import part_range, read_manifest, resolve_media, segments
from .decode import DecodeError, probe
from .reencode import ReencodeConfig, reencode_file
from .shards import SHARDS_JSON, ShardIndex, shard_stamp

__all__ = ["ShardConfig", "ShardResult", "merge_shards", "plan_shards", "write_shards"]

_PLAN = "plan.json"


@dataclass
class ShardConfig:
    samples_per_shard: int | None = None  # files per shard; None: by shard_mb
    shard_mb: float = 1000.0  # consecutive files until their source bytes reach this
    reencode: ReencodeConfig | None = None  # None: the files' own bytes
    require_audio: bool = False
    min_duration: float = 0.0
    segment: float | None = None  # seconds: each file's segments are instances of their own (KEY.json "segments")


@dataclass
class ShardResult:
    output_dir: Path
    planned: int  # shards in the plan
    written: int  # by this run
    kept: int  # finished before this run
    samples: int  # in this run's shards (written and kept)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # by this run
    complete: bool = False  # every planned shard finished: shards.json written


def plan_shards(sizes: list[int], samples_per_shard: int | None, shard_bytes: float) -> list[list[int]]:
    """File positions per shard: fixed counts, or consecutive files until their bytes reach ``shard_bytes``."""
    n = len(sizes)
    if samples_per_shard is not None:
        if samples_per_shard < 1:
            raise ValueError("samples_per_shard must be at least 1")
        return [list(range(i, min(i + samples_per_shard, n))) for i in range(0, n, samples_per_shard)]
    shards: list[list[int]] = [[]]
    held = 0
    for i, size in enumerate(sizes):
        if shards[-1] and held + size > shard_bytes:
            shards.append([])
            held = 0
        shards[-1].append(i)
        held += size
    return [s for s in shards if s]


def _sources(source: str | os.PathLike) -> tuple[list[str], list[dict[str, Any]] | None,
                                                list[list[tuple[float, float]]] | None]:
    """The files in listing order, their probe facts when the source is a manifest, and their segments where its
    rows are segment rows (each file once, with the segments its rows list)."""
    src = Path(source)
    if src.is_file() and src.suffix == ".jsonl":
        rows = read_manifest(src)
        if not any("start" in r and "end" in r for r in rows):
            return [r["path"] for r in rows], rows, None
        files: dict[str, dict[str, Any]] = {}
        segs: dict[str, list[tuple[float, float]]] = {}
        for r in rows:
            files.setdefault(r["path"], {k: v for k, v in r.items() if k not in ("start", "end")})
            d = float(r.get("duration") or 0.0)
            segs.setdefault(r["path"], []).append((float(r.get("start", 0.0)), float(r.get("end", d))))
        return list(files), list(files.values()), [segs[p] for p in files]
    return resolve_media(src), None, None


def _segments_of(paths: list[str], rows: list[dict[str, Any]] | None, seconds: float) -> list[list[tuple[float, float]]]:
    """Each file's segments of about ``seconds`` (its duration from the manifest row, else probed; a file that does
    not probe keeps one slot, and is rejected when its shard is written)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(k: int) -> list[tuple[float, float]]:
        d = rows[k].get("duration") if rows is not None else None
        if not isinstance(d, (int, float)) or not d > 0:
            try:
                d = probe(paths[k]).duration
            except DecodeError:
                return [(0.0, 0.0)]
        return segments(float(d), seconds)

    with ThreadPoolExecutor(8) as ex:
        return list(ex.map(one, range(len(paths))))


def _facts(path: str, row: dict[str, Any] | None, cfg: ShardConfig) -> dict[str, Any]:
    """The file's probe facts (a manifest row's, or probed now), checked against the plan's filters the same way
    for both (raises DecodeError naming what the file lacks)."""
    known = row is not None and "video" in row and isinstance(row.get("duration"), (int, float))
    facts = dict(row) if known else {**(row or {}), **probe(path).to_dict()}  # a hand-written row: probed
    if not facts.get("video"):
        raise DecodeError(path, "no video stream (audio-only file)")
    if cfg.require_audio and not facts.get("audio"):
        raise DecodeError(path, "no audio stream")
    duration = float(facts["duration"])
    if duration < cfg.min_duration:
        raise DecodeError(path, f"too short: {duration:.2f}s < {cfg.min_duration:.2f}s")
    return facts


def _media_bytes(path: str, cfg: ShardConfig, near: Path) -> tuple[bytes, str]:
    if cfg.reencode is None:
        return Path(path).read_bytes(), (Path(path).suffix.lstrip(".").lower() or "mp4")
    tmp = temp_path(near, suffix=".mp4")
    try:
        reencode_file(path, tmp, cfg.reencode)
        return tmp.read_bytes(), "mp4"
    finally:
        tmp.unlink(missing_ok=True)


_File = tuple[int, str, "dict[str, Any] | None", int, "list[tuple[float, float]] | None"]


def _write_one(job: tuple[int, list[_File], ShardConfig, str]) -> dict[str, Any]:
    """Write shard ``k`` (its files: position, path, manifest row or None, first memory-bank slot, segments or None);
    returns its record (also kept as ``NNNNNN.json``)."""
    import webdataset as wds

    k, files, cfg, out = job
    out_dir = Path(out)
    name = f"{k:06d}.tar"
    tmp = temp_path(out_dir / name)  # unique: a retried task on the same shard writes its own
    indices: list[int] = []
    rejected: list[dict[str, Any]] = []
    try:
        with wds.TarWriter(str(tmp), mtime=0.0, user="avssl", group="avssl") as sink:
            for pos, path, row, first, segs in files:
                try:
                    facts = _facts(path, row, cfg)
                    data, ext = _media_bytes(path, cfg, out_dir / f"{k:06d}.reencoded.mp4")
                except (DecodeError, OSError) as e:
                    rejected.append({"path": path, "reason": getattr(e, "reason", str(e)), "index": first})
                    continue
                key = f"{pos:09d}"
                meta = {"index": first, "key": key, "source": path, "duration": facts.get("duration"),
                        "audio": bool(facts.get("audio")), "facts": facts}
                if segs is not None:
                    meta["segments"] = [[a, b] for a, b in segs]
                sink.write({"__key__": key, ext: data, "json": json.dumps(meta, sort_keys=True).encode()})
                indices.extend(range(first, first + (len(segs) if segs is not None else 1)))
        publish(tmp, out_dir / name)
    finally:
        tmp.unlink(missing_ok=True)
    record = {"url": name, "count": len(indices), "indices": indices, "rejected": rejected}
    with atomic_write(out_dir / f"{k:06d}.json") as f:
        json.dump(record, f)
    return record


def _finished(out: Path, k: int) -> dict[str, Any] | None:
    record = out / f"{k:06d}.json"
    if record.is_file() and (out / f"{k:06d}.tar").is_file():
        try:
            return json.loads(record.read_text())
        except ValueError:
            return None
    return None


def write_shards(source: str | os.PathLike, output_dir: str | os.PathLike, cfg: ShardConfig = ShardConfig(),
                 workers: int = 1, part: tuple[int, int] = (0, 1), progress: bool = True) -> ShardResult:
    """Write the planned shards of ``part`` (see the module's description); returns what was done."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, rows, segs = _sources(source)
    if not paths:
        raise ValueError(f"{source}: no media files")
    if cfg.segment is not None:
        segs = _segments_of(paths, rows, cfg.segment)
    firsts, at = [], 0  # each file's first memory-bank slot: a slot per file, or per segment
    for i in range(len(paths)):
        firsts.append(at)
        at += len(segs[i]) if segs is not None else 1
    sizes = [int(r.get("size_bytes") or 0) for r in rows] if rows is not None else [os.path.getsize(p) for p in paths]
    plan = plan_shards(sizes, cfg.samples_per_shard, cfg.shard_mb * 1e6)
    recorded = {"source": str(Path(source).resolve()), "files": len(paths), "shards": plan,
                "reencode": asdict(cfg.reencode) if cfg.reencode else None,
                "require_audio": cfg.require_audio, "min_duration": cfg.min_duration}
    if segs is not None:
        recorded.update(segment=cfg.segment, instances=at)
    plan_file = out / _PLAN
    if plan_file.exists():
        old = {"require_audio": False, "min_duration": 0.0, **json.loads(plan_file.read_text())}  # older plans
        if old.get("reencode"):
            old["reencode"] = {**asdict(ReencodeConfig()), **old["reencode"]}
        if old != recorded:
            what = [k for k in recorded if old.get(k) != recorded[k]]
            raise ValueError(f"{out} holds shards of another plan ({plan_file}; it differs in {', '.join(what)}): "
                             "every part of a job array needs the same source, shard size, re-encoding and filters "
                             "(--require-audio, --min-duration); write to another --output-dir")
    else:
        with atomic_write(plan_file) as f:
            json.dump(recorded, f)
    mine = part_range(len(plan), *part)
    done = {k: r for k in mine if (r := _finished(out, k)) is not None}
    todo = [(k, [(i, paths[i], rows[i] if rows is not None else None, firsts[i], segs[i] if segs is not None else None)
                 for i in plan[k]], cfg, str(out)) for k in mine if k not in done]
    result = ShardResult(out, len(plan), len(todo), len(done), sum(r["count"] for r in done.values()))
    with ProcessPoolExecutor(max(1, workers)) as ex:
        for record in track(ex.map(_write_one, todo), total=len(todo), desc="shard", unit="shard", enabled=progress):
            result.samples += record["count"]
            result.rejected.extend(record["rejected"])
    if all(_finished(out, k) is not None for k in range(len(plan))):
        merge_shards(out)
        result.complete = True
    return result


def merge_shards(output_dir: str | os.PathLike) -> ShardIndex:
    """``shards.json`` and ``rejected.jsonl`` from the finished shards of a plan (after the parts of a job
    array); raises ValueError naming the shards not finished yet."""
    out = Path(output_dir)
    plan = json.loads((out / _PLAN).read_text())
    records, missing = [], []
    for k in range(len(plan["shards"])):
        r = _finished(out, k)
        (records.append(r) if r is not None else missing.append(f"{k:06d}.tar"))
    if missing:
        raise ValueError(f"{out}: {len(missing)} of {len(plan['shards'])} planned shards are not written yet "
                         f"(e.g. {', '.join(missing[:3])}): run the missing --part jobs")
    shards = [{"url": r["url"], "count": r["count"], "first_index": r["indices"][0] if r["indices"] else 0,
               "indices": r["indices"], **shard_stamp(str(out / r["url"]))} for r in records]
    index = ShardIndex(shards, "json", int(plan.get("instances", plan["files"])), out / SHARDS_JSON)
    with atomic_write(out / SHARDS_JSON) as f:
        json.dump(index.to_dict(), f)
    with atomic_write(out / "rejected.jsonl") as f:
        for r in records:
            for rej in r["rejected"]:
                f.write(json.dumps(rej) + "\n")
    return index
