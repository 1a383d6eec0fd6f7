#!/usr/bin/env python
"""Pretraining throughput (clips/s), with the model's compute-only speed measured in the same run.

  compute-only  model + loss + optimizer step + memory update on random tensors of the clip's shape
                (--variants: fp32 / bf16 autocast, channels-last on / off, torch.compile on / off;
                --reference: torchvision's r2plus1d_18 forward + backward on the same video input)
  end-to-end    `avssl pretrain` from files: decoding, transforms, log-mel, DataLoader workers, with the
                per-pixel and spectrogram work in the workers ("worker") or on the batch's device ("device")
  2 processes   the same through torchrun (gloo on CPU), clips/s summed over processes

end-to-end / compute-only says whether the loader keeps the model fed (1.0 = fully fed); with --compile the
end-to-end runs use run.compile and the ratio is against compiled compute-only. Steady-state rates skip the
first `--warmup` steps (worker start-up, cuDNN autotuning, compilation). On CUDA the GPU's busy time during
the end-to-end run is sampled through NVML (torch.cuda.utilization: the share of time in which a kernel was
running). Each end-to-end run logs every `--log-every` steps with run.time_phases, and the breakdown per
steady-state step is printed: the host waiting for data, copying and preprocessing (on CUDA: the side stream's
time, which overlaps the step), computing (on CUDA: the device's time), logging and guarding, and the wall time.
`--from files,cache` runs each source both from its files and from the decode-once cache.

Usage:
  python tools/bench_train.py                                  # small CPU config, synthetic media, 1 and 2 processes
  python tools/bench_train.py --config configs/pretrain/avid_r2plus1d18_kinetics.yaml --device cuda --nproc 1 \\
      --compile --workers 14                                   # compiled step end-to-end, from files and the cache
  python tools/bench_train.py --config configs/pretrain/avid_r2plus1d18tv_8x112_200e_kinetics.yaml --device cuda \\
      --workers 16 --nproc 1 --variants --reference --make-720p 16   # a GPU machine: 720p sources + re-encoded
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch

from avssl.config import CONFIG_DIR, load_config
from avssl.data.audio import Spectrogram
from avssl.data.cache import ClipCache, default_cache_dir
from avssl.data.collection import build_manifest, read_manifest, write_jsonl
from avssl.data.reencode import ReencodeConfig, reencode_many
from avssl.data.synthetic import SynthSpec, synthesize
from avssl.train.configs import PretrainConfig
from avssl.train.engine import setup, to_channels_last, train_step
from avssl.train.pretrain import PretrainJob, pretrain

TOOLS = Path(__file__).resolve().parent


def _inputs(cfg: PretrainConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    c, b = cfg.data.clip, cfg.optim.batch_size
    t = max(1, round(c.video_duration * c.fps))
    n_frames = Spectrogram(cfg.data.spectrogram).num_frames(round(c.audio_duration * c.sample_rate))
    g = torch.Generator().manual_seed(0)
    video = torch.randn(b, 3, t, c.crop, c.crop, generator=g).to(device)
    audio = torch.randn(b, 1, Spectrogram(cfg.data.spectrogram).num_bins, n_frames, generator=g).to(device)
    return video, audio


def _timed(step, device: torch.device, steps: int, warmup: int, batch: int) -> float:
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def compute_only(cfg: PretrainConfig, device: torch.device, steps: int, warmup: int, amp: bool,
                 channels_last: bool, compile_: bool) -> float:
    """The step `avssl pretrain` runs (its job: model, loss, optimizer, memory update; engine.train_step) on
    random tensors of the clip's shape, without data loading."""
    b = cfg.optim.batch_size
    cfg = replace(cfg, run=replace(cfg.run, amp=amp, channels_last=channels_last))
    video, audio = _inputs(cfg, device)
    torch.manual_seed(0)
    rt = setup(cfg.run)
    job = PretrainJob(cfg, rt, max(4096, b * 4), steps_per_epoch=10**9)
    if device.type == "cuda" and channels_last:
        to_channels_last(job.model)
        video = video.contiguous(memory_format=torch.channels_last_3d)
        audio = audio.contiguous(memory_format=torch.channels_last)
    model = torch.compile(job.model) if compile_ else job.model
    job.model.train()
    scaler, counter = rt.grad_scaler(), iter(range(10**9))

    def step() -> None:
        i = next(counter)
        batch = {"index": torch.randint(0, job.num_videos, (b,), generator=torch.Generator().manual_seed(i))}
        train_step(job, model, video, audio, batch, i, scaler)

    return _timed(step, device, steps, warmup + (5 if compile_ else 0), b)


