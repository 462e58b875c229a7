"""Frozen-feature probes: attentive grid (exactness, learning, multi-view, resume, determinism), linear, k-NN.

Oracles: a loop-based k-NN and scikit-learn's KNeighborsClassifier; a single AttentiveProbe (direct key/value
projections, explicit attention) trained with torch.optim.AdamW for the grid; hand-averaged view probabilities.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from vjepa.evals import attentive, attentive_probe, knn, linear
from vjepa.evals.attentive import epoch_order, load_probe, lr_factor, predict_proba, run_attentive
from vjepa.evals.attentive_probe import AttentiveProbe, ProbeGrid
from vjepa.evals.knn import knn_predict, run_knn, video_embeddings
from vjepa.evals.linear import run_linear
from vjepa.evals.probe_io import FeatureFormatError

from vjepa.seeding import make_generator

# Tiny tensors gain nothing from intra-op threads; on a loaded 2-core machine two threads run up to 10x slower.
pytestmark = pytest.mark.usefixtures("single_thread")


def feature_dict(x: torch.Tensor, labels: torch.Tensor, output: str = "tokens") -> dict:
    n = x.shape[0]
    return {
        "format": "vjepa.features", "output": output, "features": x, "labels": labels,
        "paths": [f"v{i}.mp4" for i in range(n)], "grid": (1, 1, x.shape[2] if x.ndim == 4 else 1),
        "encoder": "test", "config": {"clips": 1, "views": x.shape[1]},
    }  # fmt: skip


def which_token(n: int, views: int = 2, k: int = 8, d: int = 32, c: int = 4, seed: int = 0, data_seed: int = 0):
    """Class = WHICH token carries a signal direction. Each token position has a fixed code (as a positional
    embedding would give), so attention can read the position of the signalled token; the mean over tokens is
    the same for every class, so pooling cannot solve it."""
    fixed = torch.Generator().manual_seed(data_seed)
    codes, signal = torch.randn(k, d, generator=fixed), F.normalize(torch.randn(d, generator=fixed), dim=0)
    g = torch.Generator().manual_seed(1000 + seed)
    labels = torch.arange(n) % c
    x = codes + 0.3 * torch.randn(n, views, k, d, generator=g)  # [N, V, K, D]
    x[torch.arange(n), :, labels] += 10.0 * signal
    return feature_dict(x, labels)


def random_tokens(n: int, views: int = 2, k: int = 6, d: int = 16, c: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return feature_dict(torch.randn(n, views, k, d, generator=g), torch.arange(n) % c)


SMALL = {"lrs": [3e-3, 1e-3], "wds": [0.01, 0.1], "batch_size": 16, "num_heads": 2, "figures": False}


def numbers(result: dict) -> dict:
    """A result without timings and paths: what must be identical between equivalent runs."""
    return {k: v for k, v in result.items() if k not in ("timings", "checkpoint")}


# ---------------------------------------------------------------------------------------------------------------
# attentive probe


def test_attentive_learns_which_token_task_pooling_cannot(tmp_path: Path) -> None:
    train, val = which_token(64, seed=0), which_token(32, seed=1)
    grid = {**SMALL, "lrs": [1e-2, 3e-3], "wds": [0.01, 0.1], "figures": True}
    result = run_attentive(train, val, tmp_path / "att", epochs=12, seed=0, **grid)
    assert result["accuracy"] >= 0.9, result["heads"]
    assert result["finished"] and len(result["heads"]) == 4 and len(result["history"]) == 12
    assert len(result["confusion_matrix"]) == 4 and len(result["per_class_accuracy"]) == 4
    on_disk = json.loads((tmp_path / "att" / "result.json").read_text())
    assert on_disk["accuracy"] == result["accuracy"] and (tmp_path / "att" / "report.md").exists()
    pooled = run_linear(train, val, None, holdout=0.25)  # mean over tokens: class information is gone
    assert pooled["accuracy"] <= 0.5


def test_grid_equals_reference_probes_trained_alone(tmp_path: Path) -> None:
    """Grid head i == AttentiveProbe(lr_i, wd_i) trained by torch.optim.AdamW on the same batches (v1 and v2)."""
    train, val = random_tokens(20, seed=0), random_tokens(8, seed=1)
    epochs, bs, seed = 2, 8, 3
    for variant in ("v1", "v2"):
        run_attentive(
            train, val, tmp_path / variant, variant=variant, epochs=epochs, seed=seed, **{**SMALL, "batch_size": bs}
        )
        saved = torch.load(tmp_path / variant / "probe.pt", weights_only=True)
        x, y = train["features"].reshape(40, 6, 16), train["labels"].repeat_interleave(2)
        steps = math.ceil(40 / bs)
        for i, (lr, wd) in enumerate(saved["hypers"]):
            probe = AttentiveProbe(dim=16, num_classes=3, num_heads=2, variant=variant)
            probe.reset_parameters(make_generator(seed, "attentive-init"))
            decay = [p for n, p in probe.named_parameters() if p.ndim >= 2 and not n.endswith(".bias")]
            rest = [p for n, p in probe.named_parameters() if not (p.ndim >= 2 and not n.endswith(".bias"))]
            opt = torch.optim.AdamW(
                [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}], lr=lr
            )
            for epoch in range(epochs):
                order = epoch_order(40, seed, epoch)
                for s in range(steps):
                    idx = order[s * bs : (s + 1) * bs]
                    for group in opt.param_groups:
                        group["lr"] = lr * lr_factor(epoch * steps + s, epochs * steps, round(0.1 * epochs * steps))
                    opt.zero_grad()
                    F.cross_entropy(probe(x[idx]), y[idx]).backward()
                    opt.step()
            head = load_probe(tmp_path / variant / "probe.pt", head=i)
            for (name, p), q in zip(probe.named_parameters(), head.parameters()):
                torch.testing.assert_close(q, p, atol=2e-5, rtol=1e-4, msg=f"{variant} head {i} {name}")


def test_grid_head_equals_same_run_with_one_head(tmp_path: Path) -> None:
    train, val = random_tokens(20, seed=0), random_tokens(10, seed=1)
    full = run_attentive(train, val, tmp_path / "grid", epochs=2, seed=5, **SMALL)
    for i in (0, 3):
        h = full["heads"][i]
        alone = run_attentive(
            train, val, tmp_path / f"one{i}", epochs=2, seed=5, **{**SMALL, "lrs": [h["lr"]], "wds": [h["wd"]]}
        )
        assert alone["heads"][0]["train_loss"] == pytest.approx(h["train_loss"], rel=1e-5)
        assert alone["heads"][0]["val_accuracy"] == h["val_accuracy"]
        a, b = load_probe(tmp_path / f"one{i}" / "probe.pt", 0), load_probe(tmp_path / "grid" / "probe.pt", i)
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5)


def test_grid_forward_matches_reference_probes() -> None:
    for variant in ("v1", "v2"):
        probes = []
        for s in range(3):  # three different probes, perturbed so that LayerNorms and biases are not trivial
            p = AttentiveProbe(dim=32, num_classes=5, num_heads=4, variant=variant)
            p.reset_parameters(make_generator(s))
            with torch.no_grad():
                for t in p.parameters():
                    t.add_(0.1 * torch.randn(t.shape, generator=make_generator(s, t.numel())))
            probes.append(p)
        grid = ProbeGrid.replicate(probes[0], 3)
        with torch.no_grad():
            for name, t in grid.params.items():
                for i, p in enumerate(probes):
                    v = dict(p.named_parameters())[name]
                    t[i].copy_(v.T if name in grid.linear else v)
        x = torch.randn(5, 7, 32, generator=make_generator(9))
        torch.testing.assert_close(grid(x), torch.stack([p(x) for p in probes]), atol=1e-5, rtol=1e-5)
        for i, p in enumerate(probes):
            torch.testing.assert_close(grid.probe(i)(x), p(x))


def test_multi_view_probabilities_are_view_averages() -> None:
    probe = AttentiveProbe(dim=16, num_classes=3, num_heads=2)
    probe.reset_parameters(make_generator(0))
    grid = ProbeGrid.replicate(probe, 2)
    with torch.no_grad():
        grid.params["head.bias"][1] += torch.tensor([0.5, -0.2, 0.0])  # make the two heads differ
    feats = torch.randn(5, 3, 4, 16, generator=make_generator(1))  # [N=5, V=3, K=4, D]
    probs = predict_proba(grid, feats, batch_size=4)  # batches cut across videos
    for g in range(2):
        ref = grid.probe(g)
        for n in range(5):
            by_hand = sum(ref(feats[n, v][None]).softmax(-1)[0] for v in range(3)) / 3
            torch.testing.assert_close(probs[g, n], by_hand, atol=1e-6, rtol=1e-6)


def test_resume_is_exact(tmp_path: Path) -> None:
    train, val = random_tokens(20, seed=0), random_tokens(8, seed=1)
    kw = {"epochs": 4, "seed": 2, "label_smoothing": 0.1, **SMALL}
    straight = run_attentive(train, val, tmp_path / "a", **kw)
    partial = run_attentive(train, val, tmp_path / "b", stop_after=2, **kw)
    assert partial["completed_epochs"] == 2 and not partial["finished"]
    resumed = run_attentive(train, val, tmp_path / "b", **kw)
    assert numbers(resumed) == numbers(straight)
    a, b = (torch.load(tmp_path / d / "probe.pt", weights_only=True) for d in ("a", "b"))
    assert a["epoch"] == b["epoch"] == 4
    for name in a["params"]:
        assert torch.equal(a["params"][name], b["params"][name]), name
    again = run_attentive(train, val, tmp_path / "b", **kw)  # finished: nothing to train, same numbers
    assert numbers(again) == numbers(straight)
    with pytest.raises(ValueError, match="lrs"):
        run_attentive(train, val, tmp_path / "b", **{**kw, "lrs": [1e-2]})


def test_seeded_runs_are_identical(tmp_path: Path) -> None:
    train, val = random_tokens(16, seed=0), random_tokens(8, seed=1)
    kw = {"epochs": 2, **SMALL}
    a = run_attentive(train, val, tmp_path / "a", seed=7, **kw)
    b = run_attentive(train, val, tmp_path / "b", seed=7, **kw)
    c = run_attentive(train, val, tmp_path / "c", seed=8, **kw)
    assert numbers(a) == numbers(b)
    assert [h["train_loss"] for h in c["heads"]] != [h["train_loss"] for h in a["heads"]]


def test_default_heads_and_bad_settings() -> None:
    assert attentive_probe.default_num_heads(1024) == 16
    assert attentive_probe.default_num_heads(192) == 3
    assert attentive_probe.default_num_heads(32) == 1
    with pytest.raises(ValueError, match="divisible"):
        AttentiveProbe(dim=30, num_classes=2, num_heads=4)
    with pytest.raises(ValueError, match="variant"):
        AttentiveProbe(dim=32, num_classes=2, variant="v3")


# ---------------------------------------------------------------------------------------------------------------
# bad inputs


def test_bad_inputs_name_the_file_or_key(tmp_path: Path) -> None:
    good = random_tokens(8)
    with pytest.raises(FeatureFormatError, match=r"train: .*no 'format' key"):
        run_attentive({"features": good["features"]}, good, tmp_path / "x", epochs=1)
    with pytest.raises(FeatureFormatError, match=r"val\['labels'\]"):
        run_knn(good, {**good, "labels": good["labels"].float()}, None)
    with pytest.raises(FeatureFormatError, match=r"train\['features'\].*pooled"):
        run_attentive(feature_dict(torch.randn(8, 2, 16), torch.arange(8) % 3, "pooled"), good, tmp_path / "x")

    backbone = tmp_path / "encoder.pt"
    torch.save({"encoder": {"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, "epoch": 3}, backbone)
    with pytest.raises(FeatureFormatError, match=f"{backbone}: looks like a backbone"):
        run_linear(backbone, good, None)
    export = tmp_path / "export.pt"
    torch.save({"format": "vjepa.encoder", "state_dict": {}}, export)
    with pytest.raises(FeatureFormatError, match=f"{export}: format 'vjepa.encoder'"):
        run_knn(good, export, None)
    with pytest.raises(FeatureFormatError, match=f"{tmp_path}: is a folder"):
        run_knn(tmp_path, good, None)

    train_file, val_file = tmp_path / "train.pt", tmp_path / "val.pt"
    torch.save(good, train_file)
    torch.save(random_tokens(8, d=24), val_file)
    with pytest.raises(FeatureFormatError, match=f"{train_file} has D=16, {val_file} has D=24"):
        run_attentive(train_file, val_file, tmp_path / "x", epochs=1)
    args = argparse.Namespace(
        train=str(train_file), val=str(val_file), out=str(tmp_path / "cli"), ks=[1], weights="uniform", figures=False
    )
    assert knn.run(args) == 2  # one-line error, exit code 2


# ---------------------------------------------------------------------------------------------------------------
# k-NN


def loop_knn(train: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, k: int, c: int, weights: str) -> list[int]:
    out = []
    for q in query:
        sims = [float(F.cosine_similarity(q, t, dim=0)) for t in train]
        nearest = sorted(range(len(sims)), key=lambda j: (-sims[j], j))[:k]  # ties: lower train index first
        votes = [0.0] * c
        for j in nearest:
            votes[int(labels[j])] += sims[j] if weights == "similarity" else 1.0
        out.append(max(range(c), key=lambda cls: (votes[cls], -cls)))  # ties: smallest class
    return out


@pytest.mark.parametrize("weights", ["uniform", "similarity"])
def test_knn_matches_loop_reference_with_ties(weights: str) -> None:
    g = make_generator(0)
    train = torch.randint(-1, 2, (40, 3), generator=g).float()  # few distinct directions: many tied similarities
    train[train.abs().sum(1) == 0] = 1.0
    labels, query = torch.randint(0, 4, (40,), generator=g), torch.randint(-1, 2, (25, 3), generator=g).float() + 0.01
    preds = knn_predict(train, labels, query, (1, 3, 5), num_classes=4, weights=weights)
    for k in (1, 3, 5):
        assert preds[k].tolist() == loop_knn(train, labels, query, k, 4, weights), k


def test_knn_matches_sklearn_uniform_votes() -> None:
    neighbors = pytest.importorskip("sklearn.neighbors")
    g = make_generator(1)
    train, labels, query = (
        torch.randn(60, 8, generator=g),
        torch.randint(0, 5, (60,), generator=g),
        torch.randn(30, 8, generator=g),
    )
    preds = knn_predict(train, labels, query, (1, 3, 5), num_classes=5, max_chunk_elements=200)  # several chunks
    for k in (1, 3, 5):
        clf = neighbors.KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute", weights="uniform")
        clf.fit(train.double().numpy(), labels.numpy())
        assert preds[k].tolist() == clf.predict(query.double().numpy()).tolist(), k


def test_knn_multi_view_embedding_and_run(tmp_path: Path) -> None:
    x = torch.randn(4, 3, 8)
    by_hand = torch.stack(
        [F.normalize(sum(F.normalize(x[n, v], dim=0) for v in range(3)) / 3, dim=0) for n in range(4)]
    )
    torch.testing.assert_close(video_embeddings(x), by_hand)
    g = make_generator(2)
    centres = 4 * torch.randn(3, 8, generator=g)

    def make(n: int) -> dict:
        labels = torch.arange(n) % 3
        return feature_dict(centres[labels][:, None] + torch.randn(n, 2, 8, generator=g), labels, "pooled")

    result = run_knn(make(30), make(15), tmp_path / "knn", figures=False)
    assert set(result["accuracy"]) == {"1", "3", "5"} and min(result["accuracy"].values()) >= 0.9
    assert json.loads((tmp_path / "knn" / "result.json").read_text())["best_k"] == result["best_k"]


# ---------------------------------------------------------------------------------------------------------------
# linear probe


def test_linear_probe_separable_and_random_labels(tmp_path: Path) -> None:
    g = make_generator(3)
    centres = 3 * torch.randn(4, 1, 16, generator=g)
    yt, yv = torch.arange(120) % 4, torch.arange(80) % 4
    xt = centres[yt] + torch.randn(120, 2, 16, generator=g)  # well separated classes: linearly separable
    xv = centres[yv] + torch.randn(80, 2, 16, generator=g)
    sep = run_linear(feature_dict(xt, yt, "pooled"), feature_dict(xv, yv, "pooled"), tmp_path / "lin", wds=[1e-4, 1e-3])
    assert sep["accuracy"] >= 0.98 and sep["selected_on"] == "holdout"
    assert {"silhouette_cosine", "calinski_harabasz", "intra_inter_ratio"} <= set(sep["geometry"])
    assert (tmp_path / "lin" / "report.md").exists()
    rt, rv = torch.randint(0, 4, (120,), generator=g), torch.randint(0, 4, (80,), generator=g)
    chance = run_linear(feature_dict(xt, rt, "pooled"), feature_dict(xv, rv, "pooled"), None, wds=[1e-3, 1e-1])
    assert 0.1 <= chance["accuracy"] <= 0.42  # 4 classes: chance 0.25
    tokens = run_linear(random_tokens(12), random_tokens(6, seed=1), None, holdout=0.0)  # tokens pooled over K
    assert tokens["selected_on"] == "val" and tokens["dim"] == 16


# ---------------------------------------------------------------------------------------------------------------
# commands


def test_commands_write_results(tmp_path: Path) -> None:
    train_file, val_file = tmp_path / "train.pt", tmp_path / "val.pt"
    torch.save(random_tokens(12), train_file)
    torch.save(random_tokens(6, seed=1), val_file)
    for module, extra in ((attentive, ["--epochs", "1", "--lrs", "1e-3", "--wds", "0.01"]), (linear, []), (knn, [])):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        out = tmp_path / module.__name__
        args = parser.parse_args(["--train", str(train_file), "--val", str(val_file), "--out", str(out), *extra])
        assert module.run(args) == 0
        assert json.loads((out / "result.json").read_text())["eval"] == module.__name__.split(".")[-1]
        assert module.__doc__.split("\n\n")[0]  # the command's description
    assert (tmp_path / "vjepa.evals.attentive" / "probe.pt").exists()
    assert torch.load(tmp_path / "vjepa.evals.attentive" / "probe.pt", weights_only=True)["format"] == "vjepa.probe"
