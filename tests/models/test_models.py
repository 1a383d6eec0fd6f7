from __future__ import annotations

import pytest
import torch

from avssl.config import load_config
from avssl.models.avmodel import AVModel, ModelConfig, count_parameters
from avssl.train.pretrain import PretrainConfig

# The counts documented in the configs' headers.
DOCUMENTED = {
    "configs/pretrain/avid_small_cpu.yaml": (228_760, 25_418, 266_658),
    "configs/pretrain/avid_r2plus1d18tv_8x112_200e_kinetics.yaml": (33_178_518, 4_705_634, 38_540_792),
    "configs/pretrain/avid_r2plus1d18_kinetics.yaml": (15_379_136, 4_725_696, 21_286_784),
    "configs/pretrain/avid_cma_r2plus1d18_kinetics.yaml": (15_379_136, 4_725_696, 21_286_784),
    "configs/pretrain/avid_r2plus1d18_audioset.yaml": (15_379_136, 4_725_696, 21_286_784),
    "configs/pretrain/avid_cma_r2plus1d18_audioset.yaml": (15_379_136, 4_725_696, 21_286_784),
}


@pytest.mark.parametrize("path", sorted(DOCUMENTED))
def test_shipped_configs_have_their_documented_parameter_counts(path):
    cfg = load_config(PretrainConfig, path)
    m = AVModel(cfg.model)
    assert (count_parameters(m.video), count_parameters(m.audio), count_parameters(m)) == DOCUMENTED[path]
    header = open(path).read()
    v, a, t = (f"{x / 1e6:.2f}M" for x in DOCUMENTED[path])
    if "base:" not in header:
        assert v in header and a in header and t in header


@pytest.fixture(scope="module")
def small():
    return AVModel(load_config(PretrainConfig, "configs/pretrain/avid_small_cpu.yaml").model).eval()


def test_shapes_of_maps_vectors_and_embeddings(small):
    video, audio = torch.randn(2, 3, 4, 56, 56), torch.randn(2, 1, 40, 101)
    fmap, vec = small.video(video)
    assert fmap.shape == (2, 64, 1, 4, 4) and vec.shape == (2, 64)
    afmap, avec = small.audio(audio)
    assert afmap.shape[:2] == (2, 64) and avec.shape == (2, 64)
    v, a = small(video, audio)
    assert v.shape == a.shape == (2, 32)
    assert torch.allclose(v.norm(dim=1), torch.ones(2), atol=1e-5)
    dense = small.dense_video(video)
    assert dense.shape == (2, 32, 1, 4, 4)
    assert torch.allclose(dense.norm(dim=1), torch.ones(2, 1, 4, 4), atol=1e-5)


def test_dense_embedding_of_the_mean_feature_is_the_pooled_embedding(small):
    # The head applied per location uses the same weights as on the pooled vector.
    video = torch.randn(1, 3, 4, 56, 56)
    fmap, vec = small.video(video)
    assert torch.allclose(small.video_head(vec), small.video_head(fmap.mean(dim=(2, 3, 4))), atol=1e-6)


@pytest.mark.slow
def test_full_r2plus1d18_shapes():
    m = AVModel(ModelConfig()).eval()
    with torch.no_grad():
        fmap, vec = m.video(torch.randn(1, 3, 8, 112, 112))
    assert fmap.shape == (1, 512, 1, 7, 7) and vec.shape == (1, 512)


def test_frame_encoder_has_the_3d_encoders_interface():
    from avssl.models.frame import FrameEncoder, FrameEncoderConfig

    enc = FrameEncoder(FrameEncoderConfig(widths=(8, 8, 16, 16), stem_channels=8, frames=1))
    video = torch.randn(2, 3, 3, 48, 64)
    fmap, pooled = enc(video)
    assert fmap.shape == (2, 16, 1, 6, 8) and pooled.shape == (2, 16)  # stride 8
    # one frame: the centre one; the other frames do not matter
    other = video.clone()
    other[:, :, [0, 2]] = 0
    assert torch.equal(enc.eval()(video)[0], enc(other)[0])
    assert enc.set_last_stride(1)(video)[0].shape == (2, 16, 1, 6, 8)  # trained at stride 1: unchanged
    enc2 = FrameEncoder(FrameEncoderConfig(widths=(8, 8, 16, 16), stem_channels=8, strides=(1, 2, 2, 2))).eval()
    assert enc2(video)[0].shape[-2:] == (3, 4) and enc2.set_last_stride(1)(video)[0].shape[-2:] == (6, 8)
    m = AVModel(ModelConfig(video_encoder="frame", embed_dim=8)).eval()
    assert m.spatial_video(torch.randn(1, 3, 1, 64, 96)).shape == (1, 8, 8, 12)


def test_head_batch_norm_centres_embeddings_over_the_batch_and_its_locations():
    from avssl.models.heads import ProjectionHead

    torch.manual_seed(0)
    head = ProjectionHead(8, 4, out_bn=True)
    x = torch.rand(6, 3, 5, 8) + 2.0  # all-positive features point one way
    plain = ProjectionHead(8, 4)
    plain.mlp.load_state_dict(head.mlp.state_dict())
    y, z = head(x).reshape(-1, 4), plain(x).reshape(-1, 4)
    assert (z @ z.T).mean() > 0.9 and (y @ y.T).mean().abs() < 0.1
    assert torch.allclose(y.norm(dim=1), torch.ones(len(y)), atol=1e-5)
    assert head.eval()(x[:1]).shape == (1, 3, 5, 4)  # eval: running statistics, any batch
