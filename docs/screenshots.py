"""Screenshots for the README: TensorBoard with a run's curves, and JupyterLab with an interactive UMAP hovered.

Needs a headless Chromium (Debian: `apt-get install chromium`) and the `playwright` package (PyPI; it
drives the system Chromium, nothing is downloaded); neither is a dependency of the workbook. Both
servers are started on localhost on free ports and stopped at the end.

    python docs/screenshots.py --logdir outputs/demo --notebook outputs/demo/notebooks/04_alignment.ipynb

writes docs/figures/tensorboard.png and docs/figures/jupyterlab_hover.png (or the paths given).
"""
from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(command: list[str], url: str, timeout: float = 90.0):
    """Start a server process, wait until `url` answers, stop it on exit."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.time() > deadline or process.poll() is not None:
                    raise SystemExit(f"{command[0]} did not answer at {url} within {timeout:.0f} s")
                time.sleep(0.5)
        yield
    finally:
        process.terminate()
        process.wait(timeout=20)


def close_if_shown(page, selector: str) -> None:
    """Click the first visible match of `selector`, if there is one (a panel or prompt in the way)."""
    from playwright.sync_api import Error

    try:
        page.locator(selector).first.click(timeout=3000)
    except Error:
        pass


def tensorboard(page, logdir: Path, out: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
               "--port", str(port)]
    with server(command, f"http://127.0.0.1:{port}/"):
        page.set_viewport_size({"width": 1500, "height": 1100})
        page.goto(f"http://127.0.0.1:{port}/#timeseries", wait_until="networkidle")
        page.wait_for_selector("canvas, svg.line-chart, .line-chart", timeout=60_000)
        close_if_shown(page, "button[aria-label*='lose']:visible")  # the settings pane, open by default
        time.sleep(4)  # the charts draw after their data arrive
        page.screenshot(path=str(out))


def jupyterlab(page, notebook: Path, out: Path) -> None:
    """Open a copy of an executed notebook (trusted, so its plotly outputs render), scroll to its last plotly
    figure (in 04_alignment the score space, whose label names the sample, its classes and nearest texts) and
    hover one of its points."""
    from playwright.sync_api import Error

    port, token = free_port(), "screenshot"
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / notebook.name
        shutil.copy(notebook, copy)
        subprocess.run([sys.executable, "-m", "jupyter", "trust", str(copy)], check=True, capture_output=True)
        settings = Path(folder) / "settings" / "@jupyterlab" / "notebook-extension"
        settings.mkdir(parents=True)
        # every cell rendered (no windowing), so the figure far down the notebook is in the page to scroll to
        (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
        (Path(folder) / "work").mkdir()
        shutil.move(str(copy), Path(folder) / "work" / copy.name)
        command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                   f"--ServerApp.token={token}", f"--ServerApp.root_dir={Path(folder) / 'work'}", "--allow-root",
                   f"--LabApp.user_settings_dir={Path(folder) / 'settings'}"]
        with server(command, f"http://127.0.0.1:{port}/api?token={token}"):
            page.set_viewport_size({"width": 1500, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/lab/tree/{copy.name}?token={token}", wait_until="networkidle")
            page.wait_for_selector(".js-plotly-plot", timeout=90_000)
            close_if_shown(page, "button:has-text('No'):visible")  # JupyterLab's prompt about news
            time.sleep(3)
            plot = page.query_selector_all(".js-plotly-plot")[-1]
            plot.evaluate("element => element.scrollIntoView({block: 'center'})")
            time.sleep(2)
            points = plot.query_selector_all(".scatterlayer .point")
            if not points:
                raise SystemExit("no plotly points found in the notebook's outputs")
            for point in points[len(points) // 3:] + points[:len(points) // 3]:  # the first point that answers
                box = point.bounding_box()
                if not box:
                    continue
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                try:
                    page.wait_for_selector(".hoverlayer .hovertext", timeout=1500)
                    break
                except Error:
                    continue
            time.sleep(0.5)
            page.screenshot(path=str(out))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", type=Path, required=True, help="a run folder (or outputs/) with TensorBoard events")
    parser.add_argument("--notebook", type=Path, required=True, help="an executed notebook with a plotly figure")
    parser.add_argument("--tensorboard-out", type=Path, default=ROOT / "docs" / "figures" / "tensorboard.png")
    parser.add_argument("--jupyterlab-out", type=Path, default=ROOT / "docs" / "figures" / "jupyterlab_hover.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        tensorboard(page, args.logdir, args.tensorboard_out)
        print(f"wrote {args.tensorboard_out}")
        jupyterlab(page, args.notebook, args.jupyterlab_out)
        print(f"wrote {args.jupyterlab_out}")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
