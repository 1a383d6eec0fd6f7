#!/usr/bin/env python
"""Tile images (e.g. the PNGs `avssl report` writes) into one picture for the docs, row by row.

    python tools/tile_pngs.py docs/images/demo_curves.png report/train_loss.png report/eval_knn_top1.png --columns 2
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, read_image, write_png


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("output")
    p.add_argument("images", nargs="+")
    p.add_argument("--columns", type=int, default=3)
    a = p.parse_args()
    imgs = [read_image(f, ImageReadMode.RGB) for f in a.images]
    h, w = imgs[0].shape[1:]
    imgs = [F.interpolate(i[None].float(), size=(h, w), mode="bilinear")[0].round().byte() if i.shape[1:] != (h, w)
            else i for i in imgs]
    rows = (len(imgs) + a.columns - 1) // a.columns
    sheet = torch.full((3, rows * h, a.columns * w), 255, dtype=torch.uint8)
    for k, img in enumerate(imgs):
        r, c = divmod(k, a.columns)
        sheet[:, r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    write_png(sheet, a.output)
    print(f"wrote {a.output} ({rows} x {a.columns})")


if __name__ == "__main__":
    main()
