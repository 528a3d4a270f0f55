"""Rank: the paper's labeling interface (its Fig. 12). Draw K samples for a prompt from one
policy or a mix, give each a Likert score and metadata flags, rank them all (ties allowed),
and save the ranking to the lab store under your name. `rlhf rm --with-human` trains the next
reward model on these rankings too."""

import pandas as pd
import streamlit as st

from rlhf import dashboard as dash
from rlhf.errors import StoreError
from rlhf.labeling import (
    FLAGS,
    K_MAX,
    K_MIN,
    agreement_with_simulated,
    draw_samples,
    likert_conflicts,
    submission,
    submit,
)
from rlhf.store import Store
from rlhf.world import format_prompt

st.title("Rank samples")
runs = dash.policies_or_stop("No policy to sample from in this workspace yet.")
by_label = {p.label: p for p in runs}
db = dash.workspace() / "lab.db"
world = dash.world_of(str(runs[0].run.dir))


def clear_form() -> None:
    """Forget the drawn samples and every answer given to them."""
    for key in list(st.session_state):
        if key.startswith("rank_r_") or key == "rank_draw":
            del st.session_state[key]


labeler = st.text_input("Your name (labeler)", key="rank_labeler", placeholder="e.g. ann")
if "rank_flash" in st.session_state:  # the outcome of the last action, shown once
    kind, text = st.session_state.pop("rank_flash")
    getattr(st, kind)(text)

with st.expander("Prompt and samples", expanded="rank_draw" not in st.session_state):
    newest = next((p.label for p in runs if p.kind == "SFT"), runs[0].label)
    chosen = st.multiselect(
        "Sample from (one policy, or several for a mix)",
        list(by_label),
        default=[newest],
        key="rank_policies",
    )
    source = st.radio("Prompt", ["World prompt", "Type one"], horizontal=True, key="rank_source")
    prompt_id = None
    if source == "World prompt":
        a, b = st.columns(2)
        split = a.selectbox(
            "Split",
            ["train", "val", "test"],
            key="rank_split",
            help="train: rankings the next RM trains on; val: rankings it is tested on",
        )
        prompts = world.prompts(split)
        families = sorted({p.family for p in prompts})
        family = b.selectbox("Task family", families, key="rank_family")
        shown = [p for p in prompts if p.family == family]
        pick = st.selectbox(
            f"Prompt ({len(shown)})",
            range(len(shown)),
            format_func=lambda i: f"{shown[i].id}: {shown[i].instruction}",
            key="rank_prompt",
        )
        prompt, prompt_id = shown[pick].text, shown[pick].id
    else:
        prompt = format_prompt(
            st.text_area("Instruction", key="rank_typed", height=70).strip() or "Say hello."
        )
    a, b, c = st.columns(3)
    k = a.number_input(f"K (responses, {K_MIN}-{K_MAX})", K_MIN, K_MAX, 4, key="rank_k")
    temperature = b.slider("Temperature", 0.2, 2.0, 1.0, 0.1, key="rank_temp")
    seed = c.number_input("Seed", 0, 10**6, 0, key="rank_seed")
    if st.button("Draw samples", type="primary", disabled=not chosen, key="rank_draw_button"):
        clear_form()
        models = {lab: dash.policy(str(by_label[lab].model_dir)) for lab in chosen}
        with st.spinner("Sampling…"):
            samples = draw_samples(models, prompt, int(k), int(seed), temperature)
        if len(samples) < 2:
            st.session_state["rank_flash"] = (
                "warning",
                "The policies gave the same response every time: raise the temperature or "
                "change the seed.",
            )
        else:
            st.session_state["rank_draw"] = {
                "prompt": prompt,
                "prompt_id": prompt_id,
                "samples": samples,
            }
            if len(samples) < k:
                st.session_state["rank_flash"] = (
                    "info",
                    f"Only {len(samples)} distinct responses came back (identical ones merged).",
                )
        st.rerun()

