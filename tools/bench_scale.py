#!/usr/bin/env python
"""What a collection costs as it grows, measured with stand-ins: manifests of millions of entries and long videos.

  manifest  for each size: a stand-in manifest (entries as `avssl data manifest` writes them, realistic paths),
            then, each in a fresh process: load time and parent RSS of avssl's entries (first load: the JSONL
            parsed and its table written beside it; later loads: the table mapped) against a plain list of dicts
            (read_manifest) in the same run; the private memory of 2 forked DataLoader workers after each has
            read every entry; the memory bank of the small and the paper config; with --pretrain, `avssl
            pretrain` with avid_small_cpu.yaml to its third step (wall time, peak memory of the process tree).
  cache     for each length: a 720p H.264/AAC stand-in film (moving pattern, tone), then the decode-once cache
            built from it (peak RSS, seconds) against one plain PyAV decoding pass over the same file (peak RSS,
            seconds), each in a fresh process.
  films     `avssl pretrain` with avid_small_cpu.yaml on a folder of the stand-in films (data.root), cache auto
            and true: peak memory of the process tree (parent + loader workers), time to the last step.
  localize  `avssl localize` at its default settings on each stand-in film (a localize_small_cpu.yaml checkpoint
            trained for a step: what is measured is the work, not the maps' quality): peak memory, seconds, and
            what it writes on disk, file by file.

Private memory is Private_Clean + Private_Dirty of /proc/PID/smaps_rollup (pages no other process shares); RSS
counts shared pages in every process that maps them; a process tree's memory is the sum of its processes' PSS
(shared pages divided between the processes that map them), its peak the largest sum seen by sampling every
0.1 s.

Usage:
  python tools/bench_scale.py manifest --sizes 10000 100000 1000000 2000000 --pretrain
  python tools/bench_scale.py cache --minutes 1 10 30
  python tools/bench_scale.py films --minutes 1 10 30                      # batch 3, a clip per film and epoch
  python tools/bench_scale.py films --minutes 1 10 30 --batch-size 32 --clips-per-video 32
  python tools/bench_scale.py localize --minutes 1 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import random
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from avssl.config import CONFIG_DIR

SMALL = CONFIG_DIR / "pretrain" / "avid_small_cpu.yaml"
PAPER = CONFIG_DIR / "pretrain" / "avid_r2plus1d18_kinetics.yaml"
_ID = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


# ------------------------------------------------------------------------------------------------ memory

def _smaps(pid: int | str = "self") -> dict[str, int]:
    """MB of Rss, Pss and private pages of a process."""
    out = {}
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            k, _, v = line.partition(":")
            if k in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                out[k] = int(v.split()[0]) / 1024
    except OSError:
        return {}
    out["Private"] = out.pop("Private_Clean", 0) + out.pop("Private_Dirty", 0)
    return out


def _tree(pid: int) -> list[int]:
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [q for k in kids for q in _tree(int(k))]


def _run_sampled(cmd: list[str], until: callable | None = None, env: dict | None = None) -> dict:
    """Run ``cmd``; sample its process tree's RSS every 0.1 s; stop it when ``until()`` is true."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak_tree = peak_parent = 0.0
    reached = None
    while p.poll() is None:
        maps = [_smaps(q) for q in _tree(p.pid)]
        pss = sum(m.get("Pss", 0.0) for m in maps)  # shared pages split between the processes that map them
        peak_tree, peak_parent = max(peak_tree, pss), max(peak_parent, maps[0].get("Rss", 0.0) if maps else 0.0)
        if until is not None and reached is None and until():
            reached = time.perf_counter() - t0
            p.terminate()
            break
        time.sleep(0.1)
    out, err = p.communicate()
    return {"seconds": reached or time.perf_counter() - t0, "peak_tree_pss_mb": peak_tree,
            "peak_parent_rss_mb": peak_parent, "returncode": p.returncode, "stdout": out, "stderr": err[-2000:]}


def _child(args: list[str]) -> dict:
    """Run this tool's hidden sub-command in a fresh process; its last stdout line is JSON."""
    res = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- manifest

