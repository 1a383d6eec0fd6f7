"""The ``avssl`` command: ``avssl <group> <command> ...`` (also ``python -m avssl``).

Each command parses its arguments and calls one function of the package; option defaults come from the
dataclasses those functions take. Config mistakes end with one line and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from .config import InputError, Interrupted
from .fileio import to_json

__all__ = ["build_parser", "main"]


def _spec(cls: type, args: argparse.Namespace, **names: str) -> Any:
    """``cls`` with the options the user gave (``field=option``), its own defaults for the rest."""
    given = {f: getattr(args, o) for f, o in names.items() if getattr(args, o) is not None}
    return cls(**given)


def _device(name: str | None) -> str:
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


# ------------------------------------------------------------------------------------------------ data

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


def _part(text: str | None) -> tuple[int, int]:
    """``--part i/n`` (0-based i) -> (i, n); a mistake is a SystemExit with one line."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise InputError(f"--part {text}: expected i/n, e.g. 3/16 (parts 0 to 15)") from None
    if n < 1 or not 0 <= i < n:
        raise InputError(f"--part {text}: i must be in 0..n-1 and n at least 1")
    return i, n


def _data_manifest(args: argparse.Namespace) -> int:
    from .data.collection import VIDEO_EXTENSIONS, build_manifest
    from .progress import counted

    if args.segment is not None and not args.segment > 0:
        raise InputError(f"avssl data manifest: --segment {args.segment}: seconds > 0")
    res = build_manifest(args.source, args.output, workers=args.workers, require_audio=args.require_audio,
                         min_duration=args.min_duration, verify=args.verify, progress=not args.quiet,
                         part=_part(args.part), segment=args.segment)
    print(f"{res.manifest}: {counted(res.total, 'usable file')} ({res.added} new, {res.kept} unchanged); "
          f"{len(res.rejected)} newly rejected, listed in {res.rejected_file}", file=sys.stderr)
    if res.total == 0 and not res.rejected and not (res.kept or res.added):
        print(f"  no media file found in {args.source} (looked for {', '.join(VIDEO_EXTENSIONS)}; a list file names "
              "one path per line)", file=sys.stderr)
    for r in res.rejected[:20]:
        print(f"  rejected {r['path']}: {r['reason']}", file=sys.stderr)
    return 0


_MEDIA_OPTIONS = {"width": "width", "height": "height", "fps": "fps", "duration": "duration",
                  "sample_rate": "sample_rate"}


def _data_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import ActionSpec, SynthSpec, synthesize, synthesize_actions

    if args.actions:
        videos = synthesize_actions(args.output_dir, args.num_clips, args.seed, _spec(ActionSpec, args, **_MEDIA_OPTIONS))
        print(f"wrote {args.num_clips} clips per class to {videos}, split lists in "
              f"{Path(args.output_dir) / 'ucfTrainTestlist'}", file=sys.stderr)
        return 0
    spec = _spec(SynthSpec, args, num_distractors="distractors", **_MEDIA_OPTIONS)
    paths = synthesize(args.output_dir, args.num_clips, args.seed, spec, workers=args.workers, progress=True)
    print(f"wrote {len(paths)} clips to {args.output_dir}", file=sys.stderr)
    return 0


def _data_compose(args: argparse.Namespace) -> int:
    from .data.synthetic import ComposeSpec, compose

    spec = _spec(ComposeSpec, args, distractors="distractors", placement="placement", clips_per_kind="clips_per_kind",
                 **_MEDIA_OPTIONS)
    if args.scale is not None:
        spec = dataclasses.replace(spec, scale=tuple(args.scale))
    paths = compose(args.output_dir, args.num_clips, args.seed, args.stamps, args.backgrounds, spec,
                    kinds=args.kinds, progress=True, kind_offset=args.kind_offset)
    print(f"wrote {len(paths)} clips and {Path(args.output_dir) / 'vggss.json'}", file=sys.stderr)
    return 0


def _data_shard(args: argparse.Namespace) -> int:
    from .progress import counted

    from .data.reencode import ReencodeConfig
    from .data.shard_writer import ShardConfig, write_shards

    reencode = None
    if args.reencode:
        reencode = _spec(ReencodeConfig, args, short_side="short_side", keyframe_interval="keyframe_interval",
                         crf="crf")
    if args.segment is not None and not args.segment > 0:
        raise InputError(f"avssl data shard: --segment {args.segment}: seconds > 0")
    cfg = ShardConfig(samples_per_shard=args.samples_per_shard, shard_mb=args.shard_mb, reencode=reencode,
                      require_audio=args.require_audio, min_duration=args.min_duration, segment=args.segment)
    try:
        res = write_shards(args.source, args.output_dir, cfg, workers=args.workers, part=_part(args.part),
                           progress=not args.quiet)
    except (OSError, ValueError) as e:
        raise InputError(f"avssl data shard: {e}") from None
    print(f"{res.output_dir}: {counted(res.written, 'shard')} written, {res.kept} already there, of {res.planned} "
          f"planned; {counted(res.samples, 'sample')}; {counted(len(res.rejected), 'file')} rejected"
          + (f", listed in {res.output_dir / 'rejected.jsonl'}" if res.complete else "")
          + ("" if res.complete else "; `avssl data merge` writes shards.json once every part is done"),
          file=sys.stderr)
    for r in res.rejected[:20]:
        print(f"  rejected {r['path']}: {r['reason']}", file=sys.stderr)
    return 0


