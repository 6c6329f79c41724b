"""Open a report.html in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by
Selenium; no browser download) and check what a reader would meet. Used by tests/test_browser.py; also a
command for any report:

    python -m tests.browser studies/default/report.html [screenshot.png]
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
VIEWPORT = (1280, 800)  # a laptop screen


def missing() -> str | None:
    """Why no browser check can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not any(shutil.which(name) for name in BROWSER_NAMES):
        return "no Chromium on this machine (Debian: apt-get install chromium chromium-driver; .ci/browser-up)"
    if not shutil.which("chromedriver"):
        return "no chromedriver on this machine (Debian: apt-get install chromium-driver; .ci/browser-up)"
    return None


def check(html: Path, screenshot: Path | None = None) -> dict:
    """Load the report at a laptop's window size and return what was found: console messages, requests
    that failed or left the file, figures and their sizes, where the guideline box is, whether any script
    ran or an alert opened, the page's text and its width against the window's."""
    if not Path(html).is_file():
        raise FileNotFoundError(f"no report at {html}")
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(n) for n in BROWSER_NAMES if shutil.which(n))
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        url = Path(html).resolve().as_uri()
        driver.get(url)
        try:
            alert = driver.switch_to.alert.text
        except NoAlertPresentException:
            alert = None
        found = driver.execute_script("""
            const box = document.querySelector('.guideline');
            const r = box ? box.getBoundingClientRect() : null;
            const figures = [...document.querySelectorAll('img, svg, canvas')].map(e => {
                const b = e.getBoundingClientRect();
                return {tag: e.tagName.toLowerCase(), width: b.width, height: b.height,
                        loaded: e.tagName !== 'IMG' || (e.complete && e.naturalWidth > 0)};
            });
            return {guideline: r && {top: r.top, bottom: r.bottom, height: r.height,
                                     visible: getComputedStyle(box).visibility !== 'hidden'},
                    viewport: [innerWidth, innerHeight], page_width: document.documentElement.scrollWidth,
                    figures: figures, scripts: document.scripts.length, text: document.body.innerText,
                    title: document.title};
        """)
        console = [entry for entry in driver.get_log("browser")]
        requests, failed = [], []
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                requests.append(message["params"]["request"]["url"])
            elif message["method"] == "Network.loadingFailed":
                failed.append(message["params"].get("errorText", "failed"))
        if screenshot is not None:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(screenshot))
        return {**found, "alert": alert, "console": console, "failed_requests": failed,
                "external_requests": [u for u in requests if u != url and not u.startswith("data:")]}
    finally:
        driver.quit()


def problems(found: dict) -> list[str]:
    """What a reader would trip over; empty when the report passes."""
    out = []
    if found["alert"] is not None:
        out.append(f"an alert opened: {found['alert']!r}")
    if found["scripts"]:
        out.append(f"{found['scripts']} script element(s) in the page")
    errors = [e for e in found["console"] if e.get("level") in ("SEVERE", "WARNING")]
    if errors:
        out.append(f"console: {errors}")
    if found["failed_requests"] or found["external_requests"]:
        out.append(f"requests: failed {found['failed_requests']}, external {found['external_requests']}")
    if not found["figures"]:
        out.append("no figure")
    for figure in found["figures"]:
        if figure["width"] <= 0 or figure["height"] <= 0 or not figure["loaded"]:
            out.append(f"a figure has no size or did not load: {figure}")
    box = found["guideline"]
    if box is None or not box["visible"] or box["height"] <= 0 or box["top"] >= found["viewport"][1]:
        out.append(f"the guideline box is not visible without scrolling: {box}")
    if found["page_width"] > found["viewport"][0]:
        out.append(f"the page is wider ({found['page_width']} px) than a laptop window ({found['viewport'][0]} px)")
    return out


if __name__ == "__main__":
    why = missing()
    if why:
        sys.exit(f"cannot check: {why}")
    result = check(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    issues = problems(result)
    print(json.dumps({k: v for k, v in result.items() if k != "text"}, indent=1))
    print("\n".join(issues) or "passes")
    sys.exit(1 if issues else 0)
