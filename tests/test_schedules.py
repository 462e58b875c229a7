"""Schedules against hand-computed values (paper Appendix C; docs/recipes.md)."""

import math

import pytest

from vjepa.config import OptimConfig
from vjepa.train.schedules import ema_momentum, learning_rate, weight_decay


def test_vjepa1_cosine_values():
    c = OptimConfig()  # 90K steps, horizon 112.5K, warmup 12K
    assert learning_rate(c, 0) == pytest.approx(2e-4)
    assert learning_rate(c, 6000) == pytest.approx(2e-4 + 0.5 * 4.25e-4)
    assert learning_rate(c, 12000) == pytest.approx(6.25e-4)
    # halfway through the cosine part: (112500 - 12000) / 2 + 12000 = 62250
    assert learning_rate(c, 62250) == pytest.approx(1e-6 + (6.25e-4 - 1e-6) * 0.5)
    # training stops at 80% of the horizon, where lr has not reached the final value
    end = 1e-6 + (6.25e-4 - 1e-6) * 0.5 * (1 + math.cos(math.pi * (90000 - 12000) / 100500))
    assert learning_rate(c, 90000) == pytest.approx(end)
    assert learning_rate(c, 112500) == pytest.approx(1e-6)
    assert weight_decay(c, 0) == pytest.approx(0.04)
    assert weight_decay(c, 56250) == pytest.approx(0.22)
    assert weight_decay(c, 112500) == pytest.approx(0.4)
    assert ema_momentum(c, 0) == pytest.approx(0.998)
    assert ema_momentum(c, 56250) == pytest.approx(0.999)
    assert ema_momentum(c, 112500) == pytest.approx(1.0)


def test_vjepa2_warmup_constant_cooldown():
    c = OptimConfig(
        schedule="wsd",
        total_steps=100,
        warmup_steps=10,
        cooldown_steps=20,
        start_lr=1e-4,
        lr=5e-4,
        final_lr=0.0,
        ema_momentum=0.99925,
        final_ema_momentum=0.99925,
        weight_decay=0.04,
    )
    assert learning_rate(c, 5) == pytest.approx(3e-4)
    assert learning_rate(c, 10) == learning_rate(c, 79) == pytest.approx(5e-4)
    assert learning_rate(c, 90) == pytest.approx(2.5e-4)
    assert learning_rate(c, 100) == pytest.approx(0.0)
    assert weight_decay(c, 0) == weight_decay(c, 99) == 0.04
    assert ema_momentum(c, 0) == ema_momentum(c, 99) == 0.99925


def test_schedules_are_pure_functions_of_the_step():
    c = OptimConfig()
    assert [learning_rate(c, s) for s in (5, 500, 50000)] == [learning_rate(c, s) for s in (5, 500, 50000)]