def _data_merge(args: argparse.Namespace) -> int:
    from .progress import counted

    from .data.collection import merge_manifests
    from .data.shard_writer import merge_shards

    try:
        if len(args.parts) == 1 and Path(args.parts[0]).is_dir():
            index = merge_shards(args.parts[0])
            print(f"{index.path}: {counted(len(index.shards), 'shard')}, {counted(index.samples, 'sample')}",
                  file=sys.stderr)
            return 0
        if not args.output:
            raise ValueError("merging manifests needs -o/--output")
        res = merge_manifests(args.parts, args.output)
    except (OSError, ValueError) as e:
        raise InputError(f"avssl data merge: {e}") from None
    print(f"{res.manifest}: {counted(res.total, 'usable file')}; {len(res.rejected)} rejected, listed in "
          f"{res.rejected_file}",
          file=sys.stderr)
    return 0


def _data_reencode(args: argparse.Namespace) -> int:
    from .data.collection import resolve_media
    from .data.reencode import ReencodeConfig, reencode_many

    sources = [p for s in args.inputs for p in resolve_media(s)]
    root = str(Path(args.inputs[0]).resolve()) if len(args.inputs) == 1 and Path(args.inputs[0]).is_dir() else None
    cfg = _spec(ReencodeConfig, args, short_side="short_side", keyframe_interval="keyframe_interval", crf="crf")
    failed = reencode_many(sources, args.output_dir, root, cfg, args.workers)
    for src, reason in failed.items():
        print(f"failed {src}: {reason}", file=sys.stderr)
    return 1 if failed else 0


def _add_sharding(dsub: Any) -> None:
    from .data.reencode import ReencodeConfig
    from .data.shard_writer import ShardConfig

    q = dsub.add_parser("shard", help="write a folder, list or manifest as WebDataset shards (KEY.mp4, KEY.json)")
    q.add_argument("source", help="folder, list file or manifest (.jsonl: its probe facts are used)")
    q.add_argument("--output-dir", required=True)
    q.add_argument("--samples-per-shard", type=int, default=None,
                   help="files per shard (equal shards: exact epochs across processes); default: by --shard-mb")
    q.add_argument("--shard-mb", type=float, default=ShardConfig.shard_mb,
                   help="consecutive files until their source bytes reach this (default: %(default)s)")
    q.add_argument("--reencode", action="store_true", help="re-encode each file for fast decoding (H.264, short "
                   "side and keyframe interval as `avssl data reencode`)")
    q.add_argument("--short-side", type=int, default=None, help=f"with --reencode; default {ReencodeConfig.short_side}")
    q.add_argument("--keyframe-interval", type=float, default=None,
                   help=f"with --reencode (s); default {ReencodeConfig.keyframe_interval}")
    q.add_argument("--crf", type=int, default=None, help=f"with --reencode; default {ReencodeConfig.crf}")
    q.add_argument("--require-audio", action="store_true", help="reject files without an audio stream")
    q.add_argument("--min-duration", type=float, default=0.0, help="reject files shorter than this (s)")
    q.add_argument("--segment", type=float, default=None, metavar="SEC",
                   help="each file's segments of about SEC seconds are training instances of their own (listed in its "
                        "KEY.json; the file is stored once); a manifest of segment rows keeps its segments")
    q.add_argument("--workers", type=int, default=2, help="processes writing shards")
    q.add_argument("--part", default=None, metavar="I/N", help="one job of an array: the shards "
                   "[I*K/N, (I+1)*K/N) of the K planned (I from 0); `avssl data merge OUTPUT_DIR` after the last")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=_data_shard)

    q = dsub.add_parser("merge", help="join the parts of a job array: manifests (-o) or a shard folder")
    q.add_argument("parts", nargs="+", help="the parts' manifests, or the shards' --output-dir")
    q.add_argument("-o", "--output", default=None, help="the merged manifest")
    q.set_defaults(func=_data_merge)


