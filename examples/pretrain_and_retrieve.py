"""Pretrain AVID on a small synthetic collection, then match videos to their sounds.

    python examples/pretrain_and_retrieve.py [OUTPUT_DIR]      # about a minute on a laptop CPU
"""

import sys
import tempfile
from pathlib import Path

from avssl.config import load_config
from avssl.data.collection import build_manifest
from avssl.data.datasets import AVClipDataset
from avssl.data.synthetic import SynthSpec, synthesize
from avssl.evaluation.features import extract
from avssl.evaluation.retrieval import rank_metrics
from avssl.train.pretrain import PretrainConfig, load_pretrained, pretrain

out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 10

# 1. A collection of videos (here synthetic: objects that make their own sounds) and its manifest.
synthesize(out / "media", num_clips=64, seed=0,
           spec=SynthSpec(width=80, height=80, fps=16, sample_rate=16000, num_distractors=0))
build_manifest(out / "media", out / "manifest.jsonl", require_audio=True)

# 2. The small CPU config, pointed at the manifest, with a few overrides (as `--set` does on the CLI).
root = Path(__file__).resolve().parents[1]
cfg = load_config(PretrainConfig, root / "configs/pretrain/avid_small_cpu.yaml",
                  [f"data.manifest={out / 'manifest.jsonl'}", f"optim.epochs={epochs}", "optim.batch_size=16"])
summary = pretrain(cfg, out / "run")  # run it again and it resumes from out/run/last.pt
print(summary)

# 3. Embed the centre clip of every video and retrieve each video's own sound among all sounds.
model = load_pretrained(out / "run" / "last.pt")
feats = extract(model, AVClipDataset(out / "manifest.jsonl", cfg.data, train=False))
print("video -> audio", rank_metrics(feats["video_emb"], feats["audio_emb"]))
print("audio -> video", rank_metrics(feats["audio_emb"], feats["video_emb"]))
