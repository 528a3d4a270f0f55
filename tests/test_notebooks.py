"""Every notebook runs top to bottom as saved, with small parameters injected after its
`parameters` cell (papermill's convention)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
HUMAN_FEEDBACK = NOTEBOOKS[0].parent / "06_human_feedback.ipynb"
FROM_SCRATCH = [p for p in NOTEBOOKS if p != HUMAN_FEEDBACK]  # 06 runs on rankings a test writes


def run_notebook(path: Path, params: dict, cwd: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    idx = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(idx) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.insert(idx[0] + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected"]}))
    # A cell's own timeout, under pytest-timeout's 600 s for the whole test, so that a cell
    # that never replies fails naming itself (a micro cell takes seconds).
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def test_notebooks_stored_without_outputs():
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", FROM_SCRATCH, ids=[p.stem for p in FROM_SCRATCH])
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = run_notebook(path, {"RECIPE": "micro", "WORKSPACE": str(tmp_path)}, tmp_path)
    assert_tables_and_charts(nb)


def assert_tables_and_charts(nb: nbformat.NotebookNode) -> list[dict]:
    """No cell failed; some output is an HTML table and some an Altair (vega) chart."""
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # Tables render as HTML; Altair charts as HTML that embeds vega (or a vega-lite bundle).
    data = [o.get("data", {}) for o in outputs]
    assert any("<table" in d.get("text/html", "") for d in data)
    assert any("vega" in k or "vegaEmbed" in d.get("text/html", "") for d in data for k in d)
    return data


@pytest.mark.slow
def test_human_feedback_notebook_trains_on_rankings_written_like_the_dashboard(
    micro_pipeline, tmp_path, monkeypatch
):
    """The test ranks for a stand-in person through rlhf.labeling (the Rank page's functions);
    notebook 06 loads those rankings, not stand-ins of its own, and trains the next RM on them."""
    from conftest import copy_workspace

    from rlhf.labeling import stand_in_labeler, stand_in_rankings, submit
    from rlhf.models import load_policy
    from rlhf.outputs import policy_runs
    from rlhf.runs import list_runs, read_eval
    from rlhf.store import Store
    from rlhf.world import load_world

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = copy_workspace(micro_pipeline, tmp_path / "ws")
    world = load_world(cfg)
    sft = next(p for p in policy_runs(cfg.workspace_dir) if p.kind == "SFT")
    prompts = world.prompts("train")[:6] + world.prompts("val")[:4]
    person = stand_in_labeler(name="tester")
    records = stand_in_rankings(world, {"SFT": load_policy(sft.model_dir)}, prompts, person)
    with Store.open(cfg) as store:
        for record in records:
            submit(store, record)
    assert len(records) == 10

    nb = run_notebook(
        HUMAN_FEEDBACK, {"RECIPE": "micro", "WORKSPACE": str(cfg.workspace_dir)}, tmp_path
    )
    data = assert_tables_and_charts(nb)
    assert any("tester" in d.get("text/html", "") for d in data)
    with Store.open(cfg) as store:
        assert len(store.comparisons(source="human")) == 10  # no stand-ins added
    [after] = [r for r in list_runs(cfg.workspace_dir, "rm") if r.raw_config()["rm"]["with_human"]]
    report = read_eval(after)
    assert report["comparisons/val_human"] == 4 and report["pairs/val_human"] > 0