def _add_data(sub: Any) -> None:
    from .data.reencode import ReencodeConfig
    from .data.synthetic import ActionSpec, ComposeSpec, SynthSpec

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
    q.add_argument("--part", default=None, metavar="I/N",
                   help="one job of an array: the files [I*N_files/N, (I+1)*N_files/N) of the listing (I from 0); "
                        "`avssl data merge` joins the parts")
    q.add_argument("--segment", type=float, default=None, metavar="SEC",
                   help="a row per segment of about SEC seconds of each file (start, end): a long video becomes many "
                        "training instances, each clip drawn inside its segment")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=_data_manifest)

    _add_sharding(dsub)

    def media(q: argparse.ArgumentParser, *specs: Any) -> None:
        for name, kind in (("width", int), ("height", int), ("fps", int), ("duration", float), ("sample_rate", int)):
            defaults = "; ".join(f"{s.__name__}: {getattr(s, name)}" for s in specs)
            q.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=f"default: {defaults}")

    q = dsub.add_parser("synth", help="write synthetic sounding-object clips with ground truth")
    q.add_argument("--output-dir", required=True)
    q.add_argument("--num-clips", type=int, default=100)
    q.add_argument("--seed", type=int, default=0)
    media(q, SynthSpec, ActionSpec)
    q.add_argument("--distractors", type=int, default=None, help=f"default: {SynthSpec.num_distractors}")
    q.add_argument("--workers", type=int, default=1)
    q.add_argument("--actions", action="store_true",
                   help="a labeled action set in the UCF-101 layout instead (motion + sound classes, ActionSpec's "
                        "defaults); --num-clips is then per class")
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
    q.add_argument("--distractors", type=int, default=None,
                   help=f"silent cut-outs of other kinds per clip (default: {ComposeSpec.distractors})")
    q.add_argument("--kinds", type=int, default=None,
                   help="use this many kinds of cut-out, spread over the sorted list (same for every seed)")
    q.add_argument("--scale", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help=f"a cut-out's longer side as a fraction of the frame's height (default: {ComposeSpec.scale})")
    q.add_argument("--placement", default=None, choices=["uniform", "centre", "off_centre"],
                   help=f"where the sounding cut-out goes (default: {ComposeSpec.placement})")
    q.add_argument("--clips-per-kind", type=int, default=None,
                   help="balanced kinds: each sounds in this many clips (--num-clips: at most kinds x this)")
    q.add_argument("--kind-offset", type=int, default=0,
                   help="with --kinds: other kinds, as evenly spread (the spread moved this many places)")
    media(q, ComposeSpec)
    q.set_defaults(func=_data_compose)

    q = dsub.add_parser("reencode", help="re-encode for fast loading (short side 256, 1 s keyframes)")
    q.add_argument("inputs", nargs="+", help="files, folders, list files or manifests")
    q.add_argument("--output-dir", required=True)
    q.add_argument("--short-side", type=int, default=None, help=f"default: {ReencodeConfig.short_side}")
    q.add_argument("--keyframe-interval", type=float, default=None,
                   help=f"seconds (default: {ReencodeConfig.keyframe_interval})")
    q.add_argument("--crf", type=int, default=None, help=f"default: {ReencodeConfig.crf}")
    q.add_argument("--workers", type=int, default=2)
    q.set_defaults(func=_data_reencode)


# ------------------------------------------------------------------------------------------- training

def _print_summary(summary: dict[str, Any]) -> int:
    from . import distributed

    if distributed.is_main():  # under torchrun, once
        print(to_json(summary))
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train.configs import PretrainConfig
    from .hub import checkpoint_path
    from .train.pretrain import pretrain

    return _print_summary(pretrain(load_config(PretrainConfig, args.config, args.set), args.output_dir,
                                   resolve=checkpoint_path))


