"""Compact manifest entries: the same dicts as the manifest, kept as a table beside it, read by loader workers."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from torch.utils.data import DataLoader, Dataset

from avssl.data.collection import build_manifest, read_manifest, write_jsonl
from avssl.data.entries import Entries, entries_index_path, load_entries


def _no_nulls(row: dict) -> dict:
    return {k: _no_nulls(v) if isinstance(v, dict) else v for k, v in row.items() if v is not None}


def test_entries_equal_the_manifest_rows(synth_dir, tmp_path):
    build_manifest(synth_dir, tmp_path / "m.jsonl", progress=False)
    rows = read_manifest(tmp_path / "m.jsonl")
    entries = load_entries(tmp_path / "m.jsonl")
    assert len(entries) == len(rows) == 6
    assert [entries[i] for i in range(len(entries))] == [_no_nulls(r) for r in rows] == list(entries)
    assert entries[-1] == entries[5]
    np.testing.assert_array_equal(entries.durations, [r["duration"] for r in rows])
    assert entries.has_audio.tolist() == [bool(r.get("audio")) for r in rows]
    np.testing.assert_array_equal(entries.numbers("video.width"), [r["video"]["width"] for r in rows])
    assert np.isnan(entries.numbers("video.nothing")).all() and np.isnan(entries.numbers("nothing")).all()
    with pytest.raises(IndexError):
        entries[6]


def test_the_table_is_kept_beside_the_manifest_and_follows_it(tmp_path):
    rows = [{"path": f"v{i}.mp4", "duration": 1.0 + i, "audio": {"codec": "aac"}} for i in range(5)]
    write_jsonl(tmp_path / "m.jsonl", rows)
    first = load_entries(tmp_path / "m.jsonl")
    index = entries_index_path(tmp_path / "m.jsonl")
    assert index.name == "m.entries.arrow" and index.exists()
    assert first[0]["path"] == str(tmp_path / "v0.mp4")  # relative to the manifest's folder
    mtime = index.stat().st_mtime_ns
    assert load_entries(tmp_path / "m.jsonl")[4] == first[4] and index.stat().st_mtime_ns == mtime  # reused
    write_jsonl(tmp_path / "m.jsonl", rows[:3])  # the manifest changes: read again
    assert len(load_entries(tmp_path / "m.jsonl")) == 3
    index.write_bytes(index.read_bytes()[:100])  # torn: read the manifest again
    assert len(load_entries(tmp_path / "m.jsonl")) == 3
    write_jsonl(tmp_path / "n.jsonl", rows)
    assert len(load_entries(tmp_path / "n.jsonl", index=False)) == 5
    assert not entries_index_path(tmp_path / "n.jsonl").exists()


@pytest.mark.parametrize("rows", [
    # the first block of rows has no audio, later rows do (typed by the probe schema, not by the first rows)
    [{"path": "a.mp4", "duration": 2, "audio": None}] * 3000 + [{"path": "b.mp4", "duration": 2.5,
                                                                 "audio": {"codec": "aac", "channels": 2}}],
    # keys some rows have and others not
    [{"path": "a.mp4", "duration": 2.0}] * 3000 + [{"path": "b.mp4", "duration": 1.0, "label": 3, "extra": [1, 2]}],
    # a key that holds numbers in some rows and text in others: kept as text rows
    [{"path": "a.mp4", "duration": 2.0, "label": 1}] * 3000 + [{"path": "b.mp4", "duration": 1.0, "label": "x"}],
    # text that looks like a time stays text
    [{"path": "a.mp4", "duration": 2.0, "label": "2020-01-01"}],
])
def test_manifests_of_any_shape_read_back_as_written(tmp_path, rows):
    write_jsonl(tmp_path / "m.jsonl", rows)
    entries = load_entries(tmp_path / "m.jsonl")
    for i in (0, len(rows) - 1):
        want = _no_nulls(dict(rows[i], path=str(tmp_path / rows[i]["path"])))
        assert entries[i] == want
    assert entries.durations[-1] == rows[-1]["duration"]
    assert entries.has_audio.tolist() == [bool(r.get("audio")) for r in rows]
    assert Entries.from_rows(rows)[len(rows) - 1] == _no_nulls(rows[-1])


def test_an_empty_manifest_has_no_entries(tmp_path):
    (tmp_path / "m.jsonl").write_text("")
    assert len(load_entries(tmp_path / "m.jsonl")) == 0 and len(Entries.from_rows([])) == 0


class _Reader(Dataset):
    def __init__(self, entries: Entries) -> None:
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> str:
        return json.dumps([self.entries[i], os.getpid()])


def test_forked_loader_workers_read_every_entry(tmp_path):
    rows = [{"path": f"/v/{i}.mp4", "duration": float(i % 7 + 1), "audio": {"codec": "aac"}} for i in range(200)]
    write_jsonl(tmp_path / "m.jsonl", rows)
    entries = load_entries(tmp_path / "m.jsonl")
    out = [json.loads(x) for batch in DataLoader(_Reader(entries), batch_size=16, num_workers=2,
                                                 multiprocessing_context="fork") for x in batch]
    assert [e for e, _ in out] == rows and len({pid for _, pid in out}) == 2
    again = pickle.loads(pickle.dumps(entries))  # for loaders that spawn their workers
    assert again[199] == rows[199] and len(again) == 200
