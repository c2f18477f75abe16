"""Drive Debian's headless ``chromium`` over the Chrome DevTools Protocol: open the page of
``fastvit app``, upload an image into the Classify tab, read the top-1 line the page
shows, and take a screenshot.

``chromium --headless --screenshot`` cannot upload a file; the DevTools Protocol can
(``DOM.setFileInputFiles``). The client is the ``websockets`` package; no browser is
downloaded. Also a command, for the README's screenshot::

    python -m tests.helpers.browser --digits --out docs/app.png

(``--digits``: the fitted digits classifier of :mod:`tests.helpers.digits` and one of its
held-out digits; or ``--checkpoint FILE --image IMG``.)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def chromium() -> str | None:
    """The chromium on PATH (Debian: ``apt-get install chromium``), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DevTools:
    """A minimal CDP session over one page target."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.ids = ws, itertools.count(1)

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60, what: str = "") -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"the page never showed {what or expression}")


@contextlib.contextmanager
def headless_page(width: int = 1280, height: int = 900) -> Iterator[DevTools]:
    """A headless chromium (its own temporary profile, no network beyond this machine
    needed) and a CDP session on its one page; both closed afterwards."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("chromium is not on PATH (apt-get install chromium)")
    port = _free_port()
    # chromium's helper processes (its own session, ended together below) may still write
    # into the profile while it is removed: what they leave is not an error of the page
    with tempfile.TemporaryDirectory(prefix="fastvit-chromium-",
                                     ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            targets = None
            deadline = time.monotonic() + 30
            while targets is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                                timeout=2) as response:
                        targets = [t for t in json.load(response) if t["type"] == "page"]
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError("chromium did not open its DevTools port") from None
                    time.sleep(0.2)
            from websockets.sync.client import connect

            with connect(targets[0]["webSocketDebuggerUrl"], max_size=64 * 2**20,
                         open_timeout=30) as ws:
                page = DevTools(ws)
                page.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                          deviceScaleFactor=1, mobile=False)
                yield page
        finally:
            _end_session(process)


def _end_session(process: subprocess.Popen) -> None:
    """SIGTERM to chromium and every helper process it started, SIGKILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


STATUS = "document.querySelector('#classify-status')?.innerText || ''"


def classify_in_page(page: DevTools, url: str, image: str | Path,
                     screenshot: str | Path | None = None, timeout: float = 90) -> str:
    """Open ``url``, upload ``image`` into the Classify tab, press Classify; the top-1 line
    the page shows (``top-1: LABEL (P%)``). ``screenshot``: the page as PNG afterwards."""
    page.call("Page.enable")
    page.call("Page.navigate", url=url)
    page.wait_for("document.querySelector('#classify-image input[type=file]') !== null",
                  timeout, "the Classify tab's upload")
    root = page.call("DOM.getDocument", depth=-1, pierce=True)["root"]["nodeId"]
    node = page.call("DOM.querySelector", nodeId=root,
                     selector="#classify-image input[type=file]")["nodeId"]
    page.call("DOM.setFileInputFiles", nodeId=node, files=[str(Path(image).resolve())])
    page.wait_for("document.querySelector('#classify-image img') !== null", timeout,
                  "the uploaded image")
    page.evaluate("document.querySelector('#classify-button').click()")
    line = page.wait_for(f"({STATUS}).includes('top-1') && ({STATUS})", timeout, "a top-1")
    if screenshot is not None:
        time.sleep(0.5)  # let the label bars finish their transition
        shot = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
    return str(line).strip()


def digits_example(folder: Path) -> tuple[Path, Path]:
    """The fitted digits classifier (32 px, classes ``digit 0``..``digit 9``) saved in
    ``folder``, and a held-out digit it was not fitted on, as a 128 px PNG."""
    from PIL import Image

    from fastvit.checkpoints import save_checkpoint
    from tests.helpers.digits import (
        DIGITS_SIZE,
        HELD_OUT_OFFSET,
        digit_images,
        fit_digits_model,
        split_indices,
    )

    checkpoint = save_checkpoint(
        fit_digits_model(), folder / "digits_t8.safetensors",
        class_names=[f"digit {i}" for i in range(10)],
        metadata={"pretrained_cfg": {"input_size": [3, DIGITS_SIZE, DIGITS_SIZE]}})
    images, labels = digit_images(128)
    index = split_indices(labels, 1, HELD_OUT_OFFSET)[7]  # a held-out 7
    image = folder / f"digit_{labels[index]}.png"
    Image.fromarray(images[index]).save(image)
    return checkpoint, image


def main() -> None:
    from fastvit.app import load_app_model, serve

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", action="store_true",
                        help="the fitted digits classifier and a held-out digit")
    parser.add_argument("--checkpoint")
    parser.add_argument("--image")
    parser.add_argument("--out", required=True, help="the screenshot PNG")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=760)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        if args.digits:
            args.checkpoint, args.image = digits_example(Path(scratch))
        blocks = serve(load_app_model(checkpoint=args.checkpoint), port=_free_port(),
                       block=False)
        try:
            with headless_page(args.width, args.height) as page:
                print(classify_in_page(page, blocks.local_url, args.image, args.out))
        finally:
            blocks.close()


if __name__ == "__main__":
    main()
