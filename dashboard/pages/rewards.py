"""Rewards: how the reward model scores each policy's answers per task family, how its score
tracks the gold labeler's, and how often it agrees with each group of labelers (paper 4.1)."""

import pandas as pd
import streamlit as st

from rlhf import dashboard as dash
from rlhf.ensemble import members_frame
from rlhf.labeling import human_accuracy, is_held_out_prompt, rm_group_accuracy
from rlhf.reward import answer_checking_of
from rlhf.runs import read_eval
from rlhf.store import Store
from rlhf.viz import checking_bars, interval_bars, score_boxes, score_scatter, score_vs_gold

st.title("Rewards")
rms = dash.reward_run_choices()
if not rms:
    dash.nothing_yet(
        "No finished reward model in this workspace yet.",
        "rlhf compare --recipe tiny && rlhf rm --recipe tiny    # or: make demo",
    )
    st.stop()
rm_name = st.selectbox("Reward model", [r.dir.name for r in rms], key="rewards_rm")
rm_run = next(r for r in rms if r.dir.name == rm_name)
report = read_eval(rm_run)

st.header("Accuracy by labeler group")
acc = rm_group_accuracy(report)
db = dash.workspace() / "lab.db"
if db.exists():
    with Store(db) as store:
        human = store.comparisons(source="human")
    if human:
        rm = dash.reward_model(str(rm_run.model_dir))
        held = [c for c in human if is_held_out_prompt(c.prompt_id)]
        seen = [c for c in human if not is_held_out_prompt(c.prompt_id)]
        parts = [acc]
        if held:
            parts.append(human_accuracy(rm, held, "hand · val/test prompts"))
        if seen:  # an RM trained --with-human learned from these
            parts.append(human_accuracy(rm, seen, "hand · train/typed prompts")[:1])
        acc = pd.concat(parts, ignore_index=True)
if acc.empty:
    st.caption("This RM's eval.json has no held-out accuracy.")
else:
    st.altair_chart(interval_bars(acc, "Pairwise accuracy on held-out comparisons (95% intervals)"))
    st.caption(
        "RM: the reward model; gold: the world's gold labeler on the same comparisons, the "
        "ceiling; hand: your rankings from the Rank page (those of train prompts are training "
        "data for an RM trained with --with-human)."
    )

members = members_frame(report)
if not members.empty:
    st.subheader("Ensemble members")
    st.dataframe(
        members.style.format(
            {"scale": "{:.3f}", "training labelers": "{:.1%}", "held-out labelers": "{:.1%}"},
            na_rep="",
        ),
        key="rewards_members",
    )
    st.caption(
        "An ensemble RM (rm.ensemble, beyond the paper): the mean of its members' rewards, each "
        "over its spread on the training comparisons. Each member's accuracy is its own run's."
    )

checking = answer_checking_of(report)
if not checking.empty:
    st.subheader("Right vs wrong answers")
    st.altair_chart(checking_bars(checking))
    st.caption(
        "Held-out pairs in which the gold labeler finds one answer right and the other wrong: "
        "how often the RM scores the right one higher, and how often the labelers ranked it "
        "higher. Near 50% the RM judges only the answers' form, not whether they are right."
    )

st.header("Scores of each policy's answers")
runs = dash.policies()
by_label = {p.label: p for p in runs}
chosen = st.multiselect(
    "Policies", list(by_label), default=dash.newest_of_each_kind(runs), key="rewards_policies"
)
per_family = st.slider("Test prompts per task family", 2, 60, 10, key="rewards_per_family")
if st.button("Score", type="primary", disabled=not chosen, key="rewards_score"):
    st.session_state["rewards_frame"] = dash.scored_answers(
        {by_label[lab].short: str(by_label[lab].model_dir) for lab in chosen},
        str(rm_run.dir),
        per_family,
    )
frame = st.session_state.get("rewards_frame")
if frame is None:
    st.caption("Press Score: each policy answers the test prompts greedily (as `rlhf eval` does).")
    st.stop()
st.altair_chart(score_boxes(frame))
left, right = st.columns(2)
# A height for the whole chart: by default Streamlit fits title, axes and legend into the
# chart's own height and leaves the scatter a strip of about 30 pixels.
with left:
    st.altair_chart(score_scatter(frame), height=420)
with right:
    st.altair_chart(score_vs_gold(frame, score="rm_score", gold="likert"), height=420)
means = frame.groupby("policy", sort=False)[["rm_score", "likert"]].mean()
st.dataframe(means.style.format("{:.2f}"), key="rewards_means")
