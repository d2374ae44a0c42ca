"""The MINT-Demo page's JSON API through FastAPI's test client: answers equal to the library's, every refusal."""

from __future__ import annotations

import io
import json
import shutil
import struct
import threading
import warnings
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gmint.assess.candidates import load_image_folder, model_classes, model_input
from gmint.assess.scoring import audit_set
from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.models.io import AuditedModel, load_audited
from gmint.serve.audits import MANIFEST, find_audits, load_audit
from gmint.serve.limits import Limits, UploadError, check_image, display_name
from gmint.serve.uploads import PREDICTED, check_sizes, resolve_labels, upload_set
from tests.cli_runner import invoke, snapshot

with warnings.catch_warnings():  # starlette's note about its httpx client, not about gmint
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from gmint.serve.app import create_app  # noqa: E402

Files = list[tuple[str, tuple[str, bytes, str]]]


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory: pytest.TempPathFactory, publish_audit: Callable[..., Path]) -> Path:
    """DIR/digits/audit.json over the session's audited model and store, with a logistic MINT classifier."""
    return publish_audit(tmp_path_factory.mktemp("published"), description="A test audit.", alpha=0.05).parent


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("requests")


@pytest.fixture(scope="module")
def client(audit_dir: Path, tmp_root: Path) -> TestClient:
    audits, problems = find_audits(audit_dir)
    assert problems == []
    return TestClient(create_app(audits, Limits(max_files=40), tmp_root=tmp_root))


