from __future__ import annotations

import io
import re

from avssl.progress import Progress, track


def test_without_a_terminal_progress_is_plain_lines():
    out = io.StringIO()  # not a terminal, as under a scheduler or with `> log`
    p = Progress(10, "pretrain", "step", every_n=4, every_s=1e9, stream=out)
    for i in range(10):
        p.update(1, loss=f"{1 / (i + 1):.2f}")
    p.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = [line.split(" eta ")[0] for line in text.splitlines()]
    assert lines == ["pretrain: 4/10 step (40%) loss=0.25", "pretrain: 8/10 step (80%) loss=0.12",
                     "pretrain: 10/10 step (100%) loss=0.10"]
    assert re.fullmatch(r".* eta \d+m\d\ds", text.splitlines()[0]) and " eta " not in text.splitlines()[-1]


def test_disabled_progress_writes_nothing_and_track_yields_everything():
    out = io.StringIO()
    p = Progress(3, enabled=False, stream=out)
    p.update(3)
    p.close()
    assert out.getvalue() == "" and list(track(range(5), enabled=False)) == [0, 1, 2, 3, 4]
