"""Feature extraction (evals/extract.py) on synthetic mp4 files.

Oracles: the Embedder on the whole decoded video (a clip that covers the whole video, one centred view);
hand-checked shapes, labels and paths; the same extraction twice (determinism); a second process group (2 gloo
processes must write exactly the file of 1 process); a corrupt file among the videos (skipped and named).

Shapes: N videos, V = clips x views, T' token steps, K tokens, D width.
"""

from __future__ import annotations

import argparse
import os

import pytest
import torch
import torch.multiprocessing as mp
from conftest import free_port
from vjepa.evals.extract import add_arguments, extract_features, load_features, run, view_offsets

from vjepa.config import ModelConfig
from vjepa.data.synthetic import write_synthetic
from vjepa.embed import Embedder
from vjepa.exports import Exported, write_export
from vjepa.models.build import build_pair
from vjepa.models.encoder import VisionTransformer
from vjepa.models.init import init_weights

D = 64
COMMON = dict(frame_step=1, batch_size=4, seed=0)


def tiny_encoder(num_frames: int = 8) -> VisionTransformer:
    torch.manual_seed(0)
    enc = VisionTransformer(img_size=32, num_frames=num_frames, patch_size=16, embed_dim=D, depth=2, num_heads=4)
    init_weights(enc)
    return enc.eval()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """6 synthetic mp4s (16 frames, 64 px) and a list with a corrupt file as its 3rd line."""
    root = tmp_path_factory.mktemp("extract")
    csv = write_synthetic(root / "synth", num_videos=6, num_frames=16, size=64, seed=0)
    lines = csv.read_text().splitlines()
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    lines.insert(2, f"{root / 'broken.mp4'} 7")
    listed = root / "list.csv"
    listed.write_text("\n".join(lines) + "\n")
    (root / "small.csv").write_text("\n".join(lines[:2]) + "\n")  # 2 good videos, for the repeated extractions
    good = [line.rsplit(maxsplit=1) for line in csv.read_text().splitlines()]
    return dict(
        root=root, csv=listed, small=root / "small.csv", paths=[p for p, _ in good], labels=[int(x) for _, x in good]
    )


def test_shapes_labels_paths_and_bad_file(videos, tmp_path):
    enc = tiny_encoder()
    expected = {"pooled": (D,), "tokens": (16, D)}  # "frames": test_one_clip_covering... and the command test
    for output, tail in expected.items():
        out = tmp_path / f"{output}.pt"
        result = extract_features(enc, videos["csv"], out, clips=2, views=3, output=output, short_side=40, **COMMON)
        d = load_features(out)
        assert d["format"] == "vjepa.features" and d["output"] == output
        assert d["features"].shape == (6, 6, *tail) and d["features"].dtype == torch.float32
        assert d["labels"].tolist() == videos["labels"] and d["paths"] == videos["paths"]
        assert d["grid"] == (4, 2, 2)
        assert d["config"] == dict(
            clips=2, views=3, frames_per_clip=8, frame_step=1, crop_size=32, seed=0, short_side=40
        )
        assert result["num_videos"] == 7 and result["num_extracted"] == 6 and result["shape"] == [6, 6, *tail]
        [bad] = result["skipped"]
        assert bad["path"].endswith("broken.mp4") and bad["line"] == 3 and bad["reason"]
        assert d["skipped"] == result["skipped"]
        assert torch.equal(result["features"], d["features"]) and result["paths"] == d["paths"]  # returned too
    tokens = load_features(tmp_path / "tokens.pt")["features"]
    pooled = load_features(tmp_path / "pooled.pt")["features"]
    torch.testing.assert_close(pooled, tokens.mean(2), atol=1e-6, rtol=1e-6)


