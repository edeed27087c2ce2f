"""Large vocabularies: embedded in batches with a progress bar, refused above the documented limit."""
import numpy as np
import pytest
import torch

from pc_ovseg.data import FeatureCloud, PointCloud
from pc_ovseg.encoders import encode_text_with_templates, get_encoder
from pc_ovseg.encoders.testing import make_tiny_clip_checkpoint
from pc_ovseg.errors import InputError
from pc_ovseg.query import QueryEngine

torch.set_num_threads(2)


def _label_space(n: int = 200) -> FeatureCloud:
    names = ["wall", "floor", "chair"]
    lab = np.arange(n) % 3
    return FeatureCloud(PointCloud(np.random.default_rng(0).random((n, 3))), np.eye(3, dtype=np.float16)[lab],
                        np.ones(n, np.float32), np.ones(n, np.uint16), "labels:wall,floor,chair", names)


def test_clip_vocabulary_is_embedded_in_batches_with_a_progress_bar(tmp_path, capsys):
    spec = make_tiny_clip_checkpoint(tmp_path / "tiny_clip.pt")
    enc = get_encoder(spec, device="cpu")
    feats = np.random.default_rng(0).standard_normal((100, enc.dim)).astype(np.float16)
    fc = FeatureCloud(PointCloud(np.zeros((100, 3))), feats, np.ones(100, np.float32), np.ones(100, np.uint16), spec)
    names = [f"object number {i}" for i in range(20)]
    q = QueryEngine(fc, device="cpu", text_encoder=enc)
    q.embed_batch = 8  # 3 batches
    emb = q.embed(names, progress=True)
    assert "text embeddings" in capsys.readouterr().err
    np.testing.assert_allclose(emb, encode_text_with_templates(enc, names), atol=1e-5)  # batching changes nothing
    assert q.labels(names).labels.shape == (100,)  # cached: no second pass, no bar
    q = QueryEngine(fc, device="cpu", text_encoder=enc)
    q.embed_batch = 8
    q.embed(names)  # default: a bar only on a terminal
    q.embed([f"thing {i}" for i in range(8)], progress=True)  # one batch: no bar
    assert capsys.readouterr().err == ""


def test_label_space_vocabulary_of_10000_names(capsys):
    q = QueryEngine(_label_space(), device="cpu")
    names = ["chair", *(f"class {i}" for i in range(9_999))]
    res = q.labels(names)
    assert set(res.labels.tolist()) == {0}  # only "chair" matches a class of the label space
    q = QueryEngine(_label_space(), device="cpu")
    emb = q.embed(names, progress=True)
    assert emb.shape == (10_000, 3) and emb.sum() == 1
    assert "text embeddings" in capsys.readouterr().err


def test_vocabulary_above_the_limit_is_an_input_error():
    assert QueryEngine.max_texts == 20_000
    q = QueryEngine(_label_space(), device="cpu")
    names = [f"class {i}" for i in range(20_001)]
    with pytest.raises(InputError, match="20,001 names is more than the 20,000") as exc:
        q.labels(names)
    assert "\n" not in str(exc.value)
    assert q.embed(names[:20_000] * 2).shape == (40_000, 3)  # the limit counts distinct names
