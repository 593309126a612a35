"""A real browser speaks to the service: headless Chromium records a known caption through the page's real
microphone path (Chromium's fake capture device plays a WAV file into getUserMedia), the page encodes it to
WAV, posts it, and shows the pictures. The picture must have the colour that was said.

Needs Debian's `chromium` (CI installs it with apt-get) and Playwright's Python package, which drives that
system browser (Playwright's own browser download is never used).
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_support import require_serve_extra

require_serve_extra()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("chromium is not installed (apt-get install chromium; CI installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from s2i_runtime.bundle import default_bundle_path  # noqa: E402
from s2i_runtime.serve.process import ServerProcess  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "s2i_runtime" / "examples"
IMAGES = 3  # set in the page's own field
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]


@pytest.fixture(scope="module")
def server():
    # The shipped model: only a trained model says which colour it heard.
    with ServerProcess(["--threads", "1"], env={"PYTHONPATH": str(ROOT)}) as running:
        yield running


def hue_of(image: Image.Image) -> float:
    """Mean hue (degrees) of the clearly coloured pixels: the shape on its grey background."""
    hsv = np.asarray(image.convert("HSV"), dtype=np.float64)
    coloured = (hsv[..., 1] > 120) & (hsv[..., 2] > 90)
    assert coloured.sum() > 0.02 * coloured.size, "no coloured shape in the picture"
    angles = hsv[..., 0][coloured] / 255.0 * 2 * np.pi
    return float(np.degrees(np.arctan2(np.sin(angles).mean(), np.cos(angles).mean())) % 360)


def seconds_of(path: Path) -> float:
    with wave.open(str(path)) as handle:
        return handle.getnframes() / handle.getframerate()


@pytest.mark.parametrize("clip, colour", [("large_red_star.wav", "red"), ("small_blue_circle.wav", "blue")])
def test_speaking_into_the_page_shows_a_picture_of_that_colour(server, clip, colour, tmp_path):
    wav = EXAMPLES / clip
    hues = json.loads((default_bundle_path() / "s2i.json").read_text())["dataset"]["vocabulary"]["hues"]
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
            # %noloop: the caption is heard once, then silence, as when a person speaks once
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={wav}%noloop"],
            viewport={"width": 1000, "height": 900},
        )
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.goto(server.url)
            record = page.locator("#record")
            sync_api.expect(record).to_have_text("Record", timeout=30_000)
            page.fill("#num-images", str(IMAGES))
            record.click()
            sync_api.expect(record).to_have_text("Stop", timeout=30_000)
            page.wait_for_timeout(int((seconds_of(wav) + 0.8) * 1000))
            record.click()
            images = page.locator("img.generated")
            sync_api.expect(images).to_have_count(IMAGES, timeout=60_000)
            page.screenshot(path=str(tmp_path / f"{Path(clip).stem}.png"), full_page=True)
            sources = [images.nth(k).get_attribute("src") for k in range(images.count())]
            timings = page.locator("table.timings").inner_text()
        finally:
            browser.close()
    assert not problems, problems
    assert "generator" in timings and "round trip" in timings
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        picture = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        distance = abs((hue_of(picture) - hues[colour] + 180) % 360 - 180)
        assert distance < 30, f"{clip}: hue {hue_of(picture):.0f} is not {colour} ({hues[colour]:.0f})"