def test_one_clip_covering_the_video_equals_embedder(videos, tmp_path):
    """A 16-frame clip at step 1 of a 16-frame video is the whole video: one window of the Embedder."""
    enc = tiny_encoder(num_frames=16)
    extract_features(enc, videos["csv"], tmp_path / "f.pt", output="frames", **COMMON)
    d = load_features(tmp_path / "f.pt")
    emb = Embedder(enc)
    for i, path in enumerate(videos["paths"]):
        torch.testing.assert_close(d["features"][i, 0], emb.embed(path, output="frames"), atol=1e-5, rtol=1e-5)


def test_deterministic_and_views_clips_differ(videos, tmp_path):
    enc = tiny_encoder()
    kw = dict(clips=2, views=3, short_side=40, frame_step=1, batch_size=4)
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        extract_features(enc, videos["small"], tmp_path / f"{name}.pt", seed=seed, **kw)
    a, b, c = (load_features(tmp_path / f"{x}.pt")["features"] for x in "abc")
    assert torch.equal(a, b)  # same seed: identical
    assert not torch.equal(a, c)  # another seed: other clip positions
    x = a.reshape(2, 2, 3, D)  # [N, clips, views, D]
    for i in range(2):
        for k in range(2):
            assert not torch.allclose(x[i, k, 0], x[i, k, 1]) and not torch.allclose(x[i, k, 1], x[i, k, 2])
        assert not torch.allclose(x[i, 0], x[i, 1])  # the two clips start at different frames
    assert view_offsets(40, 32, 3) == [0, 4, 8] and view_offsets(40, 32, 1) == [4]


def _worker(rank: int, world: int, port: int, encoder: VisionTransformer, csv: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = extract_features(encoder, csv, out, clips=2, output="tokens", rank=rank, world_size=world, **COMMON)
        assert result["num_extracted"] == 6 and len(result["skipped"]) == 1
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_two_processes_write_the_file_of_one(videos, tmp_path, single_thread):
    enc = tiny_encoder()
    extract_features(enc, videos["csv"], tmp_path / "one.pt", clips=2, output="tokens", **COMMON)
    # fork: the children need no re-import of torch and the package (the spawned start costs ~10 s per process)
    if torch.distributed.is_initialized():  # left by an in-process training test: a forked child cannot tear it down
        torch.distributed.destroy_process_group()
    args = (2, free_port(), enc, str(videos["csv"]), str(tmp_path / "two.pt"))
    mp.start_processes(_worker, args=args, nprocs=2, join=True, start_method="fork")
    one, two = load_features(tmp_path / "one.pt"), load_features(tmp_path / "two.pt")
    assert torch.equal(one["features"], two["features"])
    assert one["labels"].tolist() == two["labels"].tolist() and one["paths"] == two["paths"]
    assert one["skipped"] == two["skipped"] and one["config"] == two["config"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.pt", "two.pt"]  # part files removed


def test_extract_command_and_errors(videos, tmp_path, capsys):
    model = ModelConfig(preset="tiny", embed_dim=D, depth=1, num_heads=2)
    encoder, _ = build_pair(model, frames_per_clip=8, crop_size=32)
    ex = Exported(model=model, frames_per_clip=8, crop_size=32, step=5, source="test", encoder=encoder.state_dict())
    ckpt = write_export(ex, tmp_path / "enc.pt")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = ["--checkpoint", str(ckpt), "--csv", str(videos["csv"]), "--out", str(tmp_path / "f.pt")]
    assert run(parser.parse_args([*args, "--output", "frames", "--num-workers", "0", "--fp16"])) == 0
    assert "6 of 7 videos" in capsys.readouterr().out
    d = load_features(tmp_path / "f.pt")
    assert d["features"].shape == (6, 1, 4, D) and d["features"].dtype == torch.float16
    assert "step 5" in d["encoder"]
    torch.save({"format": "vjepa.probe"}, tmp_path / "probe.pt")
    bad = ["--checkpoint", str(tmp_path / "probe.pt"), "--csv", str(videos["csv"]), "--out", str(tmp_path / "g.pt")]
    assert run(parser.parse_args(bad)) == 2
    assert "probe checkpoint" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a features file"):
        load_features(tmp_path / "probe.pt")
