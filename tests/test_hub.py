"""The authors' models by name, against a local HTTP server the test starts: the first use downloads and converts,
a cut connection resumes, a truncated or foreign file is refused and fetched again, later uses work offline, a
corrupted conversion is caught, and without network one line says what to fetch and where."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest
import torch

import avssl
from avssl import hub
from avssl.cli import main
from avssl.config import InputError

from tests.train.test_import_released import _released_file

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "pretrain"
FIXTURE = ROOT.parent / "shared" / "fixtures" / "avid_cma_released"


class _Files(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (path -> bytes) with byte ranges; ``cut`` (path -> bytes) ends a response after that many
    bytes, once; every request's Range header is kept in ``ranges``."""

    files: dict[str, bytes] = {}
    cut: dict[str, int] = {}
    ranges: list[str | None] = []
    delay: float = 0.0  # seconds between blocks of 4 KiB (a slow connection)

    def do_GET(self) -> None:  # noqa: N802 - the handler's name
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        self.ranges.append(rng)
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(data):
            self.send_error(416)
            return
        body = data[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        limit = self.cut.pop(self.path, None)
        body = body if limit is None else body[:limit]
        if self.delay:
            import time

            for k in range(0, len(body), 4096):
                self.wfile.write(body[k : k + 4096])
                time.sleep(self.delay)
        else:
            self.wfile.write(body)
        if limit is not None:
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    _Files.files, _Files.cut, _Files.ranges, _Files.delay = {}, {}, [], 0.0
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def tiny(tmp_path, server, monkeypatch):
    """A released-layout file (the small architecture of the import tests) served by the test's server, and a
    registry that names it."""
    config = tmp_path / "released_small.yaml"
    config.write_text(f"base: {PAPER / 'avid_cma_r2plus1d18_kinetics.yaml'}\n"
                      "data: {clip: {crop: 32}}\n"
                      "model: {video: {widths: [4, 8, 8, 16]}, audio: {widths: [4, 8, 8, 16], stem_channels: 4},\n"
                      "        embed_dim: 8, head_dims: [16, 16, 8]}\n")
    name = "AVID-CMA_Kinetics_InstX-N1024-PosW-N64-Top32_checkpoint.pth.tar"
    original = _released_file(tmp_path / name, config)
    data = (tmp_path / name).read_bytes()
    _Files.files["/" + name] = data
    url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
    entry = hub.Released("tiny-cma", name, "avid-cma", "kinetics", {"ucf101": 0.0, "hmdb51": 0.0,
                                                                   "kinetics400_linear": 0.0}, url=url, config=str(config))
    monkeypatch.setattr(hub, "MODELS", {"tiny-cma": entry})
    monkeypatch.setenv("AVSSL_HOME", str(tmp_path / "home"))
    return {"model": original, "data": data, "path": "/" + name, "home": tmp_path / "home" / "tiny-cma", "file": name}


def _same(model, original) -> None:
    video = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.embed_video(video), original.embed_video(video), atol=1e-6)


def test_a_name_is_fetched_converted_and_then_used_offline(tiny, server):
    path = hub.checkpoint_path("tiny-cma", progress=False)
    assert path == tiny["home"] / "tiny-cma.pt" and (tiny["home"] / tiny["file"]).read_bytes() == tiny["data"]
    record = json.loads((tiny["home"] / "sha256.json").read_text())
    assert set(record) >= {"file_sha256", "converted_sha256", "url"}
    _same(avssl.load_pretrained("tiny-cma"), tiny["model"])
    server.shutdown()  # offline from here
    _same(avssl.load_pretrained("tiny-cma"), tiny["model"])
    assert hub.list_models()[0]["on_disk"] == str(path)


def test_a_cut_connection_resumes_where_it_stopped(tiny):
    _Files.cut[tiny["path"]] = 5000
    with pytest.raises(InputError, match="resumes the download"):
        hub.checkpoint_path("tiny-cma", progress=False)
    part = tiny["home"] / (tiny["file"] + ".part")
    assert part.stat().st_size == 5000
    hub.checkpoint_path("tiny-cma", progress=False)
    assert _Files.ranges[-1] == "bytes=5000-" and not part.exists()
    assert (tiny["home"] / tiny["file"]).read_bytes() == tiny["data"]


