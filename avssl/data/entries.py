"""Manifest entries that cost bytes, not kilobytes: an Arrow table shared by forked loader workers.

A manifest read as a Python list of dicts costs about 2.7 kB per entry (5.4 GB at 2M entries), and every
DataLoader worker that reads an entry copies the pages it touches (CPython writes reference counts into
every object it reads). :class:`Entries` keeps the same entries as columns (numbers as numbers, strings in
one buffer per column: about 230 bytes per entry as ``avssl data manifest`` writes them) with no Python
object per entry: reading entry ``i`` builds a fresh dict and leaves the table's pages untouched, so forked
workers share them.

The table is parsed from the JSONL by Arrow's JSON reader (multi-threaded, a few seconds for 2M entries) and
kept beside the manifest as ``<manifest>.entries.arrow``, an Arrow IPC file memory-mapped on later loads (in
milliseconds, its pages shared by every process on the machine through the page cache). The file records
the manifest's size and modification time; a changed manifest is read again. Where the folder is not
writable the table stays in memory.

``entries[i]`` is the manifest's row as a dict, with two normalizations: relative paths are resolved against
the manifest's folder (as :func:`~avssl.data.collection.read_manifest` does), and keys whose value is null are
left out (a column holds null where a row lacks the key, so the two cannot be told apart): read optional keys
with ``.get``. A manifest Arrow cannot type (a key holding numbers in some rows and text in others) is kept
as one text column of its rows, parsed per access: still compact and shared, slower to build.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from ..config import InputError
from ..fileio import publish, temp_path

__all__ = ["Entries", "entries_index_path", "json_lines", "load_entries"]

log = logging.getLogger(__name__)

_VERSION = "1"
_RAW = "__json__"  # the one column of a manifest kept as text rows
# The columns `avssl data manifest` writes, typed up front: a block of rows that are all null in one of them
# (e.g. the first thousands of files without audio) would otherwise be typed as null and fail on the next.
_PROBE_SCHEMA = pa.schema([
    ("path", pa.string()), ("format", pa.string()), ("duration", pa.float64()), ("size_bytes", pa.int64()),
    ("video", pa.struct([("codec", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
                         ("fps", pa.float64()), ("start_time", pa.float64()), ("duration", pa.float64()),
                         ("num_frames", pa.int64()), ("rotation", pa.int64())])),
    ("audio", pa.struct([("codec", pa.string()), ("sample_rate", pa.int64()), ("channels", pa.int64()),
                         ("layout", pa.string()), ("start_time", pa.float64()), ("duration", pa.float64())])),
    ("start_time", pa.float64()), ("mtime", pa.float64()),
])


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value


def _has_type(tp: pa.DataType, kind: Any) -> bool:
    if kind(tp):
        return True
    return any(_has_type(tp.field(i).type, kind) for i in range(tp.num_fields))


class Entries(Sequence):
    """Manifest entries as an Arrow table: ``len(entries)``, ``entries[i]`` (a dict), :attr:`durations` and
    :attr:`has_audio` as numpy arrays. Build with :func:`load_entries` or :meth:`from_rows`."""

    def __init__(self, table: pa.Table, base: str | os.PathLike | None = None, source: str | None = None) -> None:
        self.table = table
        self.base = Path(base) if base is not None else None
        self.source = source  # where it came from, for messages
        self._raw = table.column_names == [_RAW]
        self._durations: np.ndarray | None = None
        self._has_audio: np.ndarray | None = None

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]], base: str | os.PathLike | None = None) -> Entries:
        """Entries of rows already in memory (e.g. the rows ``avssl data manifest`` has just written)."""
        rows = list(rows)
        try:  # a struct array types every key of every row (Table.from_pylist looks at the first row only)
            table = pa.Table.from_struct_array(pa.array(rows)) if rows else pa.table({_RAW: pa.array([], pa.large_string())})
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            table = pa.table({_RAW: pa.array([json.dumps(r) for r in rows], pa.large_string())})
        return cls(table, base)

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError("Entries takes one index at a time (entries[i])")
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"entry {i} of {n}")
        row = self.table.slice(i, 1).to_pylist()[0]
        entry = json.loads(row[_RAW]) if self._raw else _drop_nulls(row)
        path = entry.get("path")
        if self.base is not None and isinstance(path, str) and not os.path.isabs(path):
            entry["path"] = str((self.base / path).resolve())
        return entry

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def paths(self) -> list[str]:
        """Every entry's ``path``, relative ones resolved as :meth:`__getitem__` resolves them."""
        if self._raw:
            raw = [json.loads(s).get("path") for s in self.table.column(_RAW).to_pylist()]
        else:
            raw = self.table.column("path").to_pylist() if "path" in self.table.column_names else [None] * len(self)
        base = self.base
        return [str((base / p).resolve()) if base is not None and isinstance(p, str) and not os.path.isabs(p)
                else p for p in raw]

    def numbers(self, name: str) -> np.ndarray:
        """A numeric field of every entry as float64 (NaN where a row has none); ``name`` may be dotted
        (``video.width``)."""
        head, *rest = name.split(".")
        if self._raw:
            def get(row: dict[str, Any]) -> Any:
                value: Any = row
                for part in name.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

            values = [get(json.loads(s)) for s in self.table.column(_RAW).to_pylist()]
            return np.array([np.nan if v is None else v for v in values], np.float64)
        if head not in self.table.column_names:
            return np.full(len(self), np.nan)
        col = self.table.column(head)
        for part in rest:
            if not pa.types.is_struct(col.type) or col.type.get_field_index(part) < 0:
                return np.full(len(self), np.nan)
            col = pc.struct_field(col, part)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            return np.full(len(self), np.nan)
        return col.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False).astype(np.float64)

    @property
    def durations(self) -> np.ndarray:
        """Each entry's ``duration`` (s), float64; NaN where a row has none."""
        if self._durations is None:
            self._durations = self.numbers("duration")
        return self._durations

    @property
    def has_audio(self) -> np.ndarray:
        """Whether each entry lists an audio stream (its ``audio`` is present and not false or empty)."""
        if self._has_audio is None:
            if self._raw:
                flags = [bool(json.loads(s).get("audio")) for s in self.table.column(_RAW).to_pylist()]
                self._has_audio = np.array(flags, bool)
            elif "audio" not in self.table.column_names:
                self._has_audio = np.zeros(len(self), bool)
            else:
                col = self.table.column("audio")
                valid = col.is_valid().to_numpy(zero_copy_only=False)
                if pa.types.is_boolean(col.type):
                    valid &= col.fill_null(False).to_numpy(zero_copy_only=False)
                self._has_audio = np.asarray(valid, bool)
        return self._has_audio

    def nbytes(self) -> int:
        """Bytes the table's buffers take (mapped or in memory)."""
        return int(self.table.nbytes)

    def __repr__(self) -> str:
        return f"Entries({len(self)} entries{', from ' + self.source if self.source else ''})"


