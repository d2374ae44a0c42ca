"""The MINT-Demo page in a real headless browser: Debian's chromium, driven through its chromedriver by Selenium.

The server runs in a thread (uvicorn) on a free port over a digits audit built from the session's fixtures; the
browser opens the page, adds digit images with their classes (file picker and drop), checks them and reads the
verdict, which must be the API's own. Skipped, with the reason, where no browser is installed (`.ci/run` installs
one); Selenium is pointed at the system's chromedriver and never downloads anything.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.serve.audits import find_audits
from gmint.serve.limits import Limits

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("no headless browser: install Debian's chromium and chromium-driver packages (.ci/run does)",
                allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, publish_audit: Callable[..., Path]) -> Iterator[str]:
    import uvicorn

    from gmint.serve.app import create_app

    folder = publish_audit(tmp_path_factory.mktemp("published"), title="Handwritten digits",
                           description="Browser test audit.")
    audits, problems = find_audits(folder.parent)
    assert problems == []
    port = _free_port()
    app = create_app(audits, Limits(), tmp_root=tmp_path_factory.mktemp("requests"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))  # never Selenium Manager
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # and should Selenium look for anything, it looks offline
        driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _images(folder: Path, digits: ImageSet, rows: np.ndarray, side: int = 8) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in rows:
        path = folder / f"digit{i}.png"
        Image.fromarray(digits.images[i, :, :, 0]).resize((side, side), Image.Resampling.NEAREST).save(path)
        paths.append(path)
    return paths


def _wait(driver: webdriver.Chrome, condition: str, timeout: float = 60) -> None:
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(f"return Boolean({condition});"))


def test_the_page_checks_digit_images_and_shows_the_verdict(server: str, browser: webdriver.Chrome, tmp_path: Path,
                                                            digits: ImageSet, digits_split: MembershipSplit) -> None:
    import httpx

    members = np.intersect1d(digits_split.holdout, digits_split.members)
    threes = members[digits.labels[members] == 3][:6]
    sevens = members[digits.labels[members] == 7][:6]
    browser.get(server + "/")
    _wait(browser, "document.body.dataset.ready === 'true'")
    assert browser.find_element(By.ID, "audit-title").text == "Handwritten digits"
    facts = browser.find_element(By.ID, "audit-facts").text
    assert "Images are resized to 8×8 pixels, greyscale." in facts and "false-positive rate of 0.05" in facts

    # Threes through the file picker, with the class chosen for the batch.
    Select(browser.find_element(By.ID, "batch-class")).select_by_value("3")
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in _images(tmp_path / "a", digits, threes)))
    # Sevens, scanned larger, dropped onto the drop zone (files staged in a helper input, then a real drop event).
    Select(browser.find_element(By.ID, "batch-class")).select_by_value("7")
    browser.execute_script("const i = document.createElement('input'); i.type = 'file'; i.multiple = true; "
                           "i.id = 'staging'; document.body.appendChild(i);")
    browser.find_element(By.ID, "staging").send_keys(
        "\n".join(str(p) for p in _images(tmp_path / "b", digits, sevens, side=32)))
    browser.execute_script("const dt = new DataTransfer(); for (const f of document.getElementById('staging').files) "
                           "dt.items.add(f); document.getElementById('drop').dispatchEvent("
                           "new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));")
    assert browser.find_element(By.ID, "pending-count").text == "12"
    chosen = [Select(s).first_selected_option.text
              for s in browser.find_elements(By.CSS_SELECTOR, "#pending tbody select")]
    assert chosen == ["3"] * 6 + ["7"] * 6

    browser.find_element(By.ID, "check").click()
    _wait(browser, "!document.getElementById('result-section').hidden")
    # The answer appears below the twelve images: the page brings it into view.
    top = browser.execute_script("return document.getElementById('result-section').getBoundingClientRect().top;")
    assert browser.execute_script("return window.scrollY;") > 0 and abs(top) < 2
    headline = browser.find_element(By.ID, "headline").text
    p_value = browser.find_element(By.ID, "p-value").text
    assert headline in ("Evidence that these images were used to train the model.",
                        "No evidence that these images were used to train the model.")
    assert browser.find_element(By.ID, "n-images").text == "12"
    assert browser.find_element(By.ID, "alpha").text == "0.05"
    caveats = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#caveats li")]
    assert len(caveats) == 5 and caveats[0].startswith("6 of your 12 images were resized to 8x8 pixels")
    assert "not proof" in caveats[3]
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")[:3]]
            for tr in browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")]
    assert [r[:2] for r in rows] == ([[f"digit{i}.png", "3"] for i in threes]
                                     + [[f"digit{i}.png", "7"] for i in sevens])

    # The page shows what the API answers for the same files.
    files = [("files", (p.name, p.read_bytes(), "image/png"))
             for p in [*(tmp_path / "a" / f"digit{i}.png" for i in threes),
                       *(tmp_path / "b" / f"digit{i}.png" for i in sevens)]]
    api = httpx.post(f"{server}/api/audits/digits/score", files=files, data={"labels": ["3"] * 6 + ["7"] * 6},
                     timeout=60).json()
    assert [r[2] for r in rows] == [f"{image['score']:.3f}" for image in api["images"]]
    p = api["verdict"]["p_value"]
    mantissa, exponent = f"{p:.2e}".split("e")
    assert p_value == (f"{mantissa}e{int(exponent)}" if p < 0.001 else f"{p:.3f}")  # as JavaScript writes it
    assert browser.find_element(By.ID, "conclusion").text == api["verdict"]["conclusion"]
    assert headline.startswith("Evidence") == api["verdict"]["rejects_h0"]


def test_the_page_shows_the_servers_refusal(server: str, browser: webdriver.Chrome, tmp_path: Path) -> None:
    browser.get(server + "/")
    _wait(browser, "document.body.dataset.ready === 'true'")
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    browser.find_element(By.ID, "files").send_keys(str(notes))
    Select(browser.find_element(By.CSS_SELECTOR, "#pending tbody select")).select_by_value("0")
    browser.find_element(By.ID, "check").click()
    _wait(browser, "!document.getElementById('error').hidden")
    assert browser.find_element(By.ID, "error").text == ("notes.png is not an image this server reads "
                                                         "(PNG, JPEG, BMP, PPM)")
    assert browser.find_element(By.ID, "result-section").is_displayed() is False


def test_no_image_is_checked_before_it_has_a_label(server: str, browser: webdriver.Chrome, tmp_path: Path,
                                                   digits: ImageSet, digits_split: MembershipSplit) -> None:
    """No class is chosen for the person: the check stays disabled, saying why, until every image has a class
    or the model's prediction; predicted labels are shown as such in the answer."""
    import httpx

    members = np.intersect1d(digits_split.holdout, digits_split.members)[:3]
    browser.get(server + "/")
    _wait(browser, "document.body.dataset.ready === 'true'")
    assert Select(browser.find_element(By.ID, "batch-class")).first_selected_option.get_attribute("value") == ""
    paths = _images(tmp_path / "c", digits, members)
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in paths))
    check, hint = browser.find_element(By.ID, "check"), browser.find_element(By.ID, "label-hint")
    selects = [Select(s) for s in browser.find_elements(By.CSS_SELECTOR, "#pending tbody select")]
    assert [s.first_selected_option.text for s in selects] == ["Choose…"] * 3
    assert not check.is_enabled() and hint.text.startswith("Choose a class, or “The model's prediction”, for 3 images")
    browser.find_element(By.ID, "apply-all").click()  # "Choose…" for all is no choice: nothing changes
    selects[0].select_by_value(str(digits.labels[members[0]]))
    selects[1].select_by_value("predicted")
    assert not check.is_enabled() and "for 1 image before checking" in hint.text
    selects[2].select_by_value("predicted")
    assert check.is_enabled() and not hint.is_displayed()
    check.click()
    _wait(browser, "!document.getElementById('result-section').hidden")
    api = httpx.post(f"{server}/api/audits/digits/score", timeout=60,
                     files=[("files", (p.name, p.read_bytes(), "image/png")) for p in paths],
                     data={"labels": [str(digits.labels[members[0]]), "predicted", "predicted"]}).json()
    shown = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")[:2]]
             for tr in browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")]
    suffix = {"true": "", "predicted": " (model's prediction)"}
    assert shown == [[p.name, image["label"] + suffix[image["label_source"]]]
                     for p, image in zip(paths, api["images"], strict=True)]
    assert [image["label_source"] for image in api["images"]] == ["true", "predicted", "predicted"]
    assert browser.find_element(By.ID, "conclusion").text == api["verdict"]["conclusion"]
    assert "2 of the 3 candidates were scored under the audited model's own predicted class" in api["verdict"][
        "conclusion"]
    assert browser.find_element(By.CSS_SELECTOR, "#caveats li").get_attribute("data-topic") == "predicted_labels"


