"""A store is complete only when its file bears it out: a store cut short, or one whose rows or layers are not
what it says, is refused with one line (never resumed as "complete"); a file that is no store is called that;
extraction gives the caller's module back as it lent it; a torn depth.jsonl loses only its torn line."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from gmint.assess.depth import RESULTS, read_points
from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.errors import IncompleteStoreError, InputError, UnknownNameError
from gmint.features.extract import Rows, extract, split_rows
from gmint.features.lock import lock_path
from gmint.features.settings import ExtractSettings
from gmint.features.store import FeatureStore
from gmint.models.io import AuditedModel
from gmint.models.train import TrainConfig, train_audited
from tests.cli_runner import run, snapshot


def cut_in_half(store: Path, out: Path) -> Path:
    """What `head -c $((size/2)) store > out` leaves."""
    data = store.read_bytes()
    out.write_bytes(data[:len(data) // 2])
    return out


def one_error(stderr: str) -> str:
    """The single `error:` line of a refused command."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_a_store_cut_short_is_refused_not_reported_complete(tmp_path: Path, digits_store: Path, digits: ImageSet,
                                                            digits_split: MembershipSplit,
                                                            audited_digits: tuple[AuditedModel, Path]) -> None:
    cut = cut_in_half(digits_store, tmp_path / "t.h5")
    before = snapshot(tmp_path)
    refused = run("extract", "--model", audited_digits[1], "--out", cut, "--resume")
    assert refused.code == 1 and refused.stdout == ""
    line = one_error(refused.stderr)
    assert "t.h5 is not a readable HDF5 feature store (cut short" in line and "--overwrite" in line
    assert "complete" not in line and "PID" not in line
    # The library's own resume (what `gmint reference extract` calls) refuses it too, naming no flag.
    with pytest.raises(InputError, match=r"cut short: \d+ of its \d+ bytes are left\); it cannot be resumed; "
                                         "remove it, or extract it again with overwrite$"):
        extract(audited_digits[0], digits, split_rows(digits_split), out=cut, split=digits_split, resume=True)
    assert snapshot(tmp_path) == before
    done = run("extract", "--model", audited_digits[1], "--out", cut, "--overwrite", "--batch-size", 400)
    assert done.code == 0 and f"{cut}: complete (1796 rows" in done.stdout, done.stderr
    with FeatureStore.open(cut) as rebuilt:
        rebuilt.require_complete()


def damage_rows(h5: h5py.File) -> None:
    h5["done"][:5] = False


def damage_layer(h5: h5py.File) -> None:
    del h5["features/8.weight"]


def damage_layer_length(h5: h5py.File) -> None:
    del h5["features/8.weight"]
    h5["features"].create_dataset("8.weight", data=np.zeros((7, 32), np.float32))


def damage_count(h5: h5py.File) -> None:
    h5.attrs["rows_written"] = 17


