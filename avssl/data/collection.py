"""Scan a folder (or a list of paths) into a manifest: one JSON line of probe facts per usable file,
and a separate list of rejected files with the reason. Re-running only probes new or changed files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import InputError
from ..fileio import atomic_write
from .decode import DecodeError, probe
from .entries import json_lines
from ..progress import track

__all__ = [
    "AUDIO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ManifestResult",
    "build_manifest",
    "list_media",
    "merge_manifests",
    "part_range",
    "read_jsonl",
    "read_manifest",
    "rejected_path",
    "resolve_media",
    "segment_rows",
    "segments",
    "write_jsonl",
]

# The file names avssl looks for, each list in order of preference where one stem has several.
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".m4v", ".avi", ".flv", ".mpg", ".mpeg", ".ts", ".3gp", ".ogv",
                    ".wmv")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_LIST_SUFFIXES = (".txt", ".lst", ".list")


def list_media(source: str | os.PathLike) -> list[str]:
    """Absolute paths of video files under a folder (recursive, sorted), or listed in a text file
    (one path per line, relative paths are relative to the list file; ``#`` starts a comment). Raises
    :class:`~avssl.config.InputError` for a path that does not exist or a list that is not text."""
    src = Path(source)
    if src.is_dir():
        return sorted(
            str(p.resolve()) for p in src.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
        )
    if src.is_file():
        try:
            text = src.read_text()
        except UnicodeDecodeError:
            raise InputError(f"{source}: not a text list of paths (one per line) nor a media file avssl knows "
                             f"({', '.join(VIDEO_EXTENSIONS)})") from None
        out = []
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line)
                out.append(str((p if p.is_absolute() else src.parent / p).resolve()))
        return out
    raise InputError(f"{source}: no such folder or file")


def resolve_media(source: str | os.PathLike) -> list[str]:
    """The videos a command is given, in one way for every command: a folder (its videos, recursive), a
    manifest (``.jsonl``: its entries), a list file (``.txt``, ``.lst``, ``.list``: one path per line), or a
    single media file."""
    src = Path(source)
    if src.is_file() and src.suffix == ".jsonl":
        return list(dict.fromkeys(r["path"] for r in read_manifest(src)))  # a file once, however many segment rows
    if src.is_file() and src.suffix.lower() not in _LIST_SUFFIXES:
        return [str(src.resolve())]
    return list_media(src)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """One JSON object per line (blank lines skipped); a bad line is an InputError naming it."""
    return [row for _, _, row in json_lines(path)]


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line, atomically."""
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Entries of a manifest; relative paths are resolved against the manifest's folder. A line that is not a
    JSON object, or a row without a ``path``, is an :class:`~avssl.config.InputError` naming the line."""
    base = Path(path).parent
    rows = []
    for n, _, r in json_lines(path):
        if not isinstance(r.get("path"), str):
            raise InputError(f"{path}, line {n}: no \"path\" in {json.dumps(r)[:80]}")
        if not os.path.isabs(r["path"]):
            r["path"] = str((base / r["path"]).resolve())
        rows.append(r)
    return rows


def rejected_path(manifest: str | os.PathLike) -> Path:
    m = Path(manifest)
    stem = m.name[: -len(".jsonl")] if m.name.endswith(".jsonl") else m.name
    return m.with_name(stem + ".rejected.jsonl")


@dataclass
class ManifestResult:
    manifest: Path
    rejected_file: Path
    kept: int = 0  # entries carried over from an earlier run
    added: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)  # newly rejected files

    @property
    def total(self) -> int:
        return self.kept + self.added


def _stamp(path: str) -> tuple[int, float] | None:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime
    except OSError:
        return None


def _check(path: str, require_audio: bool, min_duration: float, verify: bool) -> dict[str, Any]:
    stamp = _stamp(path)
    try:
        info = probe(path, verify=verify)
        if info.video is None:
            raise DecodeError(path, "no video stream (audio-only file)")
        if require_audio and info.audio is None:
            raise DecodeError(path, "no audio stream")
        if info.duration < min_duration:
            raise DecodeError(path, f"too short: {info.duration:.2f}s < {min_duration:.2f}s")
    except DecodeError as e:
        return {"path": path, "reason": e.reason, "size_bytes": stamp[0] if stamp else None,
                "mtime": stamp[1] if stamp else None, "rejected": True}
    row = info.to_dict()
    row["mtime"] = stamp[1] if stamp else None
    return row


def segments(duration: float, seconds: float) -> list[tuple[float, float]]:
    """A video cut into ``round(duration / seconds)`` (at least 1) equal segments, each close to ``seconds`` long:
    ``(start, end)`` pairs covering ``[0, duration]``."""
    if not seconds > 0:
        raise ValueError(f"--segment: seconds > 0, got {seconds}")
    n = max(1, int(round(duration / seconds)))
    edges = [round(duration * k / n, 6) for k in range(n + 1)]
    return list(zip(edges[:-1], edges[1:]))


def segment_rows(rows: list[dict[str, Any]], seconds: float | None) -> list[dict[str, Any]]:
    """Each probed row as one row per segment (:func:`segments`): the file's facts with ``start`` and ``end`` (s).
    Training takes each row as an instance (a memory-bank slot), so a film gives many; every reader samples a row's
    clips inside its segment. ``None``: the rows as they are."""
    if seconds is None:
        return rows
    return [{**r, "start": a, "end": b} for r in rows for a, b in segments(float(r["duration"]), seconds)]


def _whole(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A manifest's rows by path, one per file, without their segment (segment rows share their file's facts)."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["path"] not in out:
            out[r["path"]] = {k: v for k, v in r.items() if k not in ("start", "end")}
    return out


def build_manifest(
    source: str | os.PathLike | list[str],
    output: str | os.PathLike,
    *,
    workers: int = 4,
    require_audio: bool = False,
    min_duration: float = 0.0,
    verify: bool = False,
    progress: bool = True,
    part: tuple[int, int] = (0, 1),
    segment: float | None = None,
) -> ManifestResult:
    """Probe every media file of ``source`` into ``output`` (JSONL) and ``<output>.rejected.jsonl``.

    Files already in either list with the same size and modification time are not probed again. ``part``
    ``(i, n)``: only the files ``[i N / n, (i + 1) N / n)`` of the listing (one job of an array), with
    ``<output>.part.json`` saying which; :func:`merge_manifests` joins the parts. ``segment`` (seconds): a row per
    segment of each file (:func:`segment_rows`), so that a long video is many training instances.
    """
    paths = list(source) if isinstance(source, list) else resolve_media(source)  # a single file: a collection of one
    output = Path(output)
    i, n = part
    total = len(paths)
    mine = part_range(total, i, n)
    paths = paths[mine.start : mine.stop]
    rej_file = rejected_path(output)
    old_ok = _whole(read_jsonl(output)) if output.exists() else {}
    old_bad = {r["path"]: r for r in read_jsonl(rej_file)} if rej_file.exists() else {}

    def unchanged(row: dict[str, Any] | None, path: str) -> bool:
        stamp = _stamp(path)
        return row is not None and stamp is not None and (row.get("size_bytes"), row.get("mtime")) == stamp

    ok: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    todo: list[str] = []
    for p in paths:
        if unchanged(old_ok.get(p), p):
            ok.append(old_ok[p])
        elif unchanged(old_bad.get(p), p):
            bad.append(old_bad[p])
        else:
            todo.append(p)
    result = ManifestResult(output, rej_file, kept=len(ok))
    with ThreadPoolExecutor(max(1, workers)) as ex:
        jobs = ex.map(lambda p: _check(p, require_audio, min_duration, verify), todo)
        for row in track(jobs, total=len(todo), desc="probe", unit="file", enabled=progress):
            if row.pop("rejected", False):
                bad.append(row)
                result.rejected.append(row)
            else:
                ok.append(row)
                result.added += 1
    order = {p: i for i, p in enumerate(paths)}
    ok.sort(key=lambda r: order.get(r["path"], len(order)))
    bad.sort(key=lambda r: order.get(r["path"], len(order)))
    write_jsonl(output, segment_rows(ok, segment))
    write_jsonl(rej_file, bad)
    if n > 1:
        with atomic_write(_part_file(output)) as f:
            json.dump({"part": i, "parts": n, "files": total, "first": mine.start, "count": len(paths)}, f)
    return result


def part_range(count: int, part: int, parts: int) -> range:
    """The items ``[part x count / parts, (part + 1) x count / parts)`` of a job array's ``part`` (0-based)."""
    if not 0 <= part < parts:
        raise ValueError(f"--part {part}/{parts}: the part must be in 0..{parts - 1}")
    return range(part * count // parts, (part + 1) * count // parts)


def _part_file(manifest: Path) -> Path:
    return manifest.with_name(manifest.name + ".part.json")


def merge_manifests(parts: list[str | os.PathLike], output: str | os.PathLike) -> ManifestResult:
    """Join the manifests of a job array's parts (each written with ``part``) into ``output`` and its rejected
    list, in the listing's order: the same files as one run. Raises ValueError when a part is missing or
    belongs to another array."""
    found: dict[int, tuple[Path, dict[str, Any]]] = {}
    for p in map(Path, parts):
        info_file = _part_file(p)
        if not info_file.is_file():
            raise ValueError(f"{p}: not a part of a job array (no {info_file.name}); `avssl data manifest --part i/n` "
                             "writes one")
        info = json.loads(info_file.read_text())
        found[info["part"]] = (p, info)
    arrays = {(info["parts"], info["files"]) for _, info in found.values()}
    if len(arrays) != 1:
        raise ValueError(f"the parts come from different job arrays (parts, files): {sorted(arrays)}")
    (n, _), = arrays
    missing = sorted(set(range(n)) - set(found))
    if missing:
        raise ValueError(f"parts {', '.join(str(m) for m in missing)} of {n} are missing")
    ok = [r for k in range(n) for r in read_jsonl(found[k][0])]
    bad = [r for k in range(n) if rejected_path(found[k][0]).exists() for r in read_jsonl(rejected_path(found[k][0]))]
    output = Path(output)
    write_jsonl(output, ok)
    write_jsonl(rejected_path(output), bad)
    return ManifestResult(output, rejected_path(output), kept=len(ok), rejected=bad)