def png(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def uploads(digits: ImageSet, rows: np.ndarray) -> tuple[Files, list[str]]:
    files = [("files", (f"digit{i}.png", png(digits.images[i, :, :, 0]), "image/png")) for i in rows]
    return files, [str(digits.labels[i]) for i in rows]


def score(client: TestClient, files: Files, labels: list[str], name: str = "digits",
          **form: str) -> tuple[int, dict]:
    response = client.post(f"/api/audits/{name}/score", files=files, data={"labels": labels, **form})
    return response.status_code, response.json()


def test_the_listing_describes_each_audit_from_its_files(client: TestClient, audited_digits: tuple[AuditedModel, Path],
                                                         digits_split: MembershipSplit) -> None:
    listing = client.get("/api/audits").json()
    assert listing["limits"] == {"max_files": 40, "max_file_bytes": 4 * 2**20, "max_request_bytes": 64 * 2**20,
                                 "max_pixels": 4096 * 4096}
    (audit,) = listing["audits"]
    record = audited_digits[0].meta["record"]
    assert audit["name"] == "digits" and audit["title"] == "Digits" and audit["alpha"] == 0.05
    assert audit["classes"] == [str(c) for c in range(10)] and audit["input"] == {"channels": 1, "side": 8}
    assert audit["gap"]["members_accuracy"] == record["members_accuracy"]
    assert audit["gap"]["accuracy_gap"] == pytest.approx(record["members_accuracy"] - record["external_accuracy"])
    assert audit["n_calibration"] == len(np.intersect1d(digits_split.holdout, digits_split.external))
    assert audit["classifier"] == {"kind": "logreg", "setup": "combined", "reduction": "mean"}
    assert client.get("/api/audits/digits").json() == audit


def test_uploaded_images_score_exactly_as_the_library_scores_their_rows(
        client: TestClient, audit_dir: Path, digits: ImageSet, digits_split: MembershipSplit) -> None:
    rows = np.intersect1d(digits_split.holdout, digits_split.members)[:30]
    shuffled = np.random.default_rng(0).permutation(rows)  # answers come back in upload order
    files, labels = uploads(digits, shuffled)
    code, result = score(client, files, labels)
    assert code == 200, result
    assert [r["name"] for r in result["images"]] == [f"digit{i}.png" for i in shuffled]
    assert [r["label"] for r in result["images"]] == labels
    folder = audit_dir / "digits"
    expected = audit_set(load_audited(folder / "audited.pt"), load_audit(folder).mint, digits, shuffled,
                         calibration=folder / "features.h5")
    np.testing.assert_allclose([r["score"] for r in result["images"]], expected.scores.score, atol=1e-6)
    verdict = result["verdict"]
    assert verdict["p_value"] == pytest.approx(expected.verdict.p_value, rel=1e-6)
    assert verdict["statistic"] == expected.verdict.statistic and verdict["alpha"] == 0.05
    assert verdict["n_candidates"] == 30 and verdict["n_calibration"] == expected.verdict.n_calibration
    assert verdict["rejects_h0"] == (verdict["p_value"] <= 0.05)
    assert verdict["conclusion"] == expected.verdict.conclusion(0.05)
    topics = {c["topic"]: c["text"] for c in result["caveats"]}
    assert list(topics) == ["gap", "false_positive_rate", "absence", "repeats"]
    assert "false-positive rate of 0.05" in topics["false_positive_rate"]
    assert f"with {verdict['n_calibration']} held-out images" in topics["false_positive_rate"]
    assert "not proof" in topics["absence"] and result["resized"] == 0


def test_one_label_applies_to_every_image_and_other_sizes_are_resized(
        client: TestClient, digits: ImageSet) -> None:
    rows = np.flatnonzero(digits.labels == 3)[:4]
    files, _ = uploads(digits, rows)
    code, one_label = score(client, files, ["3"])
    assert code == 200 and [r["label"] for r in one_label["images"]] == ["3"] * 4
    # A 32x32 RGB copy (R = G = B) is brought to 8x8 grey the way the folder reader resizes it.
    big = [np.repeat(np.asarray(Image.fromarray(digits.images[i, :, :, 0]).resize((32, 32)))[..., None], 3, axis=2)
           for i in rows]
    small = [np.asarray(Image.fromarray(b[..., 0]).resize((8, 8), Image.Resampling.BILINEAR)) for b in big]
    code, resized = score(client, [("files", (f"b{k}.jpg", png(b, "PNG"), "image/png")) for k, b in enumerate(big)],
                          ["3"])
    code2, direct = score(client, [("files", (f"s{k}.png", png(s), "image/png")) for k, s in enumerate(small)], ["3"])
    assert code == code2 == 200
    assert resized["resized"] == 4 and direct["resized"] == 0
    assert resized["caveats"][0] == {"topic": "resized", "text": (
        "4 of your 4 images were resized to 8x8 pixels, the model's input: a resized image is not the file the model "
        "may have been trained on, and it can score differently. Upload images at the model's own size where you "
        "have them.")}
    assert [c["topic"] for c in direct["caveats"]] == ["gap", "false_positive_rate", "absence", "repeats"]
    np.testing.assert_allclose([r["score"] for r in resized["images"]], [r["score"] for r in direct["images"]],
                               atol=1e-6)


def test_images_labelled_predicted_are_scored_under_the_models_prediction_and_said_so(
        client: TestClient, audit_dir: Path, digits: ImageSet, digits_split: MembershipSplit) -> None:
    import torch

    from gmint.data.transforms import Transform

    rows = np.intersect1d(digits_split.holdout, digits_split.external)[:6]
    files, labels = uploads(digits, rows)
    chosen = [labels[0], "predicted", labels[2], "predicted", "predicted", labels[5]]
    code, result = score(client, files, chosen)
    assert code == 200, result
    audited = load_audited(audit_dir / "digits" / "audited.pt")
    with torch.no_grad():
        logits = audited.module.eval()(Transform.from_dict(audited.meta["transform"])(digits.images[rows]))
    predicted = [str(int(c)) for c in logits.argmax(1)]
    assert [r["label_source"] for r in result["images"]] == ["true" if c != "predicted" else "predicted"
                                                              for c in chosen]
    assert [r["label"] for r in result["images"]] == [c if c != "predicted" else p
                                                      for c, p in zip(chosen, predicted, strict=True)]
    verdict = result["verdict"]
    assert verdict["label_source"] == "predicted" and verdict["predicted_labels"] == 3
    assert "Labels: 3 of the 6 candidates were scored under the audited model's own predicted class" in \
        verdict["conclusion"] and "not guaranteed" in verdict["conclusion"]
    assert result["caveats"][0]["topic"] == "predicted_labels"
    assert result["caveats"][0]["text"].startswith("3 of your 6 images were scored under the class the model itself")
    # The calibration keeps the held-out externals the model classifies correctly: fewer than with true labels.
    _, all_true = score(client, files, labels)
    assert all_true["verdict"]["label_source"] == "true" and all_true["verdict"]["predicted_labels"] == 0
    assert verdict["n_calibration"] < all_true["verdict"]["n_calibration"]
    assert [c["topic"] for c in all_true["caveats"]] == ["gap", "false_positive_rate", "absence", "repeats"]
    # "predicted" once labels every image so.
    code, every = score(client, files, ["predicted"])
    assert code == 200 and [r["label"] for r in every["images"]] == predicted
    assert {r["label_source"] for r in every["images"]} == {"predicted"}


def test_colour_images_need_to_grey(client: TestClient, digits: ImageSet) -> None:
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 0] = digits.images[0, :, :, 0]
    files: Files = [("files", ("red.png", png(colour), "image/png"))]
    code, body = score(client, files, ["0"])
    assert code == 422 and body["detail"] == ("the candidate images are colour (RGB) but the audited model takes "
                                              "greyscale; tick “convert colour images to grey” (to_grey=true) if "
                                              "that is what it was trained on")
    code, body = score(client, files, ["0"], to_grey="true")
    assert code == 200 and body["verdict"]["n_candidates"] == 1


