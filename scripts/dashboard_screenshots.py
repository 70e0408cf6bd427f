"""Screenshots of TensorBoard's scalar, image and HParams views of a logdir, in headless Chromium.

    python scripts/dashboard_screenshots.py logs docs/tensorboard

Starts ``tensorboard --logdir LOGDIR`` on 127.0.0.1 (on a port the OS picks), opens each
view in Debian's ``chromium`` (``apt-get install chromium``) through Playwright, which
drives that browser and downloads none, waits until the view's charts, pictures or table
have loaded, and saves ``scalars.png``, ``images.png`` (confusion matrices, regression plots),
``samples.png`` (labelled validation samples) and ``hparams.png`` in OUTPUT, in
256 colors (small enough for a README). The scalars are opened at the README's address:
no smoothing, the losses and task metrics pinned on top. TensorBoard is stopped however
the script ends; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

CHROMIUM = "/usr/bin/chromium"
# What the README's address pins above everything else: the loss and each task's metric.
PINNED = ["train/loss", "val/loss", "val/acc", "val/rmse"]
SCALARS = "?" + urllib.parse.urlencode(
    {"smoothing": 0, "pinnedCards": json.dumps([{"plugin": "scalars", "tag": t} for t in PINNED])}
)
PICTURES = "confusion_matrix|pred_vs_true|residuals"
SAMPLES = "predictions"
# view: (address, what shows that it has loaded); pictures are filtered by tag (a flat list:
# Time Series opens only its first two tag groups)
VIEWS = {
    "scalars": (f"{SCALARS}#timeseries", "scalar-card-component canvas, scalar-card-component svg"),
    "images": (f"?tagFilter={urllib.parse.quote(PICTURES)}#timeseries", "image-card-component img"),
    "samples": (f"?tagFilter={urllib.parse.quote(SAMPLES)}#timeseries", "image-card-component img"),
    "hparams": ("#hparams", "tf-hparams-table-view"),
}
WAIT_S = 60


@contextmanager
def tensorboard(logdir: Path) -> Iterator[str]:
    """A ``tensorboard`` process on ``logdir``; yields its address and always stops it."""
    with tempfile.TemporaryFile("w+") as log:
        command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
        command += ["--host", "127.0.0.1", "--port", "0", "--load_fast", "false"]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + WAIT_S
            while not (match := re.search(r"http://127\.0\.0\.1:\d+/", read(log))):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tensorboard did not start: {read(log)}")
                time.sleep(0.2)
            yield match.group(0)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def read(log) -> str:
    log.seek(0)
    return log.read()


def screenshots(logdir: Path, output: Path, width: int = 1400, height: int = 1000) -> list[Path]:
    """Save each view of ``logdir`` as ``output/<view>.png``; return their paths."""
    from playwright.sync_api import sync_playwright

    output.mkdir(parents=True, exist_ok=True)
    saved = []
    with tensorboard(logdir) as address, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
            + ["--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        try:
            for view, (path, loaded) in VIEWS.items():
                page = browser.new_page(viewport={"width": width, "height": height})
                page.set_default_timeout(WAIT_S * 1000)
                page.goto(address + path)
                page.wait_for_selector(loaded)
                page.wait_for_load_state("networkidle")
                page.wait_for_function("() => [...document.images].every(image => image.complete)")
                time.sleep(1)  # charts draw on the next animation frames
                saved.append(output / f"{view}.png")
                page.screenshot(path=saved[-1])
                page.close()
        finally:
            browser.close()
    for path in saved:
        Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logdir", type=Path, help="the folder given to tensorboard --logdir")
    parser.add_argument("output", type=Path, help="where scalars/images/hparams.png go")
    parser.add_argument("--size", default="1400x1000", help="browser window, WIDTHxHEIGHT")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    for path in screenshots(args.logdir, args.output, width, height):
        print(path)


if __name__ == "__main__":
    main()
