"""`gmint audit CONFIG`: one configuration, one run, one self-contained HTML report a browser opens offline.

The audit runs end to end on the bundled digits (a small CNN, a few epochs, two layer setups, candidates drawn
from the rows that trained the control model); its report opens in Debian's headless chromium (Selenium, as the
page's test drives it) with no console error and no network request, shows the verdict line first, and embeds
every figure. Configurations with unknown settings or values of the wrong type are refused in one line.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gmint.audit.config import AuditConfig, describe, load_config
from gmint.data.base import ImageSet
from gmint.errors import InputError, Remedy
from gmint_cli.console import REMEDIES
from tests.cli_runner import run

CONFIG = """
out = "audit"
seed = 3
n_boot = 40

[data]
dataset = "digits"

[split]
members = 0.4
external = 0.4
control = 0.2

[model]
epochs = 4

[features]
setups = ["output", "combined"]
activation = false

[candidates]
images = "candidates"

[report]
title = "Digits audit"
top = 4
slices = ["class", "correct"]
"""


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory, digits: ImageSet) -> Path:
    """An audit folder `gmint audit` wrote; candidates are 12 digits saved as files in class folders."""
    base = tmp_path_factory.mktemp("audit")
    (base / "audit.toml").write_text(CONFIG, encoding="utf-8")
    rng = np.random.default_rng(0)
    for i in rng.choice(len(digits), 12, replace=False):
        folder = base / "candidates" / digits.classes[digits.labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits.images[i, :, :, 0]).save(folder / f"digit{i}.png")
    outcome = run("audit", base / "audit.toml")
    assert outcome.code == 0, outcome.stderr
    assert "Report:" in outcome.stdout and "loss threshold (baseline)" in outcome.stdout
    return base / "audit"


def test_the_report_records_every_signal_and_the_configuration(audit: Path) -> None:
    report = json.loads((audit / "report.json").read_text(encoding="utf-8"))
    assert list(report["signals"]) == ["gMINT output", "gMINT combined", "gMINT combined (the paper's MLP)",
                                       "loss threshold (baseline)", "negative control (gMINT combined)"]
    # beside the loss threshold: the paired difference and the ε bound of every classifier, the threshold's none
    assert set(report["versus_loss_threshold"]) == set(report["epsilon"]) == set(report["signals"]) - {
        "loss threshold (baseline)"}
    versus = report["versus_loss_threshold"]["gMINT combined"]
    assert versus["ci95_low"] <= versus["value"] <= versus["ci95_high"]
    assert report["epsilon"]["gMINT combined"]["epsilon_lower_bound"] >= 0
    assert report["candidates"]["n_candidates"] == 12 and report["headline"] == report["candidates"]["conclusion"]
    assert report["evidence"] == report["candidates"]["rejects_h0"]
    assert report["provenance"]["seed"] == 3 and len(report["provenance"]["split_sha256"]) == 64
    assert {s["slicer"] for s in report["slices"]} == {"class", "correct"}
    assert len(report["exposed"]) == 4
    assert (audit / "audit.toml").read_text(encoding="utf-8") == CONFIG  # the configuration travels with it


def test_a_second_run_resumes_and_another_configuration_is_refused(audit: Path) -> None:
    before = json.loads((audit / "report.json").read_text(encoding="utf-8"))
    outcome = run("audit", audit.parent / "audit.toml")
    assert outcome.code == 0, outcome.stderr
    assert json.loads((audit / "report.json").read_text(encoding="utf-8"))["signals"] == before["signals"]
    other = audit.parent / "other.toml"
    other.write_text(CONFIG.replace("seed = 3", "seed = 4"), encoding="utf-8")
    refused = run("audit", other)
    assert refused.code == 1 and "another configuration" in refused.stderr and len(refused.stderr.splitlines()) == 1


@pytest.mark.parametrize(("text", "message"), [
    ("colour = 1\n", "unknown setting 'colour'"),
    ("[split]\nmembrs = 0.4\n", "unknown setting 'membrs' in [split]"),
    ("[model]\nepochs = \"ten\"\n", "[model] epochs must be a whole number"),
    ("[features]\nsetups = \"combined\"\n", "[features] setups must be a list of strings"),
    ("[nope]\nx = 1\n", "unknown setting 'nope'"),
    ("n_boot = 0\n", "n_boot must be at least 1"),
    ("seed = \n", "not a valid TOML file"),
    ("[report]\nslices = [\"colour\"]\n", "unknown slicer 'colour'"),
    ("[mint]\nkind = \"mlpp\"\n", "unknown MINT classifier 'mlpp'"),
])
def test_a_wrong_configuration_is_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)
    outcome = run("audit", path)
    assert outcome.code == 1 and len(outcome.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "audit").exists()


def test_what_to_do_is_said_in_the_configurations_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stages' remedies name the audit's settings, not the options of other verbs it has none of."""
    monkeypatch.delenv("GMINT_DATA", raising=False)
    (tmp_path / "no-root.toml").write_text('out = "a"\n[data]\ndataset = "mnist"\n', encoding="utf-8")
    torch.jit.script(torch.nn.Linear(64, 10)).save(str(tmp_path / "scripted.pt"))
    (tmp_path / "scripted.toml").write_text('out = "b"\n[model]\nfile = "scripted.pt"\n', encoding="utf-8")
    expected = {"no-root.toml": "error: no data root given; set root in [data] or GMINT_DATA",
                "scripted.toml": f"error: {tmp_path / 'scripted.pt'} is a TorchScript archive, not a checkpoint; "
                                 f"{REMEDIES[Remedy.DESCRIBE_MODEL]}"}
    for name, line in expected.items():
        outcome = run("audit", tmp_path / name)
        assert outcome.code == 1 and outcome.stderr.strip() == line, outcome.stderr


