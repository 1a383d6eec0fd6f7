"""``avssl report RUN_DIR [RUN_DIR ...]``: one HTML page (and PNGs) of how runs learn, readable while they run.

From each run folder's ``metrics.jsonl`` (training rows, evaluation rows, divergence events), ``config.yaml`` and
``summary.json`` when the run has ended: the curves of the loss, the learning rate, clips per second and every
evaluation figure against epochs, the runs on the same plots (seeds, variants) with the config values in which
they differ, the share of the run's time spent evaluating, the events, and for localization runs the maps of a
few held-out clips at each evaluation. A run still going is drawn as far as it has come; ``--watch N`` rewrites
the page every ``N`` seconds and the page reloads itself.
"""

from __future__ import annotations

import html
import json
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from .fileio import atomic_write

__all__ = ["load_run", "write_report"]

_TRAIN_CURVES = (("loss", "loss"), ("lr", "learning rate"), ("interval_clips_per_s", "clips / s (each log interval)"),
                 ("emb_std_video", "spread of the video embeddings (std x sqrt(D))"),
                 ("emb_std_audio", "spread of the audio embeddings (std x sqrt(D))"))
_SKIP = {"kind", "epoch", "epochs", "step", "seconds", "maps", "retrieval_clips", "time"}
# what a person reads for the figures evaluation rows carry
_NAMES = {
    "retrieval_v2a_R@1": "video -> audio retrieval, R@1", "retrieval_v2a_R@5": "video -> audio retrieval, R@5",
    "retrieval_a2v_R@1": "audio -> video retrieval, R@1", "retrieval_a2v_R@5": "audio -> video retrieval, R@5",
    "knn_top1": "kNN on video features, top-1", "knn_top5": "kNN on video features, top-5",
    "knn_audio_top1": "kNN on audio embeddings, top-1", "knn_audio_top5": "kNN on audio embeddings, top-5",
    "loc_ciou_at_0.5": "localization: share of clips with cIoU >= 0.5", "loc_auc": "localization: AUC of cIoU",
    "loc_centre_ciou_at_0.5": "centred prior: share of clips with cIoU >= 0.5",
    "loc_ciou_drop_mismatched": "localization: cIoU lost under another clip's sound",
    "loc_own_sound_more_mass": "localization: share of clips whose own sound puts more map on the object",
}
_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ("-", "v"), ("--", "x")]


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def load_run(folder: str | Path) -> dict[str, Any]:
    """A run folder's rows by kind (rows written before kinds existed count as training rows), its config and
    summary (None while it runs)."""
    folder = Path(folder)
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "eval": [], "event": []}
    metrics = folder / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line being written
                continue
            rows.setdefault(row.get("kind", "train"), []).append(row)
    train = rows["train"]
    if train and any("epochs" not in r for r in train):  # rows written before they carried fractional epochs
        per_epoch = max(r["step"] for r in train) / (max(r.get("epoch", 0) for r in train) + 1)
        for r in train:
            r.setdefault("epochs", r["step"] / per_epoch)
    prev: dict[str, Any] | None = None
    for r in train:  # the rate over each log interval (older rows held a running average since the process began)
        if "clips" in r and "seconds" in r:
            restarted = prev is None or float(r["seconds"]) < float(prev["seconds"])
            clips = r["clips"] - (0 if restarted else prev["clips"])
            secs = float(r["seconds"]) - (0.0 if restarted else float(prev["seconds"]))
            if secs > 0 and not restarted:
                r["interval_clips_per_s"] = clips / secs
            prev = r
    config = yaml.safe_load((folder / "config.yaml").read_text()) if (folder / "config.yaml").exists() else {}
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else None
    return {"folder": folder, "name": folder.name, "rows": rows, "config": config or {}, "summary": summary}


def _x(row: dict[str, Any]) -> float:
    return float(row.get("epochs", row.get("epoch", 0)))


def _chance_key(key: str) -> str | None:
    """The row key of what chance gives for a figure (``retrieval_v2a_R@5`` -> ``retrieval_chance_R@5``)."""
    if key.startswith("retrieval_") and "_R@" in key:
        return "retrieval_chance_" + key.rsplit("_", 1)[1]
    return None


