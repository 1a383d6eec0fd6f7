"""The ``avssl`` command: ``avssl <group> <command> ...`` (also ``python -m avssl``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _data_probe(args: argparse.Namespace) -> int:
    from .data.decode import DecodeError, probe

    status = 0
    for f in args.files:
        try:
            print(json.dumps(probe(f, verify=args.verify).to_dict()))
        except DecodeError as e:
            print(json.dumps({"path": e.path, "error": e.reason}))
            status = 1
    return status


def _data_manifest(args: argparse.Namespace) -> int:
    from .data.collection import build_manifest

    res = build_manifest(
        args.source,
        args.output,
        workers=args.workers,
        require_audio=args.require_audio,
        min_duration=args.min_duration,
        verify=args.verify,
        progress=not args.quiet,
    )
    print(
        f"{res.manifest}: {res.total} usable files ({res.added} new, {res.kept} unchanged); "
        f"{len(res.rejected)} newly rejected, listed in {res.rejected_file}",
        file=sys.stderr,
    )
    for r in res.rejected[:20]:
        print(f"  rejected {r['path']}: {r['reason']}", file=sys.stderr)
    return 0


def _data_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import SynthSpec, synthesize

    if args.actions:
        from .data.synthetic_actions import ActionSpec, synthesize_actions

        spec_a = ActionSpec(width=args.width, height=args.height, fps=args.fps, duration=args.duration,
                            sample_rate=args.sample_rate)
        videos = synthesize_actions(args.output_dir, args.num_clips, args.seed, spec_a)
        print(f"wrote {args.num_clips} clips per class to {videos}, split lists in "
              f"{Path(args.output_dir) / 'ucfTrainTestlist'}", file=sys.stderr)
        return 0

    spec = SynthSpec(width=args.width, height=args.height, fps=args.fps, duration=args.duration,
                     sample_rate=args.sample_rate, num_distractors=args.distractors)
    paths = synthesize(args.output_dir, args.num_clips, args.seed, spec, workers=args.workers, progress=True)
    print(f"wrote {len(paths)} clips to {args.output_dir}", file=sys.stderr)
    return 0


def _data_compose(args: argparse.Namespace) -> int:
    from .data.compose import ComposeSpec, compose

    spec = ComposeSpec(width=args.width, height=args.height, fps=args.fps, duration=args.duration,
                       sample_rate=args.sample_rate, distractors=args.distractors)
    paths = compose(args.output_dir, args.num_clips, args.seed, args.stamps, args.backgrounds, spec,
                    kinds=args.kinds, progress=True)
    print(f"wrote {len(paths)} clips and {Path(args.output_dir) / 'vggss.json'}", file=sys.stderr)
    return 0


def _data_reencode(args: argparse.Namespace) -> int:
    from .data.collection import list_media
    from .data.reencode import ReencodeConfig, reencode_many

    sources, root = [], None
    for s in args.inputs:
        if Path(s).is_dir():
            sources += list_media(s)
            root = root or str(Path(s).resolve())
        else:
            sources.append(str(Path(s).resolve()))
    cfg = ReencodeConfig(short_side=args.short_side, keyframe_interval=args.keyframe_interval, crf=args.crf)
    failed = reencode_many(sources, args.output_dir, root if len(args.inputs) == 1 else None, cfg, args.workers)
    for src, reason in failed.items():
        print(f"failed {src}: {reason}", file=sys.stderr)
    return 1 if failed else 0


def _pretrain(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train.pretrain import PretrainConfig, pretrain

    cfg = load_config(PretrainConfig, args.config, args.set)
    summary = pretrain(cfg, args.output_dir)
    print(json.dumps(summary))
    return 0


def _evaluate_pretrained(args: argparse.Namespace) -> int:
    """`avssl evaluate retrieval|audio`: benchmarks of a pretraining checkpoint; one JSON object, printed
    last and written to the output folder."""
    import torch

    from .config import apply_overrides, from_dict, to_dict
    from .train.benchmarks import esc50_linear, retrieval_benchmark
    from .train.checkpoint import load_checkpoint
    from .train.pretrain import PretrainConfig, load_pretrained

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ck = load_checkpoint(args.checkpoint)
    cfg = from_dict(PretrainConfig, apply_overrides(ck["config"], args.set))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_pretrained(args.checkpoint, device)
    if args.command == "retrieval":
        result = retrieval_benchmark(model, cfg.data, args.data, out, args.clips, args.batch_size, device)
        name = "retrieval.json"
    else:
        if args.format != "esc50":
            raise SystemExit(f"avssl evaluate audio: unsupported format {args.format!r} (esc50)")
        result = esc50_linear(model, cfg.data, args.root, args.clip_duration, device)
        name = "audio.json"
    result = {"checkpoint": str(args.checkpoint), "config": to_dict(cfg.data.clip), **result}
    text = json.dumps(result)
    (out / name).write_text(json.dumps(result, indent=1))
    print(text)
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train.finetune import FinetuneConfig, finetune

    cfg = load_config(FinetuneConfig, args.config, args.set)
    print(json.dumps(finetune(cfg, args.output_dir)))
    return 0


def _evaluate_action(args: argparse.Namespace) -> int:
    """`avssl evaluate action`: the test split of a fine-tuning checkpoint's data (overridable with --set);
    with --folds, one checkpoint per official split, each on its own split, and the mean."""
    from . import distributed as dist
    from .config import apply_overrides, from_dict, to_dict
    from .train.engine import resolve_device
    from .train.finetune import FinetuneConfig, evaluate_action, labeled_entries, load_classifier

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _, local_rank, _ = dist.init_from_env("gloo" if args.device == "cpu" else None)
    device = resolve_device(args.device or "auto", local_rank)  # under torchrun: one GPU per process
    checkpoints = args.folds or [args.checkpoint]
    if not checkpoints or checkpoints == [None]:
        raise SystemExit("avssl evaluate action: give --checkpoint FT.pt, or --folds S1.pt S2.pt S3.pt")
    results = []
    for i, ckpt in enumerate(checkpoints):
        model, cfg, classes = load_classifier(ckpt, device)
        cfg = from_dict(FinetuneConfig, apply_overrides(to_dict(cfg), args.set))
        fold_out = out / f"split{cfg.data.split}" if args.folds else out
        fold_out.mkdir(parents=True, exist_ok=True)
        entries, test_classes, report = labeled_entries(cfg.data, "test", fold_out)
        if test_classes != classes:
            raise SystemExit(f"avssl evaluate action: {ckpt}: the test split's classes differ from the checkpoint's")
        r = evaluate_action(model, entries, cfg.data, classes, args.clips or cfg.data.test_clips, device, fold_out,
                            crops=args.crops, clip_clips=cfg.data.clip_test_clips)
        results.append({"checkpoint": str(ckpt), "split": cfg.data.split, **r, "data": report})
    if args.folds:
        splits = [r["split"] for r in results]
        if len(set(splits)) != len(splits):
            raise SystemExit(f"avssl evaluate action: --folds checkpoints must be of different splits, got {splits}")
        result = {"splits": splits, "folds": results}
        for key in ("top1", "top5", "clip_top1", "chance"):
            result[key] = sum(r[key] for r in results) / len(results)
    else:
        result = results[0]
    if dist.is_main():
        (out / "eval.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result))
    return 0


def _localizer(args: argparse.Namespace):
    """The model and data config of a pretraining checkpoint, wrapped for maps."""
    import torch

    from .config import apply_overrides, from_dict
    from .localize.heatmap import Localizer, MapConfig
    from .train.checkpoint import load_checkpoint
    from .train.pretrain import PretrainConfig, load_pretrained

    ck = load_checkpoint(args.checkpoint)
    cfg = from_dict(PretrainConfig, apply_overrides(ck["config"], args.set))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    maps = MapConfig(size=args.size, last_stride=args.last_stride, pad=args.pad,
                     fps=getattr(args, "fps", None) or 8.0, norm=args.norm, batch_size=args.batch_size)
    return Localizer(load_pretrained(args.checkpoint, device), cfg.data, maps, device)


def _video_list(source: str) -> list[str]:
    from .data.collection import list_media, read_manifest

    p = Path(source)
    if p.is_file() and p.suffix == ".jsonl":
        return [r["path"] for r in read_manifest(p)]
    if p.is_file() and p.suffix.lower() not in (".txt", ".lst", ".list"):
        return [str(p)]
    return list_media(p)


def _localize(args: argparse.Namespace) -> int:
    """`avssl localize`: maps, overlays, MP4s and an HTML page for a video, a folder or a manifest."""
    from .data.decode import DecodeError
    from .localize.render import write_index, write_video_outputs

    if args.fps <= 0:
        raise SystemExit("avssl localize: --fps must be positive")
    localizer = _localizer(args)
    out = Path(args.output_dir)
    videos, failed = {}, []
    paths = _video_list(args.video)
    for i, path in enumerate(paths, 1):
        stem = Path(path).stem
        while stem in videos:  # same name in two folders
            stem += "_"
        try:
            result = localizer(path, audio=args.audio, audio_offset=args.audio_offset, progress=not args.quiet)
        except DecodeError as e:
            failed.append({"path": e.path, "reason": e.reason})
            print(f"avssl localize: skipped {e.path}: {e.reason}", file=sys.stderr)
            continue
        videos[stem] = write_video_outputs(result, out / stem, args.fps, gif=args.gif)
        print(f"[{i}/{len(paths)}] {path} -> {out / stem}", file=sys.stderr)
    c = localizer.cfg
    about = (f"checkpoint {args.checkpoint}; frames given whole to the video encoder at short side "
             f"{localizer.size} (reflect-padded by {c.pad:g} of it), last stage stride {c.last_stride}; {c.fps:g} "
             f"maps per second; maps normalized by {c.norm}")
    index = write_index(out, videos, "avssl localize: where the sound comes from", about)
    summary = {"videos": len(videos), "failed": failed, "index": str(index), "output_dir": str(out)}
    print(json.dumps(summary))
    return 1 if failed and not videos else 0


def _evaluate_localization(args: argparse.Namespace) -> int:
    from .data.formats.localization import read_localization
    from .localize.evaluate import score_samples

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = read_localization(args.format, args.annotations, args.media)
    if not data.samples:
        raise SystemExit(f"avssl evaluate localization: no annotated sample has media: {data.summary()}")
    print(data.summary(), file=sys.stderr)
    localizer = _localizer(args)
    scores = score_samples(localizer, data, args.binarize, out / "per_sample.csv", progress=not args.quiet)
    first = scores[args.binarize[0]]
    c = localizer.cfg
    result = {
        **first["model"],
        "binarize": args.binarize[0],
        "centre": first["centre"],
        "oracle": first["oracle"],
        "by_binarization": {m: scores[m] for m in args.binarize},
        "norm": c.norm,
        "size": localizer.size,
        "last_stride": c.last_stride,
        "pad": c.pad,
        "missing_media": len(data.missing),
        "skipped": scores["skipped"],
        "checkpoint": str(args.checkpoint),
        "annotations": str(args.annotations),
    }
    (out / "localization.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


def _map_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--checkpoint", required=True, help="a pretraining checkpoint (last.pt)")
    q.add_argument("--size", type=int, default=None,
                   help="short side of the whole frame given to the encoder (default: twice the training crop)")
    q.add_argument("--last-stride", type=int, default=1, choices=[1, 2],
                   help="spatial stride of the last encoder stage (trained: 2; 1 gives twice finer maps)")
    q.add_argument("--pad", type=float, default=0.125,
                   help="reflect-pad frames by this fraction of the short side and crop the maps back (keeps the "
                        "encoder's border artifacts out of the picture); 0: off")
    q.add_argument("--norm", default="minmax", choices=["minmax", "fixed"],
                   help="minmax: per map; fixed: cosine clipped to [0, 1] (a sound matching nothing stays dark)")
    q.add_argument("--batch-size", type=int, default=16)
    q.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the checkpoint's config")


def _import_avid_cma(args: argparse.Namespace) -> int:
    """`avssl import avid-cma`: a released checkpoint -> an avssl pretraining checkpoint; one line on error."""
    from .train.import_released import ImportFailed, import_avid_cma

    try:
        source = import_avid_cma(args.source, args.output, args.config, args.with_memory, args.method, args.dataset)
    except ImportFailed as e:
        print(f"avssl import: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"output": str(args.output), **source}))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.output_dir, num_clips=args.num_clips, held_out=args.held_out, seed=args.seed,
             config=args.config, overrides=args.set)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avssl", description="Audio-visual self-supervised learning.")
    sub = p.add_subparsers(dest="group", required=True)

    data = sub.add_parser("data", help="probe, index, synthesize and re-encode media")
    dsub = data.add_subparsers(dest="command", required=True)

    q = dsub.add_parser("probe", help="print one JSON line of facts (or the error) per file")
    q.add_argument("files", nargs="+")
    q.add_argument("--verify", action="store_true", help="demux every packet to detect truncated files")
    q.set_defaults(func=_data_probe)

    q = dsub.add_parser("manifest", help="probe a folder or list file into a JSONL manifest")
    q.add_argument("source", help="folder (searched recursively) or text file with one path per line")
    q.add_argument("-o", "--output", required=True, help="manifest.jsonl (rejected files go to *.rejected.jsonl)")
    q.add_argument("--workers", type=int, default=4)
    q.add_argument("--require-audio", action="store_true", help="reject files without an audio stream")
    q.add_argument("--min-duration", type=float, default=0.0, help="reject files shorter than this (s)")
    q.add_argument("--verify", action="store_true", help="demux every packet to detect truncated files")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=_data_manifest)

    q = dsub.add_parser("synth", help="write synthetic sounding-object clips with ground truth")
    q.add_argument("--output-dir", required=True)
    q.add_argument("--num-clips", type=int, default=100)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--width", type=int, default=128)
    q.add_argument("--height", type=int, default=128)
    q.add_argument("--fps", type=int, default=25)
    q.add_argument("--duration", type=float, default=3.0)
    q.add_argument("--sample-rate", type=int, default=22050)
    q.add_argument("--distractors", type=int, default=1)
    q.add_argument("--workers", type=int, default=1)
    q.add_argument("--actions", action="store_true",
                   help="a labeled action set in the UCF-101 layout instead (motion + sound classes); "
                        "--num-clips is then per class")
    q.set_defaults(func=_data_synth)

    q = dsub.add_parser("compose", help="a localization benchmark: sounding cut-outs and silent distractors "
                                         "pasted on photos, boxes in vggss.json")
    q.add_argument("--stamps", default=None,
                   help="folder of cut-outs NAME.png with their sound NAME.ogg beside them (e.g. Tux Paint's "
                        "/usr/share/tuxpaint/stamps); default: the synthetic generator's objects")
    q.add_argument("--backgrounds", default=None, help="folder of photos (JPEG/PNG); default: procedural")
    q.add_argument("--output-dir", required=True)
    q.add_argument("--num-clips", type=int, default=100)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--distractors", type=int, default=1, help="silent cut-outs of other kinds per clip")
    q.add_argument("--kinds", type=int, default=None,
                   help="use this many kinds of cut-out, spread over the sorted list (same for every seed)")
    q.add_argument("--width", type=int, default=160)
    q.add_argument("--height", type=int, default=120)
    q.add_argument("--fps", type=int, default=16)
    q.add_argument("--duration", type=float, default=3.0)
    q.add_argument("--sample-rate", type=int, default=16000)
    q.set_defaults(func=_data_compose)

    q = dsub.add_parser("reencode", help="re-encode for fast loading (short side 256, 1 s keyframes)")
    q.add_argument("inputs", nargs="+", help="files or folders")
    q.add_argument("--output-dir", required=True)
    q.add_argument("--short-side", type=int, default=256)
    q.add_argument("--keyframe-interval", type=float, default=1.0)
    q.add_argument("--crf", type=int, default=23)
    q.add_argument("--workers", type=int, default=2)
    q.set_defaults(func=_data_reencode)

    q = sub.add_parser("pretrain", help="AVID / CMA pretraining (torchrun for several processes)")
    q.add_argument("--config", required=True, help="YAML, e.g. configs/pretrain/avid_small_cpu.yaml")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. data.root=videos/")
    q.add_argument("--output-dir", required=True, help="run folder; resumes from its last.pt when present")
    q.set_defaults(func=_pretrain)

    q = sub.add_parser("finetune", help="fine-tune the video encoder on labeled videos (torchrun for several)")
    q.add_argument("--config", required=True, help="YAML, e.g. configs/finetune/ucf101_small_cpu.yaml")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. model.checkpoint=runs/avid/last.pt finetune.mode=linear")
    q.add_argument("--output-dir", required=True, help="run folder; resumes from its last.pt when present")
    q.set_defaults(func=_finetune)

    ev = sub.add_parser("evaluate", help="action accuracy of a fine-tuned model; retrieval and sound "
                                         "classification of a pretrained one")
    esub = ev.add_subparsers(dest="command", required=True)
    q = esub.add_parser("retrieval", help="video->audio and audio->video recall@1/5/10 and median rank")
    q.add_argument("--checkpoint", required=True, help="a pretraining checkpoint (last.pt)")
    q.add_argument("--data", required=True, help="a folder of videos or a manifest (held-out clips)")
    q.add_argument("--clips", type=int, default=1, help="uniformly spaced clips per video, embeddings averaged")
    q.add_argument("--batch-size", type=int, default=32)
    q.add_argument("--output-dir", required=True)
    q.add_argument("--device", default=None)
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the checkpoint's config")
    q.set_defaults(func=_evaluate_pretrained)
    q = esub.add_parser("action", help="video-level accuracy of a fine-tuned classifier on its test split")
    q.add_argument("--checkpoint", default=None, help="a fine-tuning checkpoint (last.pt of avssl finetune)")
    q.add_argument("--folds", nargs="+", default=None, metavar="CKPT",
                   help="one checkpoint per official split (UCF-101/HMDB-51 1-3): each on its split, then the mean")
    q.add_argument("--clips", type=int, default=None, help="uniformly spaced clips per video (default: config's)")
    q.add_argument("--crops", type=int, default=1, choices=[1, 3],
                   help="spatial crops per clip (3: left, centre, right)")
    q.add_argument("--output-dir", required=True)
    q.add_argument("--device", default=None)
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the checkpoint's config, e.g. data.root=... or data.split=2")
    q.set_defaults(func=_evaluate_action)
    q = esub.add_parser("audio", help="linear sound classification on the frozen audio encoder (ESC-50, 5 folds)")
    q.add_argument("--checkpoint", required=True)
    q.add_argument("--format", default="esc50", choices=["esc50"])
    q.add_argument("--root", required=True, help="the ESC-50 folder (meta/esc50.csv, audio/)")
    q.add_argument("--clip-duration", type=float, default=5.0, help="seconds of each file (ESC-50: 5)")
    q.add_argument("--output-dir", required=True)
    q.add_argument("--device", default=None)
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    q.set_defaults(func=_evaluate_pretrained)

    q = esub.add_parser("localization", help="sound-source localization: cIoU@0.5 and AUC against boxes, with "
                                             "a centred prior and the oracle")
    _map_args(q)
    q.add_argument("--annotations", required=True, help="vggss.json, or Flickr-SoundNet's folder of XML files")
    q.add_argument("--media", required=True, help="folder of the annotated videos (or stills with sound files)")
    q.add_argument("--format", default="vggss", choices=["vggss", "flickr"])
    q.add_argument("--binarize", nargs="+", default=["median"], choices=["median", "absolute", "adaptive"],
                   help="one or more; the first is reported at the top level")
    q.add_argument("--output-dir", required=True)
    q.set_defaults(func=_evaluate_localization)

    q = sub.add_parser("localize", help="where the sound comes from: maps, overlays, MP4s and an HTML page")
    _map_args(q)
    q.add_argument("--video", required=True, help="a video file, a folder of videos, or a manifest (.jsonl)")
    q.add_argument("--audio", default=None, help="compare with this file's audio instead of the video's own")
    q.add_argument("--audio-offset", type=float, default=0.0, help="shift the audio by this many seconds")
    q.add_argument("--fps", type=float, default=8.0, help="maps per second of video")
    q.add_argument("--gif", action="store_true", help="also write overlay.gif")
    q.add_argument("--output-dir", required=True)
    q.set_defaults(func=_localize)

    imp = sub.add_parser("import", help="read another implementation's released models into avssl checkpoints")
    isub = imp.add_subparsers(dest="command", required=True)
    q = isub.add_parser("avid-cma", help="the AVID / AVID+CMA authors' released .pth.tar -> an avssl pretraining "
                                         "checkpoint (for localize, finetune, evaluate, run.init_from)")
    q.add_argument("source", help="e.g. AVID-CMA_Kinetics_InstX-N1024-PosW-N64-Top32_checkpoint.pth.tar")
    q.add_argument("--output", required=True, help="the avssl checkpoint to write (.pt)")
    q.add_argument("--config", default=None,
                   help="pretraining config the checkpoint records (default: the paper config of the method and "
                        "dataset, e.g. configs/pretrain/avid_cma_r2plus1d18_kinetics.yaml)")
    q.add_argument("--with-memory", action="store_true",
                   help="keep the memory bank, NCE estimate and positive sets (for run.init_from; AudioSet: ~1.8 GB)")
    q.add_argument("--method", choices=["avid", "avid-cma"], default=None, help="default: from the file name")
    q.add_argument("--dataset", choices=["kinetics", "audioset"], default=None, help="default: from the file name")
    q.set_defaults(func=_import_avid_cma)

    q = sub.add_parser("demo", help="synthesize data, pretrain AVID on the CPU, report what it learned")
    q.add_argument("--output-dir", required=True)
    q.add_argument("--num-clips", type=int, default=240)
    q.add_argument("--held-out", type=int, default=48)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--config", default=None, help="default: configs/pretrain/avid_small_cpu.yaml")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    q.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"avssl: config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