def _verdict(rejects: bool, scores: list[float]) -> dict[str, object]:
    """A result as the API returns it, to show the page a given verdict and given scores."""
    return {"verdict": {"rejects_h0": rejects, "conclusion": "A conclusion.", "p_value": 0.01 if rejects else 0.4,
                        "alpha": 0.05, "n_candidates": len(scores), "n_calibration": 100, "test": "Mann-Whitney U"},
            "caveats": [{"topic": "absence", "text": "Not proof."}],
            "images": [{"name": f"d{k}.png", "label": "3", "label_source": "true", "score": score}
                       for k, score in enumerate(scores)]}


def test_no_evidence_is_neutral_not_an_all_clear_and_tied_scores_are_flagged(server: str,
                                                                              browser: webdriver.Chrome) -> None:
    browser.get(server + "/")
    _wait(browser, "document.body.dataset.ready === 'true'")

    def show(result: dict[str, object]) -> tuple[str, str, str]:
        browser.execute_script("renderResult(arguments[0]);", result)
        border = browser.execute_script(
            "return getComputedStyle(document.getElementById('verdict')).borderLeftColor;")
        note, ties = (browser.find_element(By.ID, key) for key in ("headline-note", "ties"))
        return border, note.text if note.is_displayed() else "", ties.text if ties.is_displayed() else ""

    border, note, ties = show(_verdict(False, [0.537] * 8 + [0.41, 0.6, 0.52, 0.49]))
    assert border == "rgb(138, 147, 158)"  # neutral grey, not the green of an all-clear
    assert note.startswith("This is not an all-clear: it does not show that the images were not used")
    assert ties == ("The classifier gives the same probability, 0.537, to 8 of your 12 images, so it cannot rank "
                    "them against each other.")
    border, note, ties = show(_verdict(True, [0.7, 0.7, 0.8, 0.3, 0.3, 0.3]))
    assert border == "rgb(163, 59, 0)" and note == ""
    assert ties == ("The classifier gives identical probabilities to 5 of your 6 images (3 at 0.300, 2 at 0.700), so "
                    "it cannot rank them against each other.")
    assert show(_verdict(False, [0.2, 0.3, 0.4]))[2] == ""


def test_an_unreachable_server_is_said_in_plain_words(server: str, browser: webdriver.Chrome, tmp_path: Path,
                                                      digits: ImageSet) -> None:
    browser.get(server + "/")
    _wait(browser, "document.body.dataset.ready === 'true'")
    browser.find_element(By.ID, "files").send_keys(str(_images(tmp_path, digits, np.arange(1))[0]))
    Select(browser.find_element(By.CSS_SELECTOR, "#pending tbody select")).select_by_value("0")
    browser.execute_script("window.fetch = () => Promise.reject(new TypeError('Failed to fetch'));")
    browser.find_element(By.ID, "check").click()
    _wait(browser, "!document.getElementById('error').hidden")
    assert browser.find_element(By.ID, "error").text == ("Could not reach the server: check your connection, then "
                                                         "try again.")