def _plot(runs: list[dict[str, Any]], kind: str, key: str, label: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.2), dpi=100)
    drawn = False
    for i, run in enumerate(runs):
        pts = [(_x(r), r[key]) for r in run["rows"][kind] if isinstance(r.get(key), (int, float))]
        if pts:
            xs, ys = zip(*sorted(pts))
            line, marker = _STYLES[i % len(_STYLES)]  # runs whose curves coincide stay told apart
            many = len(pts) > 40
            ax.plot(xs, ys, linestyle=line, marker=marker, markersize=3, markevery=max(1, len(pts) // 12) if many
                    else 1, label=run["name"], alpha=0.85)
            drawn = True
            chance = _chance_key(key)
            cpts = sorted((_x(r), r[chance]) for r in run["rows"][kind] if isinstance(r.get(chance), (int, float)))
            if cpts:  # what a model that learned nothing scores, beside the figure
                ax.plot(*zip(*cpts), color="grey", linestyle=":", linewidth=1,
                        label=f"chance ({run['name']})" if len(runs) > 1 else "chance")
    if drawn:
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if len(runs) > 1 or _chance_key(key):
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
    plt.close(fig)
    return drawn


def _differences(runs: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    flats = [_flat(r["config"]) for r in runs]
    keys = sorted(set().union(*flats)) if flats else []
    return [(k, [f.get(k, "-") for f in flats]) for k in keys if len({json.dumps(f.get(k), default=str) for f in flats}) > 1]


def _total_steps(run: dict[str, Any]) -> int | None:
    """The steps the run will take: ``optim.epochs`` x steps per epoch (from its rows), capped by ``run.max_steps``."""
    train, cfg = run["rows"]["train"], run["config"]
    last = train[-1] if train else None
    epochs = (cfg.get("optim") or {}).get("epochs")
    if not last or not last.get("epochs") or not epochs:
        return None
    total = round(epochs * last["step"] / last["epochs"])
    cap = (cfg.get("run") or {}).get("max_steps")
    return min(total, cap) if cap else total


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _status(run: dict[str, Any], now: float | None = None) -> str:
    """finished / diverged / interrupted (from the summary); running, with the step against the total and an ETA; or
    stopped, when no step has been logged for several of its usual intervals (a run killed with SIGKILL writes
    nothing more)."""
    s, train = run["summary"], run["rows"]["train"]
    if s is not None:
        if s.get("diverged"):
            return f"diverged at step {s['steps']}"
        return f"interrupted at step {s['steps']} (resumes)" if s.get("interrupted") else f"finished: {s['steps']} steps"
    if not train:
        return "started, no step logged yet"
    now = time.time() if now is None else now
    last = train[-1]
    ago = now - float(last.get("time", now))
    times = [float(r["time"]) for r in train[-20:] if "time" in r]
    gaps = sorted(b - a for a, b in zip(times, times[1:]) if b > a)
    usual = gaps[len(gaps) // 2] if gaps else None
    total = _total_steps(run)
    of = f"/{total}" if total else ""
    if usual is not None and ago > max(5 * usual, 120.0):
        return f"stopped? step {last['step']}{of}, nothing logged for {_duration(ago)} (usually every {usual:.0f} s)"
    eta = ""
    steps = [int(r["step"]) for r in train[-20:] if "time" in r]
    if total and len(times) > 1 and times[-1] > times[0] and steps[-1] > steps[0]:
        rate = (steps[-1] - steps[0]) / (times[-1] - times[0])
        eta = f", ETA {_duration(max(0, total - last['step']) / rate)}"
    return f"running: step {last['step']}{of}{eta}, last logged {ago:.0f} s ago"


def eval_share(run: dict[str, Any]) -> float | None:
    """The share of the run's wall time spent evaluating, over its last process (a resumed run's clock restarts).
    A training row's ``seconds`` counts from the first step and includes the evaluations that ran between rows;
    the one before the first step and those at or after the last training row are added to it."""
    train, evals = run["rows"]["train"], run["rows"]["eval"]
    if not train or not evals:
        return None
    start = max((i for i in range(1, len(train)) if float(train[i]["seconds"]) < float(train[i - 1]["seconds"])),
                default=0)
    resumed_at = int(train[start - 1]["step"]) if start else -1
    last = train[-1]
    ours = [r for r in evals if int(r["step"]) > resumed_at]  # the previous process ran those before it stopped
    outside = sum(float(r.get("seconds", 0)) for r in ours if int(r["step"]) in (0, int(last["step"]))
                  or int(r["step"]) > int(last["step"]))
    spent = sum(float(r.get("seconds", 0)) for r in ours)
    total = float(last.get("seconds", 0)) + outside
    return spent / total if spent and total > 0 else None


def run_names(folders: list[Path]) -> list[str]:
    """Each run's name on the page: its folder's name, with as many parent folders as it takes to tell apart runs
    whose folders share a name (``seed0/run``, ``seed1/run``)."""
    parts = [Path(f).resolve().parts for f in folders]
    depth = [1] * len(parts)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        clash = [i for i, n in enumerate(names) if names.count(n) > 1 and depth[i] < len(parts[i])]
        if not clash:
            return names
        for i in clash:
            depth[i] += 1


def _inside(folder: Path, name: Any) -> Path | None:
    """The file a row names, where it is a PNG inside the run's folder (a row naming a file elsewhere, by an absolute
    path or ``..``, is not copied onto the page)."""
    if not isinstance(name, str) or not name:
        return None
    root = folder.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or path.suffix.lower() != ".png" or not path.is_file():
        return None
    return path


def write_report(runs: list[str | Path], output_dir: str | Path, refresh: int | None = None) -> Path:
    """``OUTPUT/index.html`` and its PNGs for the run folders ``runs``; returns the page's path."""
    out = Path(output_dir)
    (out / "maps").mkdir(parents=True, exist_ok=True)
    loaded = [load_run(r) for r in runs]
    for run, name in zip(loaded, run_names([r["folder"] for r in loaded])):
        run["name"] = name
    e = html.escape
    plots = []
    for key, label in _TRAIN_CURVES:
        if _plot(loaded, "train", key, label, out / f"train_{key}.png"):
            plots.append(f"train_{key}.png")
    figures = sorted({k for r in loaded for row in r["rows"]["eval"] for k, v in row.items()
                      if isinstance(v, (int, float)) and k not in _SKIP and not k.endswith("_seconds")
                      and "_chance_" not in k})
    for key in figures:
        name = "eval_" + "".join(ch if ch.isalnum() else "_" for ch in key) + ".png"
        if _plot(loaded, "eval", key, f"held out: {_NAMES.get(key, key.replace('_', ' '))}", out / name):
            plots.append(name)
    rows_html = []
    for run in loaded:
        share = eval_share(run)
        evals = run["rows"]["eval"]
        last = evals[-1] if evals else {}
        best = (run["summary"] or {}).get("best")
        best_text = f"{best['figure']} {best['value']:.3f} (epoch {best['epoch']})" if best else ""
        share_text = "" if share is None else f"{100 * share:.1f}%"
        last_text = ", ".join(f"{k} {v:.3f}" + (f" (chance {last[_chance_key(k)]:.3f})" if _chance_key(k) in last
                                                  else "") for k, v in last.items() if k in figures)
        if last.get("retrieval_note"):
            last_text += f"; {last['retrieval_note']}"
        rows_html.append(f"<tr><td>{e(run['name'])}</td><td>{e(_status(run))}</td><td>{len(evals)}</td>"
                         f"<td>{share_text}</td><td>{e(last_text)}</td><td>{e(best_text)}</td></tr>")
    diffs = _differences(loaded) if len(loaded) > 1 else []
    diff_html = "".join(f"<tr><td>{e(k)}</td>" + "".join(f"<td>{e(str(v))}</td>" for v in vals) + "</tr>"
                        for k, vals in diffs)
    events = [f"<li>{e(run['name'])}: step {e(str(ev.get('step')))} (epoch {e(str(ev.get('epoch')))}): "
              f"{e(str(ev.get('event')))}"
              + (f" ({ev['value']:.4g})" if isinstance(ev.get("value"), (int, float)) else "")
              + f", {e(str(ev.get('action')))}</li>" for run in loaded for ev in run["rows"]["event"]]
    maps = []
    for i, run in enumerate(loaded):
        shown = []
        for row in run["rows"]["eval"]:
            src = _inside(run["folder"], row.get("maps"))
            if src is not None:
                dst = out / "maps" / f"run{i}_{src.name}"
                shutil.copyfile(src, dst)
                shown.append(f'<figure><img src="maps/{e(quote(dst.name))}" alt="maps at epoch {e(str(row.get("epoch")))}">'
                              f"<figcaption>epoch {e(str(row.get('epoch')))}</figcaption></figure>")
        if shown:
            maps.append(f"<h3>{e(run['name'])}: held-out clips (top) and maps (bottom) at each evaluation</h3>"
                        f"<div class=maps>{''.join(shown)}</div>")
    page = _PAGE.format(
        refresh=f'<meta http-equiv="refresh" content="{refresh}">' if refresh else "",
        when=time.strftime("%Y-%m-%d %H:%M:%S"), runs="".join(rows_html),
        plots="".join(f'<img src="{quote(p)}" alt="{e(p)}">' for p in plots) or "<p>No logged step yet.</p>",
        diffs=("<h2>Config differences</h2><table><tr><th>key</th>"
               + "".join(f"<th>{e(r['name'])}</th>" for r in loaded) + f"</tr>{diff_html}</table>") if diffs else "",
        events=f"<h2>Events</h2><ul>{''.join(events)}</ul>" if events else "", maps="".join(maps))
    path = out / "index.html"
    with atomic_write(path) as f:  # a browser reloading the page never reads half of it
        f.write(page)
    return path


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">{refresh}<title>avssl report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; font-size: 0.9em; text-align: left; }}
.plots img {{ margin: 0.3em; border: 1px solid #ddd; background: white; }}
.maps {{ display: flex; flex-wrap: wrap; gap: 0.5em; }}
figure {{ margin: 0; }} figcaption {{ font-size: 0.8em; color: #555; }}
</style></head><body>
<h1>How the runs learn</h1>
<p>Written {when}; a run still going is shown as far as it has come.</p>
<table><tr><th>run</th><th>status</th><th>evaluations</th><th>time evaluating</th><th>last evaluation</th>
<th>best.pt</th></tr>{runs}</table>
<h2>Curves</h2><div class=plots>{plots}</div>
{diffs}{events}{maps}
</body></html>
"""
