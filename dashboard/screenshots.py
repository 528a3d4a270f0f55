"""Screenshots of every dashboard page for the docs: serves `rlhf dashboard` on a workspace,
drives Debian's headless chromium through Playwright (the helpers of tests/browser.py), presses
each page's main button and saves one PNG per page.

    python dashboard/screenshots.py --workspace /tmp/demo8 [--out docs/img] [--width 1280]

Compare presses "Generate", Rewards "Score" (on `--per-family` test prompts per task family),
Rank "Draw samples" (and submits nothing: the store is left as it was); KL drift and Runs are
shown as they open. Each page's first run loads its models, so a page may take a minute. A page
taller than the viewport is shot as tall as its content, up to `--max-height`. Exits 1 when a
page shows an exception box (it is still saved).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browser import (  # noqa: E402  (tests/ is on the path only from here on)
    CHROMIUM,
    chromium_page,
    click_nav,
    dashboard_server,
    exceptions,
    open_app,
    wait_until_idle,
)

# (navigation label, PNG name, button to press once the page is open, what the press shows)
PAGES = [
    ("Compare", "compare.png", "Generate", lambda page: page.get_by_text("Tokens are shaded")),
    ("Rewards", "rewards.png", "Score", lambda page: page.locator('[data-testid="stDataFrame"]')),
    ("KL drift", "kl_drift.png", None, None),
    ("Rank", "rank.png", "Draw samples", lambda p: p.get_by_role("button", name="Submit ranking")),
    ("Runs", "runs.png", None, None),
]
ENV = {"STREAMLIT_CLIENT_TOOLBAR_MODE": "minimal"}  # no Deploy button in the pictures
ACTION_TIMEOUT_MS = 600_000  # loading models and generating on a busy CPU


def set_slider(page, label: str, value: int, timeout_ms: int = ACTION_TIMEOUT_MS) -> None:
    """Move the st.slider labelled `label` to `value` with the arrow keys."""
    box = page.locator('[data-testid="stSlider"]').filter(has_text=label)
    if not box.count():
        return
    thumb = box.locator('input[type="range"]')  # the thumb's (visually hidden) input
    thumb.focus()
    for _ in range(200):
        now = int(float(thumb.input_value()))
        if now == value:
            break
        thumb.press("ArrowRight" if now < value else "ArrowLeft")
    else:
        raise RuntimeError(f"slider {label!r} did not reach {value}")
    thumb.blur()
    wait_until_idle(page, timeout_ms, settle_ms=1000)


def content_height(page) -> int:
    """Pixels from the top of the page to the bottom of the main column's content."""
    box = page.locator('[data-testid="stMainBlockContainer"]').bounding_box()
    return int(box["y"] + box["height"]) if box else 0


def shoot(
    workspace: Path, out: Path, width: int, height: int, max_height: int, per_family: int
) -> list[tuple[Path, list[str]]]:
    """Visit each page, press its button, save its PNG; returns (path, exception boxes)."""
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with (
        dashboard_server(workspace, env=ENV) as server,
        chromium_page(width, height) as page,
    ):
        open_app(page, server.url, timeout_ms=ACTION_TIMEOUT_MS)
        for label, name, button, shows in PAGES:
            start = time.monotonic()
            click_nav(page, label, timeout_ms=ACTION_TIMEOUT_MS)
            if label == "Rewards":
                set_slider(page, "Test prompts per task family", per_family)
            if button is not None:
                press = page.get_by_role("button", name=button)
                if press.count() and press.first.is_enabled():
                    press.first.click()
                    # the rerun may start late on a busy machine: wait for what it shows
                    shows(page).first.wait_for(state="visible", timeout=ACTION_TIMEOUT_MS)
                    wait_until_idle(page, ACTION_TIMEOUT_MS)
                else:
                    print(f"{label}: no enabled {button!r} button", file=sys.stderr)
            page.wait_for_timeout(1500)  # charts draw after the script finishes
            # The page as tall as its content, up to max_height: the viewport grows (Streamlit
            # scrolls inside its own container, so full_page would show no more).
            tall = min(max(content_height(page), height), max_height)
            page.set_viewport_size({"width": width, "height": tall})
            page.wait_for_timeout(1000)  # charts re-lay out to the new size
            page.mouse.move(0, 0)  # no hover tooltips in the picture
            path = out / name
            page.screenshot(path=str(path))
            page.set_viewport_size({"width": width, "height": height})
            boxes = exceptions(page)
            shots.append((path, boxes))
            took = time.monotonic() - start
            print(f"{path}  {path.stat().st_size / 1024:.0f} KB  {took:.0f} s")
            for box in boxes:
                print(f"  exception on {label}: {box}", file=sys.stderr)
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", required=True, type=Path, help="the lab's workspace")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="PNG folder")
    parser.add_argument("--width", type=int, default=1280, help="viewport width (px)")
    parser.add_argument("--height", type=int, default=900, help="viewport height (px)")
    parser.add_argument(
        "--max-height",
        type=int,
        default=2800,
        help="a page taller than --height is shot this tall at most (px)",
    )
    parser.add_argument(
        "--per-family", type=int, default=4, help="Rewards: test prompts per task family"
    )
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is missing; `make system-deps` installs it", file=sys.stderr)
        return 2
    if not args.workspace.is_dir():
        print(f"no workspace at {args.workspace}", file=sys.stderr)
        return 2
    shots = shoot(
        args.workspace.resolve(),
        args.out,
        args.width,
        args.height,
        max(args.height, args.max_height),
        args.per_family,
    )
    return 1 if any(boxes for _, boxes in shots) else 0


if __name__ == "__main__":
    sys.exit(main())
