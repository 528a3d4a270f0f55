"""Compare: one prompt, 2 to 4 policies side by side; each output with its RM score, gold
Likert and flags, total KL to the SFT reference and length, tokens shaded by per-token KL."""

import streamlit as st

from rlhf import dashboard as dash
from rlhf.outputs import frame, side_by_side
from rlhf.viz import token_kl_html
from rlhf.world import format_prompt

st.title("Compare policies")
runs = dash.policies_or_stop("No trained policy in this workspace yet.")

by_label = {p.label: p for p in runs}
rms = dash.reward_run_choices()
with st.sidebar:
    st.subheader("Judge")
    rm_names = [r.dir.name for r in rms] + ["(no reward model)"]
    rm_name = st.selectbox("Reward model", rm_names, key="compare_rm")
    st.subheader("Sampling")
    temperature = st.slider("Temperature (0: greedy)", 0.0, 2.0, 1.0, 0.05, key="compare_temp")
    top_p = st.slider("Top-p", 0.05, 1.0, 1.0, 0.05, key="compare_top_p")
    max_tokens = st.slider("Max new tokens", 8, 96, 48, 8, key="compare_max_tokens")
    seed = st.number_input("Seed", 0, 10**6, 0, key="compare_seed")
rm_run = next((r for r in rms if r.dir.name == rm_name), None)
sft = next((p for p in runs if p.kind == "SFT"), None)
judge = dash.judge(rm_run, sft)

chosen = st.multiselect(
    "Policies (2 to 4)",
    list(by_label),
    default=dash.newest_of_each_kind(runs)[:4],
    max_selections=4,
    key="compare_policies",
)

world = judge.world
source = st.radio(
    "Prompt",
    ["Test prompt", "Type one"],
    horizontal=True,
    key="compare_source",
    disabled=world is None,
)
world_prompt = None
if world is not None and source == "Test prompt":
    test = world.prompts("test")
    families = sorted({p.family for p in test})
    family = st.selectbox("Task family", ["(all)", *families], key="compare_family")
    shown = [p for p in test if family in ("(all)", p.family)]
    pick = st.selectbox(
        f"Test prompt ({len(shown)})",
        range(len(shown)),
        format_func=lambda i: f"{shown[i].id}: {shown[i].instruction}",
        key="compare_prompt",
    )
    world_prompt = shown[pick]
    prompt = world_prompt.text
else:
    instruction = st.text_area("Instruction", "Name three fruits.", key="compare_typed", height=70)
    prompt = format_prompt(instruction.strip())
st.caption(f"The policies see: `{prompt!r}`")

enough = len(chosen) >= min(2, len(by_label))
if not enough:
    st.warning("Choose at least 2 policies to compare.")
if st.button("Generate", type="primary", disabled=not enough, key="compare_generate"):
    models = {lab: dash.policy(str(by_label[lab].model_dir)) for lab in chosen}
    with st.spinner("Sampling and scoring…"):
        outs = side_by_side(
            models,
            prompt,
            judge,
            world_prompt,
            n=1,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_tokens,
            seed=int(seed),
        )
    st.session_state["compare_outputs"] = (prompt, outs)

if "compare_outputs" in st.session_state:
    shown_prompt, outs = st.session_state["compare_outputs"]
    if shown_prompt != prompt:
        st.caption("The outputs below answer the previous prompt; press Generate for this one.")
    for col, out in zip(st.columns(len(outs)), outs, strict=True):
        with col:
            kind, _, name = out.policy.partition(" · ")
            st.markdown(f"**{kind}**")
            st.caption(name)
            a, b = st.columns(2)
            a.metric("RM score", "—" if out.score is None else f"{out.score:+.2f}")
            b.metric("Gold Likert", "—" if out.likert is None else f"{out.likert} / 7")
            a.metric("KL to SFT", "—" if out.kl_total is None else f"{out.kl_total:.2f}")
            b.metric("Length", f"{out.length}{'' if out.ended else ' (cut)'}")
            if out.kl:
                st.html(token_kl_html(out.tokens, out.kl))
            else:
                st.code(out.text, language=None)
            if out.flags:
                st.caption("Gold flags: " + ", ".join(sorted(out.flags)))
    st.caption(
        "Tokens are shaded by log π(y) − log π_SFT(y): red, the policy made the token likelier "
        "than SFT did; blue, less likely. Hover for the value."
    )
    st.dataframe(frame(outs), hide_index=True, key="compare_table")
