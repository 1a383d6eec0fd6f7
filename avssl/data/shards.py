"""WebDataset shards: collections kept as tar files, read as streams split by rank and worker, and written.

A shard is a tar file whose samples are consecutive members sharing a key: ``KEY.mp4`` (the video with its
audio track, or another video extension), optionally the audio beside it (``KEY.m4a``, ``.flac``, ``.wav``,
...: what ``video2dataset`` writes when it extracts audio), and ``KEY.json``. A ``KEY.json`` that lists
``segments`` (``avssl data shard --segment``) makes the sample that many instances, each with its own memory-bank
slot (``index`` + its number) and its clips drawn inside its segment. ``avssl data shard`` writes
``KEY.json`` with the sample's memory-bank ``index``, its ``duration`` and probe facts, and ``shards.json``
beside the shards: each shard's sample count and memory-bank indices. Shards made elsewhere
(``video2dataset``'s layout) are indexed once by reading their member lists (:func:`index_shards`): a sample's
index is its shard's first index plus its position, kept in ``avssl-index.json`` beside them.

Reading (:class:`ShardStream`), one epoch:

- the shards are put in a seeded order (seed, epoch) and dealt to the slots (process x loader worker), each to
  the slot holding the fewest samples so far; each slot yields a fixed number of batches (the epoch's
  ``samples x clips_per_video // (batch x processes)`` steps shared out over the workers), so every process
  runs the same number of steps; with ``clips_per_video`` > 1 a slot reads its shards that many times, a
  fresh random clip of each video per pass. Where every slot's shards hold exactly its quota, an epoch sees every sample exactly once;
  otherwise a slot short of samples reads its shards again from the first and one with more leaves the rest
  for another epoch (at most a shard's worth per slot, different samples every epoch);
- a slot reads its shards one after another through a shuffle buffer (``data.shuffle_buffer`` samples,
  seeded by seed, epoch, process and worker) and decodes only the samples it yields, cut exactly as from
  files (:class:`~avssl.data.datasets.ClipMaker`);
- resuming inside an epoch replays the same shard order and buffer and skips, without decoding, the samples
  of the batches already trained on: the resumed epoch sees the samples the uninterrupted one would have
  (except where a skipped sample had failed to decode: the stream then shifts by one sample);
- a sample that fails to decode is skipped and recorded as for files (``skipped.jsonl``); so is a shard that
  cannot be read, or stops part-way (a truncated tar, a network error inside a ``pipe:`` or fsspec stream): the
  slot records it and fills its quota from its other shards (``data.on_error: raise`` stops instead). A slot whose
  shards yield nothing in a pass reads the epoch's other shards; a stream in which no shard yields a sample ends
  with one line instead of looping;
- shards with no sample are left out of the deal, and there must be at least one non-empty shard per process;
  with fewer than processes x loader workers, each process uses fewer workers (:func:`usable_workers`, said once);
- resuming inside an epoch with loader workers: a new DataLoader asks its worker 0 first, while the interrupted
  one would have asked worker ``skipped % workers``; the workers' roles are rotated by the batches skipped, so
  the resumed epoch goes on in the same order. ``last.pt`` records the workers; with another number of workers
  or processes the rest of the epoch is dealt anew, and the run says so;
- a sample's memory-bank index (its ``KEY.json``'s ``index``, or its shard's first index + its position) must lie
  in ``[0, slots)``; a ``KEY.json`` that is not a JSON object, or an index outside the bank, is a failed sample
  (skipped and recorded), not a silently overwritten slot.

An index pass records each shard's size, modification time and a hash of its first and last 64 KiB (a remote
shard's size and ETag where its store gives one); a shard rewritten since is indexed again (``avssl-index.json``),
or refused with one line naming it (``shards.json``, which ``avssl data shard`` writes). A copy that did not keep
the times (``cp -r``, staging to a local disk) has the same size and ends: it is the same shard. A shard the index
pass cannot read to its end (zero bytes, truncated) is counted up to its damage and marked ``damaged`` in the
index: training records it in ``skipped.jsonl`` and ``avssl embed`` in ``rejected.jsonl``, and both go on. Local paths in an index are kept relative to the index's
own folder, so a collection named by a relative path, or moved, reads the same from any working directory.

URLs: local paths, ``pipe:COMMAND`` (webdataset's opener) and anything fsspec opens (``s3://``, ``gs://``,
``https://``, with the matching fsspec package installed); ``{000000..000123}`` ranges are expanded.
"""

