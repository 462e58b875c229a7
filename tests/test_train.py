"""The training loop end to end on CPU: run folder, exact resume, NaN stop, architecture mismatch, golden curve."""

import json
from pathlib import Path

import pytest
import torch
from conftest import losses, tiny_cfg

from vjepa.config import load_config
from vjepa.models.build import CheckpointMismatchError
from vjepa.train.checkpoint import latest_checkpoint
from vjepa.train.loop import NonFiniteLoss, train

RANK_FLOOR = 8.0  # effective rank of the target tokens: 23-25 over the second half in 3 seeds; plain ends near 3
GOLDEN = Path(__file__).parent / "golden" / "tiny_loss.json"


def test_run_folder_contents(tmp_path):
    result = train(tiny_cfg(tmp_path / "run", "optim.total_steps=3"))
    run = Path(result["run_dir"])
    assert (run / "config.yaml").exists() and (run / "git_revision.txt").exists()
    assert load_config(run / "config.yaml") == tiny_cfg(tmp_path / "run", "optim.total_steps=3")
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    for key in (
        "loss",
        "lr",
        "wd",
        "momentum",
        "ctx_tokens",
        "tgt_tokens",
        "data_time",
        "step_time",
        "clips_per_s",
        "eta_s",
        "target_spread",
        "token_spread",
        "grad_norm",
    ):
        assert key in records[-1], key
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert latest_checkpoint(run).name == "step_00000003"


def test_resume_is_bitwise_exact(tmp_path):
    full = losses(train(tiny_cfg(tmp_path / "a")))
    first = losses(train(tiny_cfg(tmp_path / "b", "train.stop_after=4")))
    assert first == full[:4]
    assert latest_checkpoint(tmp_path / "b").name == "step_00000004"
    rest = losses(train(tiny_cfg(tmp_path / "b")))
    assert rest == full[4:]  # bitwise: same floats, not just close


def test_keep_last_checkpoints(tmp_path):
    train(tiny_cfg(tmp_path / "k", "train.checkpoint_every=1", "train.keep_last=2", "optim.total_steps=4"))
    names = sorted(p.name for p in (tmp_path / "k" / "checkpoints").glob("step_*"))
    assert names == ["step_00000003", "step_00000004"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    run = tmp_path / "nan"
    # warmup towards an absurd learning rate: finite for a few steps, then the weights blow up
    cfg = tiny_cfg(run, "train.checkpoint_every=1", "optim.warmup_steps=8", "optim.start_lr=1e-4", "optim.lr=1e36")
    with pytest.raises(NonFiniteLoss, match="last good checkpoint"):
        train(cfg)
    good = latest_checkpoint(run)
    assert good is not None
    meta = json.loads((good / "meta.json").read_text())
    assert torch.isfinite(torch.tensor(meta["loss"]))


def test_nan_on_a_log_step_between_checkpoints_stops_with_the_message(tmp_path):
    # The test above checks the weights on every step (checkpoint_every=1), so the non-finite check speaks before
    # any log-step metric sees them. Here a resumed run blows the weights up on step 3, between checkpoints, and
    # step 4 is a log step whose metrics (the effective rank's eigensolver) see non-finite targets before the
    # check: that crashed in linalg.eigh. It must end in NonFiniteLoss, and the last good checkpoint must resume
    # exactly (with a sane learning rate: the losses of an uninterrupted run).
    reference = losses(train(tiny_cfg(tmp_path / "ref", "optim.total_steps=4")))
    run = tmp_path / "nan_log"
    train(tiny_cfg(run, "optim.total_steps=4", "train.checkpoint_every=2", "train.stop_after=2"))
    with pytest.raises(NonFiniteLoss, match=r"last good checkpoint \(step 2\)"):
        train(tiny_cfg(run, "optim.total_steps=4", "train.checkpoint_every=2", "optim.lr=1e12"))
    assert latest_checkpoint(run).name == "step_00000002"
    assert losses(train(tiny_cfg(run, "optim.total_steps=4", "train.checkpoint_every=2"))) == reference[2:]


def test_resume_with_other_architecture_names_tensors(tmp_path):
    run = tmp_path / "arch"
    train(tiny_cfg(run, "optim.total_steps=3"))
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.2"):
        train(tiny_cfg(run, "optim.total_steps=6", "model.depth=3"))


def test_golden_loss_curve(tmp_path):
    got = losses(train(tiny_cfg(tmp_path / "g", "optim.total_steps=6")))
    if not GOLDEN.exists():
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({"losses": got}, indent=1))
        pytest.fail(f"wrote {GOLDEN}; commit it")
    want = json.loads(GOLDEN.read_text())["losses"]
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_losses_do_not_depend_on_loader_workers(tmp_path):
    zero = losses(train(tiny_cfg(tmp_path / "w0", "optim.total_steps=3")))
    two = losses(train(tiny_cfg(tmp_path / "w2", "optim.total_steps=3", "data.num_workers=2")))
    assert zero == two


@pytest.mark.slow
def test_readme_demo_learns_without_collapse(tmp_path):
    """The quick-start config end to end (minutes): the JEPA loss falls, and the target tokens keep their spread
    within each clip and many directions of variance (the dimensional collapse the demo's VICReg terms prevent)."""
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs/debug/tiny_cpu.yaml", [f"train.run_dir={tmp_path / 'demo'}"])
    history = train(cfg)["history"]
    first, last = history[0], history[-1]
    assert last["jepa_loss"] < 0.7 * first["jepa_loss"]
    assert min(r["token_spread"] for r in history) > 0.25  # the plain objective ends near 0.17
    assert min(r["target_rank"] for r in history[len(history) // 2 :]) > RANK_FLOOR
