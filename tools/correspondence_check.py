#!/usr/bin/env python
"""Did pretraining learn the audio-video correspondence? For a pretraining checkpoint and labeled train/test
manifests (the label of a file is its ``class`` in a ``vggss.json`` beside it, as `avssl data compose` writes,
else the name of its folder, as in the UCF-101 layout), on 3 uniformly spaced clips per video averaged:

- v2a_same_class: the fraction of test videos whose most similar test audio (cosine of the embeddings) is of
  the video's class (chance: about 1 / classes);
- probe_*: a logistic regression on frozen train features, accuracy on the test videos, for the pooled
  video features, the video embeddings and the audio embeddings.

With ``--random-init`` the same model at its initialization is measured beside it.

Usage:
  python tools/correspondence_check.py runs/pretrain/last.pt --train train_manifest.jsonl \
      --test test_manifest.jsonl [--random-init]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F


from avssl.config import from_saved
from avssl.data.collection import read_manifest
from avssl.data.datasets import AVClipDataset
from avssl.data.formats.localization import read_vggss
from avssl.models.avmodel import AVModel
from avssl.train.checkpoint import load_checkpoint
from avssl.evaluation.features import extract, linear_probe
from avssl.train.configs import PretrainConfig
from avssl.train.pretrain import load_pretrained

CLIPS = 3
KEYS = ("video_feat", "video_emb", "audio_emb")


def _features(model: AVModel, entries: list[dict], cfg: PretrainConfig) -> dict[str, torch.Tensor]:
    x = extract(model, AVClipDataset(entries, cfg.data, train=False, clips_per_video=CLIPS))
    return {k: x[k].view(len(entries), CLIPS, -1).mean(1) for k in KEYS}


def labels(entries: list[dict]) -> list[str]:
    """Each file's class: from a ``vggss.json`` in its folder when there is one, else the folder's name."""
    tables: dict[Path, dict[str, str]] = {}
    out = []
    for e in entries:
        path = Path(e["path"])
        if path.parent not in tables:
            ann = path.parent / "vggss.json"
            tables[path.parent] = ({s.id: s.class_name for s in read_vggss(ann, path.parent).samples}
                                   if ann.exists() else {})
        out.append(tables[path.parent].get(path.stem, path.parent.name))
    return out


def check(model: AVModel, cfg: PretrainConfig, train: list[dict], test: list[dict]) -> dict[str, float]:
    """The figures of the module docstring for one model."""
    names_tr, names_te = labels(train), labels(test)
    classes = sorted(set(names_tr))
    y_tr, y_te = (torch.tensor([classes.index(n) for n in ns]) for ns in (names_tr, names_te))
    f_tr, f_te = _features(model, train, cfg), _features(model, test, cfg)
    out = {f"probe_{k}": linear_probe(f_tr[k], y_tr, f_te[k], y_te)["accuracy"] for k in KEYS}
    sim = F.normalize(f_te["video_emb"], dim=1) @ F.normalize(f_te["audio_emb"], dim=1).T
    out["v2a_same_class"] = float((y_te[sim.argmax(1)] == y_te).float().mean())
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--train", required=True, help="manifest of the videos the probe is trained on")
    p.add_argument("--test", required=True, help="manifest of the videos it is tested on")
    p.add_argument("--random-init", action="store_true", help="also measure the model at its initialization")
    args = p.parse_args()
    cfg = from_saved(PretrainConfig, load_checkpoint(args.checkpoint)["config"])
    cfg.data.num_workers = 0
    train, test = read_manifest(args.train), read_manifest(args.test)
    models = {"pretrained": load_pretrained(args.checkpoint)}
    if args.random_init:
        torch.manual_seed(cfg.run.seed)
        models["random_init"] = AVModel(cfg.model).eval()
    for name, model in models.items():
        print(json.dumps({"model": name, **{k: round(v, 3) for k, v in check(model, cfg, train, test).items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
