"""TensorBoard as a researcher opens it: a real browser (headless Chromium) on a real run's logs.

Skipped when no Chromium is installed (``.ci/run`` installs the Debian
package; docs/logging.md says how to run it by hand). One tiny training run,
``tensorboard`` on a free loopback port, then headless Chromium loads the
page (``?forceSVG=true``: the charts are SVG) with a fresh profile. The
dashboards are web components whose text lives in shadow roots, which
``chromium --dump-dom`` does not print, so the test drives the browser over
the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages
on file descriptors 3 and 4, no extra package), reads the text of the page
including the shadow roots, and saves a screenshot beside the test's files.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import train_args, write_features
from utils import constants as C

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install -y chromium)")

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,2000",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_runs(base: str, proc: subprocess.Popen, runs: set[str], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, "tensorboard exited"
        try:
            with urllib.request.urlopen(f"{base}/data/runs", timeout=5) as response:
                if runs <= set(json.loads(response.read().decode("utf-8"))):
                    return
        except (urllib.error.URLError, ConnectionError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"tensorboard did not list the runs {sorted(runs)} within {seconds} s")


# The page's visible text, shadow roots included (style and script text left out).
DEEP_TEXT = r"""(() => { const out = []; const walk = (n) => {
  if (n.nodeType === 3) { out.push(n.textContent); return; }
  if (['STYLE', 'SCRIPT', 'TEMPLATE'].includes(n.nodeName)) return;
  if (n.shadowRoot) walk(n.shadowRoot);
  for (const c of n.childNodes) walk(c); };
  walk(document.documentElement); return out.join(' ').replace(/\s+/g, ' '); })()"""


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fd 3: commands in, fd 4: replies out)."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_child, self._to_child = os.pipe()
        self._from_child, from_child = os.pipe()

        def on_fds_3_and_4() -> None:
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=on_fds_3_and_4, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._id = 0

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode("utf-8") + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_child, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> str:
        """A new tab at ``url``; returns its session id."""
        target = self.send("Target.createTarget", {"url": url})["targetId"]
        return self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def text(self, session: str) -> str:
        result = self.send("Runtime.evaluate", {"expression": DEEP_TEXT, "returnByValue": True}, session)
        return str(result["result"].get("value", ""))

    def screenshot(self, session: str, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png"}, session)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self._to_child)
        os.close(self._from_child)
        shutil.rmtree(self.profile, ignore_errors=True)


def page_text(url: str, wanted: str, screenshot: Path, seconds: float = 90) -> str:
    """The text of the page at ``url`` once it contains ``wanted`` (or after ``seconds``); saves a screenshot."""
    browser = Browser()
    try:
        session = browser.open(url)
        deadline = time.monotonic() + seconds
        text = ""
        while time.monotonic() < deadline:
            text = browser.text(session)
            if wanted in text:
                time.sleep(2)  # the remaining charts of the section draw
                text = browser.text(session)
                break
            time.sleep(1)
        browser.screenshot(session, screenshot)
        return text
    finally:
        browser.close()


@pytest.fixture(scope="module")
def tensorboard(tmp_path_factory):
    """A 2-epoch run's TensorBoard served on a loopback port; yields its base URL."""
    from scripts.train_personality_model import main as train_main

    root = tmp_path_factory.mktemp("browser")
    paths = write_features(root / "data")
    out = root / "results"
    assert train_main(train_args(paths, out, "--epochs", "2", "--batch_log_frequency", "0")) == 0
    port = _free_port()
    exe = Path(sys.executable).parent / "tensorboard"
    proc = subprocess.Popen(
        [str(exe), "--logdir", str(out / C.TENSORBOARD_DIR), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_runs(base, proc, {"train", "validation"})
        yield base
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_the_custom_scalars_page_opens_on_loss_and_r_squared_per_trait(tensorboard, tmp_path):
    shot = tmp_path / "custom_scalars.png"
    text = page_text(f"{tensorboard}/?forceSVG=true#custom_scalars", "R², neuroticism", shot)
    assert "Loss and R² (training against validation)" in text  # the first section, open
    charts = ["loss (MSE)", "R², mean of the traits", *(f"R², {t}" for t in C.TRAITS)]
    positions = [text.find(c) for c in charts]
    assert -1 not in positions, [c for c, p in zip(charts, positions) if p < 0]
    assert positions == sorted(positions)  # in this order: loss first
    # each chart plots the training and the validation run
    assert "loss (train)" in text and "loss (validation)" in text
    for trait in C.TRAITS:
        assert f"r_squared/{trait} (train)" in text and f"r_squared/{trait} (validation)" in text
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] > 500 and pixels.std() > 0.05  # a drawn page, not a blank one


def test_the_scalars_dashboard_groups_by_metric(tensorboard, tmp_path):
    text = page_text(f"{tensorboard}/?forceSVG=true#scalars", "r_squared", tmp_path / "scalars.png")
    # one card per metric group; the per-trait tags sit inside their metric's group
    for group in ("loss", "mae", "mse", "r_squared", "learning_rate", "time", "attention_entropy"):
        assert group in text, group
    assert "epoch_" not in text and "evaluation_" not in text
