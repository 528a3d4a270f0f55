"""KL drift: PPO training curves of one or several runs overlaid, the reward-KL frontier, gold
against proxy reward as KL grows (over-optimisation), the test answers each finished run lost
to SFT's by gold that the RM scored higher (rm_vs_gold), and sample rollouts at chosen steps with
each token shaded by its KL to the SFT reference. A run still training is listed first, and
its curves and newest rollouts are redrawn as it logs steps."""

import pandas as pd
import streamlit as st

from rlhf import dashboard as dash
from rlhf.breakdown import rm_vs_gold_table
from rlhf.ppo_report import pays_for_gold_losses, reward_name
from rlhf.viz import PPO_CURVES, ppo_curves, reward_vs_kl, token_kl_html

st.title("KL drift")
ppo = dash.training_runs()  # running first, then finished, then stopped or failed ones
if not ppo:
    dash.nothing_yet(
        "No PPO run in this workspace yet.",
        "rlhf ppo --recipe tiny                          # PPO\n"
        "rlhf ppo --recipe tiny --set ppo.ptx_coef=0.03  # PPO-ptx\n"
        "# or everything at once: make demo",
    )
    st.stop()

labels = [p.label for p in ppo]
chosen = st.multiselect("PPO runs", labels, default=dash.ppo_pair(ppo), key="kl_runs")
if not chosen:
    st.info("Choose one or more PPO runs.")
    st.stop()
by_label = {p.label: p for p in ppo}
POINTS = {"overopt": "the probe batch", "objective": "each step's rollouts"}
live = [lab for lab in chosen if by_label[lab].run.state == "running"]


# The curves follow a run still training: this part redraws every LIVE_REFRESH_S seconds while
# one is chosen, the rest of the page stays as it is.
@st.fragment(run_every=dash.LIVE_REFRESH_S if live else None)
def curves() -> None:
    if any(by_label[lab].run.state != "running" for lab in live):
        st.rerun()  # a followed run ended: list it as finished (or stopped), stop redrawing
    for lab in chosen:
        if not by_label[lab].run.done:
            st.caption(dash.progress_line(by_label[lab]))
    metrics = {by_label[lab].short: by_label[lab].run.metrics() for lab in chosen}
    metrics = {short: rows for short, rows in metrics.items() if rows}  # not before a step
    if not metrics:
        st.caption("No step logged yet: the curves start with the first.")
        return

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
        list(POINTS),
        horizontal=True,
        key="kl_prefix",
        format_func=POINTS.get,
    )
    try:
        st.altair_chart(reward_vs_kl(metrics, prefix))
    except ValueError as e:
        st.caption(str(e))


curves()

st.subheader("What the RM paid for")
st.caption(
    "On the test prompts: the answers of a finished run that lose to SFT's by the gold labeler "
    "yet the RM scored above SFT's, widest margin first (its eval.json's `rm_vs_gold`). What "
    "the proxy rewards without checking: over-optimisation one answer at a time."
)
for lab in chosen:
    got = dash.paid_for(by_label[lab].run)
    if got is None:
        st.caption(f"{lab}: none yet (a run still training, or one whose report predates it)")
        continue
    kind, paid = got
    if not pays_for_gold_losses(kind):  # an oracle arm paid by the gold labeler itself
        st.caption(f"{lab}: trained against the gold labeler itself, which pays for no gold loss")
        continue
    st.markdown(
        f"**{lab}**: the {reward_name(kind)} scored {paid['losses_rm_prefers_policy']} of its "
        f"{paid['losses']} losses to SFT above SFT's answer (and {paid['wins_rm_prefers_policy']} "
        f"of its {paid['wins']} wins)"
    )
    if paid["examples"]:
        st.dataframe(
            rm_vs_gold_table(paid, reward_name(kind)),
            hide_index=True,
            key=f"kl_paid_{by_label[lab].run.dir.name}",
        )

st.subheader("Rollouts over training")


# Redrawn with the curves while a chosen run trains: its newest logged rollouts appear as they
# are written, and the step slider follows them unless an earlier step was picked.
@st.fragment(run_every=dash.LIVE_REFRESH_S if live else None)
def rollouts() -> None:
    lab = st.selectbox("Run", chosen, key="kl_sample_run")
    samples = by_label[lab].run.samples()
    if not samples:
        st.caption("This run has logged no samples yet (ppo.sample_every).")
        return
    steps = sorted({s["step"] for s in samples})
    newest = st.session_state.get("kl_step_newest", {})
    if st.session_state.get("kl_step") in (None, newest.get(lab)) or (
        st.session_state["kl_step"] not in steps
    ):
        st.session_state["kl_step"] = steps[-1]  # at the newest step (or none yet): follow it
    st.session_state["kl_step_newest"] = {**newest, lab: steps[-1]}
    step = st.select_slider("Step", steps, key="kl_step")
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


rollouts()