def test_a_truncated_or_foreign_file_is_refused_and_fetched_again(tiny):
    _Files.files[tiny["path"]] = tiny["data"][: len(tiny["data"]) // 2]  # the server itself holds a cut file
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint.*removed; the same command fetches it"):
        hub.checkpoint_path("tiny-cma", progress=False)
    assert not (tiny["home"] / tiny["file"]).exists()
    _Files.files[tiny["path"]] = tiny["data"]
    hub.checkpoint_path("tiny-cma", progress=False)
    # a file put there by hand that is not the released one: refused and fetched again, in one go
    (tiny["home"] / "tiny-cma.pt").unlink()
    (tiny["home"] / "sha256.json").unlink()
    (tiny["home"] / tiny["file"]).write_bytes(b"a web page that says 404")
    _same(avssl.load_pretrained("tiny-cma"), tiny["model"])


def test_a_conversion_corrupted_since_is_caught_and_made_again(tiny):
    path = hub.checkpoint_path("tiny-cma", progress=False)
    path.write_bytes(path.read_bytes()[:-100] + b"\0" * 100)
    requests = len(_Files.ranges)
    again = hub.checkpoint_path("tiny-cma", progress=False)
    assert len(_Files.ranges) == requests  # converted again from the file on disk, not downloaded
    _same(avssl.load_pretrained(again), tiny["model"])


def test_without_network_one_line_says_what_to_fetch_and_where(tiny, server, capsys, tmp_path):
    server.shutdown()
    server.server_close()
    rc = main(["localize", "--checkpoint", "tiny-cma", "--video", str(tmp_path / "x.mp4"), "--output-dir",
               str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "could not fetch http://127.0.0.1" in err[0] and f"put it at {tiny['home'] / tiny['file']}" in err[0]
    assert "not a released model" not in err[0]
    assert main(["localize", "--checkpoint", "nothing-by-that-name", "--video", "x.mp4", "--output-dir", "o"]) == 2
    assert "nor a released model's name (tiny-cma" in capsys.readouterr().err


def test_the_models_command_lists_the_four_released_models(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("AVSSL_HOME", str(tmp_path))
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows][:4] == ["avid-kinetics", "avid-cma-kinetics", "avid-audioset", "avid-cma-audioset"]
    assert all(r["source"].startswith("https://dl.fbaipublicfiles.com/avid-cma/checkpoints/") for r in rows[:4])
    assert rows[3]["quoted_top1"] == {"ucf101": 91.5, "hmdb51": 64.7, "kinetics400_linear": 48.9}
    assert all("CC BY-NC 4.0" in r["license"] and r["on_disk"] is None for r in rows[:4])
    assert [r["method"] for r in rows[4:]] == ["ezvsl", "ezvsl", "slavc"] and not any(r["fetched"] for r in rows[4:])


@pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"the released-model fixture is not here ({FIXTURE})")
def test_the_released_layout_fetched_by_name_is_the_authors_model(tmp_path, server, monkeypatch):
    """A file of the released layout at full size (the fixture's rule-made weights), fetched as `avid-kinetics` and
    converted with the paper config, computes what the authors' code computed."""
    import torch.nn.functional as F

    from tests.models.test_released import _rel_err, _rule_state

    keys = json.loads((FIXTURE / "keys.json").read_text())
    ref = torch.load(FIXTURE / "reference.pt", weights_only=True)
    name = hub.MODELS["avid-kinetics"].file
    torch.save({"epoch": 30, "model": _rule_state(keys), "optimizer": {}, "train_criterion": {}}, tmp_path / name)
    _Files.files["/" + name] = (tmp_path / name).read_bytes()
    url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
    monkeypatch.setattr(hub, "MODELS", {"avid-kinetics": hub.Released(
        "avid-kinetics", name, "avid", "kinetics", hub.MODELS["avid-kinetics"].quoted, url=url)})
    monkeypatch.setenv("AVSSL_HOME", str(tmp_path / "home"))
    model = avssl.load_pretrained("avid-kinetics")
    with torch.no_grad():
        v = model.embed_video(ref["video"])
    assert _rel_err(v, F.normalize(ref["video_emb"], dim=1)) < 1e-5


_FETCH = """
import json, sys
from avssl import hub
e = json.loads(sys.argv[1])
hub.MODELS = {e["name"]: hub.Released(e["name"], e["file"], "avid-cma", "kinetics", {}, url=e["url"], config=e["config"])}
print(hub.checkpoint_path(e["name"], progress=True))
"""


def test_two_processes_fetching_one_model_at_once_both_get_it_and_it_is_fetched_once(tiny, server, tmp_path):
    """Every rank of a torchrun job names the model at the same moment (or jobs share AVSSL_HOME): one fetches and
    converts, the others wait for it; none writes into another's partial file."""
    import os
    import subprocess
    import sys

    _Files.delay = 0.002  # the download takes long enough for both to start it
    entry = hub.MODELS["tiny-cma"]
    arg = json.dumps({"name": "tiny-cma", "file": entry.file, "url": entry.url, "config": entry.config})
    env = dict(os.environ, AVSSL_HOME=str(tiny["home"].parent))
    procs = [subprocess.Popen([sys.executable, "-c", _FETCH, arg], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT, env=env) for _ in range(2)]
    results = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-2000:] for r in results]
    assert {r[0].strip() for r in results} == {str(tiny["home"] / "tiny-cma.pt")}
    assert len(_Files.ranges) == 1  # fetched once
    assert any("another process is fetching it; waiting" in r[1] for r in results)
    _same(avssl.load_pretrained("tiny-cma"), tiny["model"])