def entries_index_path(manifest: str | os.PathLike) -> Path:
    """Where :func:`load_entries` keeps a manifest's table: ``<manifest without .jsonl>.entries.arrow``."""
    m = Path(manifest)
    stem = m.name[: -len(".jsonl")] if m.name.endswith(".jsonl") else m.name
    return m.with_name(stem + ".entries.arrow")


def _stamp(path: Path) -> dict[bytes, bytes]:
    st = path.stat()
    return {b"avssl.version": _VERSION.encode(), b"manifest.size": str(st.st_size).encode(),
            b"manifest.mtime_ns": str(st.st_mtime_ns).encode()}


def _read_index(index: Path, stamp: dict[bytes, bytes]) -> pa.Table | None:
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(index), "r"))
        meta = reader.schema.metadata or {}
        if any(meta.get(k) != v for k, v in stamp.items()):
            return None
        return reader.read_all()
    except (OSError, pa.ArrowInvalid):
        return None  # absent, torn or another format: read the manifest again


def _parse(manifest: Path) -> pa.Table:
    """The manifest's rows as a table: Arrow's JSON reader, probe columns typed; text rows where it cannot."""
    if manifest.stat().st_size == 0:
        return pa.table({_RAW: pa.array([], pa.large_string())})
    options = pa_json.ParseOptions(explicit_schema=_PROBE_SCHEMA, unexpected_field_behavior="infer")
    try:
        table = pa_json.read_json(manifest, read_options=pa_json.ReadOptions(block_size=1 << 24),
                                  parse_options=options)
        present = [f for f in _PROBE_SCHEMA.names if f in table.column_names
                   and table.column(f).null_count < table.num_rows]
        extra = [f for f in table.column_names if f not in _PROBE_SCHEMA.names]
        table = table.select(present + extra)  # probe columns no row has are not added to every entry
        if not _has_type(pa.struct(list(table.schema)), pa.types.is_timestamp):  # text Arrow read as a time
            return table
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        log.info("%s: kept as text rows (%s)", manifest, e)
    # every row read now, so that a broken line is named here, not as a traceback mid-training
    rows = [line.rstrip("\n") for _, line, _ in json_lines(manifest)]
    return pa.table({_RAW: pa.array(rows, pa.large_string())})


