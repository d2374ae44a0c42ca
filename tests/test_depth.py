"""Layer depth: one point per block and source, equal to fitting that block by hand, resumable, plotted, and
`gmint depth` on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from gmint.assess.depth import RESULTS, block_parameters, parse_kind, plot_depth, read_points, sweep_depth
from gmint.assess.evaluate import evaluate_store
from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.errors import InputError
from gmint.mint import train_mint
from gmint.models.io import AuditedModel
from tests.cli_runner import invoke


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("depth")


def test_sweep_points_equal_fitting_each_block_by_hand(sweep_dir: Path, digits: ImageSet,
                                                       digits_split: MembershipSplit,
                                                       audited_digits: tuple[AuditedModel, Path]) -> None:
    audited = audited_digits[0]
    sweep = sweep_depth(audited, digits, digits_split, sweep_dir, blocks="0,2,penultimate,output", n_boot=20)
    assert sweep.blocks == ["0", "2", "9", "10"]
    got = {(p.block, p.source): p for p in sweep.points}
    # Activations at every block; Weight Modifiers only where the block has a weight layer (not the ReLUs).
    assert sorted(got) == [("0", "activation"), ("0", "gradient"), ("10", "activation"), ("10", "gradient"),
                           ("2", "activation"), ("9", "activation")]
    assert got[("0", "gradient")].features == ["0.weight"] and got[("9", "activation")].features == ["9.output"]
    assert got[("0", "activation")].width == 8 * 4 * 4 and got[("10", "activation")].width == 10
    assert len({json.dumps(p.loss_threshold["auc"].to_dict()) for p in sweep.points}) == 1
    mint = train_mint(sweep_dir / "activation-maps.h5", kind="mlp", setup="9.output", seed=0)
    by_hand = evaluate_store(mint, sweep_dir / "activation-maps.h5", n_boot=20, seed=0)
    assert got[("9", "activation")].mint["auc"] == by_hand.mint["auc"]
    assert [p.depth for p in sweep.series("activation", "mlp")] == [0, 1, 2, 3]
    png = plot_depth(sweep, sweep_dir / "depth.png", title="digits")
    assert Image.open(png).size[0] > 500


def test_sweep_resumes_and_refuses_another_sweep(sweep_dir: Path, digits: ImageSet, digits_split: MembershipSplit,
                                                 audited_digits: tuple[AuditedModel, Path]) -> None:
    lines = (sweep_dir / RESULTS).read_text().splitlines()
    sweep_depth(audited_digits[0], digits, digits_split, sweep_dir, blocks="0,2,penultimate,output", n_boot=20)
    assert (sweep_dir / RESULTS).read_text().splitlines() == lines  # nothing refitted
    assert len(read_points(sweep_dir)) == len(lines) == 6
    with pytest.raises(InputError, match="holds a sweep with another pool"):
        sweep_depth(audited_digits[0], digits, digits_split, sweep_dir, blocks="0,2,penultimate,output",
                    pool="pool:2x2")
    with pytest.raises(InputError, match="unknown depth source 'loss'"):
        sweep_depth(audited_digits[0], digits, digits_split, sweep_dir, sources=["loss"])


def test_label_aware_kinds() -> None:
    assert parse_kind("mlp") == ("mlp", {}) and parse_kind("map_cnn+label") == ("map_cnn", {"label_aware": True})
    with pytest.raises(InputError, match="the only suffix is '\\+label'"):
        parse_kind("mlp+class")
    with pytest.raises(InputError, match="unknown MINT classifier 'mpl'"):
        parse_kind("mpl")


def test_block_parameters(audited_digits: tuple[AuditedModel, Path], digits: ImageSet) -> None:
    model, example = audited_digits[0].module, Transform()(digits.images[:1])
    assert block_parameters(model, "3", example) == ["3.weight"]
    assert block_parameters(model, "2", example) == []


def test_depth_on_the_command_line(tmp_path: Path, audited_digits: tuple[AuditedModel, Path]) -> None:
    _, model = audited_digits
    code, out = invoke("depth", "--model", model, "--work", tmp_path / "w", "--list", "--json")
    assert code == 0, out
    assert json.loads(out)["blocks"] == ["0", "1", "2", "3", "4", "5", "6", "8", "9", "10"]
    code, out = invoke("depth", "--model", model, "--work", tmp_path / "w", "--blocks", "3,penultimate",
                       "--kinds", "mlp,map_cnn,mlp+label", "--n-boot", "10")
    assert code == 0, out
    assert "loss threshold on the same rows: AUC" in out and (tmp_path / "w" / "depth.png").exists()
    kinds = {(p.block, p.source, p.kind) for p in read_points(tmp_path / "w")}
    assert kinds == {("3", "activation", "mlp"), ("3", "activation", "map_cnn"), ("3", "gradient", "mlp"),
                     ("9", "activation", "mlp"), ("9", "activation", "map_cnn"), ("3", "activation", "mlp+label"),
                     ("3", "gradient", "mlp+label"), ("9", "activation", "mlp+label")}
    code, out = invoke("depth", "--model", model, "--work", tmp_path / "w", "--blocks", "3,penultimate")
    assert code == 1 and "depth.png exists; pass --overwrite" in out
    code, out = invoke("depth", "--model", model, "--work", tmp_path / "v", "--blocks", "layer9")
    assert code == 1 and "module 'layer9' matches no module" in out


def test_depth_says_why_no_classifier_would_be_fitted(tmp_path: Path,
                                                      audited_digits: tuple[AuditedModel, Path]) -> None:
    _, model = audited_digits
    code, out = invoke("depth", "--model", model, "--work", tmp_path / "w", "--blocks", "3",
                       "--sources", "gradient", "--kinds", "map_cnn")
    assert code == 1 and out.count("\n") == 1 and "map_cnn fits activation maps only" in out
    assert not (tmp_path / "w").exists()
