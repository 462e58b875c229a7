"""PCA pictures (evals/pca.py) against an eigendecomposition oracle and a token field with a known first direction;
reports (evals/report.py): result.json, report.md, figures with and without matplotlib, combined tables."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from vjepa.evals.pca import frame_indices, pca_fit, pca_image, resize_center_crop, robust_unit, save_png, token_grid
from vjepa.evals.report import combine_results, flatten_numbers, markdown_table, write_report

from vjepa.data.synthetic import render_clip
from vjepa.data.transforms import normalize_clip
from vjepa.models.encoder import VisionTransformer
from vjepa.models.init import init_weights


def test_pca_components_match_eigendecomposition():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(200, 12, generator=g) @ torch.randn(12, 12, generator=g) + 3.0  # correlated, offset
    mean, comps, var = pca_fit(tokens, 3)
    x = tokens.double() - tokens.double().mean(0)
    evals_, evecs = torch.linalg.eigh(x.T @ x / (x.shape[0] - 1))  # ascending
    oracle_vecs, oracle_vals = evecs[:, -3:].flip(1).T, evals_[-3:].flip(0)  # [3, D], [3]
    torch.testing.assert_close(var, oracle_vals)
    for c, o in zip(comps, oracle_vecs):
        sign = torch.sign(c @ o)
        torch.testing.assert_close(c, sign * o, atol=1e-9, rtol=0)
    torch.testing.assert_close(comps @ comps.T, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(mean, tokens.double().mean(0))
    assert (comps.gather(1, comps.abs().argmax(1, keepdim=True)) > 0).all()  # fixed sign convention


def test_robust_unit_uses_percentiles():
    v = torch.linspace(0, 1, 101)[:, None].repeat(1, 2).double()
    v[0, 0], v[-1, 0] = -100.0, 100.0  # outliers do not set the scale
    v[:, 1] = 4.0  # constant -> 0.5
    out = robust_unit(v)
    assert out.min() >= 0 and out.max() <= 1
    assert out[0, 0] == 0 and out[-1, 0] == 1
    assert out[50, 0] == pytest.approx(0.5, abs=0.01)
    assert (out[:, 1] == 0.5).all()


def test_left_right_field_gives_red_varying_left_to_right():
    t, h, w, d = 2, 4, 6, 10
    g = torch.Generator().manual_seed(1)
    direction = torch.zeros(d)
    direction[2] = 1.0  # the largest-magnitude loading is positive, so red grows with the column
    col = torch.arange(w).float() - (w - 1) / 2
    field = col.view(1, 1, w, 1) * 5.0 * direction  # [T', H', W', D]: first principal direction = column
    field = field + 0.3 * torch.randn(t, h, w, d, generator=g)  # weaker, isotropic variation
    tokens = field.reshape(-1, d)  # [N, D] time-major
    frames = torch.zeros(2 * t, 32, 48, 3, dtype=torch.uint8)  # tubelet 2, patch 8
    img = pca_image(frames, tokens, (t, h, w), gap=2)
    assert img.shape == (2 * 32 + 2, t * 48 + (t - 1) * 2, 3)
    for step in range(t):
        x0 = step * (48 + 2)
        red = img[32 + 2 :, x0 : x0 + 48, 0].float().mean(0)  # [W] column means of the PCA picture
        per_patch = red.view(w, 8)[:, 0]  # nearest upsampling: constant within a patch column
        assert (per_patch[1:] >= per_patch[:-1]).all(), per_patch
        assert per_patch[-1] - per_patch[0] > 200
        assert (img[32 : 32 + 2] == 255).all()  # white gap between the rows


def tiny_encoder() -> VisionTransformer:
    torch.manual_seed(0)
    enc = VisionTransformer(
        img_size=32, num_frames=8, patch_size=16, tubelet_size=2, embed_dim=64, depth=2, num_heads=4
    )
    init_weights(enc)
    return enc.eval()


def test_png_from_encoder_has_expected_size(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    enc = tiny_encoder()
    frames = resize_center_crop(render_clip(0, 3, 8, 48), 32)  # [8, 32, 32, 3]
    with torch.no_grad():
        tokens = enc(normalize_clip(frames)[None])[0]  # [N, D]
    grid = token_grid(enc, 8, 32)
    assert grid == (4, 2, 2) and tokens.shape == (16, 64)
    path = save_png(pca_image(frames, tokens, grid), tmp_path / "sub" / "pca.png")
    with pil.open(path) as im:
        assert im.size == (4 * 32 + 3 * 2, 2 * 32 + 2) and im.mode == "RGB"
        top_left = torch.from_numpy(np.array(im))[0, :32]
    assert torch.equal(top_left, frames[0, 0])  # the first frame, first row, unchanged


def test_resize_crop_and_indices():
    frames = torch.randint(0, 255, (3, 40, 60, 3), dtype=torch.uint8)
    assert resize_center_crop(frames, 20).shape == (3, 20, 20, 3)
    assert frame_indices(100, 4, None) == [0, 33, 66, 99]
    assert frame_indices(100, 4, 3, start=10) == [10, 13, 16, 19]
    with pytest.raises(ValueError, match="video of 10 frames"):
        frame_indices(10, 4, 4)
    with pytest.raises(ValueError, match="tokens do not fill the grid"):
        pca_image(torch.zeros(4, 8, 8, 3, dtype=torch.uint8), torch.randn(5, 3), (2, 1, 2))


def test_run_pca_end_to_end(tmp_path, monkeypatch):
    pretrained = pytest.importorskip("vjepa.pretrained")
    pytest.importorskip("vjepa.embed")
    from vjepa.evals.pca import run_pca

    from vjepa.data.synthetic import write_mp4

    enc = tiny_encoder()
    enc.frames_per_clip, enc.crop_size = 8, 32
    monkeypatch.setattr(pretrained, "load_pretrained", lambda path, device="cpu": enc)
    write_mp4(tmp_path / "v.mp4", render_clip(2, 0, 16, 64))
    info = run_pca(tmp_path / "v.mp4", "unused", tmp_path / "out.png")
    assert info["grid"] == [4, 2, 2] and info["image_size"] == [66, 134]
    assert len(info["frame_indices"]) == 8 and (tmp_path / "out.png").is_file()


# ---------------------------------------------------------------------------------------------------------------
# reports


def test_write_report_files(tmp_path):
    result = {
        "accuracy": 0.8125,
        "per_class": {"a": 0.5, "b": torch.tensor(1.0)},
        "count": 3,
        "vector": torch.tensor([1.0, 2.0]),
        "nan": float("nan"),
        "config": {"lr": 1e-3, "name": "x"},
    }
    path = write_report(
        tmp_path / "out", "My eval", result, tables={"Per pair": [{"pair": "a|b", "acc": 0.123456}, {"pair": "c"}]}
    )
    text = (tmp_path / "out" / "result.json").read_text()
    assert list(json.loads(text)) == sorted(result)  # sorted keys
    saved = json.loads(text)
    assert saved["per_class"]["b"] == 1.0 and saved["vector"] == [1.0, 2.0] and saved["nan"] is None
    assert saved["config"]["lr"] == 1e-3 and isinstance(saved["count"], int)
    md = path.read_text()
    assert md.startswith("# My eval\n") and path.name == "report.md"
    assert "- **accuracy**: 0.8125" in md and "per_class.a" in md and "config.lr" not in md
    assert "| a\\|b | 0.1235 |" in md and "| c | - |" in md
    assert "Figures" not in md


def test_figures_written_or_skipped(tmp_path, monkeypatch):
    from vjepa.evals.report import plot_confusion, plot_per_class_bars, plot_similarity_histograms

    figs = {
        "confusion": lambda p: plot_confusion(torch.eye(3) * 4, ["x", "y", "z"], p),
        "similarity": lambda p: plot_similarity_histograms(torch.rand(50), torch.rand(80) - 0.5, p),
        "per class": lambda p: plot_per_class_bars([0.2, 0.9, 0.5], ["x", "y", "z"], p),
    }
    try:
        import matplotlib  # noqa: F401

        md = write_report(tmp_path / "with", "T", {"a": 1.0}, figures=figs).read_text()
        for name in ("confusion", "similarity", "per_class"):
            png = tmp_path / "with" / f"{name}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"]({name}.png)" in md
    except ImportError:
        pass
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    md = write_report(tmp_path / "without", "T", {"a": 1.0}, figures=figs).read_text()
    assert "Figures skipped (install matplotlib): confusion, similarity, per class" in md
    assert not list((tmp_path / "without").glob("*.png"))
    assert (tmp_path / "without" / "result.json").is_file()


def test_figure_errors_other_than_matplotlib_propagate(tmp_path):
    def broken(path):
        raise ModuleNotFoundError("No module named 'foo'", name="foo")

    with pytest.raises(ModuleNotFoundError, match="foo"):
        write_report(tmp_path, "T", {}, figures={"x": broken})


def test_combine_results(tmp_path):
    write_report(tmp_path / "linear", "Linear", {"eval": "linear", "accuracy": 0.7, "config": {"lr": 1}})
    write_report(tmp_path / "knn_run", "kNN", {"accuracy": 0.6, "k": {"1": 0.5}})
    table = combine_results([tmp_path / "linear", tmp_path / "knn_run" / "result.json", {"accuracy": 0.9}])
    lines = table.strip().splitlines()
    assert lines[0] == "| name | accuracy | k.1 |"
    assert lines[2] == "| linear | 0.7 | - |"
    assert lines[3] == "| knn_run | 0.6 | 0.5 |"
    assert lines[4] == "| result 2 | 0.9 | - |"
    table = combine_results([{"a": 1, "b": 2}], names=["run"], keys=["b"])
    assert table.splitlines()[2] == "| run | 2 |"
    with pytest.raises(FileNotFoundError):
        combine_results([tmp_path / "missing"])


def test_helpers():
    assert flatten_numbers({"a": {"b": 1, "c": "x", "d": True}, "config": {"e": 2}, "f": 0.5}) == {"a.b": 1, "f": 0.5}
    assert markdown_table([]) == "(no rows)\n"
    assert markdown_table([{"x": 1.0}, {"y": None}]).splitlines() == [
        "| x | y |",
        "|---|---|",
        "| 1 | - |",
        "| - | - |",
    ]