def _snippet(line: str, width: int = 60) -> str:
    """A line as it can be shown: stripped, and its middle elided past ``width`` characters."""
    line = line.strip()
    return line if len(line) <= width else f"{line[: width // 2]} ... {line[-width // 2 :]}"


def json_lines(path: str | os.PathLike) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(line number, text, object) for each non-blank line of a JSON-lines file. A line that is not a JSON object,
    a missing file, or one that is not text is an :class:`~avssl.config.InputError` naming the file (and line)."""
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    at = ""
                    if isinstance(e, json.JSONDecodeError):
                        at = (f" at column {e.pos + 1}" if e.pos < len(line.rstrip()) else
                              " at the end of the line: cut short?")
                    raise InputError(f"{path}, line {n}: not valid JSON ({getattr(e, 'msg', e)}{at}): "
                                     f"{_snippet(line)}") from None
                if not isinstance(row, dict):
                    raise InputError(f"{path}, line {n}: a {type(row).__name__}, not a JSON object")
                yield n, line, row
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file of JSON lines") from None


def _write_index(table: pa.Table, index: Path, stamp: dict[bytes, bytes]) -> bool:
    try:
        tmp = temp_path(index)
    except OSError as e:
        log.info("%s: not kept (%s); entries stay in memory", index, e)
        return False
    try:
        with pa.OSFile(str(tmp), "wb") as sink:
            with pa.ipc.new_file(sink, table.schema.with_metadata(stamp)) as writer:
                writer.write_table(table, max_chunksize=1 << 16)
        publish(tmp, index)
        return True
    except OSError as e:
        log.info("%s: not kept (%s); entries stay in memory", index, e)
        if tmp.exists():
            tmp.unlink()
        return False


def load_entries(manifest: str | os.PathLike, index: bool = True) -> Entries:
    """A manifest's entries as :class:`Entries`: memory-mapped from ``<manifest>.entries.arrow`` when it is
    current, else parsed from the JSONL (and, with ``index``, kept there for the next load)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise InputError(f"{manifest}: no such manifest")
    stamp = _stamp(manifest)
    where = entries_index_path(manifest)
    table = _read_index(where, stamp) if index else None
    if table is None:
        table = _parse(manifest)
        if index and _write_index(table, where, stamp):
            table = _read_index(where, stamp) or table  # mapped: shared through the page cache
        pa.default_memory_pool().release_unused()
    return Entries(table, manifest.parent, str(manifest))