def test_the_offline_line_of_a_released_model_says_how_large_its_file_is(monkeypatch, tmp_path):
    monkeypatch.setenv("AVSSL_HOME", str(tmp_path))
    m = hub.MODELS["avid-cma-audioset"]
    monkeypatch.setattr(hub, "MODELS", {m.name: hub.Released(m.name, m.file, m.method, m.dataset, m.quoted,
                                                             url="http://127.0.0.1:9/none", approx_size=m.approx_size)})
    with pytest.raises(InputError, match="download that file, about 2.1 GB"):
        hub.checkpoint_path(m.name, progress=False)


def test_the_localizers_by_name_work_once_their_file_is_where_the_models_command_says(monkeypatch, tmp_path, capsys):
    """EZ-VSL's and SLAVC's files sit behind shared-folder pages: a name says where to put the file, then works; a
    saved web page or a partial file in its place is refused with one line, never taken for a checkpoint."""
    from tests.models.test_peers import _their_file

    monkeypatch.setenv("AVSSL_HOME", str(tmp_path / "home"))
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    where = tmp_path / "home" / "ezvsl-vggsound144k" / "ezvsl-vggsound144k.pth"
    assert f"put the downloaded file at {where}" in listing and "VGG-SS cIoU@0.5 38.85" in listing
    assert "drive.google.com" in listing and "Apache-2.0" in listing and "extended VGG-SS AP 32.95" in listing
    with pytest.raises(InputError, match="shared on a page, not at a stable address: download it from https://drive"):
        hub.checkpoint_path("ezvsl-vggsound144k", progress=False)
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text("<!DOCTYPE html><html><title>Google Drive - Virus scan warning</title></html>")
    rc = main(["localize", "--checkpoint", "ezvsl-vggsound144k", "--video", "x.mp4", "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "it is an HTML page" in err[0] and "download it from" in err[0]
    model = _their_file("ezvsl", where)
    loaded = avssl.load_pretrained("ezvsl-vggsound144k")
    image = torch.randn(1, 3, 1, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded.spatial_video(image), model.spatial_video(image), rtol=0, atol=0)
    rows = {r["name"]: r for r in hub.list_models()}
    assert rows["ezvsl-vggsound144k"]["on_disk"].endswith("ezvsl-vggsound144k.pt")
    assert set(rows) >= {"avid-cma-audioset", "ezvsl-vggsound144k", "ezvsl-vggsound-full", "slavc-vggsound144k"}
