"""Each reduction on tensors whose answers can be checked by hand, and the projection's guarantees."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

import gmint.features.reduce as reduce_module
from gmint.errors import InputError, UnknownNameError
from gmint.features.reduce import REDUCTIONS, NamedReduction, parse_reduction

# Two samples, three filters of four entries: rows 0..3, 4..7, ..., 20..23.
WM = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4)


def test_mean() -> None:
    expected = torch.tensor([[1.5, 5.5, 9.5], [13.5, 17.5, 21.5]], dtype=torch.float64)
    torch.testing.assert_close(parse_reduction("mean")(WM, "w"), expected)


def test_abs_mean_does_not_cancel_signs() -> None:
    expected = torch.tensor([[8.5, 4.5, 1.0], [3.5, 7.5, 11.5]], dtype=torch.float64)
    torch.testing.assert_close(parse_reduction("abs_mean")(WM - 10, "w"), expected)


def test_std_is_the_population_deviation() -> None:
    torch.testing.assert_close(parse_reduction("std")(WM, "w"), torch.full((2, 3), math.sqrt(1.25),
                                                                            dtype=torch.float64))


def test_l2() -> None:
    squares = torch.tensor([[14, 126, 366], [734, 1230, 1854]], dtype=torch.float64)
    torch.testing.assert_close(parse_reduction("l2")(WM, "w"), squares.sqrt())


def test_max_is_signed() -> None:
    expected = torch.tensor([[-7, -3, 1], [5, 9, 13]], dtype=torch.float64)
    torch.testing.assert_close(parse_reduction("max")(WM - 10, "w"), expected)


def test_flat_keeps_row_major_order() -> None:
    torch.testing.assert_close(parse_reduction("flat")(WM, "w"), torch.arange(24, dtype=torch.float64)
                               .reshape(2, 12))


def test_conv_shaped_modifier_reduces_per_output_filter() -> None:
    wm = torch.arange(2 * 3 * 2 * 2 * 2, dtype=torch.float64).reshape(2, 3, 2, 2, 2)  # (B, F, C, kh, kw)
    torch.testing.assert_close(parse_reduction("mean")(wm, "w"),
                               torch.tensor([[3.5, 11.5, 19.5], [27.5, 35.5, 43.5]], dtype=torch.float64))
    assert parse_reduction("flat")(wm, "w").shape == (2, 24)


def test_bias_is_its_own_summary() -> None:
    bias = torch.tensor([[-2.0, 3.0], [4.0, -5.0]], dtype=torch.float64)
    for name, expected in {"mean": bias, "abs_mean": bias.abs(), "std": torch.zeros_like(bias),
                           "l2": bias.abs(), "max": bias, "flat": bias}.items():
        torch.testing.assert_close(parse_reduction(name)(bias, "b"), expected, msg=name)


@pytest.mark.parametrize("spec", ["mean", "abs_mean", "std", "l2", "max", "flat", "project:5"])
def test_named_reduction_remembers_its_spec(spec: str) -> None:
    reduction = parse_reduction(spec)
    assert isinstance(reduction, NamedReduction)
    assert (reduction.spec, reduction.name) == (spec, spec.partition(":")[0])
    assert reduction.name in REDUCTIONS


@pytest.mark.parametrize("spec", ["project", "project:0", "project:-3", "project:x", "mean:2"])
def test_bad_arguments_are_refused(spec: str) -> None:
    with pytest.raises(InputError):
        parse_reduction(spec)


def test_unknown_reduction_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="project"):
        parse_reduction("maen")


def test_project_matrix_is_scaled_rademacher() -> None:
    """Projecting the identity reads R out: entries ±1/√d, balanced signs."""
    d = 16
    r = parse_reduction(f"project:{d}", seed=3)(torch.eye(400, dtype=torch.float64), "w")
    assert r.shape == (400, d)
    torch.testing.assert_close(r.abs(), torch.full_like(r, d ** -0.5))
    assert abs(float((r > 0).double().mean()) - 0.5) < 0.05


def test_project_is_deterministic_and_seeded_per_layer() -> None:
    wm = torch.randn(3, 4, 5, dtype=torch.float64)
    first = parse_reduction("project:8", seed=1)(wm, "layer.weight")
    assert first.shape == (3, 8)
    torch.testing.assert_close(parse_reduction("project:8", seed=1)(wm, "layer.weight"), first, rtol=0, atol=0)
    assert not torch.allclose(parse_reduction("project:8", seed=2)(wm, "layer.weight"), first)
    assert not torch.allclose(parse_reduction("project:8", seed=1)(wm, "other.weight"), first)
    assert parse_reduction("project:8")(wm.float(), "w").dtype == torch.float32


def test_project_is_the_same_in_another_process() -> None:
    code = ("import json, torch; from gmint.features.reduce import parse_reduction; "
            "wm = torch.arange(60, dtype=torch.float64).reshape(2, 30); "
            "print(json.dumps(parse_reduction('project:4', seed=7)(wm, 'fc.weight').tolist()))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    here = parse_reduction("project:4", seed=7)(torch.arange(60, dtype=torch.float64).reshape(2, 30),
                                                "fc.weight")
    assert json.loads(other) == here.tolist()


def test_project_in_blocks_is_one_linear_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large layers (generated block by block, uncached) get a full-rank map with fresh blocks."""
    monkeypatch.setattr(reduce_module, "_BLOCK_ENTRIES", 8 * 10)     # 10 rows per block at d = 8
    monkeypatch.setattr(reduce_module, "_CACHE_ENTRIES", 0)
    project = parse_reduction("project:8", seed=0)
    r = project(torch.eye(35, dtype=torch.float64), "w")            # 4 blocks, the last one short
    x = torch.randn(3, 35, dtype=torch.float64)
    torch.testing.assert_close(project(x, "w"), x @ r)
    assert not torch.equal(r[:10], r[10:20])
    torch.testing.assert_close(r.abs(), torch.full_like(r, 8 ** -0.5))


def test_project_preserves_norms_approximately() -> None:
    """Johnson-Lindenstrauss: ‖xR‖²/‖x‖² ≈ 1 with spread ≈ √(2/d); loose bounds (≈ 6 sigma)."""
    torch.manual_seed(0)
    x = torch.randn(40, 3000, dtype=torch.float64) * torch.rand(40, 1, dtype=torch.float64)
    ratio = parse_reduction("project:256", seed=11)(x, "w").pow(2).sum(1) / x.pow(2).sum(1)
    assert float((ratio - 1).abs().max()) < 0.5
    assert abs(float(ratio.mean()) - 1) < 0.1


def test_projection_larger_than_the_layer_is_refused_before_allocating() -> None:
    wm = torch.randn(2, 100, 100)
    assert parse_reduction("project:4096")(torch.randn(2, 5), "bias").shape == (2, 4096)  # small layers widen
    with pytest.raises(InputError, match="asks for 1,000,000,000 numbers per sample from w, which has 10,000"):
        parse_reduction("project:1000000000")(wm, "w")