def write_standin_manifest(path: Path, n: int, media: list[str] | None = None, seed: int = 0) -> None:
    """``n`` entries as `avssl data manifest` writes them: AudioSet-like paths (or, with ``media``, paths of real
    files cycled through: the same bytes per entry, and a run can decode them), 10 s clips mostly."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            d = 10.0 if rng.random() < 0.9 else round(rng.uniform(2, 10), 3)
            name = "".join(rng.choices(_ID, k=11))
            p = media[i % len(media)] if media else f"/data/audioset/unbalanced/{i % 1000:03d}/{name}_{i:07d}.mp4"
            row = {"path": p, "format": "mov,mp4,m4a,3gp,3g2,mj2", "duration": d,
                   "size_bytes": rng.randint(10**5, 10**7),
                   "video": {"codec": "h264", "width": 640, "height": 360, "fps": 25.0, "start_time": 0.0,
                             "duration": d, "num_frames": int(d * 25), "rotation": 0},
                   "audio": {"codec": "aac", "sample_rate": 44100, "channels": 2, "layout": "stereo",
                             "start_time": 0.0, "duration": d},
                   "start_time": 0.0, "mtime": 1796300248.969 + i}
            f.write(json.dumps(row) + "\n")


def _load(manifest: str, kind: str) -> dict:
    """(in a fresh process) load the manifest and let 2 forked workers read every entry."""
    import torch  # noqa: F401  (what a training process has loaded anyway)
    from torch.utils.data import DataLoader, Dataset

    from avssl.data.collection import read_manifest
    from avssl.data.entries import load_entries

    base = _smaps()["Rss"]
    t0 = time.perf_counter()
    entries = load_entries(manifest) if kind == "entries" else read_manifest(manifest)
    seconds = time.perf_counter() - t0
    if kind == "entries":
        entries.durations  # what the dataset reads up front
    parent = _smaps()

    class Touch(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, w: int) -> str:
            before = _smaps()["Private"]
            t = time.perf_counter()
            total = 0.0
            for i in range(len(entries)):
                total += entries[i]["duration"]
            return json.dumps({"private_mb": _smaps()["Private"], "private_before_mb": before,
                               "seconds": time.perf_counter() - t, "check": total})

    workers = [json.loads(x) for x in DataLoader(Touch(), batch_size=None, num_workers=2,
                                                 multiprocessing_context="fork")]
    return {"load_s": seconds, "parent_rss_mb": parent["Rss"] - base, "parent_rss_total_mb": parent["Rss"],
            "worker_private_mb": max(w["private_mb"] for w in workers),
            "worker_touch_s": max(w["seconds"] for w in workers),
            "table_mb": entries.nbytes() / 1e6 if kind == "entries" else None}


def _bank(n: int) -> dict:
    from avssl.config import load_config
    from avssl.losses.cma import build_loss
    from avssl.train.configs import PretrainConfig

    out = {}
    for name, path in (("small", SMALL), ("paper", PAPER)):
        cfg = load_config(PretrainConfig, path)
        loss = build_loss(n, cfg.model.embed_dim, cfg.loss, seed=0)
        out[f"bank_{name}_mb"] = sum(b.numel() * b.element_size() for b in loss.buffers()) / 1e6
    return out


def bench_manifest(sizes: list[int], work: Path, pretrain: bool) -> list[dict]:
    media = _media_for_pretrain(work) if pretrain else None
    rows = []
    for n in sizes:
        m = work / f"standin_{n}.jsonl"
        write_standin_manifest(m, n, media)
        for stale in (m.with_name(m.stem + ".entries.arrow"),):
            stale.unlink(missing_ok=True)
        row = {"entries": n, "manifest_mb": m.stat().st_size / 1e6}
        first = _child(["_load", str(m), "entries"])
        again = _child(["_load", str(m), "entries"])
        plain = _child(["_load", str(m), "list"])
        row.update({"first_load_s": first["load_s"], "load_s": again["load_s"],
                    "parent_mb": again["parent_rss_mb"], "table_mb": again["table_mb"],
                    "worker_private_mb": again["worker_private_mb"], "worker_touch_s": again["worker_touch_s"],
                    "list_load_s": plain["load_s"], "list_parent_mb": plain["parent_rss_mb"],
                    "list_worker_private_mb": plain["worker_private_mb"], **_bank(n)})
        if pretrain:
            row.update(_pretrain_3_steps(m, work / f"run_{n}"))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _media_for_pretrain(work: Path) -> list[str]:
    from avssl.data.synthetic import SynthSpec, synthesize

    folder = work / "audioset" / "unbalanced" / "000"
    if not folder.exists():
        synthesize(folder, 16, seed=0, spec=SynthSpec(width=96, height=64, fps=16, duration=10.0))
    return [str(p) for p in sorted(folder.glob("*.mp4"))]


def _pretrain_3_steps(manifest: Path, out: Path) -> dict:
    metrics = out / "metrics.jsonl"

    def third_step() -> bool:
        return metrics.exists() and metrics.read_text().count("\n") >= 3

    res = _run_sampled([sys.executable, "-m", "avssl", "pretrain", "--config", str(SMALL), "--output-dir", str(out),
                        "--set", f"data.manifest={manifest}", "--set", "run.log_every=1", "--set",
                        "run.progress=false", "--set", "run.device=cpu"], until=third_step)
    if not third_step():
        raise RuntimeError(res["stderr"])
    return {"pretrain_3_steps_s": res["seconds"], "pretrain_peak_tree_pss_mb": res["peak_tree_pss_mb"],
            "pretrain_peak_parent_mb": res["peak_parent_rss_mb"]}


# ------------------------------------------------------------------------------------------------- films

def write_film(path: Path, minutes: float, width: int = 1280, height: int = 720, fps: int = 25) -> None:
    """A stand-in film: a pattern moving every frame (H.264, x264 ultrafast) and a 440 Hz tone (AAC 48 kHz
    stereo), interleaved, written one frame at a time."""
    import av

    n = int(minutes * 60 * fps)
    yy, xx = np.mgrid[0:height, 0:width]
    base = ((xx // 40 + yy // 40) % 2 * 120 + 60).astype(np.uint8)
    sr = 48000
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "28"}
        aus = c.add_stream("aac", rate=sr, layout="stereo")
        frame_size = aus.codec_context.frame_size or 1024
        written = 0
        for i in range(n):
            img = np.roll(base, 4 * i, axis=1)
            rgb = np.stack([img, np.roll(img, 7 * i, axis=0), 255 - img], axis=-1)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            c.mux(vs.encode(frame))
            while written < (i + 1) * sr // fps:
                t = (written + np.arange(frame_size)) / sr
                tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                a = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
                a.sample_rate, a.pts, a.time_base = sr, written, Fraction(1, sr)
                c.mux(aus.encode(a))
                written += frame_size
        c.mux(vs.encode(None))
        c.mux(aus.encode(None))


def _films(work: Path, minutes: list[float]) -> list[Path]:
    folder = work / "films"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for m in minutes:
        p = folder / f"film_{m:g}min.mp4"
        if not p.exists():
            t0 = time.perf_counter()
            write_film(p.with_suffix(".tmp.mp4"), m)
            p.with_suffix(".tmp.mp4").rename(p)
            print(f"wrote {p} ({p.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        paths.append(p)
    return paths


def _build_cache(path: str, folder: str) -> dict:
    """(in a fresh process) the decode-once cache of one film with avid_small_cpu.yaml's clip spec."""
    from avssl.config import load_config
    from avssl.data.cache import ClipCache
    from avssl.data.decode import probe
    from avssl.train.configs import PretrainConfig

    cfg = load_config(PretrainConfig, SMALL)
    info = probe(path)
    t0 = time.perf_counter()
    stored = ClipCache(folder, cfg.data.clip).entry({"path": path, "duration": info.duration})
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / 1024, "rows": stored.rows, "cache_mb": sum(p.stat().st_size for p in Path(folder).glob("*.npy")) / 1e6}