def test_the_described_configuration_is_every_default(tmp_path: Path) -> None:
    path = tmp_path / "described.toml"
    path.write_text(describe(), encoding="utf-8")
    assert load_config(path)[0] == AuditConfig()
    outcome = run("audit", "--describe")
    assert outcome.code == 0 and outcome.stdout == describe()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver packages (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))  # never Selenium Manager
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")
        driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.mark.slow
def test_the_html_report_opens_offline_with_the_verdict_first_and_embedded_figures(audit: Path, browser: object
                                                                                   ) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get((audit / "report.html").as_uri())  # type: ignore[attr-defined]
    verdict = driver.find_element(By.ID, "verdict")  # type: ignore[attr-defined]
    report = json.loads((audit / "report.json").read_text(encoding="utf-8"))
    assert report["headline"] in verdict.text
    assert "evidence" in verdict.text.lower()
    first = driver.execute_script(  # type: ignore[attr-defined]
        "return document.body.firstElementChild.nextElementSibling.id;")
    assert first == "verdict"  # the answer comes right after the title
    images = driver.find_elements(By.TAG_NAME, "img")  # type: ignore[attr-defined]
    assert len(images) == 2  # the ROC of every signal and the most exposed members
    for image in images:
        assert image.get_attribute("src").startswith("data:image/png;base64,")
        assert driver.execute_script("return arguments[0].naturalWidth;", image) > 300  # type: ignore[attr-defined]
    requests = driver.execute_script(  # type: ignore[attr-defined]
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'));")
    assert requests == []
    scripts = driver.execute_script("return document.scripts.length;")  # type: ignore[attr-defined]
    assert scripts == 0
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]  # type: ignore[attr-defined]
    assert errors == []


def test_a_configuration_whose_model_cannot_load_leaves_no_folder_behind(tmp_path: Path) -> None:
    """A corrected configuration must not then be refused as 'another configuration's audit'."""
    path = tmp_path / "bad-model.toml"
    path.write_text('[model]\nfile = "missing.pt"\n', encoding="utf-8")
    outcome = run("audit", path)
    assert outcome.code == 1 and "missing.pt" in outcome.stderr and len(outcome.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "audit").exists()
