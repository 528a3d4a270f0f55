"""The dashboard's router (`rlhf dashboard`, or `streamlit run dashboard/app.py`): st.navigation
over one plain script per page in dashboard/pages/. Pages call rlhf only (rlhf.dashboard for
the workspace and the cached models); they hold no algorithm code."""

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "pages"

st.set_page_config(page_title="RLHF Lab", layout="wide")
page = st.navigation(
    [
        st.Page(PAGES / "compare.py", title="Compare", icon=":material/compare:", default=True),
        st.Page(PAGES / "rewards.py", title="Rewards", icon=":material/leaderboard:"),
        st.Page(PAGES / "kl_drift.py", title="KL drift", icon=":material/show_chart:"),
        st.Page(PAGES / "rank.py", title="Rank", icon=":material/format_list_numbered:"),
        st.Page(PAGES / "runs.py", title="Runs", icon=":material/folder_open:"),
    ]
)
with st.sidebar:
    st.caption("RLHF Lab: SFT → reward model → PPO on the Tiny World")
page.run()