def _finetune(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train.configs import FinetuneConfig
    from .hub import checkpoint_path
    from .train.finetune import finetune

    return _print_summary(finetune(load_config(FinetuneConfig, args.config, args.set), args.output_dir,
                                   resolve=checkpoint_path))


def _import_avid_cma(args: argparse.Namespace) -> int:
    """`avssl import avid-cma`: a released checkpoint -> an avssl pretraining checkpoint; one line on error."""
    from .importers import ImportFailed, import_avid_cma

    try:
        source = import_avid_cma(args.source, args.output, args.config, args.with_memory, args.method, args.dataset)
    except ImportFailed as e:
        print(f"avssl import: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"output": str(args.output), **source}))
    return 0


def _import_peer(args: argparse.Namespace) -> int:
    """`avssl import ezvsl` / `avssl import slavc`: the authors' best.pth -> an avssl pretraining checkpoint."""
    from .importers import ImportFailed, import_peer

    try:
        source = import_peer(args.command, args.source, args.output, args.config, getattr(args, "momentum", False))
    except ImportFailed as e:
        print(f"avssl import {args.command}: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"output": str(args.output), **source}))
    return 0


def _model_on_device(args: argparse.Namespace, command: str) -> tuple[Any, Any, Any]:
    """(model, config, device) for a command that runs each torchrun process on its own share: the process group
    joined, this process's device picked, the checkpoint's model loaded there."""
    from . import distributed as dist
    from .train.engine import resolve_device

    _, local_rank, _ = dist.init_from_env("gloo" if (args.device or "") == "cpu" else None)
    device = resolve_device(args.device or "auto", local_rank)
    model, cfg = _pretrained(args, command, device=str(device))
    return model, cfg, device


def _embed(args: argparse.Namespace) -> int:
    """`avssl embed`: a collection's clip embeddings as Parquet parts (each process its share under torchrun)."""
    from . import distributed as dist
    from .embeddings import EmbedSpec, embed_collection

    spec = EmbedSpec(clips_per_video=args.clips_per_video, window=args.window, stride=args.stride, layer=args.layer,
                     modalities=tuple(m.strip() for m in args.modality.split(",") if m.strip()), dtype=args.dtype,
                     video_means=args.video_means, batch_size=args.batch_size, num_workers=args.workers,
                     part_size=args.part_size)
    if args.stride is not None and args.window is None:
        raise InputError("avssl embed: --stride goes with --window (seconds per clip window)")
    model, cfg, device = _model_on_device(args, "avssl embed")
    summary = embed_collection(args.source, model, cfg.data, args.output_dir, spec, device, progress=not args.quiet,
                               about={"checkpoint": str(args.checkpoint)})
    if dist.is_main():
        print(to_json({k: v for k, v in summary.items() if k != "spec"}))
    return 0


def _score(args: argparse.Namespace) -> int:
    """`avssl score`: does each video's sound belong to its picture? Scores sorted from least to most."""
    from . import distributed as dist
    from .embeddings import score_collection

    model, cfg, device = _model_on_device(args, "avssl score")
    summary = score_collection(args.source, model, cfg.data, args.output_dir, args.clips_per_video, args.below,
                               device, progress=not args.quiet, about={"checkpoint": str(args.checkpoint)},
                               batch_size=args.batch_size, num_workers=args.workers)
    if dist.is_main():
        print(to_json(summary))
    return 0


def _models(args: argparse.Namespace) -> int:
    """`avssl models`: the authors' released models by name."""
    from .hub import QUOTED, home, list_models

    rows = list_models()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"released models (kept in {home()}; a name works wherever a checkpoint does):")
    for r in rows:
        quoted = ", ".join(f"{QUOTED.get(k, k)} {v}" for k, v in r["quoted"].items())
        print(f"  {r['name']:19s} {r['method']} on {r['pretrained_on']}; the authors quote {quoted}")
        how = "fetched on first use from" if r["fetched"] else "a page to download it from:"
        print(f"  {'':19s} {how} {r['source']}" + (f" ({r['which']})" if r.get("which") else ""))
        state = ("on disk: " + r["on_disk"]) if r["on_disk"] else (
            "not on disk yet" if r["fetched"] else f"not on disk yet: put the downloaded file at {r['put_at']}")
        print(f"  {'':19s} license {r['license']}; {state}")
    return 0


def _embedding_args(q: argparse.ArgumentParser) -> None:
    """The options `avssl embed` and `avssl score` share: how the clips are decoded and embedded."""
    q.add_argument("--batch-size", type=int, default=32)
    q.add_argument("--workers", type=int, default=2, help="decoding processes")
    q.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    q.add_argument("--quiet", action="store_true")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the checkpoint's data config (data.* keys)")


def _add_training(sub: Any) -> None:
    for name, func, example, what in (
        ("pretrain", _pretrain, "configs/pretrain/avid_small_cpu.yaml", "AVID / CMA pretraining"),
        ("finetune", _finetune, "configs/finetune/finetune_r2plus1d-small_4x56_8e_ucf101.yaml",
         "fine-tune the video encoder on labeled videos"),
    ):
        q = sub.add_parser(name, help=f"{what} (torchrun for several processes)")
        q.add_argument("--config", required=True, help=f"YAML, e.g. {example}")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override, e.g. data.root=videos/ run.init_from=runs/avid/last.pt")
        q.add_argument("--output-dir", required=True, help="run folder; resumes from its last.pt when present")
        q.set_defaults(func=func)

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
    for peer, paper in (("ezvsl", "EZ-VSL (Mo and Morgado, ECCV 2022; stoneMo/EZ-VSL)"),
                        ("slavc", "SLAVC (Mo and Morgado, NeurIPS 2022; stoneMo/SLAVC)")):
        q = isub.add_parser(peer, help=f"a released {paper} checkpoint (best.pth) -> an avssl checkpoint that "
                                       "localize, evaluate localization, embed, score and run.init_from take")
        q.add_argument("source", help="their checkpoint: {'model': {'module.' + name: tensor}, 'epoch', ...}")
        q.add_argument("--output", required=True, help="the avssl checkpoint to write (.pt)")
        q.add_argument("--config", default=None, help=f"the config it records (default: configs/pretrain/{peer}_"
                                                      "resnet18_224_vggsound.yaml, their protocol)")
        if peer == "slavc":
            q.add_argument("--momentum", action="store_true", help="embed and localize with the momentum encoders "
                           "(their released test script uses the base ones: the default)")
        q.set_defaults(func=_import_peer)

    q = sub.add_parser("embed", help="clip embeddings of a collection as Parquet parts (per clip, or per window)")
    q.add_argument("source", help="a folder of videos, a list file, a manifest, or WebDataset shards (shards/{0..9}.tar)")
    q.add_argument("--checkpoint", required=True, help="a pretraining checkpoint, or a released model's name "
                   "(avssl models)")
    q.add_argument("--output-dir", required=True)
    q.add_argument("--clips-per-video", type=int, default=1, help="uniformly spaced clips per video (default: 1)")
    q.add_argument("--window", type=float, default=None, help="a clip per window of SEC seconds over the whole video")
    q.add_argument("--stride", type=float, default=None, help="seconds between windows (default: --window)")
    q.add_argument("--layer", default="head", choices=["head", "pooled"],
                   help="head: the joint embedding (unit norm); pooled: the encoders' pooled features")
    q.add_argument("--modality", default="video,audio", help="video, audio or video,audio")
    q.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    q.add_argument("--video-means", action="store_true", help="also each video's mean embedding (videos/)")
    q.add_argument("--part-size", type=int, default=64, help="videos per Parquet part (a killed run redoes one part)")
    _embedding_args(q)
    q.set_defaults(func=_embed)

    q = sub.add_parser("score", help="does each video's sound belong to its picture? an audio-visual "
                                     "correspondence score per video, to clean a collection")
    q.add_argument("source", help="a folder of videos, a list file, a manifest, or WebDataset shards")
    q.add_argument("--checkpoint", required=True, help="a pretraining checkpoint, or a released model's name")
    q.add_argument("--output-dir", required=True, help="scores.csv, scores.json (least to most), embeddings/")
    q.add_argument("--clips-per-video", type=int, default=3, help="clips whose mean embeddings are compared")
    q.add_argument("--below", type=float, default=None, metavar="X",
                   help="leave the videos scoring below X out of kept.jsonl (the manifest of the rest)")
    _embedding_args(q)
    q.set_defaults(func=_score)

    q = sub.add_parser("models", help="the authors' released models by name (fetched on first use, then offline)")
    q.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    q.set_defaults(func=_models)


# ------------------------------------------------------------------------------------- evaluation

def _pretrained(args: argparse.Namespace, command: str, device: str | None = None) -> tuple[Any, Any]:
    """The checkpoint's model and config, loaded once; ``--set`` acts on ``data.*`` only."""
    from .config import apply_overrides, check_overrides, from_dict, to_dict
    from .train.checkpoint import pretrained_model
    from .train.configs import PretrainConfig

    from .config import InputError

    from .hub import checkpoint_path

    check_overrides(args.set, ("data.",), command)
    try:
        path = checkpoint_path(args.checkpoint)  # a file, or a released model's name (fetched once)
        model, cfg = pretrained_model(path, device or _device(args.device))
    except InputError as e:
        raise InputError(f"{command}: --checkpoint {e}") from None
    except (ValueError, RuntimeError, OSError) as e:  # weights that do not fit the model the config describes
        first = next((x for x in str(e).splitlines() if x.strip()), type(e).__name__)
        raise InputError(f"{command}: --checkpoint {args.checkpoint}: {first}") from None
    return model, from_dict(PretrainConfig, apply_overrides(to_dict(cfg), args.set))


def _write_result(out: Path, name: str, result: dict[str, Any]) -> int:
    from .fileio import write_json

    write_json(out / name, result)
    print(to_json(result))
    return 0


def _evaluate_retrieval(args: argparse.Namespace) -> int:
    from .config import to_dict
    from .evaluation.retrieval import retrieval_benchmark

    model, cfg = _pretrained(args, "avssl evaluate retrieval")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = retrieval_benchmark(model, cfg.data, args.data, out, args.clips, args.batch_size, _device(args.device))
    return _write_result(out, "retrieval.json", {"checkpoint": str(args.checkpoint),
                                                 "config": to_dict(cfg.data.clip), **result})


def _evaluate_audio(args: argparse.Namespace) -> int:
    from .config import to_dict
    from .evaluation.audio import esc50_linear

    model, cfg = _pretrained(args, "avssl evaluate audio")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = esc50_linear(model, cfg.data, args.root, args.clip_duration, _device(args.device))
    return _write_result(out, "audio.json", {"checkpoint": str(args.checkpoint),
                                             "config": to_dict(cfg.data.clip), **result})


def _evaluate_action(args: argparse.Namespace) -> int:
    """One checkpoint on its test split, or with --folds one per official split, each on its own, and the mean."""
    from . import distributed as dist
    from .config import apply_overrides, check_overrides, from_dict, to_dict
    from .evaluation.action import evaluate_test_split, mean_over_folds
    from .train.checkpoint import classifier_model
    from .train.configs import FinetuneConfig
    from .train.engine import resolve_device

    checkpoints = args.folds or ([args.checkpoint] if args.checkpoint else [])
    if not checkpoints:
        raise InputError("avssl evaluate action: give --checkpoint FT.pt, or --folds S1.pt S2.pt S3.pt")
    check_overrides(args.set, ("data.",), "avssl evaluate action")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _, local_rank, _ = dist.init_from_env("gloo" if args.device == "cpu" else None)
    device = resolve_device(args.device or "auto", local_rank)  # under torchrun: one GPU per process
    results = []
    for ckpt in checkpoints:
        model, cfg, classes = classifier_model(ckpt, device)
        data = from_dict(FinetuneConfig, apply_overrides(to_dict(cfg), args.set)).data
        fold_out = out / f"split{data.split}" if args.folds else out
        fold_out.mkdir(parents=True, exist_ok=True)
        r = evaluate_test_split(model, data, classes, fold_out, device, args.clips, args.crops)
        results.append({"checkpoint": str(ckpt), **r})
    try:
        result = mean_over_folds(results) if args.folds else results[0]
    except ValueError as e:
        raise InputError(f"avssl evaluate action: --{e}") from None
    return _write_result(out, "eval.json", result) if dist.is_main() else 0


_MAP_OPTIONS = ("size", "last_stride", "pad", "fps", "norm", "smooth", "batch_size")


def _map_config(args: argparse.Namespace, defaults: Any) -> Any:
    """The checkpoint's map settings (its config's ``localize`` section), with the options given (``--ogl`` without
    a value: the model's own alpha)."""
    given = {k: getattr(args, k) for k in _MAP_OPTIONS if getattr(args, k, None) is not None}
    ogl = getattr(args, "ogl", None)
    if ogl is not None:
        given["ogl"] = defaults.ogl_alpha if ogl < 0 else ogl
    return dataclasses.replace(defaults, **given)


def _localizer(args: argparse.Namespace, command: str) -> Any:
    from .localize.heatmap import Localizer

    model, cfg = _pretrained(args, command)
    return Localizer(model, cfg.data, _map_config(args, cfg.localize), _device(args.device))


def _evaluate_localization(args: argparse.Namespace) -> int:
    from .data.formats.localization import read_localization
    from .localize.evaluate import evaluate_localization

    from .config import ConfigError

    localizer = _localizer(args, "avssl evaluate localization")
    for name, path in (("--annotations", args.annotations), ("--media", args.media)):
        if not Path(path).exists():
            raise ConfigError(f"avssl evaluate localization: {name} {path}: no such file or folder")
    data = read_localization(args.format, args.annotations, args.media)
    if not data.samples:
        raise InputError(f"avssl evaluate localization: no annotated sample has media: {data.summary()}")
    print(data.summary(), file=sys.stderr)
    result = evaluate_localization(localizer, data, args.binarize, args.output_dir, progress=not args.quiet,
                                   checkpoint=str(args.checkpoint), annotations=str(args.annotations))
    print(to_json(result))
    return 0


def _localize(args: argparse.Namespace) -> int:
    """Maps, overlays, MP4s and an HTML page for a video, a folder, a list or a manifest."""
    from .data.collection import resolve_media
    from .localize.render import localize_videos

    from .config import InputError

    localizer = _localizer(args, "avssl localize")
    for name, path in (("--video", args.video), ("--audio", args.audio)):
        if path is not None and not Path(path).exists():
            raise InputError(f"avssl localize: {name} {path}: no such file or folder")
    for name in ("start", "duration"):
        value = getattr(args, name)
        if value is not None and (value < 0 or (name == "duration" and value <= 0)):
            raise InputError(f"avssl localize: --{name} {value}: seconds, " + ("> 0" if name == "duration" else ">= 0"))
    summary = localize_videos(localizer, resolve_media(args.video), args.output_dir, audio=args.audio,
                              audio_offset=args.audio_offset, gif=args.gif, model_name=f"checkpoint {args.checkpoint}",
                              progress=not args.quiet, start=args.start, duration=args.duration, maps=args.maps)
    print(to_json(summary))
    if summary["failed"] and not summary["videos"]:
        print(f"avssl localize: none of the {len(summary['failed'])} input(s) could be mapped (each is listed with its "
              f"reason above and in {summary['index']})", file=sys.stderr)
        return 1
    return 0


def _map_args(q: argparse.ArgumentParser) -> None:
    from .localize.heatmap import MapConfig

    d = MapConfig()
    q.add_argument("--checkpoint", required=True, help="a pretraining checkpoint (last.pt, or from avssl import), "
                                                        "or a released model's name (avssl models)")
    q.add_argument("--size", type=int, default=None,
                   help="short side of the whole frame given to the encoder (default: the checkpoint's localize.size, "
                        "else twice the training crop)")
    q.add_argument("--last-stride", type=int, default=None, choices=[1, 2],
                   help=f"spatial stride of the last encoder stage (trained: 2; 1 gives twice finer maps; default: "
                        f"the checkpoint's localize.last_stride, {d.last_stride} unless set)")
    q.add_argument("--pad", type=float, default=None,
                   help="reflect-pad frames by this fraction of the short side and crop the maps back (keeps the "
                        f"encoder's border artifacts out of the picture); 0: off (default: {d.pad} unless the "
                        "checkpoint's config says otherwise)")
    q.add_argument("--norm", default=None, choices=["minmax", "fixed"],
                   help=f"minmax: per map; fixed: cosine clipped to [0, 1] (a sound matching nothing stays dark); "
                        f"default: {d.norm} unless the checkpoint's config says otherwise")
    q.add_argument("--smooth", type=int, default=None,
                   help=f"box-average the similarity over this many cells of the encoder's map (1: off; default: "
                        f"{d.smooth} unless the checkpoint's config says otherwise)")
    q.add_argument("--ogl", type=float, nargs="?", const=-1.0, default=None, metavar="ALPHA",
                   help="object-guided localization (EZ-VSL's OGL): mix the map with an ImageNet ResNet-18's object map, "
                        "ALPHA x audio-visual + (1 - ALPHA) x objects, as the model's authors do (EZ-VSL: 0.4, "
                        "SLAVC: 0.9, the default for the model; its weights are fetched once into torch's hub cache)")
    q.add_argument("--batch-size", type=int, default=None, help=f"default: {d.batch_size}")
    q.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the checkpoint's data config (data.* keys)")


def _add_evaluation(sub: Any) -> None:
    from .localize.heatmap import MapConfig

    ev = sub.add_parser("evaluate", help="action accuracy of a fine-tuned model; retrieval, sound classification "
                                         "and localization of a pretrained one")
    esub = ev.add_subparsers(dest="command", required=True)

    def common(q: argparse.ArgumentParser, checkpoint_help: str) -> None:
        q.add_argument("--checkpoint", required=True, help=checkpoint_help)
        q.add_argument("--output-dir", required=True)
        q.add_argument("--device", default=None)
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override the checkpoint's data config (data.* keys)")

    q = esub.add_parser("retrieval", help="video->audio and audio->video recall@1/5/10 and median rank")
    common(q, "a pretraining checkpoint (last.pt, or from avssl import), or a released model's name")
    q.add_argument("--data", required=True, help="a folder of videos, a list file or a manifest (held-out clips)")
    q.add_argument("--clips", type=int, default=1, help="uniformly spaced clips per video, embeddings averaged")
    q.add_argument("--batch-size", type=int, default=32)
    q.set_defaults(func=_evaluate_retrieval)

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
                   help="override the checkpoint's data config, e.g. data.root=... or data.split=2")
    q.set_defaults(func=_evaluate_action)

    q = esub.add_parser("audio", help="linear sound classification on the frozen audio encoder (ESC-50, 5 folds)")
    common(q, "a pretraining checkpoint (last.pt, or from avssl import), or a released model's name")
    q.add_argument("--format", default="esc50", choices=["esc50"])
    q.add_argument("--root", required=True, help="the ESC-50 folder (meta/esc50.csv, audio/)")
    q.add_argument("--clip-duration", type=float, default=5.0, help="seconds of each file (ESC-50: 5)")
    q.set_defaults(func=_evaluate_audio)

    q = esub.add_parser("localization", help="sound-source localization: cIoU@0.5 and AUC against boxes, with "
                                             "a centred prior and the oracle")
    _map_args(q)
    q.add_argument("--annotations", required=True, help="vggss.json, or Flickr-SoundNet's folder of XML files")
    q.add_argument("--media", required=True, help="folder of the annotated videos (or stills with sound files)")
    q.add_argument("--format", default="vggss", choices=["vggss", "flickr"])
    q.add_argument("--binarize", nargs="+", default=["median"], choices=["median", "median_inclusive", "absolute",
                                                                        "adaptive"],
                   help="one or more; the first is reported at the top level")
    q.add_argument("--output-dir", required=True)
    q.set_defaults(func=_evaluate_localization)

    q = sub.add_parser("localize", help="where the sound comes from: maps, overlays, MP4s and an HTML page")
    _map_args(q)
    q.add_argument("--video", required=True, help="a video file, a folder of videos, a list file or a manifest")
    q.add_argument("--audio", default=None, help="compare with this file's audio instead of the video's own")
    q.add_argument("--audio-offset", type=float, default=0.0, help="shift the audio by this many seconds")
    q.add_argument("--fps", type=float, default=None,
                   help=f"maps per second of video (default: {MapConfig.fps} unless the checkpoint's config says otherwise)")
    q.add_argument("--gif", action="store_true", help="also write overlay.gif")
    q.add_argument("--start", type=float, default=None, help="map from this time (s)")
    q.add_argument("--duration", type=float, default=None, help="map this many seconds (default: to the end)")
    q.add_argument("--maps", default="grid", choices=["grid", "full", "none"],
                   help="grid: similarity.npy on the encoder's grid with geometry.json to project it (small whatever "
                        "the frame size); full: also maps.npy, uint8 at the frame's size; none: pictures only")
    q.add_argument("--output-dir", required=True)
    q.set_defaults(func=_localize)


# ------------------------------------------------------------------------------------------------ demo

def _report(args: argparse.Namespace) -> int:
    """`avssl report`: the page of curves of one or more run folders (again every --watch seconds)."""
    import time

    from .report import write_report

    for run in args.runs:
        if not Path(run).is_dir():
            raise InputError(f"avssl report: {run}: no such run folder")
        if not (Path(run) / "metrics.jsonl").exists() and not (Path(run) / "config.yaml").exists():
            raise InputError(f"avssl report: {run} is not a run folder (no metrics.jsonl or config.yaml)")
    while True:
        path = write_report(args.runs, args.output_dir, refresh=args.watch)
        print(f"wrote {path}", file=sys.stderr)
        if not args.watch:
            return 0
        time.sleep(args.watch)


def _add_report(sub: Any) -> None:
    q = sub.add_parser("report", help="one HTML page of the curves (loss, lr, clips/s, every evaluation figure) of "
                                      "one or more run folders, also while they run")
    q.add_argument("runs", nargs="+", help="run folders (pretraining or fine-tuning --output-dir)")
    q.add_argument("--output-dir", required=True)
    q.add_argument("--watch", type=int, default=None, metavar="SECONDS",
                   help="rewrite the page every SECONDS (the page reloads itself) until interrupted")
    q.set_defaults(func=_report)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.output_dir, num_clips=args.num_clips, held_out=args.held_out, seed=args.seed,
             config=args.config, overrides=args.set, localize_overrides=args.localize_set)
    return 0


