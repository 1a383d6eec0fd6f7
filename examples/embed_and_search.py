"""Embed a folder of videos, then find for each video the clips whose sound is nearest to its picture.

    python examples/embed_and_search.py CHECKPOINT FOLDER [OUTPUT_DIR]

CHECKPOINT is a pretraining checkpoint (runs/avid/last.pt) or a released model's name (avid-cma-audioset: fetched
once, `avssl models` lists them); FOLDER holds videos. The same embeddings come from the command line with
`avssl embed FOLDER --checkpoint CHECKPOINT --output-dir OUTPUT_DIR --window 1`.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from avssl.cli import main

checkpoint, folder = sys.argv[1], sys.argv[2]
out = Path(sys.argv[3] if len(sys.argv) > 3 else tempfile.mkdtemp())

# 1. One clip per second of every video: a row per clip with the video's key, the window, both embeddings.
main(["embed", folder, "--checkpoint", checkpoint, "--output-dir", str(out), "--window", "1", "--quiet"])
clips = pq.read_table(out / "clips")  # every part, read back with pyarrow (or pandas.read_parquet)
keys = np.array(clips["key"].to_pylist())
starts = np.array(clips["start"].to_pylist())
video = np.stack(clips["video"].to_numpy(zero_copy_only=False))  # (clips, dim), unit norm (the joint embedding)
audio = np.stack(clips["audio"].to_numpy(zero_copy_only=False))

# 2. Cross-modal search: for each video's first second, the three seconds of sound anywhere nearest to its picture.
similarity = video @ audio.T
for i in np.flatnonzero(starts == 0):
    best = np.argsort(-similarity[i])[:3]
    found = ", ".join(f"{keys[j]}@{starts[j]:.0f}s ({similarity[i, j]:.2f})" for j in best)
    print(f"{keys[i]}: its picture sounds like {found}")
