"""Format readers on small fake copies of the official layouts, with generated media."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from avssl.data.decode import DecodeError, decode_audio, decode_clip
from avssl.data.formats import (
    read_esc50,
    read_folders,
    read_hmdb51,
    read_kinetics,
    read_list,
    read_ucf101,
)
from avssl.data.encode import write_av
from avssl.data.labeled import read_labeled


@pytest.fixture(scope="module")
def avi(tmp_path_factory) -> Path:
    """A silent Xvid-like AVI (MPEG-4 part 2), as UCF-101 and HMDB-51 ship."""
    path = tmp_path_factory.mktemp("avi") / "clip.avi"
    frames = [np.full((48, 64, 3), 16 * i, np.uint8) for i in range(12)]
    write_av(path, frames, 12, None, video_codec="mpeg4")
    return path


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wav") / "sound.wav"
    t = np.arange(int(5 * 44100)) / 44100
    write_av(path, None, 25, (0.3 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32), 44100,
             audio_codec="pcm_s16le")
    return path


def _put(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)


def test_kinetics_csv_over_download_layouts(tmp_path, avi):
    csv = tmp_path / "train.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split,is_cc\n"
                   "playing guitar,abc,10,20,train,0\n"
                   "abseiling,def,0,10,train,1\n"
                   "abseiling,gone,5,15,train,0\n")
    _put(avi, tmp_path / "videos/train/playing_guitar/abc_000010_000020.mp4")  # underscores for spaces
    _put(avi, tmp_path / "videos/train/abseiling/def_000000_000010.mp4")
    ks = read_kinetics(csv, tmp_path / "videos")
    assert ks.classes == ["abseiling", "playing guitar"]
    assert sorted((Path(e["path"]).name, e["label"]) for e in ks.entries) == [
        ("abc_000010_000020.mp4", 1), ("def_000000_000010.mp4", 0)]
    assert ks.missing == ["gone_000005_000015"] and "1 listed but missing" in ks.summary()
    _put(avi, tmp_path / "flat/abc.mp4")  # flat folder, files named by the id alone
    assert len(read_labeled("kinetics", tmp_path / "flat", csv).entries) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("name,id\nx,y\n")
    with pytest.raises(ValueError, match="expected the columns"):
        read_kinetics(bad, tmp_path)


def test_ucf101_split_lists_and_silent_avi(tmp_path, avi):
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (lists / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
                                           "Archery/v_Archery_g08_c01.avi 2\nArchery/v_Archery_g09_c01.avi 2\n")
    (lists / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    for rel in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "Archery/v_Archery_g08_c01.avi",
                "Archery/v_Archery_g01_c01.avi"):
        _put(avi, tmp_path / "UCF-101" / rel)
    train = read_ucf101(lists, tmp_path, 1, "train")
    assert [(e["class"], e["label"]) for e in train.entries] == [("ApplyEyeMakeup", 0), ("Archery", 1)]
    assert train.missing == ["Archery/v_Archery_g09_c01.avi"]
    test = read_labeled("ucf101", tmp_path / "UCF-101", lists, split=1, subset="test")
    assert [e["label"] for e in test.entries] == [1] and not test.missing
    # fine-tuning reads video only: a file without an audio track decodes, with silence if audio is asked for
    clip = decode_clip(test.entries[0]["path"], 0.0, 0.5, 8, 32, None, 16000)
    assert clip.frames.shape == (4, 32, 43, 3) and clip.waveform is None  # short side 32 of 48x64
    with pytest.raises(ValueError, match="splits 1, 2, 3"):
        read_ucf101(lists, tmp_path, 4)


def test_hmdb51_split_files(tmp_path, avi):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    (splits / "cartwheel_test_split1.txt").write_text("d.avi 1 \ne.avi 1\n")
    (splits / "cartwheel_test_split2.txt").write_text("d.avi 2\n")
    for rel in ("brush_hair/a.avi", "brush_hair/b.avi", "brush_hair/c.avi", "cartwheel/d.avi"):
        _put(avi, tmp_path / "videos" / rel)
    train = read_hmdb51(splits, tmp_path / "videos", 1, "train")
    assert train.classes == ["brush_hair", "cartwheel"]
    assert [(Path(e["path"]).name, e["label"]) for e in train.entries] == [("a.avi", 0), ("d.avi", 1)]
    assert train.missing == ["cartwheel/e.avi"]  # listed but absent: counted, not fatal
    assert [Path(e["path"]).name for e in read_hmdb51(splits, tmp_path / "videos", 1, "test").entries] == ["b.avi"]
    with pytest.raises(ValueError, match="no \\*_test_split3.txt"):
        read_hmdb51(splits, tmp_path / "videos", 3)


def test_path_label_list_and_class_folders(tmp_path, avi):
    for rel in ("dogs/1.mp4", "dogs/2.mp4", "cats/3.mp4"):
        _put(avi, tmp_path / rel)
    folders = read_folders(tmp_path)
    assert folders.classes == ["cats", "dogs"] and [e["label"] for e in folders.entries] == [0, 1, 1]
    (tmp_path / "names.txt").write_text("# comment\ndogs/1.mp4 dog\ncats/3.mp4 cat\ncats/9.mp4 cat\n")
    named = read_list(tmp_path / "names.txt")
    assert named.classes == ["cat", "dog"] and [e["label"] for e in named.entries] == [1, 0]
    assert named.missing == ["cats/9.mp4"]
    (tmp_path / "ids.txt").write_text("dogs/1.mp4 2\ncats/3.mp4 0\n")
    assert [e["label"] for e in read_list(tmp_path / "ids.txt").entries] == [2, 0]
    (tmp_path / "broken.txt").write_text("no-label-here\n")
    with pytest.raises(ValueError, match="expected `path label`"):
        read_list(tmp_path / "broken.txt")
    with pytest.raises(ValueError, match="unknown dataset format"):
        read_labeled("imagenet", tmp_path)


def test_esc50_folds_and_audio_only_decoding(tmp_path, wav, avi):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta/esc50.csv").write_text(
        "filename,fold,target,category,esc10,src_file,take\n"
        "1-100-A-0.wav,1,0,dog,True,100,A\n2-200-A-1.wav,2,1,rooster,False,200,A\n3-300-A-1.wav,3,1,rooster,False,300,A\n")
    _put(wav, tmp_path / "audio/1-100-A-0.wav")
    _put(wav, tmp_path / "audio/2-200-A-1.wav")
    esc = read_esc50(tmp_path)
    assert esc.classes == ["dog", "rooster"] and [e["fold"] for e in esc.entries] == [1, 2]
    assert esc.missing == ["3-300-A-1.wav"]
    assert [e["fold"] for e in read_labeled("esc50", tmp_path, split=2).entries] == [2]
    clip = decode_audio(esc.entries[0]["path"], 1.0, 2.0, 16000)
    assert clip.waveform.shape == (32000,) and clip.padded_samples == 0
    assert 0.15 < np.abs(clip.waveform).max() < 0.35
    late = decode_audio(esc.entries[0]["path"], 4.0, 2.0, 16000)  # 1 s past the end: silence, counted
    assert late.padded_samples == pytest.approx(16000, abs=200) and not late.waveform[-8000:].any()
    with pytest.raises(DecodeError, match="past the media"):
        decode_audio(esc.entries[0]["path"], 4.0, 2.0, 16000, on_short="error")
    with pytest.raises(DecodeError, match="no audio stream"):
        decode_audio(avi, 0.0, 1.0, 16000)


# --- sound-source localization annotations ---------------------------------------------------------------

def test_vggss_reader_finds_media_by_name_and_counts_the_missing(tmp_path):
    from avssl.data.formats.localization import read_localization

    media = tmp_path / "media"
    (media / "sub").mkdir(parents=True)
    (media / "sub" / "aaa_000010.mp4").write_bytes(b"")
    (media / "bbb.jpg").write_bytes(b"")
    (media / "bbb.wav").write_bytes(b"")
    rows = [{"file": "aaa_000010", "class": "dog barking", "bbox": [[0.1, 0.2, 0.5, 0.6], [0.7, 0.7, 1.2, 0.9]]},
            {"file": "bbb", "class": "guitar", "bbox": [[0, 0, 1, 1]]},
            {"file": "ccc", "class": "car", "bbox": [[0, 0, 1, 1]]}]
    (tmp_path / "vggss.json").write_text(json.dumps(rows))
    data = read_localization("vggss", tmp_path / "vggss.json", media)
    assert [s.id for s in data.samples] == ["aaa_000010", "bbb"] and data.missing == ["ccc"]
    a, b = data.samples
    assert a.video == a.audio and a.video.endswith("aaa_000010.mp4") and a.class_name == "dog barking"
    assert a.boxes[1] == [0.7, 0.7, 1.0, 0.9]  # clipped to the frame
    assert b.video.endswith("bbb.jpg") and b.audio.endswith("bbb.wav") and not b.consensus
    assert "1 without media" in data.summary()


def test_flickr_reader_reads_every_annotators_box(tmp_path):
    from avssl.data.formats.localization import read_flickr

    ann, media = tmp_path / "Annotations", tmp_path / "media"
    ann.mkdir()
    media.mkdir()
    (ann / "100.xml").write_text(
        "<annotation><size><width>320</width><height>240</height></size>"
        "<object><bbox><xmin>32</xmin><ymin>24</ymin><xmax>160</xmax><ymax>120</ymax></bbox></object>"
        "<object><bbox><xmin>0</xmin><ymin>0</ymin><xmax>320</xmax><ymax>240</ymax></bbox></object>"
        "</annotation>")
    # The released files: no size (256x256 frames), a label element first, then the coordinates.
    (ann / "200.xml").write_text(
        "<annotation><object><bbox><label>x</label><a>64</a><b>0</b><c>128</c><d>256</d></bbox></object>"
        "</annotation>")
    (ann / "300.xml").write_text("<annotation/>")
    for name in ("100.mp4", "200.jpg", "200.wav"):
        (media / name).write_bytes(b"")
    data = read_flickr(ann, media)
    assert [s.id for s in data.samples] == ["100", "200"] and data.missing == ["300"]
    assert data.samples[0].boxes == [[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]] and data.samples[0].consensus
    assert data.samples[1].boxes == [[0.25, 0.0, 0.5, 1.0]]
