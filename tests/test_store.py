"""Feature stores: chunked writes read back exactly; incomplete or foreign stores are refused; files are
readable by HDF5 1.10 tools and PyTables, and say what their codes mean."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from gmint.errors import IncompleteStoreError, InputError, Remedy, StoreMismatchError
from gmint.features.integrity import verify
from gmint.features.schema import FORMAT
from gmint.features.store import FeatureStore

PROVENANCE = {"model_fingerprint": "abc", "layers": ["a.weight", "b.weight"], "reduction": "mean",
              "engine": "vmap", "dataset": "toy", "seed": 3, "split_sha256": "s", "n_rows": 10,
              "layer_shapes": {"a.weight": [4, 2, 3, 3]}}


def make_columns(n: int) -> dict[str, np.ndarray]:
    return {"membership": np.arange(n) % 2, "role": (np.arange(n) >= n // 2).astype(int),
            "label": np.arange(n) % 3, "sample_id": np.arange(100, 100 + n)}


def write_in_chunks(path: Path, feats: dict[str, np.ndarray], chunk: int, stop_after: int | None = None) -> None:
    n = len(next(iter(feats.values())))
    dims = {k: v.shape[1] for k, v in feats.items()}
    with FeatureStore.create(path, columns=make_columns(n), dims=dims, provenance=PROVENANCE) as store:
        for start in range(0, n, chunk):
            if stop_after is not None and start >= stop_after:
                return
            store.write(start, {k: v[start:start + chunk] for k, v in feats.items()},
                        loss=np.arange(start, min(n, start + chunk), dtype=np.float32),
                        pred=np.zeros(min(chunk, n - start), np.int64))
        store.mark_complete(extract_seconds=1.5)


@pytest.fixture
def features() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a.weight": rng.normal(size=(10, 4)).astype(np.float32),
            "b.weight": rng.normal(size=(10, 7)).astype(np.float32)}


def test_chunked_writes_read_back_exactly(tmp_path: Path, features: dict[str, np.ndarray]) -> None:
    path = tmp_path / "s.h5"
    write_in_chunks(path, features, chunk=3)
    with FeatureStore.open(path) as store:
        store.require_complete()
        assert store.complete and len(store) == 10
        assert store.layers == ["a.weight", "b.weight"]
        assert store.dims == {"a.weight": 4, "b.weight": 7}
        np.testing.assert_array_equal(store.features(), np.concatenate(list(features.values()), axis=1))
        np.testing.assert_array_equal(store.features(["b.weight"]), features["b.weight"])
        mask = store.column("role") == 1
        np.testing.assert_array_equal(store.features(["a.weight"], mask), features["a.weight"][mask])
        np.testing.assert_array_equal(store.column("sample_id"), np.arange(100, 110))
        np.testing.assert_array_equal(store.column("loss"), np.arange(10, dtype=np.float32))
        prov = store.provenance
        assert prov["layer_shapes"] == {"a.weight": [4, 2, 3, 3]}
        assert prov["seed"] == 3 and prov["rows_written"] == 10 and prov["extract_seconds"] == 1.5
    with h5py.File(path) as h5:  # readable by plain h5py, compressed and chunked
        ds = h5["features/a.weight"]
        assert ds.compression == "gzip" and ds.chunks is not None


def test_incomplete_store_is_refused_and_resumable(tmp_path: Path, features: dict[str, np.ndarray]) -> None:
    path = tmp_path / "s.h5"
    write_in_chunks(path, features, chunk=3, stop_after=6)
    with FeatureStore.open(path) as store:
        assert not store.complete
        assert store.done_mask().tolist() == [True] * 6 + [False] * 4
        with pytest.raises(IncompleteStoreError, match=r"is incomplete \(6 of 10 rows\)") as caught:
            store.require_complete()
        assert caught.value.remedy is Remedy.RESUME_EXTRACTION
    with FeatureStore.resume(path, PROVENANCE) as store:
        store.write(6, {k: v[6:] for k, v in features.items()}, loss=np.arange(6, 10, dtype=np.float32),
                    pred=np.zeros(4, np.int64))
        store.mark_complete()
    with FeatureStore.open(path) as store:
        np.testing.assert_array_equal(store.features(["a.weight"]), features["a.weight"])


def test_mark_complete_refuses_missing_rows(tmp_path: Path, features: dict[str, np.ndarray]) -> None:
    path = tmp_path / "s.h5"
    write_in_chunks(path, features, chunk=3, stop_after=3)
    with FeatureStore.resume(path, PROVENANCE) as store, pytest.raises(IncompleteStoreError):
        store.mark_complete()


def test_resume_with_other_provenance_is_refused(tmp_path: Path, features: dict[str, np.ndarray]) -> None:
    path = tmp_path / "s.h5"
    write_in_chunks(path, features, chunk=3, stop_after=3)
    with pytest.raises(StoreMismatchError, match="reduction"):
        FeatureStore.resume(path, {**PROVENANCE, "reduction": "l2"})


def test_existing_file_is_not_overwritten(tmp_path: Path, features: dict[str, np.ndarray]) -> None:
    path = tmp_path / "s.h5"
    write_in_chunks(path, features, chunk=5)
    before = path.read_bytes()
    with pytest.raises(InputError, match="s.h5 exists") as caught:
        FeatureStore.create(path, columns=make_columns(10), dims={"a.weight": 4}, provenance=PROVENANCE)
    assert caught.value.remedy is Remedy.RESUME_OR_OVERWRITE
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", [b"", b"not an hdf5 file at all", None])
def test_unreadable_files_give_one_clear_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.h5"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match="bad.h5"):
        FeatureStore.open(path)


def test_foreign_hdf5_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as h5:
        h5["x"] = np.zeros(3)
    with pytest.raises(InputError, match="not a gmint feature store"):
        FeatureStore.open(path)


def test_group_ids_are_kept_and_default_to_none(tmp_path: Path, features: dict[str, np.ndarray]) -> None:
    path = tmp_path / "s.h5"
    write_in_chunks(path, features, chunk=5)
    with FeatureStore.open(path) as store:
        np.testing.assert_array_equal(store.column("group"), np.full(10, -1))
    grouped = tmp_path / "g.h5"
    with FeatureStore.create(grouped, columns={**make_columns(10), "group": np.arange(10) // 5}, dims={"a.weight": 4},
                             provenance=PROVENANCE) as store:
        np.testing.assert_array_equal(store.column("group"), np.arange(10) // 5)


def test_a_store_written_before_group_ids_reads_as_rows_of_no_group(tmp_path: Path,
                                                                      features: dict[str, np.ndarray]) -> None:
    path = tmp_path / "s.h5"
    write_in_chunks(path, features, chunk=5)
    with h5py.File(path, "r+") as h5:  # what gmint-feature-store/2 wrote: the same without /group
        del h5["group"]
        h5.attrs["format"] = "gmint-feature-store/2"
    assert not [problem for problem in verify(path) if "group" in problem]
    with FeatureStore.open(path) as store:
        np.testing.assert_array_equal(store.column("group"), np.full(10, -1))
        np.testing.assert_array_equal(store.features(["a.weight"]), features["a.weight"])
    with h5py.File(path, "r+") as h5:
        h5.attrs["format"] = FORMAT
    assert "dataset /group is missing" in verify(path)


def test_pytables_reads_the_store(tmp_path: Path, features: dict[str, np.ndarray]) -> None:
    tables = pytest.importorskip("tables", reason="PyTables is not installed (it is in the dev extra)")
    path = tmp_path / "s.h5"
    write_in_chunks(path, features, chunk=3)
    with warnings.catch_warnings():
        # PyTables has no type for h5py's boolean attributes (`complete`); it reads them as None.
        warnings.simplefilter("ignore", tables.DataTypeWarning)
        t = tables.open_file(str(path))
    with t:
        np.testing.assert_array_equal(t.root.membership[:], make_columns(10)["membership"])
        np.testing.assert_array_equal(t.root.loss[:], np.arange(10, dtype=np.float32))
        for name, values in features.items():
            np.testing.assert_array_equal(t.get_node("/features", name)[:], values)
        assert t.root.membership.attrs.codes == "1 member, 0 external, -1 unknown"


@pytest.mark.skipif(shutil.which("h5dump") is None, reason="h5dump is not installed (apt: hdf5-tools)")
def test_h5dump_reads_the_store(tmp_path: Path, features: dict[str, np.ndarray]) -> None:
    path = tmp_path / "s.h5"
    write_in_chunks(path, features, chunk=3)
    for args in (["-H"], ["-d", "/features/b.weight"], ["-a", "/role/codes"]):
        proc = subprocess.run(["h5dump", *args, str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 auditor's pool, 1 holdout, -1 n/a" in proc.stdout


def test_codes_are_spelled_out_in_the_file(tmp_path: Path, features: dict[str, np.ndarray]) -> None:
    path = tmp_path / "s.h5"
    write_in_chunks(path, features, chunk=5)
    with h5py.File(path) as h5:
        assert h5["membership"].attrs["codes"] == "1 member, 0 external, -1 unknown"
        assert h5["role"].attrs["codes"] == "0 auditor's pool, 1 holdout, -1 n/a"
        assert h5["group"].attrs["codes"].startswith("-1 none")


KILLED_AFTER_A_BATCH = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    from gmint.features.integrity import verify
    from gmint.features.schema import FORMAT
    from gmint.features.store import FeatureStore
    columns = {"membership": np.zeros(10), "role": np.zeros(10), "label": np.zeros(10), "sample_id": np.arange(10)}
    store = FeatureStore.create(sys.argv[1], columns=columns, dims={"a.weight": 4}, provenance={})
    time.sleep(0.5)
    store.write(0, {"a.weight": np.zeros((5, 4), np.float32)}, loss=np.zeros(5, np.float32),
                pred=np.zeros(5, np.int64))
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_extract_seconds_covers_every_run(tmp_path: Path) -> None:
    """A run killed after its first batch, then a run that finishes: the time of both is recorded."""
    path = tmp_path / "s.h5"
    proc = subprocess.run([sys.executable, "-c", KILLED_AFTER_A_BATCH, str(path)], timeout=120)
    assert proc.returncode == -9
    with FeatureStore.resume(path, {}) as store:
        assert store.rows_written == 5
        store.write(5, {"a.weight": np.zeros((5, 4), np.float32)}, loss=np.zeros(5, np.float32),
                    pred=np.zeros(5, np.int64))
        store.mark_complete(extract_seconds=1.0)
    with FeatureStore.open(path) as store:
        assert 1.5 <= store.provenance["extract_seconds"] < 10
