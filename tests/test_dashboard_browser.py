"""The dashboard in a real browser: `rlhf dashboard` opened in Debian's headless chromium through
Playwright (helpers in tests/browser.py), on an empty workspace and on a copy of the micro
pipeline's, where a hand ranking typed on the Rank page lands in the lab store. Skipped when
/usr/bin/chromium is missing, except on CI, where that fails."""

import re

import pytest
from browser import (
    FIRST_RUN_TIMEOUT_MS,
    app_in_chromium,
    chromium_page,
    click_nav,
    dashboard_server,
    exceptions,
    explained,
    is_png,
    listening_addresses,
    open_app,
    require_chromium,
    wait_until_idle,
)
from conftest import copy_workspace, ppo_run_in_training
from playwright.sync_api import expect

from rlhf.store import Store

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


def test_rank_page_saves_a_hand_ranking_from_the_browser(micro_pipeline, tmp_path):
    require_chromium()
    cfg = copy_workspace(micro_pipeline, tmp_path / "ws")
    labeler = "browser-ann"
    with app_in_chromium(cfg.workspace_dir, tmp_path / "failure.png") as page:
        click_nav(page, "Rank")
        expect(page.get_by_role("heading", name="Rank samples")).to_be_visible()

        name = page.get_by_label("Your name (labeler)")
        name.fill(labeler)
        name.press("Enter")  # Streamlit takes a text input's value on Enter or blur
        wait_until_idle(page)
        expect(name).to_have_value(labeler)

        # Loads the SFT policy and samples K responses: the slow step on a busy machine.
        page.get_by_role("button", name="Draw samples").click()
        wait_until_idle(page, FIRST_RUN_TIMEOUT_MS)
        # The submit button comes after every response: once it shows, all of them do.
        submit = page.get_by_role("button", name="Submit ranking")
        expect(submit).to_be_visible(timeout=FIRST_RUN_TIMEOUT_MS)
        wait_until_idle(page, FIRST_RUN_TIMEOUT_MS)
        ranks = page.get_by_label("Rank", exact=True)  # one number input per response
        n = ranks.count()
        assert n >= 2
        expect(page.get_by_text(f"Rank all {n} responses")).to_be_visible()
        # What the page shows: the prompt's id, then the prompt and each response in a
        # code block (an empty response reads "(empty)").
        heading = page.locator("p").filter(
            has=page.locator("strong", has_text=re.compile(r"^Prompt$"))
        )
        shown_id = heading.locator("code").first.inner_text()
        # all_inner_texts does not wait: on a busy machine the blocks' <pre> can come after the
        # rank inputs (CI, 2026-11-28: none yet), so wait for the prompt's and the n responses'.
        blocks = page.locator('[data-testid="stCode"] pre')
        expect(blocks).to_have_count(1 + n, timeout=FIRST_RUN_TIMEOUT_MS)
        codes = blocks.all_inner_texts()
        shown_prompt, shown_responses = codes[0], codes[1:]

        typed = [1] + [2] * (n - 1)  # the first best, the rest tied
        for i, r in enumerate(typed):
            box = ranks.nth(i)
            box.fill(str(r))
            box.press("Enter")  # commits the number, which reruns the script
            wait_until_idle(page)
            expect(ranks.nth(i)).to_have_value(str(r))
        assert exceptions(page) == []

        submit.click()
        saved_note = page.get_by_text(re.compile(r"Saved comparison #\d+")).first
        expect(saved_note).to_be_visible(timeout=FIRST_RUN_TIMEOUT_MS)
        rid = int(re.search(r"#(\d+)", saved_note.inner_text()).group(1))
        wait_until_idle(page)
        assert exceptions(page) == []

    with Store.open(cfg) as store:
        [saved] = store.comparisons(source="human", labeler=labeler)
        assert store.count(source="human") == 1
    assert saved.id == rid
    assert saved.ranking == [0] + [1] * (n - 1)  # dense from 0
    assert saved.prompt_id == shown_id and "-train-" in saved.prompt_id
    assert saved.prompt == shown_prompt
    assert [r or "(empty)" for r in saved.responses] == shown_responses


def test_kl_drift_follows_a_ppo_run_while_it_trains(micro_pipeline, tmp_path):
    """The KL drift page redraws a running run's curves as it logs steps, with no click (its
    fragment reruns every LIVE_REFRESH_S seconds), and stops once the run is done. The run is
    "trained" by this test process, which the run's status.json names as its own."""
    import shutil

    require_chromium()
    cfg = copy_workspace(micro_pipeline, tmp_path / "ws")
    run, finished = ppo_run_in_training(cfg)
    logged = finished.metrics()
    for row in logged[:2]:
        run.log(row["step"], row)
    steps = cfg.ppo.steps
    with app_in_chromium(cfg.workspace_dir, tmp_path / "failure.png") as page:
        click_nav(page, "KL drift")
        expect(page.get_by_text(f"running, step 2 of {steps}")).to_be_visible(
            timeout=FIRST_RUN_TIMEOUT_MS
        )
        run.log(logged[2]["step"], logged[2])  # the next step, while the page is open
        expect(page.get_by_text(f"running, step 3 of {steps}")).to_be_visible()
        for row in logged[3:]:
            run.log(row["step"], row)
        shutil.copytree(finished.model_dir, run.model_dir)  # the run ends
        run.set_status("done")
        expect(page.get_by_text("running, step")).to_have_count(0)
        wait_until_idle(page)
        assert exceptions(page) == []
