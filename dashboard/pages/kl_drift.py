"""KL drift: PPO training curves of one or several runs overlaid, the reward-KL frontier, gold
against proxy reward as KL grows (over-optimisation), and sample rollouts at chosen steps with
each token shaded by its KL to the SFT reference."""

import pandas as pd
import streamlit as st

from rlhf import dashboard as dash
from rlhf.viz import PPO_CURVES, ppo_curves, reward_vs_kl, token_kl_html

st.title("KL drift")
ppo = [p for p in dash.policies() if p.run.stage == "ppo"]  # PPO, PPO-ptx, with LoRA or not
if not ppo:
    dash.nothing_yet(
        "No finished PPO run in this workspace yet.",
        "rlhf ppo --recipe tiny                      # PPO\n"
        "rlhf ppo --recipe tiny --set ppo.ptx_coef=1  # PPO-ptx\n"
        "# or everything at once: make demo",
    )
    st.stop()

labels = [p.label for p in ppo]
chosen = st.multiselect("PPO runs", labels, default=labels[:2], key="kl_runs")
if not chosen:
    st.info("Choose one or more PPO runs.")
    st.stop()
by_label = {p.label: p for p in ppo}
metrics = {by_label[lab].short: by_label[lab].run.metrics() for lab in chosen}

names = st.multiselect("Curves", list(PPO_CURVES), default=list(PPO_CURVES), key="kl_curves")
try:
    st.altair_chart(ppo_curves(metrics, names or PPO_CURVES))
except ValueError as e:
    st.caption(str(e))

st.subheader("Reward against KL")
st.caption(
    "Each point is a logged step. On the probe batch (fixed prompts, `overopt`) the RM score "
    "keeps rising with KL while the gold quality can stall or fall: over-optimisation "
    "(Gao et al. 2022; paper 4.2)."
)
prefix = st.radio(
    "Points from",
    ["overopt", "objective"],
    horizontal=True,
    key="kl_prefix",
    format_func=lambda p: {"overopt": "the probe batch", "objective": "each step's rollouts"}[p],
)
try:
    st.altair_chart(reward_vs_kl(metrics, prefix))
except ValueError as e:
    st.caption(str(e))

st.subheader("Rollouts over training")
lab = st.selectbox("Run", chosen, key="kl_sample_run")
samples = by_label[lab].run.samples()
if not samples:
    st.caption("This run logged no samples (ppo.sample_every).")
    st.stop()
steps = sorted({s["step"] for s in samples})
step = st.select_slider("Step", steps, value=steps[-1], key="kl_step")
rows = [s for s in samples if s["step"] == step]
table = pd.DataFrame(
    [
        {
            "prompt": r["prompt"],
            "response": r["response"],
            "RM score": r.get("score"),
            "gold Likert": r.get("gold_likert"),
            "KL": sum(r.get("kl", [])),
        }
        for r in rows
    ]
)
st.dataframe(table, hide_index=True, key="kl_samples_table")
scale = st.slider("|KL| of full colour", 0.1, 5.0, 2.0, 0.1, key="kl_scale")
for r in rows:
    st.markdown(f"`{r['prompt_id']}` {r['prompt'].splitlines()[0]}")
    st.html(token_kl_html(r["tokens"], r["kl"], scale))
