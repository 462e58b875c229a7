"""What every objective of the catalogue must do, checked on each one registered (vjepa.evals.objectives + built-ins).

Each objective is built with its default options and tiny Dims and run on one hand-built random step state
(grid (4, 2, 2), D 16, B 4, two mask families with padded context and target slots, a fixed online full-clip
tensor with gradient, a [4, 3, 8, 32, 32] clip):
  (a) bf16 context tokens, predictions and online features give a finite fp32 scalar and finite gradients;
  (b) padded slots never count: perturbing z at padded context slots and pred at padded target slots leaves the
      loss unchanged, and the gradient there is 0;
  (c) the mean over 2 processes (gloo, each half of the batch) equals the value of 1 process with the whole batch
      (one spawn computes every objective; heads built from the same seed);
  (d) no gradient reaches the targets h, and the state's h and targets are not modified;
  (e) an objective with parameters gives every parameter a finite gradient (and not all of them 0).

Shapes: B batch, N tokens (T' H' W' = 16), Kc context slots, Kt target slots, D width.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.multiprocessing as mp
from conftest import free_port
from objective_inputs import DIMS, KC, KT, B, D, build_state, make_inputs

from vjepa.objectives.registry import catalogue

MODULES = ("vjepa.evals.objectives",)
NAMES = sorted(catalogue(MODULES))
pytestmark = pytest.mark.usefixtures("single_thread")


def build(name: str, seed: int = 0):
    """The objective `name` with default options and the tiny Dims; its head (if any) initialised from `seed`."""
    cls = catalogue(MODULES)[name]
    torch.manual_seed(seed)
    return cls(cls.Options(), DIMS)


def _grad_or_zero(t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(t) if t.grad is None else t.grad


def test_the_catalogue_is_not_empty():
    assert {"lift", "sigreg", "vicreg"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_inputs_give_a_finite_fp32_loss_and_gradients(name):
    obj = build(name)
    state, leaves = build_state(make_inputs(1), dtype=torch.bfloat16)
    out = obj(state)
    assert out.loss.dtype == torch.float32 and out.loss.ndim == 0, (out.loss.dtype, out.loss.shape)
    assert torch.isfinite(out.loss), out.loss
    for key, value in out.metrics.items():
        assert torch.isfinite(value).all(), key
    if out.loss.requires_grad:
        out.loss.backward()
    for key, leaf in list(leaves.items()) + list(obj.named_parameters()):
        if leaf.grad is not None:
            assert torch.isfinite(leaf.grad).all(), key


@pytest.mark.parametrize("name", NAMES)
def test_padded_slots_never_count(name):
    inputs = make_inputs(2)
    obj = build(name)
    state, leaves = build_state(inputs)
    loss = obj(state).loss
    if loss.requires_grad:
        loss.backward()
    g = torch.Generator().manual_seed(5)
    moved = make_inputs(2)
    for f, fam in enumerate(moved["families"]):
        fam["z"] = torch.where(
            ~fam["ctx_valid"][..., None], fam["z"] + 50.0 * torch.randn(B, KC, D, generator=g), fam["z"]
        )
        fam["pred"] = torch.where(
            ~fam["tgt_valid"][..., None], fam["pred"] + 50.0 * torch.randn(B, KT, D, generator=g), fam["pred"]
        )
        assert not torch.equal(fam["z"], inputs["families"][f]["z"])  # the perturbation happened
    moved_loss = obj(build_state(moved)[0]).loss
    torch.testing.assert_close(moved_loss, loss, rtol=1e-6, atol=1e-7)
    for f, fam in enumerate(inputs["families"]):
        assert torch.all(_grad_or_zero(leaves[f"z{f}"])[~fam["ctx_valid"]] == 0), f"z{f}"
        assert torch.all(_grad_or_zero(leaves[f"pred{f}"])[~fam["tgt_valid"]] == 0), f"pred{f}"


@pytest.mark.parametrize("name", NAMES)
def test_no_gradient_reaches_the_targets_and_they_are_left_unchanged(name):
    obj = build(name)
    inputs = make_inputs(3)
    state, leaves = build_state(inputs)
    targets = [fam.target.clone() for fam in state.families]
    loss = obj(state).loss
    if loss.requires_grad:
        loss.backward()
    assert leaves["h"].grad is None
    assert torch.equal(state.h, inputs["h"]) and torch.equal(leaves["h"].detach(), inputs["h"])
    for fam, before in zip(state.families, targets):
        assert torch.equal(fam.target, before)


@pytest.mark.parametrize("name", [n for n in NAMES if any(True for _ in build(n).parameters())])
def test_every_parameter_gets_a_gradient(name):
    obj = build(name)
    obj(build_state(make_inputs(4))[0]).loss.backward()
    total = 0.0
    for key, p in obj.named_parameters():
        assert p.grad is not None, key
        assert torch.isfinite(p.grad).all(), key
        total += float(p.grad.abs().sum())
    assert total > 0


# --- (c) 1 process == 2 processes -----------------------------------------------------------------------------------


def _values(rows: slice) -> dict[str, float]:
    out = {}
    for name in NAMES:
        out[name] = float(build(name)(build_state(make_inputs(6), rows)[0]).loss.detach())
    return out


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        half = B // world
        torch.save(_values(slice(rank * half, (rank + 1) * half)), os.path.join(out_dir, f"values_r{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_two_processes_give_the_one_process_value():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, free_port(), tmp), nprocs=2, join=True)
        ranks = [torch.load(os.path.join(tmp, f"values_r{r}.pt")) for r in range(2)]
    whole = _values(slice(None))
    for name in NAMES:
        mean = (ranks[0][name] + ranks[1][name]) / 2
        assert mean == pytest.approx(whole[name], rel=1e-5, abs=1e-7), (name, ranks[0][name], ranks[1][name], whole)