from __future__ import annotations

import json
import logging
import os
import random
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import braceexpand
import torch
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys, tar_file_expander

from .decode import DecodeError, MediaBytes, probe

__all__ = ["AUDIO_KEYS", "INDEX_NAME", "SHARDS_JSON", "VIDEO_KEYS", "ShardIndex", "ShardStream", "expand_shards",
           "index_shards", "load_shard_index", "open_url", "read_samples", "sample_entry", "shard_stamp", "slot_plan",
           "usable_workers"]

log = logging.getLogger(__name__)

SHARDS_JSON = "shards.json"  # written by `avssl data shard`
INDEX_NAME = "avssl-index.json"  # written by the index pass over shards made elsewhere
VIDEO_KEYS = ("mp4", "mkv", "webm", "mov", "m4v", "avi", "flv", "mpg", "mpeg", "ts", "3gp", "ogv", "wmv")
AUDIO_KEYS = ("m4a", "flac", "wav", "mp3", "ogg", "opus", "aac")


def expand_shards(spec: str | list[str]) -> list[str]:
    """The shard URLs of ``data.shards``: brace ranges expanded (``shards/{000000..000123}.tar``); a list as
    given; whitespace-separated patterns each expanded."""
    specs = spec if isinstance(spec, list) else spec.split()
    return [u for s in specs for u in braceexpand.braceexpand(s)]


def _is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:") or url.startswith("file://")


def open_url(url: str) -> Any:
    """A binary stream of a shard: local files and ``pipe:`` through webdataset's opener, other URLs through
    fsspec."""
    if url.startswith("file://"):
        url = url[len("file://"):]
    if _is_local(url) or url.startswith("pipe:"):
        return gopen(url, "rb")
    import fsspec

    return fsspec.open(url, "rb").open()


def read_samples(url: str) -> Iterator[dict[str, Any]]:
    """A shard's samples in order: ``{"__key__", "__url__", EXT: bytes, ...}`` (webdataset's grouping of
    consecutive members by key)."""
    stream = open_url(url)
    try:
        yield from group_by_keys(tar_file_expander([{"url": url, "stream": stream}]))
    finally:
        stream.close()


@dataclass
class ShardIndex:
    """The shards of a collection in order: each one's URL, sample count and first memory-bank index; where
    ``indices`` is ``"json"`` a sample's index is its ``KEY.json``'s (avssl's shards), else first index +
    position. ``slots``: the memory bank's size."""

    shards: list[dict[str, Any]]
    indices: str = "position"
    slots: int = 0
    path: Path | None = None

    @property
    def samples(self) -> int:
        return sum(int(s["count"]) for s in self.shards)

    @property
    def non_empty(self) -> int:
        """How many shards hold a sample (the others are not dealt to any slot)."""
        return sum(1 for s in self.shards if int(s["count"]) > 0)

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "indices": self.indices, "samples": self.samples, "slots": self.slots,
                "shards": self.shards}


def _count(url: str) -> tuple[int, str | None]:
    """A shard's samples, and why it is damaged where it is (None where it reads to its end): for a local file from
    its tar headers alone (each member's data is seeked past, not read), grouped into samples as webdataset groups
    them; for a stream (``pipe:``, fsspec), by reading it. A zero-byte, truncated or unreadable shard counts the
    samples read before the damage (a sample cut short is counted: its reader fails on it and records it)."""
    if not _is_local(url):
        count = 0
        try:
            for _ in read_samples(url):
                count += 1
        except Exception as e:  # noqa: BLE001 - a broken stream or connection: what was read counts
            return count, f"unreadable shard (after {count} samples): {type(e).__name__}: {e}".strip()
        return count, None
    import re
    import tarfile

    from webdataset.tariterators import base_plus_ext

    count, key = 0, None
    path = _local_path(url)
    try:
        if os.path.getsize(path) == 0:
            return 0, "unreadable shard: an empty file (0 bytes)"
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:  # as webdataset's tar_file_iterator and group_by_keys take members
                name = info.name
                if not info.isreg() or name is None:
                    continue
                if ("/" not in name and name.startswith("__") and name.endswith("__")) or re.match(r"__[^/]*__($|/)",
                                                                                                   name):
                    continue
                prefix, _ = base_plus_ext(name)
                if prefix is None:
                    continue
                if prefix != key:
                    count, key = count + 1, prefix
    except (tarfile.TarError, OSError, EOFError) as e:
        return count, f"unreadable shard (after {count} samples): {type(e).__name__}: {e}".strip()
    return count, None