def _decode_pass(path: str) -> dict:
    """(in a fresh process that has loaded what the cache's has) one PyAV pass over every video and audio frame,
    nothing kept: the decoder's floor."""
    import av

    import avssl.data.cache  # noqa: F401  (torch and torchaudio, as in the build's process)

    t0 = time.perf_counter()
    with av.open(path) as c:
        for _ in c.decode(c.streams.video[0], c.streams.audio[0]):
            pass
    return {"seconds": time.perf_counter() - t0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_cache(minutes: list[float], work: Path) -> list[dict]:
    rows = []
    for m, film in zip(minutes, _films(work, minutes)):
        with tempfile.TemporaryDirectory(dir=work) as folder:
            build = _child(["_build_cache", str(film), folder])
        plain = _child(["_decode_pass", str(film)])
        row = {"minutes": m, "file_mb": film.stat().st_size / 1e6, "cache_build_s": build["seconds"],
               "cache_build_peak_mb": build["peak_rss_mb"], "cache_mb": build["cache_mb"],
               "decode_pass_s": plain["seconds"], "decode_pass_peak_mb": plain["peak_rss_mb"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_films(minutes: list[float], work: Path, steps: int, batch: int, clips_per_video: int) -> list[dict]:
    films = _films(work, minutes)
    folder = work / "films"
    rows = []
    for cache in ("auto", "true"):
        out = work / f"films_run_{cache}"
        subprocess.run(["rm", "-rf", str(out), str(folder.with_suffix("")) + ".cache"], check=True)
        res = _run_sampled([sys.executable, "-m", "avssl", "pretrain", "--config", str(SMALL), "--output-dir",
                            str(out), "--set", f"data.root={folder}", "--set", f"data.cache={cache}",
                            "--set", f"data.cache_dir={out / 'cache'}", "--set",
                            f"data.clips_per_video={clips_per_video}", "--set", f"optim.batch_size={batch}",
                            "--set", f"run.max_steps={steps}", "--set", "run.progress=false",
                            "--set", "run.device=cpu"])
        if res["returncode"] != 0:
            raise RuntimeError(res["stderr"])
        said = [x for x in res["stdout"].splitlines() if x.startswith("cache:")]
        row = {"films_minutes": [m for m in minutes], "cache": cache, "steps": steps, "batch": batch,
               "clips_per_video": clips_per_video, "seconds": res["seconds"],
               "peak_tree_pss_mb": res["peak_tree_pss_mb"], "peak_parent_rss_mb": res["peak_parent_rss_mb"],
               "cache_line": said[0] if said else None, "films": [str(f) for f in films]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _quick_checkpoint(work: Path) -> Path:
    """A localize_small_cpu.yaml checkpoint after one step on a few synthetic clips."""
    from avssl.config import load_config
    from avssl.data.collection import build_manifest
    from avssl.data.synthetic import SynthSpec, synthesize
    from avssl.train.configs import PretrainConfig
    from avssl.train.pretrain import pretrain

    ckpt = work / "quick_localize" / "last.pt"
    if not ckpt.exists():
        synthesize(work / "quick_media", 8, seed=0, spec=SynthSpec(width=128, height=96, fps=8, duration=2.0))
        build_manifest(work / "quick_media", work / "quick.jsonl", progress=False)
        cfg = load_config(PretrainConfig, CONFIG_DIR / "pretrain" / "localize_small_cpu.yaml", [
            f"data.manifest={work / 'quick.jsonl'}", "optim.batch_size=4", "run.max_steps=1", "run.progress=false",
            "loss.num_negatives=4", "run.device=cpu", "eval.every=0"])
        pretrain(cfg, ckpt.parent)
    return ckpt


def bench_localize(minutes: list[float], work: Path) -> list[dict]:
    ckpt = _quick_checkpoint(work)
    base = _run_sampled([sys.executable, "-c", "import time, avssl.cli, avssl.localize.render; time.sleep(2)"])
    print(json.dumps({"baseline": "python importing avssl's localize modules", "peak_tree_pss_mb":
                      base["peak_tree_pss_mb"]}), flush=True)
    rows = []
    for m, film in zip(minutes, _films(work, minutes)):
        out = work / f"localize_{m:g}min"
        shutil.rmtree(out, ignore_errors=True)
        res = _run_sampled([sys.executable, "-m", "avssl", "localize", "--checkpoint", str(ckpt), "--video", str(film),
                            "--output-dir", str(out), "--quiet", "--device", "cpu"])
        files = {str(p.relative_to(out)): p.stat().st_size for p in out.rglob("*") if p.is_file()}
        row = {"film_minutes": m, "film_mb": film.stat().st_size / 1e6, "seconds": res["seconds"],
               "peak_tree_pss_mb": res["peak_tree_pss_mb"], "returncode": res["returncode"],
               "disk_mb": sum(files.values()) / 1e6, "largest": sorted(files.items(), key=lambda kv: -kv[1])[:4]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):  # a measurement in a fresh process
        fn = {"_load": _load, "_build_cache": _build_cache, "_decode_pass": _decode_pass}[sys.argv[1]]
        print(json.dumps(fn(*sys.argv[2:])))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["manifest", "cache", "films", "localize"])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 2_000_000])
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 30])
    p.add_argument("--pretrain", action="store_true", help="manifest: also `avssl pretrain` to its third step")
    p.add_argument("--steps", type=int, default=4, help="films: training steps")
    p.add_argument("--batch-size", type=int, default=3, help="films: optim.batch_size (a few films fill few batches)")
    p.add_argument("--clips-per-video", type=int, default=1, help="films: data.clips_per_video")
    p.add_argument("--work-dir", default=None, help="where stand-ins are written (default: a temporary folder)")
    args = p.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_scale_")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.what == "manifest":
        bench_manifest(args.sizes, work, args.pretrain)
    elif args.what == "cache":
        bench_cache(args.minutes, work)
    elif args.what == "localize":
        bench_localize(args.minutes, work)
    else:
        bench_films(args.minutes, work, args.steps, args.batch_size, args.clips_per_video)
    return 0


if __name__ == "__main__":
    sys.exit(main())
