"""A reference set trained in shards (a job array's tasks, torchrun's ranks) is the set one process trains, and
until its last shard has finished every verb that reads the folder refuses it in one line naming what is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gmint.data.base import ImageSet
from gmint.data.split import make_split
from gmint.data.transforms import Transform
from gmint.errors import InputError
from gmint.models.io import load_audited
from gmint.models.train import TrainConfig, train_audited
from gmint.reference import ReferenceSet
from gmint.reference.manifest import MANIFEST
from gmint.reference.shards import Shard
from tests.cli_runner import run, snapshot

K = 4


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory, digits: ImageSet) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    split = make_split(digits, members=0.3, external=0.3, control=0.4, seed=0)
    train_audited(digits, split, arch="small_cnn", transform=Transform(), config=TrainConfig(epochs=1, batch_size=64),
                  out=folder / "audited.pt", arch_options={"width": 0.25})
    return folder / "audited.pt"


def train(audited: Path, out: Path, *args: object) -> str:
    """`gmint reference train` of K offline models into `out`; its output."""
    done = run("reference", "train", "--model", audited, "--k", K, "--out", out, *args)
    assert done.code == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def whole(audited: Path) -> Path:
    """The set one process trains."""
    out = audited.parent / "whole"
    train(audited, out)
    return out


@pytest.fixture(scope="module")
def half(audited: Path) -> Path:
    """The set's shard 0 of 2 alone: models 0 and 2 trained, 1 and 3 not."""
    out = audited.parent / "half"
    assert "references.json is written when the last shard finishes" in train(audited, out, "--shard", "0/2")
    return out


def fingerprints(folder: Path) -> list[str]:
    """The weights' fingerprint of each model file, as loaded (not as recorded)."""
    return [load_audited(folder / ReferenceSet.model_file(i)).fingerprint for i in range(K)]


def refused(folder: Path, *args: object) -> str:
    """The one error line of a refused `gmint ARGS`, after checking it wrote nothing under `folder`."""
    before = snapshot(folder)
    done = run(*args)
    lines = done.stderr.strip().splitlines()
    assert done.code == 1 and done.stdout == "" and len(lines) == 1 and lines[0].startswith("error: "), done
    assert snapshot(folder) == before
    return lines[0]


def test_shards_interleave_the_models() -> None:
    assert [Shard(r, 3).models(8) for r in range(3)] == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert Shard.parse(" 1/4 ") == Shard(1, 4) and Shard(1, 4).file == "references.shard1-of-4.json"


@pytest.mark.parametrize("text", ["2/2", "1", "-1/2", "a/b", "0/0"])
def test_a_shard_that_does_not_exist_is_refused(audited: Path, tmp_path: Path, text: str) -> None:
    line = refused(tmp_path, "reference", "train", "--model", audited, "--out", tmp_path / "refs", "--shard", text)
    assert "INDEX/COUNT" in line or "does not exist" in line


def test_a_shard_writes_only_its_own_models_and_manifest(half: Path) -> None:
    assert sorted(p.name for p in half.iterdir()) == ["ref-00.pt", "ref-02.pt", "references.shard0-of-2.json"]
    own = ReferenceSet.load(half, Shard(0, 2).file)
    assert own.k == K and sorted(own.models) == ["ref-00.pt", "ref-02.pt"]


@pytest.mark.parametrize("workers", [1, 2])
def test_two_shards_one_after_the_other_are_the_set_one_process_trains(half: Path, whole: Path, tmp_path: Path,
                                                                        workers: int) -> None:
    out = Path(shutil.copytree(half, tmp_path / "refs"))
    assert "every shard has finished: merged into" in train(half.parent / "audited.pt", out, "--shard", "1/2",
                                                            "--workers", workers)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.iterdir())  # shard files gone
    assert (out / MANIFEST).read_bytes() == (whole / MANIFEST).read_bytes()  # the manifest has no timing fields
    assert fingerprints(out) == fingerprints(whole)
    assert len(set(fingerprints(out))) == K


def test_two_shards_as_two_torchrun_ranks_at_once_are_the_set_one_process_trains(audited: Path, whole: Path,
                                                                                 tmp_path: Path) -> None:
    out = tmp_path / "refs"
    command = [sys.executable, "-m", "gmint_cli", "reference", "train", "--model", str(audited), "--k", str(K),
               "--out", str(out)]
    ranks = [subprocess.Popen(command, env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2",
                                            "GMINT_NO_PROGRESS": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    for rank in ranks:
        stdout, stderr = rank.communicate(timeout=600)
        assert rank.returncode == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.iterdir())
    assert (out / MANIFEST).read_bytes() == (whole / MANIFEST).read_bytes()
    assert fingerprints(out) == fingerprints(whole)


def test_a_missing_shard_is_refused_by_every_verb_that_reads_the_folder(half: Path) -> None:
    missing = "shard 1/2 has not trained ref-01.pt, ref-03.pt"
    for verb in (("reference", "extract", half), ("reference", "attack", half), ("reference", "merge", half)):
        line = refused(half, *verb)
        assert f"{half} holds a reference set trained in 2 shards that is not complete: {missing}" in line, verb
    with pytest.raises(InputError, match=f"not complete: {missing}"):
        ReferenceSet.load(half)  # as `gmint eval --references` and the signal readers load it


def test_a_shard_run_again_resumes_and_trains_nothing_twice(half: Path, tmp_path: Path) -> None:
    out = Path(shutil.copytree(half, tmp_path / "refs"))
    models = {p: p.stat().st_mtime_ns for p in out.glob("ref-*.pt")}
    train(half.parent / "audited.pt", out, "--shard", "0/2")
    assert {p: p.stat().st_mtime_ns for p in out.glob("ref-*.pt")} == models
    assert sorted(ReferenceSet.load(out, Shard(0, 2).file).models) == ["ref-00.pt", "ref-02.pt"]


def test_a_merged_set_run_again_is_left_as_it_is(whole: Path, tmp_path: Path) -> None:
    out = Path(shutil.copytree(whole, tmp_path / "refs"))
    before = snapshot(out)
    train(whole.parent / "audited.pt", out, "--shard", "1/2")
    assert run("reference", "merge", out).code == 0
    assert snapshot(out) == before


@pytest.mark.parametrize(("args", "wanted"), [
    (("--shard", "1/2", "--seed", "1"), "draw another reference set than shard 1/2 (seed, inclusion differ)"),
    (("--shard", "1/3"), "holds shards of a set split 2 ways, not merged"),
    (("--shard", "1/2", "--overwrite"), "a shard cannot replace the set"),
])
def test_a_shard_of_another_set_is_refused(half: Path, args: tuple[str, ...], wanted: str) -> None:
    line = refused(half, "reference", "train", "--model", half.parent / "audited.pt", "--k", K, "--out", half, *args)
    assert wanted in line


def test_a_model_copied_over_another_is_refused_by_the_merge(half: Path, tmp_path: Path) -> None:
    out = Path(shutil.copytree(half, tmp_path / "refs"))
    shutil.copy(out / "ref-00.pt", out / "ref-02.pt")
    done = run("reference", "train", "--model", half.parent / "audited.pt", "--k", K, "--out", out, "--shard", "1/2")
    assert done.code == 1 and "ref-02.pt is not reference model 2 of the set" in done.stderr
    assert not (out / MANIFEST).exists()
    assert "ref-02.pt is not reference model 2 of the set" in refused(out, "reference", "merge", out)
