"""Membership from the auditor's own lists: exactly the listed members and externals, a seeded, class-level
holdout drawn from them, list files in every format, and every bad list refused in one line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmint.data.base import ImageSet
from gmint.data.readers import read_imagefolder
from gmint.data.split import MembershipSplit, read_item_list, split_from_lists
from gmint.errors import InputError
from tests.cli_runner import run, snapshot

CLASSES = ("cat", "dog", "frog")
# Per class: train/ holds 8 images, test/ 4. The members are train 0-4 and test 0 (a member from the
# official test part), the externals train 5-7 and test 1-3 (train rows the model never saw).
MEMBER_FILES = [f"{part}/{c}/{i:03d}.png" for c in CLASSES for part, i in
                [("train", 0), ("train", 1), ("train", 2), ("train", 3), ("train", 4), ("test", 0)]]
EXTERNAL_FILES = [f"{part}/{c}/{i:03d}.png" for c in CLASSES for part, i in
                  [("train", 5), ("train", 6), ("train", 7), ("test", 1), ("test", 2), ("test", 3)]]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded images cached away from the user's cache and from the folders the tests snapshot."""
    monkeypatch.setenv("GMINT_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("GMINT_DATA", raising=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A class-named image folder with train/ and test/ parts: 3 classes of 12 small PNGs."""
    root = tmp_path_factory.mktemp("pets")
    rng = np.random.default_rng(0)
    for part, count in (("train", 8), ("test", 4)):
        for name in CLASSES:
            (root / part / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / part / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def pets(folder: Path) -> ImageSet:
    return read_imagefolder(folder)


def rows_of(data: ImageSet, files: list[str]) -> list[int]:
    assert data.files is not None
    return sorted(int(np.flatnonzero(data.files == f)[0]) for f in files)


def grouped(n_groups: int = 12, frames: int = 3, classes: int = 3) -> ImageSet:
    """Frames of tracks (groups), one file each, classes cycling over the tracks."""
    n = n_groups * frames
    groups = np.repeat(np.arange(n_groups), frames)
    return ImageSet(name="tracks", images=np.zeros((n, 2, 2, 1), np.uint8),
                    labels=(groups % classes).astype(np.int64), sample_ids=np.arange(n, dtype=np.int64),
                    part=np.full(n, "train"), classes=tuple(map(str, range(classes))), groups=groups,
                    files=np.array([f"{g:02d}/{i}.png" for g in range(n_groups) for i in range(frames)]))


def write_lists(work: Path, kind: str, members: list[str], external: list[str]) -> tuple[Path, Path]:
    """The two lists in one file format; the text files also carry comments, blank lines, `./` prefixes and
    Windows separators, the CSV a header whose item column is not the first, and the JSON lists run backwards."""
    paths = []
    for role, items in (("members", members), ("external", external)):
        if kind == "txt":
            path = work / f"{role}.txt"
            lines = [f".\\{item}".replace("/", "\\") if i % 2 else f"./{item}" for i, item in enumerate(items)]
            path.write_text(f"# {role} of the audited model\n\n" + "\n".join(lines) + "\n\n")
        elif kind == "csv":
            path = work / f"{role}.csv"
            path.write_text("label,file\n" + "".join(f"{item.split('/')[1]},{item}\n" for item in items))
        else:
            path = work / f"{role}.json"
            path.write_text(json.dumps(items[::-1]))
        paths.append(path)
    return paths[0], paths[1]


def assert_balanced_holdout(data: ImageSet, split: MembershipSplit) -> None:
    """As many members as externals held out, class by class."""
    held = np.asarray(split.holdout)
    membership = split.membership_of(held)
    assert len(held) > 0
    for cls in np.unique(data.labels[held]):
        in_class = data.labels[held] == cls
        assert membership[in_class].sum() * 2 == in_class.sum(), f"class {cls}"


@pytest.mark.parametrize("kind", ["txt", "csv", "json"])
def test_path_lists_give_exactly_the_listed_split(tmp_path: Path, pets: ImageSet, kind: str) -> None:
    members, external = (read_item_list(p) for p in write_lists(tmp_path, kind, MEMBER_FILES, EXTERNAL_FILES))
    split = split_from_lists(pets, members, external, holdout=0.5, seed=3)
    assert split.members == rows_of(pets, MEMBER_FILES) and split.external == rows_of(pets, EXTERNAL_FILES)
    assert "test" in set(pets.part[split.members]) and "train" in set(pets.part[split.external])
    assert sorted(split.pool + split.holdout) == sorted(split.members + split.external)  # nothing left out
    assert len(split.holdout) == 18 and not split.control  # half of the 18 a side, as many of each
    assert_balanced_holdout(pets, split)
    assert split.options["members_sha256"] == hashlib.sha256(
        "".join(f"{f}\n" for f in sorted(MEMBER_FILES)).encode()).hexdigest()
    assert split.options["members_by"] == split.options["external_by"] == "file"


def test_lists_of_unlike_classes_still_hold_out_each_class_evenly(pets: ImageSet) -> None:
    """Members mostly cats, externals mostly dogs: held out side by side, the class alone would tell them apart."""
    members = [f"train/cat/{i:03d}.png" for i in range(6)] + ["train/dog/000.png", "train/dog/001.png"] + \
        [f"train/frog/{i:03d}.png" for i in range(5)]
    external = ["train/cat/006.png", "train/cat/007.png"] + [f"train/dog/{i:03d}.png" for i in range(2, 8)] + \
        [f"test/dog/{i:03d}.png" for i in range(4)] + [f"train/frog/{i:03d}.png" for i in range(5, 8)]
    for seed in range(5):
        split = split_from_lists(pets, members, external, seed=seed)
        assert len(split.holdout) == 12 and len(split.external) == 15  # round(0.5 * 13) pairs of rows
        assert_balanced_holdout(pets, split)


def test_every_list_format_and_order_gives_one_manifest_and_the_seed_decides(tmp_path: Path, pets: ImageSet) -> None:
    hashes = set()
    for kind in ("txt", "csv", "json"):
        members, external = (read_item_list(p) for p in write_lists(tmp_path, kind, MEMBER_FILES, EXTERNAL_FILES))
        hashes.add(split_from_lists(pets, members, external, seed=1).sha256)
    assert len(hashes) == 1
    again = split_from_lists(pets, MEMBER_FILES, EXTERNAL_FILES, seed=1)
    other = split_from_lists(pets, MEMBER_FILES, EXTERNAL_FILES, seed=2)
    assert again.sha256 in hashes and other.sha256 != again.sha256 and other.holdout != again.holdout
    assert other.members == again.members  # the seed draws the holdout, the lists decide membership
    fewer = split_from_lists(pets, MEMBER_FILES[1:], EXTERNAL_FILES, seed=1)
    assert fewer.options["members_sha256"] != again.options["members_sha256"]


def test_the_cli_writes_the_librarys_manifest_and_its_summary(tmp_path: Path, folder: Path, pets: ImageSet) -> None:
    members, external = write_lists(tmp_path, "csv", MEMBER_FILES, EXTERNAL_FILES)
    out = tmp_path / "split.json"
    code, stdout, stderr = run("split", "--data", "imagefolder", "--data-root", folder, "--members-list", members,
                               "--external-list", external, "--seed", "4", "--holdout", "0.5", "--out", out)
    assert code == 0 and stderr == "", stderr
    written = MembershipSplit.load(out)
    assert written == split_from_lists(pets, MEMBER_FILES, EXTERNAL_FILES, seed=4)
    assert stdout == f"{out}: 18 members, 18 external, 0 control; pool 18, holdout 18; sha256 {written.sha256[:12]}\n"
    code, stdout, _ = run("split", "--data", "imagefolder", "--data-root", folder, "--members-list", members,
                          "--external-list", external, "--seed", "4", "--out", out, "--overwrite", "--json")
    assert code == 0 and json.loads(stdout)["sha256"] == written.sha256


def test_row_id_lists_on_digits(tmp_path: Path, digits: ImageSet) -> None:
    (tmp_path / "members.txt").write_text("\n".join(map(str, range(0, 1200, 2))) + "\n")
    (tmp_path / "external.json").write_text(json.dumps(list(range(1, 1200, 2))))
    (tmp_path / "scores.csv").write_text("sample_id,file,score\n" + "".join(f"{i},,0.5\n" for i in range(1, 1200, 2)))
    members = read_item_list(tmp_path / "members.txt")
    assert members[:3] == [0, 2, 4]
    external = read_item_list(tmp_path / "external.json")
    assert read_item_list(tmp_path / "scores.csv") == external  # gmint's own scores file: its sample_id column
    split = split_from_lists(digits, members, external, holdout=0.4, seed=0)
    assert split.members == list(range(0, 1200, 2)) and split.external == list(range(1, 1200, 2))
    assert split.options["members_by"] == "row id"
    assert len(split.holdout) == 2 * 240  # 0.4 of the 600 a side, held out in same-class pairs of rows
    assert_balanced_holdout(digits, split)
    assert {"D10", "D1"} <= set(split.subpools) and set(split.subpools["D10"]) < set(split.pool)


def test_grouped_lists_hold_out_whole_groups() -> None:
    data = grouped()
    groups = data.groups
    assert groups is not None
    member_rows = np.flatnonzero(groups % 2 == 0).tolist()  # tracks 0, 2, 4, ...: every class
    external_rows = np.flatnonzero(groups % 2 == 1).tolist()
    for seed in range(4):
        split = split_from_lists(data, member_rows, external_rows, seed=seed)
        assert split.members == member_rows and split.options["grouped_by"] == "group"
        assert not set(groups[split.pool]) & set(groups[split.holdout])
        assert_balanced_holdout(data, split)


def test_a_group_on_both_lists_is_refused_under_grouped_and_allowed_under_paper() -> None:
    data = grouped()
    assert data.files is not None
    members = [str(f) for f in data.files[:18]] + ["06/0.png"]  # track 6 also on the external list
    external = [str(f) for f in data.files[19:]]
    with pytest.raises(InputError, match=r"^group 6 has rows on both lists \('06/0.png' a member, '06/1.png' "
                                         r"external\); the grouped protocol keeps each group on one side"):
        split_from_lists(data, members, external, protocol="grouped")
    split = split_from_lists(data, members, external, protocol="paper")
    assert split.options["grouped_by"] == "row" and 18 in split.members and 19 in split.external


def idx_like() -> ImageSet:
    n = 20
    return ImageSet(name="mnist", images=np.zeros((n, 2, 2, 1), np.uint8), labels=np.arange(n) // 2 % 2,
                    sample_ids=np.arange(n, dtype=np.int64), part=np.full(n, "train"), classes=("0", "1"),
                    files=np.full(n, "train-images-idx3-ubyte"))


@pytest.mark.parametrize("members, external, message", [
    (["train/cat/000.png", "train/cat/999.png", "cat/001.png"], ["train/dog/000.png"],
     r"^the members list names 2 files that imagefolder lacks: 'train/cat/999.png', 'cat/001.png' \(paths are "
     r"relative to the dataset folder, as in 'train/cat/000.png'\)$"),
    (["train/cat/000.png", "./train/cat/000.png"], ["train/dog/000.png"],
     r"^the members list names 1 item more than once: 'train/cat/000.png'$"),
    (["train/cat/000.png", "train/dog/001.png"], ["train/dog/000.png", "train\\dog\\001.png"],
     r"^1 item on both lists: 'train/dog/001.png'; a row is a member or external, not both$"),
    ([], ["train/dog/000.png"], r"^the members list is empty$"),
    (["train/cat/000.png"], [3, "train/dog/000.png"], r"^the external list mixes row ids \(3\) and file paths"),
    (["train/cat/000.png"], [9999], r"^the external list names 1 row id that imagefolder lacks: 9999 \(its row "
                                    r"ids run from 0 to 35\)$"),
    (["train/cat/000.png", "train/cat/001.png"], ["train/dog/000.png", "train/dog/001.png"],
     r"^no class has both members and external samples"),
])
def test_bad_lists_are_refused_naming_the_offenders(pets: ImageSet, members: list[str | int],
                                                    external: list[str | int], message: str) -> None:
    with pytest.raises(InputError, match=message):
        split_from_lists(pets, members, external)


def test_paths_need_one_file_per_image() -> None:
    with pytest.raises(InputError, match="mnist has no file per image .its file 'train-images-idx3-ubyte' holds "
                                         "20 rows., so the members list must name its rows by integer row id"):
        split_from_lists(idx_like(), ["train-images-idx3-ubyte"], [1])
    by_id = split_from_lists(idx_like(), list(range(0, 20, 2)), [1, 3, 5, 7, 9, 11, 13])
    assert by_id.members == list(range(0, 20, 2)) and by_id.external == [1, 3, 5, 7, 9, 11, 13]


def test_list_files_in_every_format(tmp_path: Path) -> None:
    text = tmp_path / "l.txt"
    text.write_text("\ufeff# comment\n  cat/1.png  \n\n7\n")
    assert read_item_list(text) == ["cat/1.png", 7]
    plain = tmp_path / "l.csv"
    plain.write_text("cat/1.png,x\n\"a, b.png\",y\n")  # no header naming a column: the first column
    assert read_item_list(plain) == ["cat/1.png", "a, b.png"]
    named = tmp_path / "n.csv"
    named.write_text("label,Path\ncat,cat/1.png\ndog,\n")
    with pytest.raises(InputError, match=r"n.csv, line 3: no 'path' value"):
        read_item_list(named)
    listed = tmp_path / "l.json"
    listed.write_text('{"members": [1]}')
    with pytest.raises(InputError, match="must hold a JSON list of file paths or row ids, not a dict"):
        read_item_list(listed)
    listed.write_text("[1, true, 2.5]")
    with pytest.raises(InputError, match="holds True, 2.5: items are file paths"):
        read_item_list(listed)
    with pytest.raises(InputError, match="list file .*missing.txt not found"):
        read_item_list(tmp_path / "missing.txt")


# Each bad request through the CLI: exit 1, one `error:` line on stderr, nothing on stdout, nothing written.
CLI_CASES = {
    "unknown": (["train/cat/000.png", "train/cat/099.png"], None, [],
                "--members-list members.txt names 1 file that imagefolder lacks: 'train/cat/099.png'"),
    "duplicate": (["train/cat/000.png", "train/cat/000.png", "train/dog/000.png"], None, [],
                  "--members-list members.txt names 1 item more than once: 'train/cat/000.png'"),
    "both-lists": (MEMBER_FILES + EXTERNAL_FILES[:1], None, [],
                   "1 item on both lists: 'train/cat/005.png'; a row is a member or external, not both"),
    "empty": (["# nothing yet"], None, [], "--members-list members.txt is empty"),
    "with-members": (None, None, ["--members", "0.4"],
                     "--members cannot be given with --members-list and --external-list"),
    "with-control": (None, None, ["--control", "0"],
                     "--control cannot be given with --members-list and --external-list"),
    "one-list": (None, None, ["--no-external"], "--members-list and --external-list go together"),
    "out-over-a-list": (None, None, ["--out-over-list"],
                      "--out members.txt would write over --members-list, which this command reads"),
}


@pytest.mark.parametrize("case", CLI_CASES, ids=list(CLI_CASES))
def test_bad_lists_through_the_cli_are_one_line_and_write_nothing(tmp_path: Path, folder: Path, case: str) -> None:
    members, external, extra, needle = CLI_CASES[case]
    (tmp_path / "members.txt").write_text("\n".join(members or MEMBER_FILES) + "\n")
    (tmp_path / "external.txt").write_text("\n".join(external or EXTERNAL_FILES) + "\n")
    out = "members.txt" if "--out-over-list" in extra else "split.json"
    lists = ["--members-list", "members.txt"]
    if "--no-external" not in extra:
        lists += ["--external-list", "external.txt"]
    options = [arg for arg in extra if arg not in ("--no-external", "--out-over-list")]
    before = snapshot(tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        code, stdout, stderr = run("split", "--data", "imagefolder", "--data-root", folder, *lists, *options,
                                   "--out", out, "--overwrite")
    assert code == 1 and stdout == "", stdout
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and needle in stderr, stderr
    assert snapshot(tmp_path) == before and not (tmp_path / "split.json").exists()


def test_the_cli_names_its_protocol_option_for_a_group_on_both_lists(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data = grouped()
    assert data.files is not None
    monkeypatch.setattr("gmint_cli.split.load_data", lambda *args, **kwargs: data)
    (tmp_path / "m.txt").write_text("\n".join(map(str, data.files[:19])) + "\n")  # track 6 starts at row 18
    (tmp_path / "e.txt").write_text("\n".join(map(str, data.files[19:])) + "\n")
    lists = ["--members-list", tmp_path / "m.txt", "--external-list", tmp_path / "e.txt"]
    code, stdout, stderr = run("split", *lists, "--out", tmp_path / "s.json")
    assert code == 1 and stdout == "" and stderr.count("\n") == 1, stderr
    assert "group 6 has rows on both lists" in stderr and stderr.rstrip().endswith("or pass --protocol paper")
    assert not (tmp_path / "s.json").exists()
    code, stdout, stderr = run("split", *lists, "--protocol", "paper", "--out", tmp_path / "s.json")
    assert code == 0 and MembershipSplit.load(tmp_path / "s.json").members == list(range(19)), stderr