def _bomb(side: int) -> bytes:
    """A PNG whose header claims side x side pixels, with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "GIF")
    return buffer.getvalue()


def test_every_bad_upload_is_one_clear_line(client: TestClient, digits: ImageSet, tmp_root: Path,
                                            audit_dir: Path) -> None:
    before = snapshot(audit_dir)
    good = ("files", ("ok.png", png(digits.images[0, :, :, 0]), "image/png"))
    cases: list[tuple[Files, list[str], int, str]] = [
        ([("files", ("notes.png", b"hello, not an image", "image/png"))], ["0"], 422,
         "notes.png is not an image this server reads (PNG, JPEG, BMP, PPM)"),
        ([("files", ("anim.gif", _gif(), "image/gif"))], ["0"], 422,
         "anim.gif is not an image this server reads (PNG, JPEG, BMP, PPM)"),
        ([("files", ("empty.png", b"", "image/png"))], ["0"], 422, "empty.png is an empty file"),
        ([("files", ("cut.png", png(digits.images[0, :, :, 0])[:60], "image/png"))], ["0"], 422,
         "cut.png is a damaged PNG image: it ends early or its data is corrupt; save it again"),
        ([("files", ("head.bmp", b"BM" + b"\0" * 60, "image/bmp"))], ["0"], 422,
         "head.bmp cannot be read as an image: its header is damaged"),
        ([("files", ("big.png", _bomb(5000), "image/png"))], ["0"], 413,
         "big.png is 5000x5000 pixels; this server decodes images of at most 16,777,216 pixels"),
        ([("files", ("bomb.png", _bomb(30000), "image/png"))], ["0"], 413,
         "bomb.png claims more pixels than this server decodes (at most 16,777,216)"),
        ([good], ["cat"], 422, "unknown class 'cat'; the audited model's classes are 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 "
                               "(or “predicted” for the model's prediction)"),
        ([good, good, good], ["1", "2"], 422, "2 labels for 3 images; give one class per image, or one for all"),
        ([good] * 41, ["0"], 413, "41 images in one request; this server scores at most 40 at a time"),
        ([("files", ("../../../etc/x.png", b"GIF89a", "image/png"))], ["0"], 422,
         "x.png is not an image this server reads"),
    ]
    for files, labels, status, message in cases:
        code, body = score(client, files, labels)
        assert (code, body["detail"][:len(message)]) == (status, message)
    response = client.post("/api/audits/digits/score", data={"labels": ["0"]})
    assert (response.status_code, response.json()) == (422, {"detail": "no images in the request; send one or more "
                                                                       "image files"})
    response = client.post("/api/audits/digits/score", files=[good], data={"labels": ["0"], "to_grey": "maybe"})
    assert (response.status_code, response.json()) == (422, {"detail": "“convert colour images to grey” must be "
                                                                       "true or false"})
    # No label, or an empty one, is no choice: no class is ever assumed for an image.
    response = client.post("/api/audits/digits/score", files=[good])
    assert (response.status_code, response.json()) == (422, {"detail": (
        "no labels: choose each image's class, or “predicted” for the model's prediction (labels: one per image, "
        "or one for all of them)")})
    for labels, message in ((["", "3"], "image 1 has no label: choose its class, or “predicted” for the model's "
                                        "prediction"),
                            ([" "], "the one label for every image is empty: choose their class, or “predicted”")):
        code, body = score(client, [good, good], labels)
        assert (code, body["detail"][:len(message)]) == (422, message)
    for name in ("nope", "digits..", "DIGITS", "%2E%2E"):
        code, body = score(client, [good], ["0"], name=name)
        assert (code, body) == (404, {"detail": f"unknown audit {name.replace('%2E', '.')!r}; this server has: "
                                                "digits"})
    for name in ("..", "digits%2F..%2F.."):  # resolved or split by the URL: no route at all
        assert score(client, [good], ["0"], name=name) == (404, {"detail": "Not Found"})
    assert client.get("/api/audits/nope").status_code == 404
    # Nothing was left in the request folder or written into the audit folder, whatever was refused where.
    assert list(tmp_root.iterdir()) == [] and snapshot(audit_dir) == before


def test_file_and_request_sizes_are_bounded(audit_dir: Path, digits: ImageSet) -> None:
    audits, _ = find_audits(audit_dir)
    client = TestClient(create_app(audits, Limits(max_file_bytes=200, max_request_bytes=2000, max_pixels=60)))
    code, body = score(client, [("files", ("wide.png", png(np.zeros((8, 9), np.uint8)), "image/png"))], ["0"])
    assert (code, body["detail"]) == (413, "wide.png is 9x8 pixels; this server decodes images of at most 60 pixels")
    for size in (201, 1500):  # the server reads one byte over the limit, never the rest
        code, body = score(client, [("files", ("large.png", b"x" * size, "image/png"))], ["0"])
        assert (code, body["detail"]) == (413, "large.png is over 200 bytes, this server's limit for one image")
    code, body = score(client, [("files", ("fits.png", b"x" * 200, "image/png"))], ["0"])
    assert (code, body["detail"]) == (422, "fits.png is not an image this server reads (PNG, JPEG, BMP, PPM)")
    code, body = score(client, [("files", (f"{k}.png", b"x" * 150, "image/png")) for k in range(20)], ["0"])
    assert (code, body) == (413, {"detail": "the request is over this server's limit of 2,000 bytes"})

    def chunks():  # no Content-Length: the body is counted as it streams in
        yield b"--b\r\nContent-Disposition: form-data; name=\"labels\"\r\n\r\n0\r\n"
        for _ in range(40):
            yield b"x" * 100

    response = client.post("/api/audits/digits/score", content=chunks(),
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert (response.status_code, response.json()) == (413, {"detail": "the request is over this server's limit of "
                                                                       "2,000 bytes"})


def test_concurrent_requests_on_one_audit_agree(client: TestClient, digits: ImageSet,
                                                digits_split: MembershipSplit) -> None:
    rows = np.intersect1d(digits_split.holdout, digits_split.members)[30:36]
    files, labels = uploads(digits, rows)
    answers: list[list[float]] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            code, body = score(client, files, labels)
            assert code == 200, body
            answers.append([r["score"] for r in body["images"]])
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(answers) == 6
    assert all(a == answers[0] for a in answers)


def test_the_page_and_the_openapi_document(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="drop"' in page.text and 'src="/app.js"' in page.text and "http" not in page.text.split("<body>")[0]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/style.css").status_code == 200
    assert client.get("/docs").status_code == 404  # the interactive docs load from a CDN: off
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/api/audits", "/api/audits/{name}", "/api/audits/{name}/score"}
    post = spec["paths"]["/api/audits/{name}/score"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert {"200", "404", "413", "422"} <= set(post["responses"])
    assert client.get("/static/../audit.json").status_code == 404


def test_display_names_never_carry_a_path_or_markup() -> None:
    assert display_name("C:\\Users\\me\\photo 1.png", 0) == "photo 1.png"
    assert display_name("../../etc/passwd", 0) == "passwd"
    assert display_name("<script>x</script>.png", 0) == "script_.png"
    assert display_name("<img src=x onerror=alert(1)>.png", 0) == "_img src_x onerror_alert(1)_.png"
    assert display_name("\x00\x07", 4) == "image 5"
    assert display_name(None, 0) == "image 1"
    assert len(display_name("a" * 500 + ".png", 0)) == 80


def test_sizes_must_agree_where_the_model_records_no_input_side(digits: ImageSet) -> None:
    a = check_image("a.png", png(digits.images[0, :, :, 0]), Limits())
    b = check_image("b.png", png(np.zeros((9, 9), np.uint8)), Limits())
    check_sizes([a, b], 8)
    with pytest.raises(UploadError, match=r"^b.png is 9x9 but a.png is 8x8, and this audited model records no "
                                          r"input size to resize them to; upload images of one size$"):
        check_sizes([a, b], None)


@pytest.mark.parametrize("kinds", [("grey", "grey-large", "grey-odd"),
                                   ("grey", "grey-large", "colour", "colour-odd", "grey-odd")])
def test_uploads_hold_the_pixels_load_image_folder_reads_from_the_same_files(
        tmp_path: Path, audited_digits: tuple[AuditedModel, Path], digits: ImageSet, kinds: tuple[str, ...]) -> None:
    """What the model is given for an upload is what `gmint score` gives it for the same file in a candidate
    folder: one decoder, the same resize to its side, grey only where every image is, in upload order."""
    audited = audited_digits[0]
    rng = np.random.default_rng(3)
    made = {"grey": ("PNG", digits.images[0, :, :, 0]), "grey-large": ("PNG", rng.integers(0, 256, (32, 32), np.uint8)),
            "grey-odd": ("BMP", rng.integers(0, 256, (5, 9), np.uint8)),
            "colour": ("JPEG", rng.integers(0, 256, (8, 8, 3), np.uint8)),
            "colour-odd": ("PNG", rng.integers(0, 256, (13, 20, 3), np.uint8))}
    suffix = {"PNG": ".png", "BMP": ".bmp", "JPEG": ".jpg"}
    labels = [("3", PREDICTED, "7")[k % 3] for k in range(len(kinds))]
    folder = tmp_path / "images"  # as `gmint score --images` takes them: <class>/ folders, predicted ones loose
    checked = []
    for k, (kind, label) in enumerate(zip(kinds, labels, strict=True)):
        fmt, pixels = made[kind]
        data = png(pixels, fmt)
        place = folder if label == PREDICTED else folder / label
        place.mkdir(parents=True, exist_ok=True)
        (place / f"{k}{suffix[fmt]}").write_bytes(data)
        checked.append(check_image(f"{kind}{suffix[fmt]}", data, Limits(), side=model_input(audited)[1]))
    classes = model_classes(audited) or []
    uploaded = upload_set(checked, resolve_labels(labels, len(kinds), classes), classes)
    read = load_image_folder(folder, audited, labels="predicted")
    order = np.argsort([int(Path(str(f)).stem) for f in read.files])
    assert uploaded.images.shape == (len(kinds), 8, 8, 1 if "colour" not in kinds else 3)
    assert np.array_equal(uploaded.images, read.images[order])
    assert [uploaded.classes[y] for y in uploaded.labels] == [read.classes[y] for y in read.labels[order]]
    assert [image.resized for image in checked] == [kind != "grey" and kind != "colour" for kind in kinds]


def _manifest(folder: Path, **changes: object) -> None:
    payload = {"format": "gmint-audit/1", "model": "audited.pt", "mint": "mint.pt", "store": "features.h5", **changes}
    (folder / MANIFEST).write_text(json.dumps({k: v for k, v in payload.items() if v is not None}))


def test_bad_audit_folders_are_one_line_each_and_left_out(tmp_path: Path, audit_dir: Path,
                                                         audited_digits: tuple[AuditedModel, Path]) -> None:
    source = audit_dir / "digits"
    cases = {
        "absolute": ({"model": "/etc/passwd"}, "'model' must be a path inside the audit folder"),
        "parent": ({"store": "../digits/features.h5"}, "'store' must be a path inside the audit folder"),
        "typo": ({"alpah": 0.01}, "unknown key(s) ['alpah']"),
        "alpha": ({"alpha": 0.9}, "'alpha' must be a number in (0, 0.5], got 0.9"),
        "format": ({"format": "v2"}, "'format' must be \"gmint-audit/1\", got 'v2'"),
        "missing": ({"mint": "nothing.pt"}, "MINT classifier"),
        "statedict": ({"model": "state.pt"}, "state.pt is not a gmint checkpoint; a published audit needs one"),
        "pickled": ({"model": "module.pt"}, "holds pickled Python objects"),
        "other-mint": ({"mint": "other.pt"}, "was trained on features of another model"),
        "bad name!": ({}, "'bad name!' cannot name an audit in a URL"),
    }
    for name, (changes, _) in cases.items():
        folder = tmp_path / name
        shutil.copytree(source, folder)
        _manifest(folder, **changes)
    module = audited_digits[0].module
    torch.save(module.state_dict(), tmp_path / "statedict" / "state.pt")
    torch.save(module, tmp_path / "pickled" / "module.pt")
    other = load_audited(source / "audited.pt")
    with torch.no_grad():
        next(other.module.parameters()).add_(1.0)
    mint = load_audit(source).mint
    spec = replace(mint.spec, model_fingerprint=other.fingerprint)
    replace(mint, spec=spec).save(tmp_path / "other-mint" / "other.pt")
    shutil.copytree(source, tmp_path / "good")
    audits, problems = find_audits(tmp_path)
    assert list(audits) == ["good"]
    assert len(problems) == len(cases) and all("\n" not in p for p in problems)
    for (name, (_, message)), line in zip(sorted(cases.items()), problems, strict=True):
        assert line.startswith(f"{tmp_path / name / MANIFEST}: ") and message in line, (name, line)


def test_gmint_serve_refuses_a_folder_without_audits_and_a_taken_port(tmp_path: Path, audit_dir: Path) -> None:
    code, text = invoke("serve", "--audits", tmp_path)
    assert code == 1 and text.strip() == (f"error: no audit to serve in {tmp_path}: each audit is a folder with an "
                                          "audit.json naming its model, MINT classifier and store")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / MANIFEST).write_text("{")
    code, text = invoke("serve", "--audits", tmp_path)
    assert code == 1 and f"error: {tmp_path / 'broken' / MANIFEST}: " in text and "(see the errors above)" in text
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, text = invoke("serve", "--audits", audit_dir, "--port", port)
    assert code == 1 and f"error: cannot listen on 127.0.0.1:{port} (Address already in use)" in text
    code, text = invoke("serve", "--audits", audit_dir, "--max-file-mib", "0")
    assert code == 1 and "--max-file-mib must be above 0, got 0.0" in text


@pytest.mark.slow
def test_gmint_serve_answers_and_leaves_nothing_behind_when_stopped(tmp_path: Path, audit_dir: Path,
                                                                    digits: ImageSet) -> None:
    """The command as a user runs it: its temporary folder (under TMPDIR) is gone after SIGTERM, and the audit
    folder is as it was."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    before = snapshot(audit_dir)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(scratch), "GMINT_NO_PROGRESS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "gmint_cli", "serve", "--audits", str(audit_dir), "--port",
                               str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read() if server.stderr else ""
            try:
                listing = httpx.get(f"http://127.0.0.1:{port}/api/audits", timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert [a["name"] for a in listing["audits"]] == ["digits"]
        assert [p.name.startswith("gmint-serve-") for p in scratch.iterdir()] == [True]
        response = httpx.post(f"http://127.0.0.1:{port}/api/audits/digits/score", timeout=60,
                              files=[("files", ("a.png", png(digits.images[5, :, :, 0]), "image/png"))],
                              data={"labels": [str(digits.labels[5])]})
        assert response.status_code == 200 and response.json()["verdict"]["n_candidates"] == 1
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 128 + signal.SIGTERM, err
    assert f"serving the page at http://127.0.0.1:{port}/ (Ctrl+C stops)" in out.decode()
    assert list(scratch.iterdir()) == [] and snapshot(audit_dir) == before