def _add_demo(sub: Any) -> None:
    q = sub.add_parser("demo", help="synthesize data, pretrain AVID on the CPU, report what it learned")
    q.add_argument("--output-dir", required=True)
    q.add_argument("--num-clips", type=int, default=240)
    q.add_argument("--held-out", type=int, default=48)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--config", default=None, help="default: configs/pretrain/avid_small_cpu.yaml")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the AVID config")
    q.add_argument("--localize-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the localization config (configs/pretrain/localize_small_cpu.yaml)")
    q.set_defaults(func=_demo)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avssl", description="Audio-visual self-supervised learning.")
    sub = p.add_subparsers(dest="group", required=True)
    for add in (_add_data, _add_training, _add_evaluation, _add_report, _add_demo):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError

    from .data.cache import CacheFull
    from .train.guard import RunDiverged
    from .train.signals import RunInterrupted

    args = build_parser().parse_args(argv)
    _quiet_ffmpeg()
    made = _new_folder(args)
    try:
        _check_output(args)
        return int(args.func(args) or 0)
    except CacheFull as e:  # raised in a loader worker, its message carries the worker's traceback: the last line
        print(_said(_last_line(str(e))), file=sys.stderr)
        return 1
    except InputError as e:
        print(_said(_last_line(str(e))), file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"avssl: config error: {e}", file=sys.stderr)
        return 2
    except RunDiverged as e:
        print(f"avssl: the run diverged at {e}", file=sys.stderr)
        return 1
    except (RunInterrupted, Interrupted) as e:
        if _main_process():
            print(_said(str(e)), file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        if _main_process():
            print(f"{_command(args)}: interrupted", file=sys.stderr)
        return 130
    finally:
        if made is not None:  # a command that failed before writing anything leaves no empty folder behind
            _remove_if_empty(made)


def _quiet_ffmpeg() -> None:
    """FFmpeg's own log lines ("moov atom not found") reach Python's logging through PyAV; avssl says what failed in
    its own words (the file and the reason), so they are not printed beside it."""
    import logging

    lib = logging.getLogger("libav")
    lib.propagate = False
    if not lib.handlers:
        lib.addHandler(logging.NullHandler())


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if it holds nothing but empty folders."""
    if not folder.is_dir():
        return
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass
    try:
        folder.rmdir()
    except OSError:
        pass


def _command(args: argparse.Namespace) -> str:
    """``avssl GROUP [COMMAND]`` as the user typed it."""
    return " ".join(["avssl", *(x for x in (getattr(args, "group", None), getattr(args, "command", None)) if x)])


def _new_folder(args: argparse.Namespace) -> Path | None:
    """The output folder when this command makes it (removed again if the command fails before writing anything
    into it)."""
    out = getattr(args, "output_dir", None)
    if out and not Path(out).exists():
        return Path(out)
    return None


def _check_output(args: argparse.Namespace) -> None:
    """``--output-dir`` must be a folder (or not exist yet), ``-o``/``--output`` a file: one line otherwise."""
    for option, want_dir in (("output_dir", True), ("output", False)):
        value = getattr(args, option, None)
        if not value:
            continue
        path, flag = Path(value), "--" + option.replace("_", "-")
        if option == "output" and getattr(args, "group", None) == "data":
            flag = "-o/--output"
        if want_dir and path.exists() and not path.is_dir():
            raise InputError(f"{_command(args)}: {flag} {value}: a file, not a folder (name a folder for the outputs)")
        if not want_dir and path.is_dir():
            raise InputError(f"{_command(args)}: {flag} {value}: a folder, not a file (name the file to write)")
        blocked = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocked is not None:
            raise InputError(f"{_command(args)}: {flag} {value}: {blocked} is a file, not a folder")


def _said(message: str) -> str:
    """``avssl: MESSAGE``, once: a message that already names its command (``avssl localize: ...``) as it is."""
    return message if message.startswith("avssl ") else f"avssl: {message}"


def _last_line(text: str) -> str:
    """The last non-empty line of a message (an error re-raised from a loader worker carries its traceback)."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    last = lines[-1] if lines else text
    return last.split(": ", 1)[1] if last.startswith(("avssl.", "CacheFull", "InputError")) and ": " in last else last


def _main_process() -> bool:
    from . import distributed

    return distributed.is_main()


if __name__ == "__main__":
    sys.exit(main())
