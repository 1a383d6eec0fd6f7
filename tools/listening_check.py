#!/usr/bin/env python
"""Do the maps listen? The check `avssl localize` reports for every video (``listening`` in info.json, judged
below ``LISTENS_BELOW``), measured on models that localize and on models that do not.

For each checkpoint and each clip of a composed split (``avssl data compose``: vggss.json names each clip's
sounding kind), the Pearson correlation of the raw similarity grids at up to 8 of the clip's times under its own
sound against the same frames under:

  other kind   the sound of another clip of the split whose sounding cut-out is of another kind
  same kind    the sound of another clip of the same kind (a model that listens may rightly keep its map)
  own, later   the clip's own track half its length away (what a single video is checked against)
  silence      no sound

and the share of clips that ``avssl localize`` calls listening: the lower of the correlations under silence and
under another sound (another video's track when several are mapped, here one of another kind; else the clip's
own track elsewhere) below ``LISTENS_BELOW``.

Usage:
  python tools/localization_proof.py --synthetic --kinds 8 --test-clips 48 \\
      --variants localize_small_cpu frame_random_init mean max --work-dir loc  # composes, pretrains
  python tools/listening_check.py --split loc/test --checkpoint trained=loc/runs/localize_small_cpu/last.pt \\
      --checkpoint untrained=loc/runs/frame_random_init/last.pt --checkpoint avid_3d=loc/runs/mean/last.pt \\
      --checkpoint max=loc/runs/max/last.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from avssl.localize.heatmap import Localizer
from avssl.localize.render import LISTENS_BELOW, listening
from avssl.train.checkpoint import pretrained_model


def _clips(split: Path, limit: int) -> list[tuple[Path, str]]:
    """The split's clips and their sounding kinds, in the annotations' order."""
    rows = json.loads((split / "vggss.json").read_text())
    out = []
    for r in rows[:limit]:
        media = next(split.glob(f"{r['file']}.*"), None) if not (split / r["file"]).exists() else split / r["file"]
        if media is not None:
            out.append((media, r["class"]))
    return out


def _partner(clips: list[tuple[Path, str]], i: int, same: bool) -> Path | None:
    """The next clip after ``i`` whose kind is (``same``) or is not that of clip ``i``."""
    n = len(clips)
    for k in range(1, n):
        path, kind = clips[(i + k) % n]
        if (kind == clips[i][1]) == same:
            return path
    return None


def check(checkpoint: Path, clips: list[tuple[Path, str]]) -> dict:
    model, cfg = pretrained_model(checkpoint)
    loc = Localizer(model, cfg.data, cfg.localize)
    rows = {"other kind": [], "same kind": [], "own, later": [], "silence": []}
    for i, (path, _) in enumerate(clips):
        plan = loc.plan(path)
        own = listening(loc, plan)  # what a single video is checked against
        rows["own, later"].append(own.get("corr_other", np.nan))
        rows["silence"].append(own["corr_silence"])
        for key, same in (("other kind", False), ("same kind", True)):
            partner = _partner(clips, i, same)
            rows[key].append(listening(loc, plan, str(partner))["corr_other"] if partner else np.nan)
    r = {k: np.asarray(v, dtype=np.float64) for k, v in rows.items()}
    # the verdict avssl localize gives: the least alike of silence and the other sound, below LISTENS_BELOW
    for key, other in (("called listening, several videos", "other kind"), ("called listening, one video", "own, later")):
        r[key] = (np.minimum(np.nan_to_num(r[other], nan=1.0), r["silence"]) < LISTENS_BELOW).astype(np.float64)
    return r


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", required=True, help="a folder written by avssl data compose (vggss.json and clips)")
    p.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH")
    p.add_argument("--clips", type=int, default=48, help="the split's first N clips")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    clips = _clips(Path(args.split), args.clips)
    print(f"{len(clips)} clips of {args.split}; LISTENS_BELOW = {LISTENS_BELOW}; Pearson correlation of the maps "
          "under the own sound with the maps under ...: median [quartiles]")
    results = {}
    for spec in args.checkpoint:
        name, _, path = spec.partition("=")
        r = check(Path(path), clips)
        results[name] = {k: v.tolist() for k, v in r.items()}
        cells = []
        for k, v in r.items():
            v = v[np.isfinite(v)]
            if k.startswith("called listening"):
                cells.append(f"{k} {v.mean():.2f}")
            elif len(v):
                q1, med, q3 = np.percentile(v, [25, 50, 75])
                cells.append(f"{k} {med:.3f} [{q1:.3f}, {q3:.3f}]")
        print(f"  {name}: " + "; ".join(cells), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