draw = st.session_state.get("rank_draw")
if draw is not None:
    samples = draw["samples"]
    n = len(samples)
    st.markdown(f"**Prompt** `{draw['prompt_id'] or 'typed'}`")
    st.code(draw["prompt"], language=None)
    st.caption(
        f"Rank all {n} responses from 1 (best) to {n}; give equal numbers to tie them. The "
        "Likert score (1-7) says how good each is on its own."
    )
    for i, s in enumerate(samples):
        with st.container(border=True):
            st.markdown(f"**Response {i + 1}**")
            st.code(s.text or "(empty)", language=None)
            a, b = st.columns([1, 2])
            a.number_input("Rank", 1, n, None, key=f"rank_r_rank_{i}", placeholder="1 = best")
            b.slider("Likert", 1, 7, 4, key=f"rank_r_likert_{i}")
            cols = st.columns(len(FLAGS))
            for col, (flag, question) in zip(cols, FLAGS.items(), strict=True):
                col.checkbox(question, key=f"rank_r_flag_{i}_{flag}")
    left, right = st.columns(2)
    if left.button("Submit ranking", type="primary", key="rank_submit"):
        try:
            record = submission(
                draw["prompt"],
                samples,
                [st.session_state.get(f"rank_r_rank_{i}") for i in range(n)],
                labeler,
                likert=[st.session_state[f"rank_r_likert_{i}"] for i in range(n)],
                flags=[
                    {f: st.session_state[f"rank_r_flag_{i}_{f}"] for f in FLAGS} for i in range(n)
                ],
                prompt_id=draw["prompt_id"],
            )
            with Store(db) as store:
                rid = submit(store, record)
        except StoreError as e:
            st.error(f"Not saved: {e}")
        else:
            note = ""
            if conflicts := likert_conflicts(record):
                pairs = ", ".join(f"{i} over {j}" for i, j in conflicts[:4])
                note = f" Note: ranked above a response with a higher Likert score ({pairs})."
            clear_form()
            st.session_state["rank_flash"] = ("success", f"Saved comparison #{rid}.{note}")
            st.rerun()
    if right.button("Discard these samples", key="rank_discard"):
        clear_form()
        st.rerun()

st.divider()
if st.button("Undo my last submission", disabled=not labeler.strip(), key="rank_undo"):
    with Store(db) as store:
        removed = store.undo_last(labeler.strip())
    st.session_state["rank_flash"] = (
        ("success", f"Removed your last submission ({removed} comparison).")
        if removed
        else ("info", f"Nothing to undo for {labeler.strip()!r}.")
    )
    st.rerun()

st.header("Hand rankings so far")
human = []
if db.exists():
    with Store(db) as store:
        human = store.comparisons(source="human")
if not human:
    st.caption("None yet: draw samples above, rank them and submit.")
else:
    counts = pd.Series([c.labeler for c in human]).value_counts().rename_axis("labeler")
    agreement = agreement_with_simulated(world, human).set_index("labeler")
    table = agreement.join(counts.rename("all comparisons"), how="outer").reset_index()
    st.dataframe(
        table,
        hide_index=True,
        key="rank_labelers",
        column_config={
            "agreement": st.column_config.NumberColumn(
                "agreement with simulated labelers", format="%.2f"
            ),
            "gold_agreement": st.column_config.NumberColumn("agreement with gold", format="%.2f"),
        },
    )
    st.caption(
        "Agreement: of the pairs you ranked apart, the share the world's simulated training "
        "labelers order the same way on the very same responses (world prompts only). The "
        "labelers agree with each other about 73% of the time (paper: 72.6%)."
    )

st.header("Export")
formats = {
    "K-wise JSONL": ("kwise", "jsonl"),
    "TRL chosen/rejected JSONL": ("pairs", "jsonl"),
    "HF datasets folder, K-wise": ("kwise", "hf"),
    "HF datasets folder, chosen/rejected": ("pairs", "hf"),
}
a, b = st.columns(2)
fmt = a.selectbox("Format", list(formats), key="rank_export_format")
which = b.radio("Comparisons", ["hand rankings", "all"], horizontal=True, key="rank_export_src")
kind, layout = formats[fmt]
suffix = ".jsonl" if layout == "jsonl" else ""
default = str(
    dash.workspace() / "exports" / f"{'human' if which != 'all' else 'all'}_{kind}{suffix}"
)
path = st.text_input("Write to", default, key="rank_export_path")
if st.button("Export", key="rank_export"):
    try:
        with Store(db) as store:
            n = store.export(
                path, kind, source="human" if which == "hand rankings" else None, layout=layout
            )
    except (StoreError, OSError) as e:
        st.error(f"Not exported: {e}")
    else:
        st.success(f"{n:,} rows written to {path}")
