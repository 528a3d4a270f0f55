"""Home: what the lab is, and what to run until the dashboard's pages arrive."""

import streamlit as st

st.title("RLHF Lab")
st.write("The InstructGPT recipe (SFT → reward model → PPO) on small models, one stage at a time.")
st.info(
    "The dashboard arrives in a later issue: comparing policies side by side, reward "
    "distributions, KL drift during PPO, a ranking interface and the runs table."
)
st.subheader("What to run now")
st.code(
    "make demo    # build the Tiny World and pretrain the base model\nmake test    # every test"
)