def _local_path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


_ENDS = 1 << 16  # bytes hashed at each end of a local shard


def _ends_sha256(path: str) -> str:
    """A cheap look at a file's content: the SHA-256 of its first and last 64 KiB (and its size)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_ENDS))
        size = f.seek(0, os.SEEK_END)
        f.seek(max(_ENDS, size - _ENDS))
        h.update(f.read(_ENDS))
    h.update(str(size).encode())
    return h.hexdigest()


def shard_stamp(url: str) -> dict[str, Any]:
    """What says a shard has not changed since it was indexed: a local file's size, modification time (ns) and the
    hash of its two ends (so that a copy that did not keep the times, ``cp -r`` or staging to a local disk, is known
    for the same file); a remote one's size and ETag as fsspec's ``info`` gives them (nothing for ``pipe:``)."""
    if url.startswith("pipe:"):
        return {}
    if _is_local(url):
        path = _local_path(url)
        st = os.stat(path)
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ends_sha256": _ends_sha256(path)}
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    info = fs.info(path)
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    return {k: v for k, v in (("size", info.get("size")), ("etag", etag)) if v is not None}


def _unchanged(recorded: dict[str, Any]) -> bool:
    """Whether a shard is what its index recorded: its size first; for a local file the same modification time, or
    where the time differs (a copy), the same two ends; for a remote one its ETag."""
    url = recorded["url"]
    if url.startswith("pipe:"):
        return True
    if not _is_local(url):
        now = shard_stamp(url)
        return all(recorded[k] == now.get(k) for k in ("size", "etag") if k in recorded)
    try:
        st = os.stat(_local_path(url))
    except OSError:
        return False
    if "size" in recorded and recorded["size"] != st.st_size:
        return False
    if "mtime_ns" not in recorded or recorded["mtime_ns"] == st.st_mtime_ns:
        return True
    return "ends_sha256" in recorded and recorded["ends_sha256"] == _ends_sha256(_local_path(url))


def _stamps(urls: list[str]) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(min(16, max(1, len(urls)))) as ex:  # remote stores answer in parallel
        return list(ex.map(shard_stamp, urls))


def _stored_url(url: str, base: Path) -> str:
    """A local shard's path relative to the index's folder (one rule for every index file); others as given."""
    if not _is_local(url):
        return url
    return os.path.relpath(os.path.abspath(_local_path(url)), os.path.abspath(base))


def index_shards(urls: list[str], output: str | os.PathLike | None, progress: Callable | None = None) -> ShardIndex:
    """The index pass over shards made elsewhere: count each shard's samples (local ones from their tar headers,
    streams by reading them, several at a time), number them
    in order, record what each shard was (:func:`shard_stamp`), and keep the result at ``output`` (JSON; local
    paths relative to its folder)."""
    shards, first = [], 0
    stamps = _stamps(urls)
    base = Path(output).parent if output is not None else Path(".")
    with ThreadPoolExecutor(min(16, max(1, len(urls)))) as ex:  # remote shards are read in parallel
        counts = ex.map(_count, urls)
        for url, stamp, (n, damage) in zip(urls, stamps, progress(counts) if progress else counts):
            shards.append({"url": url, "count": n, "first_index": first, **stamp,
                           **({"damaged": damage} if damage else {})})
            first += n
            if damage:
                log.warning("%s: %s", url, damage)
    index = ShardIndex(shards, "position", first)
    if output is not None:
        from ..fileio import atomic_write

        stored = ShardIndex([dict(s, url=_stored_url(s["url"], base)) for s in shards], "position", first)
        with atomic_write(output) as f:
            json.dump(stored.to_dict(), f, indent=1)
        index.path = Path(output)
    return index


def _resolve(url: str, base: Path) -> str:
    return url if not _is_local(url) else os.path.normpath(os.path.join(os.path.abspath(base), _local_path(url)))


def _changed(chosen: list[dict[str, Any]]) -> list[str]:
    """The shards that are not what the index recorded (:func:`_unchanged`; shards indexed without a stamp: none)."""
    keys = ("size", "mtime_ns", "etag")
    recorded = [s for s in chosen if any(k in s for k in keys)]
    with ThreadPoolExecutor(min(16, max(1, len(recorded)))) as ex:  # remote stores answer in parallel
        same = list(ex.map(_unchanged, recorded))
    return [s["url"] for s, ok in zip(recorded, same) if not ok]


def load_shard_index(spec: str | list[str], index_path: str | os.PathLike | None = None,
                     fallback_dir: str | os.PathLike | None = None) -> ShardIndex:
    """The index of the shards ``spec`` names: ``index_path`` when given, else ``shards.json`` (written by
    ``avssl data shard``) or ``avssl-index.json`` beside the first shard; without either, an index pass is run
    and kept beside the shards (or in ``fallback_dir`` where they are not local). Raises ValueError when a
    named shard is not in the index, or has changed since ``shards.json`` was written; an ``avssl-index.json``
    whose shards changed is made again."""
    urls = expand_shards(spec)
    if not urls:
        raise ValueError(f"data.shards {spec!r} names no shard")
    beside = Path(_local_path(urls[0])).resolve().parent if _is_local(urls[0]) else None
    candidates = [Path(index_path)] if index_path else [d / n for d in (beside, Path(fallback_dir or "."))
                                                         if d is not None for n in (SHARDS_JSON, INDEX_NAME)]
    for cand in candidates:
        if cand.is_file():
            data = json.loads(cand.read_text())
            known = {_resolve(s["url"], cand.parent): s for s in data["shards"]}
            want = [_resolve(u, Path(".")) for u in urls]
            missing = [u for u in want if u not in known]
            if missing:
                raise ValueError(f"{cand} does not list {len(missing)} of the shards, e.g. {missing[0]}: index them "
                                 f"again (remove {cand}) or name the shards it lists")
            chosen = [dict(known[u], url=u) for u in want]
            changed = _changed(chosen)
            if changed and cand.name == INDEX_NAME and not index_path:
                log.warning("%d shard(s) changed since %s was written (e.g. %s): indexing again", len(changed), cand,
                            changed[0])
                return index_shards(want, cand)
            if changed:
                raise ValueError(f"{changed[0]} changed since {cand} was written ({len(changed)} shard(s)): its "
                                 "sample counts and memory-bank indices may be wrong; write the shards again or "
                                 f"remove {cand} to index them anew")
            return ShardIndex(chosen, data.get("indices", "position"), int(data.get("slots") or 0), cand)
    target = Path(index_path) if index_path else (beside if beside is not None and os.access(beside, os.W_OK)
                                                  else Path(fallback_dir or ".")) / INDEX_NAME
    return index_shards(urls, target)


def usable_workers(index: ShardIndex, world: int, workers: int) -> int:
    """Loader workers per process such that every slot (process x worker) has a non-empty shard to read (0 keeps
    the main process reading). Raises ValueError when there are fewer non-empty shards than processes."""
    full = index.non_empty
    if full < world:
        raise ValueError(f"{full} non-empty shard(s) for {world} processes: each process needs at least one (write "
                         "smaller shards: avssl data shard --samples-per-shard N)")
    return min(workers, full // world) if workers else 0


def slot_plan(index: ShardIndex, seed: int, epoch: int, slots: int) -> list[list[int]]:
    """The shards each slot (process x worker, in that order) reads in an epoch: a seeded order, each shard
    dealt to the slot with the fewest samples so far."""
    order = torch.randperm(len(index.shards), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    plan: list[list[int]] = [[] for _ in range(slots)]
    held = [0] * slots
    for s in order.tolist():
        if int(index.shards[s]["count"]) <= 0:  # nothing to read: not dealt
            continue
        k = min(range(slots), key=lambda i: (held[i], i))
        plan[k].append(s)
        held[k] += int(index.shards[s]["count"])
    return plan


def _quota(total: int, parts: int, k: int) -> int:
    return total // parts + (1 if k < total % parts else 0)


@dataclass
class _Raw:
    shard: int
    position: int  # the instance's place in its shard (a sample, or a segment of one)
    cycle: int  # the pass over the slot's shards (clips per video, or a slot short of samples)
    sample: dict[str, Any] = field(repr=False)
    segment: int = -1  # which of the sample's segments (KEY.json "segments"); -1: the whole video


def _segment_count(sample: dict[str, Any]) -> int:
    """How many instances a sample is: the segments its ``KEY.json`` lists (``avssl data shard --segment``), else 1.
    A JSON that does not parse counts as one (its reader fails on it and records it)."""
    if "json" not in sample:
        return 0
    try:
        segs = json.loads(sample["json"]).get("segments")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return 0
    return len(segs) if isinstance(segs, list) and segs else 0


class ShardStream(IterableDataset):
    """Training clips from shards (see the module's description): ``len()`` is the number of samples, an
    epoch yields ``steps_per_epoch x batch`` items per process. Call :meth:`set_epoch` (and :meth:`skip` when
    resuming inside an epoch) before making a DataLoader over it with ``batch_size=batch``."""

    def __init__(self, index: ShardIndex, maker: Any, batch: int, seed: int, on_error: str = "skip",
                 max_retries: int = 10, shuffle_buffer: int = 256, clips_per_video: int = 1, rank: int | None = None,
                 world: int | None = None) -> None:
        from .. import distributed as dist

        self.index, self.maker, self.batch, self.seed = index, maker, batch, seed
        self.clips_per_video = max(1, clips_per_video)  # passes over the shards per epoch
        self.on_error, self.max_retries, self.buffer = on_error, max_retries, max(1, shuffle_buffer)
        self.rank = dist.rank() if rank is None else rank
        self.world = dist.world_size() if world is None else world
        self.epoch, self.skipped_batches = 0, 0

    def __len__(self) -> int:
        return self.index.samples * self.clips_per_video

    @property
    def steps_per_epoch(self) -> int:
        return len(self) // (self.batch * self.world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.skipped_batches = epoch, 0

    def skip(self, batches: int) -> None:
        """Resume inside the epoch: leave out its first ``batches`` steps (their samples are read, not decoded)."""
        self.skipped_batches = batches

    def _raw(self, shards: list[int], cycle: int = 0, failed: list[dict[str, Any]] | None = None) -> Iterator[_Raw]:
        """One pass over the slot's shards, read in order. A shard that cannot be opened or stops part-way is
        recorded in ``failed`` (with ``data.on_error: raise``, the error stops the run) and the pass goes on."""
        for s in shards:
            url = self.index.shards[s]["url"]
            position = 0
            try:
                for sample in read_samples(url):
                    n = _segment_count(sample)
                    for j in range(n) if n else [-1]:  # a segmented video: an instance per segment
                        yield _Raw(s, position, cycle, sample, j)
                        position += 1
            except Exception as e:  # a truncated tar, an unreadable file, a broken pipe or connection
                if self.on_error == "raise":
                    raise
                what = f"{type(e).__name__}: {e}".strip()
                if failed is not None:
                    failed.append({"path": url, "reason": f"unreadable shard (after {position} samples): {what}"})
                log.warning("skipping the rest of shard %s: %s", url, what)

    def _passes(self, shards: list[int], rng: random.Random, failed: list[dict[str, Any]]) -> Iterator[_Raw]:
        """The slot's samples, pass after pass (a clip per video and pass; or a slot short of its quota), each
        pass through the shuffle buffer on its own: a sample comes again only after every other one. A pass that
        yields nothing (every shard of the slot empty or unreadable) moves the slot to the epoch's other shards;
        if they yield nothing either, the stream ends."""
        every = list(range(len(self.index.shards)))
        cycle, fallback = 0, not shards
        shards = shards or every
        while True:
            got = 0
            for r in self._shuffled(self._raw(shards, cycle, failed), rng):
                got += 1
                yield r
            cycle += 1
            if got:
                continue
            others = [k for k in every if k not in shards]
            if fallback or not others:
                raise RuntimeError("no shard of the collection yielded a readable sample (see skipped.jsonl)")
            fallback, shards = True, others

    def _shuffled(self, raw: Iterator[_Raw], rng: random.Random) -> Iterator[_Raw]:
        buf: list[_Raw] = []
        for r in raw:
            if len(buf) < self.buffer:
                buf.append(r)
                continue
            k = rng.randrange(len(buf))
            buf[k], r = r, buf[k]
            yield r
        rng.shuffle(buf)
        yield from buf

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        # A resumed epoch's DataLoader asks its worker 0 first; the interrupted one would have asked worker
        # (skipped % workers) next: roles rotate by the batches skipped, so the batches come in the same order.
        role = (worker + self.skipped_batches) % workers
        slots = self.world * workers
        slot = self.rank * workers + role
        plan = slot_plan(self.index, self.seed, self.epoch, slots)
        quota = _quota(self.steps_per_epoch, workers, role)  # this role's batches of the epoch
        done = _quota(self.skipped_batches, workers, role)  # ...already trained on (a resume)
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 10_007 + slot)
        failed: list[dict[str, Any]] = []
        stream = self._passes(plan[slot], rng, failed)
        for _ in range(done * self.batch):
            next(stream, None)
        failed.clear()  # recorded by the run that trained on those batches
        for _ in range((quota - done) * self.batch):
            item = self._next_item(stream, failed)
            if item is None:
                return
            yield item

    def _next_item(self, stream: Iterator[_Raw], failed: list[dict[str, Any]]) -> dict[str, Any] | None:
        failures: list[dict[str, Any]] = []
        for _ in range(self.max_retries + 1):
            raw = next(stream, None)
            failures += failed  # shards that could not be read on the way
            failed.clear()
            if raw is None:
                return None
            try:
                item = self._item(raw)
            except DecodeError as e:
                if self.on_error == "raise":
                    raise
                failures.append({"path": e.path, "reason": e.reason})
                log.warning("skipping %s: %s", e.path, e.reason)
                continue
            item["failures"] = failures
            return item
        raise DecodeError(failures[-1]["path"], f"{len(failures)} consecutive samples failed to decode; last: "
                                                f"{failures[-1]['reason']}")

    def _item(self, raw: _Raw) -> dict[str, Any]:
        entry, index = self.entry(raw)
        seed = ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) * 101 + raw.cycle
        return self.maker.item(entry, index, 0, torch.Generator().manual_seed(seed))

    def entry(self, raw: _Raw) -> tuple[dict[str, Any], int]:
        """A raw sample as the clip cutter's entry (:func:`sample_entry`) and its memory-bank index. Raises
        DecodeError for a sample without a video, with an unreadable ``json``, or an index outside the bank."""
        sample, shard = raw.sample, self.index.shards[raw.shard]
        name = f"{shard['url']}:{sample['__key__']}"
        entry, meta = sample_entry(shard["url"], sample)
        if self.index.indices == "json" and "index" in meta:
            index = meta["index"]
            if not isinstance(index, int) or isinstance(index, bool):
                raise DecodeError(f"{name}.json", f"memory-bank index {index!r} is not an integer")
            index += max(raw.segment, 0)
        else:
            index = int(shard["first_index"]) + raw.position
        if raw.segment >= 0:  # clips drawn inside the segment (datasets.ClipMaker reads start and end)
            try:
                entry["start"], entry["end"] = (float(x) for x in meta["segments"][raw.segment])
            except (TypeError, ValueError, IndexError, KeyError):
                raise DecodeError(f"{name}.json", f"segment {raw.segment} is not a [start, end] pair") from None
        slots = self.index.slots or self.index.samples
        if not 0 <= index < slots:
            raise DecodeError(f"{name}.json" if "index" in meta else name,
                              f"memory-bank index {index} outside the bank's {slots} slots (0..{slots - 1}): the "
                              "shard does not match its index; write or index the shards again")
        return entry, index


def sample_entry(url: str, sample: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A shard's sample as a clip cutter's entry (video and audio as bytes named ``URL:KEY.EXT``, duration from its
    ``KEY.json`` or probed) and its ``KEY.json``. Raises DecodeError for a sample without a video or with a
    ``json`` that is not a JSON object."""
    name = f"{url}:{sample['__key__']}"
    video = next((k for k in VIDEO_KEYS if k in sample), None)
    if video is None:
        raise DecodeError(name, f"sample has no video ({', '.join(k for k in sample if not k.startswith('__'))})")
    try:
        meta = json.loads(sample["json"]) if "json" in sample else {}
    except (ValueError, UnicodeDecodeError) as e:
        raise DecodeError(f"{name}.json", f"unreadable JSON: {e}") from e
    if not isinstance(meta, dict):
        raise DecodeError(f"{name}.json", f"not a JSON object ({type(meta).__name__})")
    entry: dict[str, Any] = {"path": MediaBytes(sample[video], f"{name}.{video}")}
    audio = next((k for k in AUDIO_KEYS if k in sample), None)
    if audio is not None:
        entry["audio_path"] = MediaBytes(sample[audio], f"{name}.{audio}")
    duration = meta.get("duration")
    if not isinstance(duration, (int, float)) or isinstance(duration, bool) or not duration > 0:
        duration = probe(entry["path"]).duration
    entry["duration"] = float(duration)
    return entry, meta