def torchvision_reference(cfg: PretrainConfig, device: torch.device, steps: int, warmup: int, amp: bool,
                          channels_last: bool) -> float:
    """torchvision's r2plus1d_18 (400-way classifier) forward + backward + SGD step on the same video."""
    from torchvision.models.video import r2plus1d_18

    b = cfg.optim.batch_size
    video, _ = _inputs(cfg, device)
    model = r2plus1d_18(weights=None).to(device).train()
    if device.type == "cuda" and channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        video = video.contiguous(memory_format=torch.channels_last_3d)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    labels = torch.randint(0, 400, (b,), device=device)
    use_amp = amp and device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = torch.nn.functional.cross_entropy(model(video).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _timed(step, device, steps, warmup, b)


class GPUBusy:
    """Samples torch.cuda.utilization() (NVML) every 50 ms in a thread: (time, percent) pairs."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), torch.cuda.utilization()))
            except Exception:  # no NVML: nothing to report
                return
            time.sleep(0.05)

    def __enter__(self) -> GPUBusy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def mean(self, t0: float, t1: float) -> float | None:
        inside = [u for t, u in self.samples if t0 <= t <= t1]
        return sum(inside) / len(inside) if inside else None


PHASES = (("time_data_ms", "waiting for data"), ("time_prepare_ms", "copy + preprocess"),
          ("time_compute_ms", "compute"), ("time_log_ms", "log + guard"), ("time_step_ms", "wall"))


def steady(run_dir: Path, warmup: int) -> tuple[float, float, float, dict[str, float]]:
    """(clips/s, wall time of the first and last steady-state rows, the phases per step) from metrics.jsonl: the rows
    after the first one at or past ``warmup`` (their intervals lie wholly past it)."""
    rows = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]
    first = next(r for r in rows if r["step"] >= warmup)
    later = [r for r in rows if r["step"] > first["step"]]
    last = rows[-1]
    steps = sum(r["step"] - p["step"] for p, r in zip([first] + later, later))
    phases = {k: sum(r.get(k, 0.0) * (r["step"] - p["step"]) for p, r in zip([first] + later, later)) / max(steps, 1)
              for k, _ in PHASES}
    return (last["clips"] - first["clips"]) / (last["seconds"] - first["seconds"]), first["time"], last["time"], phases


def print_phases(phases: dict[str, float]) -> None:
    print("                per step: " + ", ".join(f"{name} {phases[k]:.1f} ms" for k, name in PHASES), flush=True)


def make_720p_sets(out: Path, count: int, reencodings: list[str]) -> list[Path]:
    """``count`` textured 720p H.264 files (3 s keyframes, AAC 44.1 kHz stereo), and the same re-encoded
    with `avssl data reencode` for each "SHORT_SIDE:KEYFRAME_SECONDS" of ``reencodings``."""
    spec = importlib.util.spec_from_file_location("bench_decode", TOOLS / "bench_decode.py")  # the sibling tool
    bench_decode = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_decode)
    make_sample = bench_decode.make_sample

    src = out / "src_720p"
    src.mkdir(parents=True, exist_ok=True)
    paths = [str(src / f"v{i:03d}.mp4") for i in range(count)]
    todo = [(p, i) for i, p in enumerate(paths) if not Path(p).exists()]  # kept from an earlier run
    with ProcessPoolExecutor(min(count, os.cpu_count() or 1)) as ex:
        n = len(todo)
        list(ex.map(make_sample, [p for p, _ in todo], [15.0] * n, [30] * n, [3.0] * n, [i for _, i in todo]))
    sets = [src]
    for r in reencodings:
        side, gop = r.split(":")
        sets.append(out / f"reencoded_{side}_gop{gop}s")
        reencode_many(paths, sets[-1], cfg=ReencodeConfig(short_side=int(side), keyframe_interval=float(gop)),
                      workers=os.cpu_count() or 1, progress=False)
    return sets


def warm_cache(cfg: PretrainConfig, manifest: Path) -> float | None:
    """With ``data.cache``, decode every video of the manifest into the cache the runs will use; seconds taken."""
    if not cfg.data.cache:
        return None
    cache = ClipCache(cfg.data.cache_dir or default_cache_dir(manifest), cfg.data.clip, cfg.data.missing_audio)
    t0 = time.perf_counter()
    for entry in {e["path"]: e for e in read_manifest(manifest)}.values():
        cache.entry(entry)
    return time.perf_counter() - t0


def manifest_for(folder: Path, out: Path, min_entries: int) -> Path:
    """A manifest of the folder's files, each listed as often as needed for one epoch of the run."""
    build_manifest(folder, out.with_suffix(".probe.jsonl"), progress=False)
    rows = read_manifest(out.with_suffix(".probe.jsonl"))
    reps = -(-min_entries // len(rows))
    write_jsonl(out, [r for _ in range(reps) for r in rows])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIG_DIR / "pretrain" / "avid_small_cpu.yaml"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--nproc", type=int, default=2, help="also run this many processes with torchrun (1: skip)")
    p.add_argument("--clips", type=int, default=96, help="synthetic clips to generate (when no --media)")
    p.add_argument("--media", action="append", default=[], help="a folder of videos for end-to-end (repeatable)")
    p.add_argument("--make-720p", type=int, default=0, metavar="N",
                   help="make N 720p H.264 files and their `avssl data reencode` copies, and use them as --media")
    p.add_argument("--reencode", action="append", default=None, metavar="SIDE:GOP",
                   help="with --make-720p: re-encodings to make, short side and keyframe interval (default 256:1)")
    p.add_argument("--preprocess", default=None, help="comma list of worker,device (default: the config's)")
    p.add_argument("--variants", action="store_true", help="compute-only: fp32/bf16, channels-last, torch.compile")
    p.add_argument("--compile", action="store_true", help="compute-only eager and compiled, end-to-end with "
                   "run.compile=true (ratios against compiled compute-only)")
    p.add_argument("--from", dest="sources", default=None,
                   help="comma list of files,cache: end-to-end from the files, from the decode-once cache, or both "
                        "(default: as the config says)")
    p.add_argument("--log-every", type=int, default=10, help="end-to-end runs log (read the device) every N steps")
    p.add_argument("--reference", action="store_true", help="compute-only: torchvision r2plus1d_18 as well")
    p.add_argument("--skip-end-to-end", action="store_true")
    p.add_argument("--skip-source", action="store_true", help="with --make-720p: time only the re-encoded copies")
    p.add_argument("--work-dir", default=None, help="where media and runs go (default: a new temporary folder); "
                   "media made there by an earlier run are reused")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args()

    over = ["run.progress=false", f"run.log_every={args.log_every}", f"run.device={args.device}",
            "run.time_phases=true"]
    if args.batch_size:
        over.append(f"optim.batch_size={args.batch_size}")
    if args.workers is not None:
        over.append(f"data.num_workers={args.workers}")
    cfg = load_config(PretrainConfig, args.config, over)
    device = torch.device(args.device)
    tmp = (Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench_train_"))).resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    c, b = cfg.data.clip, cfg.optim.batch_size
    results: dict = {"config": args.config, "batch_size": b, "workers": cfg.data.num_workers, "device": str(device),
                     "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                     "cpus": os.cpu_count(), "torch": torch.__version__, "compute_only": {}, "end_to_end": {}}
    print(f"config {args.config}: batch {b}, {cfg.data.num_workers} loader workers, "
          f"{round(c.video_duration * c.fps)}x{c.crop}x{c.crop} video, {c.audio_duration} s audio, device {device} "
          f"({results['gpu'] or 'CPU'}), {os.cpu_count()} CPUs, torch {torch.__version__}", flush=True)

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    cuda = device.type == "cuda"
    own = (cfg.run.amp and cuda, cfg.run.channels_last and cuda, False)  # what `avssl pretrain` runs
    combos = [own]
    if args.compile:
        combos = [own, (own[0], own[1], True)]
    if args.variants and cuda:
        combos = [(False, False, False), (False, True, False), (True, False, False), (True, True, False),
                  (True, False, True), (True, True, True)]

    def label(amp: bool, cl: bool, comp: bool) -> str:
        return f"{'bf16' if amp else 'fp32'} channels-last {'on' if cl else 'off'} compile {'on' if comp else 'off'}"

    for amp, cl, comp in combos:
        name = label(amp, cl, comp)
        rate = compute_only(cfg, device, args.steps, args.warmup, amp, cl, comp)
        results["compute_only"][name] = rate
        print(f"  compute-only  {name:38s} {rate:8.1f} clips/s", flush=True)
        if args.reference and not comp:  # the reference runs eagerly
            ref = torchvision_reference(cfg, device, args.steps, args.warmup, amp, cl)
            results["compute_only"][f"torchvision r2plus1d_18 {name}"] = ref
            print(f"  reference     torchvision r2plus1d_18, same input   {ref:8.1f} clips/s "
                  f"(avssl model+loss / reference = {rate / ref:.2f})", flush=True)
    base = results["compute_only"][label(own[0], own[1], args.compile)]
    results["baseline"] = base
    print(f"  baseline      compute-only, {label(own[0], own[1], args.compile)}", flush=True)
    if args.skip_end_to_end:
        _write(args.json, results)
        return 0

    media = [Path(m) for m in args.media]
    if args.make_720p:
        made = make_720p_sets(tmp / "media720", args.make_720p, args.reencode or ["256:1"])
        media += made[1:] if args.skip_source else made
    if args.compile:
        over.append("run.compile=true")
    min_entries = (args.steps + args.warmup + 1) * b * max(1, args.nproc)  # the whole run inside one epoch
    if not media:
        synthesize(tmp / "synth", args.clips, seed=0, workers=2,
                   spec=SynthSpec(width=max(128, c.size), height=max(128, c.size), fps=25, duration=4.0,
                              sample_rate=c.sample_rate))
        media = [tmp / "synth"]
    modes = args.preprocess.split(",") if args.preprocess else [cfg.data.preprocess]
    sources = args.sources.split(",") if args.sources else ["cache" if cfg.data.cache else "files"]
    for folder in media:
        manifest = manifest_for(folder, tmp / f"{folder.name}.jsonl", min_entries)
        for source in sources:
            cache = [f"data.cache={'true' if source == 'cache' else 'false'}"]
            if source == "cache":
                built = warm_cache(load_config(PretrainConfig, args.config, over + cache), manifest)
                results["end_to_end"][f"{folder.name} cache build"] = {"seconds": built}
                print(f"  cache         {folder.name}: built in {built:.1f} s (not in the rates below)", flush=True)
            for mode in modes:
                run_over = over + cache + [f"data.manifest={manifest}", "optim.epochs=1000",
                                           f"run.max_steps={args.steps + args.warmup}", f"data.preprocess={mode}"]
                run_cfg = load_config(PretrainConfig, args.config, run_over)
                run_dir = Path(tempfile.mkdtemp(prefix=f"run_{folder.name}_{source}_{mode}_", dir=tmp))
                if device.type == "cuda":
                    with GPUBusy() as busy:
                        pretrain(run_cfg, run_dir)
                else:
                    busy = None
                    pretrain(run_cfg, run_dir)
                rate, t0, t1, phases = steady(run_dir, args.warmup)
                util = busy.mean(t0, t1) if busy else None
                key = f"{folder.name} from {source} preprocess={mode}"
                results["end_to_end"][key] = {"clips_per_s": rate, "ratio": rate / base, "gpu_busy_percent": util,
                                              "per_step_ms": phases}
                print(f"  end-to-end    {key:38s} {rate:8.1f} clips/s   ({rate / base:.2f}x compute-only"
                      + (f", GPU busy {util:.0f}%" if util is not None else "") + ")", flush=True)
                print_phases(phases)
        if args.nproc > 1:
            multi_dir = Path(tempfile.mkdtemp(prefix=f"run{args.nproc}_{folder.name}_", dir=tmp))
            env = dict(os.environ, OMP_NUM_THREADS=str(max(1, torch.get_num_threads() // args.nproc)))
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.nproc}",
                   "--master_port=29533", "-m", "avssl", "pretrain", "--config", str(Path(args.config).resolve()),
                   "--output-dir", str(multi_dir)]
            for o in over + [f"data.manifest={manifest}", "optim.epochs=1000", f"run.max_steps={args.steps + args.warmup}",
                             f"data.cache={'true' if sources[0] == 'cache' else 'false'}"]:
                cmd += ["--set", o]
            subprocess.run(cmd, check=True, env=env, cwd=tmp, stdout=subprocess.DEVNULL)
            multi, _, _, _ = steady(multi_dir, args.warmup)
            one = results["end_to_end"][f"{folder.name} from {sources[0]} preprocess={modes[0]}"]["clips_per_s"]
            results["end_to_end"][f"{folder.name} {args.nproc} processes"] = {"clips_per_s": multi}
            print(f"  end-to-end    {folder.name}, {args.nproc} processes{'':18s} {multi:8.1f} clips/s   "
                  f"({multi / one:.2f}x 1 process)", flush=True)
    _write(args.json, results)
    return 0


def _write(path: str | None, results: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
