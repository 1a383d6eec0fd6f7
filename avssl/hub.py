"""Released models by name: fetched once into torch's hub folder, converted once, then used offline.

``avssl models`` lists them: the AVID-CMA authors' four, and the EZ-VSL and SLAVC localizers. Wherever a checkpoint is accepted (``--checkpoint`` of every command,
``run.init_from`` and a fine-tuning config's ``model.checkpoint``, :func:`avssl.load_pretrained`), one of these
names works too (:func:`checkpoint_path`). The first use downloads the file from the address the authors publish
(facebookresearch/AVID-CMA's README) into ``$AVSSL_HOME`` (default ``torch.hub.get_dir()/avssl``, which follows
``$TORCH_HOME``), with a progress bar, resuming a partial file (``.part``) and checking its size against the
server's; converts it with :mod:`avssl.importers` (the strict import: every tensor by name and shape, so a
truncated or foreign file is refused, deleted and fetched once more); records the SHA-256 of the file and of its
conversion beside them. Later uses read the conversion, offline, after checking its hash (a file corrupted since
is converted or fetched again). Without network, one line says which file to fetch and where to put it. One
process fetches and converts at a time (a lock in the model's folder); the others wait for its result.

The EZ-VSL and SLAVC files sit behind shared-folder pages (Google Drive), not stable file addresses: their names
work once the file has been put where ``avssl models`` says (``$AVSSL_HOME/NAME/NAME.pth``), and are converted on
first use as above; a saved web page or a partial download is refused with one line, never taken for a checkpoint.

The AVID-CMA files are under their license (CC BY-NC 4.0, non-commercial); EZ-VSL's and SLAVC's repositories are
Apache-2.0. No SHA-256 is published, so the strict import is the check on first use and the hash recorded then the
check after.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import InputError
from .fileio import atomic_write
from .progress import Progress

__all__ = ["MODELS", "Released", "checkpoint_path", "home", "list_models"]

_SOURCE = "https://dl.fbaipublicfiles.com/avid-cma/checkpoints/"
LICENSE = "CC BY-NC 4.0 (facebookresearch/AVID-CMA: non-commercial use)"


@dataclass(frozen=True)
class Released:
    """A released model: its file, where the authors publish it, what it is, and the results they quote (AVID-CMA:
    top-1 %, UCF-101 / HMDB-51 full fine-tuning, Kinetics-400 linear; the localizers: their benchmarks' figures).
    ``direct``: ``url`` is the file's own address (fetched); else a page a person downloads it from."""

    name: str
    file: str
    method: str
    dataset: str
    quoted: dict[str, float]
    url: str = ""
    direct: bool = True
    config: str | None = None  # the config the import checks the file against (default: the paper config)
    sha256: str | None = None  # where established; None: recorded on first use
    # what a user fetching it by hand should expect: the authors publish no size; estimated from the layout (weights,
    # Adam's two moments, the memory bank of one 128-d row per training video and modality)
    approx_size: str = ""
    which: str = ""  # where the page holds several files: which one this is
    license: str = LICENSE
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.url or _SOURCE + self.file


# 21.3M weights x 3 (with Adam's moments) + 232,067 (Kinetics) or 1,784,108 (AudioSet) videos x 128 x 2 float32
_KINETICS_SIZE = "about 0.5 GB (estimated from the layout; CMA files also hold positive sets)"
_AUDIOSET_SIZE = "about 2.1 GB (estimated from the layout; CMA files also hold positive sets)"
# the localizers: their authors' shared folders (README "Model Zoo"), no stable file addresses
_EZVSL_PAGE = "https://drive.google.com/drive/folders/1I9nyn8VGU4HFEBDpEUpqFz1ywWcqzC6C"
_SLAVC_PAGE = "https://drive.google.com/file/d/1wHufeLWZBv97IaE0cv0GrFk4pLX5NMUj/view"
_EZVSL_LICENSE = "Apache-2.0 (stoneMo/EZ-VSL's license; the weights' page states none of its own)"
_SLAVC_LICENSE = "Apache-2.0 (stoneMo/SLAVC's license; the weights' page states none of its own)"
_PEER_SIZE = "about 0.1 GB (two ResNet-18)"

MODELS: dict[str, Released] = {m.name: m for m in (
    Released("avid-kinetics", "AVID_Kinetics_Cross-N1024_checkpoint.pth.tar", "avid", "kinetics",
             {"ucf101": 86.9, "hmdb51": 59.9, "kinetics400_linear": 43.0}, approx_size=_KINETICS_SIZE),
    Released("avid-cma-kinetics", "AVID-CMA_Kinetics_InstX-N1024-PosW-N64-Top32_checkpoint.pth.tar", "avid-cma",
             "kinetics", {"ucf101": 87.5, "hmdb51": 60.8, "kinetics400_linear": 44.4}, approx_size=_KINETICS_SIZE),
    Released("avid-audioset", "AVID_Audioset_Cross-N1024_checkpoint.pth.tar", "avid", "audioset",
             {"ucf101": 91.0, "hmdb51": 64.1, "kinetics400_linear": 46.5}, approx_size=_AUDIOSET_SIZE),
    Released("avid-cma-audioset", "AVID-CMA_Audioset_InstX-N1024-PosW-N64-Top32_checkpoint.pth.tar", "avid-cma",
             "audioset", {"ucf101": 91.5, "hmdb51": 64.7, "kinetics400_linear": 48.9}, approx_size=_AUDIOSET_SIZE),
    Released("ezvsl-vggsound144k", "ezvsl-vggsound144k.pth", "ezvsl", "vggsound-144k",
             {"vggss_ciou": 38.85, "vggss_auc": 39.54, "flickr_ciou": 83.94, "flickr_auc": 63.60},
             url=_EZVSL_PAGE, direct=False, approx_size=_PEER_SIZE, license=_EZVSL_LICENSE,
             which="the folder's VGG-Sound 144k model (their README's row 'VGG-Sound 144k / VGG-SS')"),
    Released("ezvsl-vggsound-full", "ezvsl-vggsound-full.pth", "ezvsl", "vggsound",
             {"vggss_ciou": 39.34, "vggss_auc": 39.78}, url=_EZVSL_PAGE, direct=False, approx_size=_PEER_SIZE,
             license=_EZVSL_LICENSE, which="the folder's VGG-Sound Full model (their README's row 'VGG-Sound Full')"),
    Released("slavc-vggsound144k", "slavc-vggsound144k.pth", "slavc", "vggsound-144k",
             {"ext_vggss_ap": 32.95, "ext_vggss_max_f1": 40.00, "ext_vggss_loc_acc": 37.79, "ext_flickr_ap": 51.63,
              "ext_flickr_max_f1": 59.10, "ext_flickr_loc_acc": 83.60}, url=_SLAVC_PAGE, direct=False,
             approx_size="about 0.2 GB (two ResNet-18 and their momentum copies)", license=_SLAVC_LICENSE),
)}

# what each quoted figure is, in words (`avssl models`)
QUOTED = {"ucf101": "UCF-101 top-1 (full fine-tuning)", "hmdb51": "HMDB-51 top-1 (full fine-tuning)",
          "kinetics400_linear": "Kinetics-400 top-1 (linear)", "vggss_ciou": "VGG-SS cIoU@0.5",
          "vggss_auc": "VGG-SS AUC", "flickr_ciou": "Flickr-SoundNet cIoU@0.5", "flickr_auc": "Flickr-SoundNet AUC",
          "ext_vggss_ap": "extended VGG-SS AP", "ext_vggss_max_f1": "extended VGG-SS max-F1",
          "ext_vggss_loc_acc": "extended VGG-SS LocAcc", "ext_flickr_ap": "extended Flickr-SoundNet AP",
          "ext_flickr_max_f1": "extended Flickr-SoundNet max-F1", "ext_flickr_loc_acc": "extended Flickr-SoundNet LocAcc"}


def home() -> Path:
    """Where released models are kept: ``$AVSSL_HOME``, else ``torch.hub.get_dir()/avssl`` (``$TORCH_HOME/hub``)."""
    if os.environ.get("AVSSL_HOME"):
        return Path(os.environ["AVSSL_HOME"])
    import torch.hub

    return Path(torch.hub.get_dir()) / "avssl"


def _paths(m: Released, root: Path) -> dict[str, Path]:
    folder = root / m.name
    return {"file": folder / m.file, "part": folder / (m.file + ".part"), "converted": folder / f"{m.name}.pt",
            "record": folder / "sha256.json"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _offline(m: Released, p: dict[str, Path], why: str) -> InputError:
    size = f", {m.approx_size}" if m.approx_size else ""
    return InputError(f"{m.name}: could not fetch {m.address} ({why}): download that file{size} on a machine with "
                      f"network and put it at {p['file']} (or set AVSSL_HOME), then run the command again")


def _download(m: Released, p: dict[str, Path], progress: bool, timeout: float = 60.0) -> None:
    """``m``'s file into ``p["file"]``: resumed from ``.part`` where one is left, its size checked against the
    server's, renamed into place when whole."""
    part = p["part"]
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(m.address, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part is already whole
            part.replace(p["file"])
            return
        raise _offline(m, p, f"HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        raise _offline(m, p, str(getattr(e, "reason", e))) from None
    with response:
        resumed = have and response.status == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        bar = Progress(total, f"download {m.name}", "B", have, enabled=progress, every_s=10.0)
        try:
            with open(part, "ab" if resumed else "wb") as f:
                while block := response.read(1 << 20):
                    f.write(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as e:  # the connection broke: what arrived stays in .part
            raise _offline(m, p, f"the connection broke after {part.stat().st_size} bytes: {e}; the same command "
                                 "resumes the download") from None
        finally:
            bar.close()
    size = part.stat().st_size
    if total is not None and size != total:
        raise _offline(m, p, f"received {size} of {total} bytes; the same command resumes the download")
    part.replace(p["file"])


def _convert(m: Released, p: dict[str, Path]) -> None:
    from .importers import ImportFailed, import_avid_cma, import_peer

    try:
        if m.method in ("ezvsl", "slavc"):
            source = import_peer(m.method, p["file"], p["converted"], m.config)
        else:
            source = import_avid_cma(p["file"], p["converted"], m.config, False, m.method, m.dataset)
    except ImportFailed as e:
        raise InputError(f"{m.name}: {e}") from None
    if m.sha256 and source["sha256"] != m.sha256:
        p["converted"].unlink(missing_ok=True)
        raise InputError(f"{m.name}: {p['file']} has SHA-256 {source['sha256']}, not the published {m.sha256}")
    record = {"file": p["file"].name, "file_sha256": source["sha256"], "converted_sha256": _sha256(p["converted"]),
              "url": m.address}
    with atomic_write(p["record"]) as f:
        json.dump(record, f, indent=1)


def _good(p: dict[str, Path], key: str) -> bool:
    """Whether the file under ``key`` is there and has the hash recorded when it was first used."""
    path = p[key]
    if not path.is_file() or not p["record"].is_file():
        return False
    try:
        record = json.loads(p["record"].read_text())
    except ValueError:
        return False
    return record.get(f"{key}_sha256") == _sha256(path)


@contextmanager
def _only_one(folder: Path, name: str, progress: bool) -> Iterator[None]:
    """Hold the model folder's lock (``.lock``, an advisory ``flock``): one process at a time fetches and converts, the
    others (every rank of a torchrun job, jobs sharing ``AVSSL_HOME``) wait and then find its result."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no advisory locks on this system: one process at a time is up to the user
        yield
        return
    with open(folder / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if progress:
                print(f"{name}: another process is fetching it; waiting", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch(name: str, progress: bool = True, root: Path | None = None,
          models: dict[str, Released] | None = None) -> Path:
    """The converted checkpoint of the released model ``name`` (fetched and converted on first use, by one process at
    a time); raises InputError (one line) when it cannot be had."""
    m = (models or MODELS)[name]
    p = _paths(m, root or home())
    if _good(p, "converted"):
        return p["converted"]
    with _only_one(p["file"].parent, m.name, progress):
        return _fetch_locked(m, p, progress)


def _by_hand(m: Released, p: dict[str, Path]) -> Path:
    """A model whose file a person downloads from a page: converted once it is where ``avssl models`` says; one line
    saying what to do while it is not, or when what is there is not the released file (a saved page, a partial
    download: left in place for the user to replace, never taken for a checkpoint)."""
    which = f"; {m.which}" if m.which else ""
    where = (f"download it from {m.url} ({m.approx_size}{which}) and put it at {p['file']} (or convert a file you have "
             f"with `avssl import {m.method} FILE --output OUT.pt`)")
    if not p["file"].is_file():
        raise InputError(f"{m.name}: its file is shared on a page, not at a stable address: {where}")
    if p["record"].is_file() and not _good(p, "file"):
        p["record"].unlink()  # replaced since it was converted: converted again
    try:
        _convert(m, p)
    except InputError as e:
        p["converted"].unlink(missing_ok=True)
        raise InputError(f"{e}; {where}") from None
    return p["converted"]


def _fetch_locked(m: Released, p: dict[str, Path], progress: bool) -> Path:
    if _good(p, "converted"):  # another process made it while this one waited
        return p["converted"]
    if not m.direct:
        return _by_hand(m, p)
    if p["file"].is_file() and (not p["record"].is_file() or _good(p, "file")):
        try:  # the file is here (fetched by hand, or the conversion was lost): convert it
            _convert(m, p)
            return p["converted"]
        except InputError:
            p["file"].unlink()  # truncated or foreign: fetched again below
            if progress:
                print(f"{m.name}: {p['file'].name} is not the released file (truncated or corrupt): fetching it "
                      "again", flush=True)
    elif p["file"].is_file():
        p["file"].unlink()  # changed since it was first used
    p["converted"].unlink(missing_ok=True)
    p["record"].unlink(missing_ok=True)
    _download(m, p, progress)
    try:
        _convert(m, p)
    except InputError as e:
        p["file"].unlink(missing_ok=True)
        raise InputError(f"{e} (the downloaded file was removed; the same command fetches it again)") from None
    return p["converted"]


def checkpoint_path(spec: str | os.PathLike, progress: bool = True) -> Path:
    """A checkpoint a command was given: an existing file as it is, a run folder's ``last.pt`` (said on stderr), or a
    released model's name (fetched, converted and cached on first use). Anything else is an InputError naming it."""
    path = Path(spec)
    if path.is_dir():  # a run folder: its last checkpoint
        last = path / "last.pt"
        if not last.is_file():
            raise InputError(f"{spec}: a folder without last.pt (name a checkpoint file, a run folder or a released "
                             "model)")
        if progress:
            print(f"{spec}: a run folder: using its {last}", file=sys.stderr, flush=True)
        return last
    if path.exists():
        return path
    if str(spec) in MODELS:
        return fetch(str(spec), progress)
    raise InputError(f"{spec}: no such checkpoint file, nor a released model's name ({', '.join(MODELS)}; "
                     "`avssl models` lists them)")


def list_models(root: Path | None = None) -> list[dict[str, Any]]:
    """What ``avssl models`` shows: each released model, its source, license, the authors' quoted results, and
    whether it is on disk."""
    root = root or home()
    rows = []
    for m in MODELS.values():
        p = _paths(m, root)
        on_disk = str(p["converted"]) if p["converted"].is_file() else (
            f"{p['file']} (not converted yet)" if p["file"].is_file() else None)
        row = {"name": m.name, "method": m.method, "pretrained_on": m.dataset, "source": m.address,
               "license": m.license, "quoted": m.quoted, "on_disk": on_disk, "fetched": m.direct,
               "put_at": None if m.direct else str(p["file"]), "which": m.which or None}
        if m.method in ("avid", "avid-cma"):
            row["quoted_top1"] = m.quoted
        rows.append(row)
    return rows
