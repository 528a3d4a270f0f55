"""The dashboard in a real browser: `rlhf dashboard` on an empty workspace, opened in Debian's
headless chromium through Playwright (helpers in tests/browser.py). Skipped when
/usr/bin/chromium is missing, except on CI, where that fails."""

import pytest
from browser import (
    chromium_page,
    dashboard_server,
    exceptions,
    explained,
    is_png,
    listening_addresses,
    open_app,
    require_chromium,
)

pytestmark = pytest.mark.slow


def test_dashboard_renders_in_chromium(tmp_path):
    require_chromium()
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with dashboard_server(workspace) as server, chromium_page() as page:
        assert listening_addresses(server.port) == {"127.0.0.1"}, "bound beyond loopback"
        with explained(page, server, tmp_path / "failure.png"):
            open_app(page, server.url)
            # The router's st.set_page_config title, and the name shown on the page (the
            # home page's heading, or the sidebar caption once the pages arrive).
            assert page.title() == "RLHF Lab"
            name = page.get_by_text("RLHF Lab").first
            name.wait_for(state="visible")
            assert name.is_visible()
            assert exceptions(page) == []
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
    assert is_png(shot)
