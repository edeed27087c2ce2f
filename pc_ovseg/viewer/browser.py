"""Headless Chromium for ``--screenshot`` and the end-to-end tests (Playwright, system Chromium).

We never download a browser: Playwright drives the distribution's ``chromium`` (Debian:
``apt-get install chromium``). Without a GPU, WebGL comes from SwiftShader (ANGLE's CPU backend).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import PcOvsegError

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
)
VIEWPORT = {"width": 1280, "height": 800}


class BrowserError(PcOvsegError):
    """Headless Chromium (or Playwright) is missing or failed; the message says what to install."""


def find_chromium() -> str:
    """``$PC_OVSEG_CHROMIUM`` or the first Chromium on PATH."""
    env = os.environ.get("PC_OVSEG_CHROMIUM")
    if env:
        return env
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserError("no Chromium found: install it (Debian: apt-get install chromium) or set PC_OVSEG_CHROMIUM")


@contextlib.contextmanager
def headless_page(viewport: dict | None = None) -> Iterator:
    """A Playwright page in a throwaway Chromium profile; closed (and the profile removed) on exit."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise BrowserError("screenshots need Playwright: pip install playwright "
                           "(it drives the system Chromium; no `playwright install` needed)") from None
    exe = find_chromium()
    with tempfile.TemporaryDirectory(prefix="pc_ovseg-chromium-") as profile, sync_playwright() as pw:
        try:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=exe, headless=True, args=list(CHROMIUM_ARGS),
                viewport=viewport or VIEWPORT, device_scale_factor=1, offline=False)
        except Exception as exc:  # Playwright raises its own Error type for a failed launch
            raise BrowserError(f"could not start {exe}: {' '.join(str(exc).split())[:300]}") from None
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            yield page
        finally:
            ctx.close()


def wait_ready(page, timeout_s: float = 60.0) -> None:
    """Until the viewer has loaded the cloud and answered the queries its URL asked for."""
    page.wait_for_function("() => window.pcViewer && (window.pcViewer.ready || window.pcViewer.error)",
                           timeout=timeout_s * 1e3)
    err = page.evaluate("() => window.pcViewer.error || null")
    if err:
        raise BrowserError(f"the viewer page failed: {err}")


def screenshot(url: str, path, *, timeout_s: float = 60.0, viewport: dict | None = None) -> Path:
    """Load ``url`` in headless Chromium and save the whole page (cloud, panel, legend) as PNG."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with headless_page(viewport) as page:
        page.goto(url, wait_until="load", timeout=timeout_s * 1e3)
        wait_ready(page, timeout_s)
        page.evaluate("() => window.pcViewer.renderNow()")
        page.screenshot(path=str(out))
    return out
