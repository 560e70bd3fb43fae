"""alexnet.serve.app, the page of `alexnet serve` in a real browser: headless Chromium (Debian's chromium and
chromium-driver; `make test` installs them when it can) opens it on a phone-sized window, uploads a
Fashion-MNIST test image and reads the top-1 label the page shows; it must be the Predictor's. A screenshot is
saved (in the test's folder, and at $ALEXNET_SCREENSHOT when set: docs/figures/serve_page.png was made so)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="needs the serve extra (pip install '.[serve]')")

from serve_fixtures import fashion_files, quick_checkpoint, start_server  # noqa: E402

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PHONE = (412, 860)           # CSS pixels of a common phone


def _browser_or_skip(monkeypatch):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[serve]')")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): "
                    "apt-get install chromium chromium-driver, or `make test` as root")
    monkeypatch.setenv("SE_OFFLINE", "true")     # Selenium Manager must never try to download a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-extensions"):
        options.add_argument(flag)
    options.add_experimental_option("mobileEmulation",          # a phone's viewport, touch and pixel ratio
                                    {"deviceMetrics": {"width": PHONE[0], "height": PHONE[1], "pixelRatio": 2}})
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    return webdriver.Chrome(options=options, service=service)


def test_the_page_shows_the_top1_of_an_uploaded_image(fashion, tmp_path_factory, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait
    from alexnet.inference.predict import Predictor
    driver = _browser_or_skip(monkeypatch)
    checkpoint = quick_checkpoint(tmp_path_factory)
    image = fashion_files(tmp_path / "images", n=1)[0]
    predictor = Predictor(checkpoint)
    want = predictor.topk([predictor.decode(str(image))], 5)[0]
    try:
        with start_server(checkpoint) as (_, url):
            driver.get(url + "/")
            wait = WebDriverWait(driver, 30)
            wait.until(ready.text_to_be_present_in_element((By.ID, "model-name"), "alexnet_small"))
            driver.find_element(By.ID, "file").send_keys(str(image))
            wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#topk li .label")))
            wait.until(ready.text_to_be_present_in_element((By.ID, "timing"), "ms"))
            labels = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#topk li .label")]
            probs = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#topk li .prob")]
            assert labels[0] == want[0]["label"] and labels == [t["label"] for t in want]
            assert probs[0] == f"{100 * want[0]['prob']:.1f}%"
            assert driver.find_element(By.ID, "preview").get_attribute("hidden") is None      # the image is shown
            inner, scroll = driver.execute_script("return [window.innerWidth, document.documentElement.scrollWidth]")
            assert inner == PHONE[0] and scroll <= inner, f"the page scrolls sideways on a phone: {scroll} > {inner}"
            shot = tmp_path / "serve_page.png"
            assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
            if os.environ.get("ALEXNET_SCREENSHOT"):
                shutil.copyfile(shot, os.environ["ALEXNET_SCREENSHOT"])
    finally:
        driver.quit()