DAMAGE: dict[str, tuple[Callable[[h5py.File], None], str]] = {
    "rows": (damage_rows, "marked complete, but 5 of 1796 rows are not written"),
    "layer": (damage_layer, "layer 8.weight has no dataset under /features"),
    "layer-length": (damage_layer_length, r"/features/8.weight has shape \(7, 32\), expected \(1796, width\)"),
    "count": (damage_count, "marked complete with 17 rows written, but it holds 1796"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_complete_mark_the_file_does_not_bear_out_is_refused(tmp_path: Path, digits_store: Path,
                                                               kind: str) -> None:
    damage, reason = DAMAGE[kind]
    path = tmp_path / "d.h5"
    shutil.copy(digits_store, path)
    with h5py.File(path, "r+") as h5:
        damage(h5)
    before = snapshot(tmp_path)
    with FeatureStore.open(path) as store:
        assert store.marked_complete and not store.complete
        with pytest.raises(InputError, match=f"d.h5 is damaged \\({reason}\\); remove it, or extract it again"):
            store.require_complete()
    with pytest.raises(InputError, match=f"is damaged \\({reason}\\); it cannot be resumed"):
        FeatureStore.resume(path, {})
    info = run("info", path)
    assert info.code == 1 and "--overwrite" in one_error(info.stderr)
    assert snapshot(tmp_path) == before


def test_cli_refuses_a_damaged_store_before_loading_the_model(tmp_path: Path, digits_store: Path,
                                                              audited_digits: tuple[AuditedModel, Path]) -> None:
    path = tmp_path / "d.h5"
    shutil.copy(digits_store, path)
    with h5py.File(path, "r+") as h5:
        damage_rows(h5)
    before = snapshot(tmp_path)
    refused = run("extract", "--model", audited_digits[1], "--out", path, "--resume")
    assert refused.code == 1 and refused.stdout == ""
    assert one_error(refused.stderr).endswith("is damaged (marked complete, but 5 of 1796 rows are not written); "
                                              "it cannot be resumed; pass --overwrite to extract it again in its "
                                              "place")
    assert snapshot(tmp_path) == before


def test_a_store_of_another_extraction_names_both_ways_out(tmp_path: Path, digits_store: Path,
                                                           audited_digits: tuple[AuditedModel, Path]) -> None:
    path = tmp_path / "f.h5"
    shutil.copy(digits_store, path)
    before = snapshot(tmp_path)
    refused = run("extract", "--model", audited_digits[1], "--out", path, "--resume", "--reduction", "l2")
    assert refused.code == 1
    assert one_error(refused.stderr).endswith("was written by a different extraction (differs in reduction); "
                                              "choose another --out, or pass --overwrite to extract it again in "
                                              "its place")
    assert snapshot(tmp_path) == before


def test_a_readable_partial_store_still_resumes(tmp_path: Path, digits_store: Path,
                                                audited_digits: tuple[AuditedModel, Path]) -> None:
    path = tmp_path / "p.h5"
    shutil.copy(digits_store, path)
    with h5py.File(path, "r+") as h5:  # what a run stopped after 1000 rows leaves
        h5["done"][1000:] = False
        h5.attrs["complete"] = False
        del h5.attrs["rows_written"]
    with FeatureStore.open(path) as store, pytest.raises(IncompleteStoreError, match="1000 of 1796 rows"):
        store.require_complete()
    done = run("extract", "--model", audited_digits[1], "--out", path, "--resume", "--batch-size", 400)
    assert done.code == 0 and f"{path}: complete (1796 rows" in done.stdout, done.stderr
    with FeatureStore.open(path) as resumed, FeatureStore.open(digits_store) as whole:
        resumed.require_complete()
        np.testing.assert_allclose(resumed.features(), whole.features(), rtol=1e-4, atol=1e-6)


def test_resume_onto_a_text_file_says_it_is_no_store(tmp_path: Path,
                                                     audited_digits: tuple[AuditedModel, Path]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a store\n")
    before = snapshot(tmp_path)
    refused = run("extract", "--model", audited_digits[1], "--out", text, "--resume")
    assert refused.code == 1 and refused.stdout == ""
    assert one_error(refused.stderr) == (f"error: {text} is not a readable HDF5 feature store (not an HDF5 file); "
                                         "it cannot be resumed; pass --overwrite to extract it again in its place")
    assert snapshot(tmp_path) == before and not lock_path(text).exists()
    with pytest.raises(InputError, match="not a readable HDF5 feature store") as caught:
        FeatureStore.resume(text, {})
    assert "PID" not in str(caught.value)


@pytest.fixture
def half_trained(audited_digits: tuple[AuditedModel, Path]) -> AuditedModel:
    """The audited model as a caller fine-tuning it holds it: in training mode, one block frozen in eval
    mode, one weight frozen."""
    module = copy.deepcopy(audited_digits[0].module).train()
    module[1].eval()
    module[0].weight.requires_grad_(False)
    return AuditedModel(module, audited_digits[0].meta)


def lent_state(module: torch.nn.Module) -> tuple[list[bool], list[bool], list[torch.device], list[int]]:
    tensors = [*module.parameters(), *module.buffers()]
    return ([m.training for m in module.modules()], [p.requires_grad for p in module.parameters()],
            [t.device for t in tensors], [id(t) for t in tensors])


def test_extract_gives_the_module_back_as_it_was_lent(tmp_path: Path, half_trained: AuditedModel,
                                                      digits: ImageSet, digits_split: MembershipSplit) -> None:
    module = half_trained.module
    before = lent_state(module)
    assert True in before[0] and False in before[0] and False in before[1]
    rows = split_rows(digits_split)
    few = Rows(rows.index[:64], rows.membership[:64], rows.role[:64])
    extract(half_trained, digits, few, ExtractSettings(batch_size=64), out=tmp_path / "s.h5", split=digits_split)
    assert lent_state(module) == before
    with pytest.raises(UnknownNameError):  # refused after the module was put in eval mode
        extract(half_trained, digits, few, ExtractSettings(layer_setup="no.such.weight"), out=tmp_path / "r.h5")
    assert lent_state(module) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU to move the module to")
def test_extract_moves_the_module_back_from_the_gpu(tmp_path: Path, half_trained: AuditedModel, digits: ImageSet,
                                                    digits_split: MembershipSplit) -> None:
    module = half_trained.module
    training, requires_grad, _, _ = lent_state(module)
    rows = split_rows(digits_split)
    few = Rows(rows.index[:64], rows.membership[:64], rows.role[:64])
    extract(half_trained, digits, few, ExtractSettings(batch_size=64, device="cuda"), out=tmp_path / "s.h5",
            split=digits_split)
    after = lent_state(module)
    assert after[:2] == (training, requires_grad) and {d.type for d in after[2]} == {"cpu"}


def test_a_torn_last_depth_line_is_dropped_and_refitted(tmp_path: Path,
                                                        audited_digits: tuple[AuditedModel, Path]) -> None:
    work = tmp_path / "w"
    args = ("depth", "--model", audited_digits[1], "--work", work, "--blocks", "9", "--sources", "activation",
            "--n-boot", 10, "--overwrite")
    first = run(*args)
    assert first.code == 0, first.stderr
    line = (work / RESULTS).read_text()
    assert line.count("\n") == 1
    (work / RESULTS).write_text(line[:len(line) // 2])  # a kill in the middle of appending the point
    assert read_points(work) == []
    again = run(*args)
    assert again.code == 0, again.stderr
    assert (work / RESULTS).read_text() == line  # the torn line gone, the point fitted again, on a line of its own
    assert [p.to_dict() for p in read_points(work)] == [json.loads(line)]


def test_a_bad_line_in_the_middle_of_depth_jsonl_is_damage(tmp_path: Path,
                                                            audited_digits: tuple[AuditedModel, Path]) -> None:
    work = tmp_path / "w"
    work.mkdir()
    (work / RESULTS).write_text('{"depth": 0, "blo\n{"depth": 1}\n')
    with pytest.raises(InputError, match=r"depth.jsonl: line 1 is not a depth point \(JSONDecodeError: "):
        read_points(work)
    before = snapshot(work)
    refused = run("depth", "--model", audited_digits[1], "--work", work, "--blocks", "9", "--sources", "activation")
    assert refused.code == 1 and "line 1 is not a depth point" in one_error(refused.stderr)
    assert snapshot(work) == before


@pytest.fixture(scope="module")
def reference_folder(tmp_path_factory: pytest.TempPathFactory, digits: ImageSet,
                     digits_control_split: MembershipSplit) -> Path:
    """An audited model with one reference model, its stores extracted by `gmint reference extract`."""
    folder = tmp_path_factory.mktemp("refs")
    train_audited(digits, digits_control_split, arch="small_cnn", transform=Transform(),
                  config=TrainConfig(epochs=1, batch_size=64), out=folder / "audited.pt", arch_options={"width": 0.25})
    trained = run("reference", "train", "--model", folder / "audited.pt", "--k", 1, "--out", folder / "refs")
    assert trained.code == 0, trained.stderr
    extracted = run("reference", "extract", folder / "refs", "--batch-size", 512)
    assert extracted.code == 0, extracted.stderr
    return folder / "refs"


def test_reference_extract_refuses_a_store_cut_short(tmp_path: Path, reference_folder: Path) -> None:
    refs = tmp_path / "refs"
    shutil.copytree(reference_folder, refs)
    stores = sorted(refs.rglob("*.h5"))
    assert stores
    cut = stores[0]
    cut_in_half(cut, cut)
    before = snapshot(refs)
    refused = run("reference", "extract", refs, "--batch-size", 512)
    assert refused.code == 1
    line = one_error(refused.stderr)
    assert f"{cut} is not a readable HDF5 feature store (cut short" in line and "complete" not in line
    assert snapshot(refs) == before


def test_a_damaged_reference_store_names_the_reference_extraction(tmp_path: Path, reference_folder: Path) -> None:
    refs = tmp_path / "refs"
    shutil.copytree(reference_folder, refs)
    with h5py.File(refs / "audited-gradient.h5", "r+") as h5:
        damage_rows(h5)
    before = snapshot(refs)
    for args in (("extract", refs, "--batch-size", 512), ("attack", refs, "--attacks", "gmint")):
        refused = run("reference", *args)
        line = one_error(refused.stderr)
        assert refused.code == 1 and "audited-gradient.h5 is damaged (marked complete, but 5 of" in line, line
        assert line.endswith("; remove it and run `gmint reference extract` again"), line
    assert snapshot(refs) == before


def test_reference_stores_of_other_settings_name_no_option_extract_lacks(tmp_path: Path,
                                                                         reference_folder: Path) -> None:
    refs = tmp_path / "refs"
    shutil.copytree(reference_folder, refs)
    before = snapshot(refs)
    args = ["reference", "extract", refs, "--reduction", "l2", "--batch-size", 512]
    refused = run(*args)
    line = one_error(refused.stderr)
    assert refused.code == 1 and "was written by a different extraction (differs in reduction)" in line, line
    assert line.endswith("; extract with the settings it records, or remove it and run `gmint reference extract` "
                         "again"), line
    assert snapshot(refs) == before
    assert snapshot(refs) == before
