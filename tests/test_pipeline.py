"""`rlhf pipeline` end to end on the micro recipe, and the paper's claims (rlhf.claims) on
hand-made results tables: each held, not held, or not checked when a run is missing."""

from __future__ import annotations

import json

from rlhf.claims import check_claims
from rlhf.cli import main
from rlhf.metrics import METRICS
from rlhf.results import TAX


def ci(mean: float, n: int = 10) -> dict[str, float]:
    return {"mean": mean, "lo": mean - 0.05, "hi": mean + 0.05, "n": n}


def table(**overrides) -> dict:
    rows = {
        "base": {
            "win_rate": ci(0.1),
            "perplexity": ci(2.0),
            "hallucination": ci(0.7),
            "truthful": ci(0.1),
            "toxicity/plain": ci(0.8),
            "toxicity/respectful": ci(0.7),
        },
        "SFT": {
            "win_rate": ci(0.5),
            "perplexity": ci(2.8),
            "hallucination": ci(0.1),
            "truthful": ci(0.3),
            "toxicity/plain": ci(0.4),
            "toxicity/respectful": ci(0.1),
        },
        "PPO": {
            "win_rate": ci(0.6),
            "perplexity": ci(3.0),
            "hallucination": ci(0.1),
            "truthful": ci(0.4),
            "toxicity/plain": ci(0.3),
            "toxicity/respectful": ci(0.05),
        },
        "PPO-ptx": {
            "win_rate": ci(0.58),
            "perplexity": ci(2.2),
            "hallucination": ci(0.2),
            "truthful": ci(0.35),
            "toxicity/plain": ci(0.3),
            "toxicity/respectful": ci(0.0),
        },
    }
    for key, value in overrides.items():
        label, metric = key.split("__")
        rows[label.replace("_", "-")][metric.replace("_slash_", "/")] = value
    return {"rows": rows}


def test_every_claim_holds_on_a_table_that_follows_the_paper():
    claims = check_claims(table())
    assert len(claims) == 7 and all(c.held for c in claims), [c.line() for c in claims]
    assert claims[3].evidence.startswith("PPO-ptx 2.200 [2.150, 2.250], PPO 3.000")


def test_each_claim_fails_when_its_numbers_say_so():
    cases = {
        1: {"PPO__win_rate": ci(0.45)},  # PPO loses to SFT
        3: {"PPO_ptx__perplexity": ci(3.5)},  # the pretraining mix did not help
        4: {"PPO__hallucination": ci(0.9)},  # PPO hallucinates more than base
        5: {"SFT__truthful": ci(0.05)},
        6: {"base__toxicity_slash_respectful": ci(0.2)},  # base's drop (0.6) beats aligned
    }
    for index, change in cases.items():
        claims = check_claims(table(**change))
        assert [i for i, c in enumerate(claims) if not c.held] == [index], change
        assert "NOT held" in claims[index].line()


def test_a_claim_without_its_runs_is_not_checked():
    results = table()
    del results["rows"]["PPO-ptx"], results["rows"]["base"]
    verdicts = {c.text: c.held for c in check_claims(results)}
    assert verdicts["PPO beats SFT (win rate above 50%)"] is True
    assert verdicts["PPO-ptx beats SFT (win rate above 50%)"] is None
    assert sum(v is None for v in verdicts.values()) == 6  # all but PPO's win rate


def test_pipeline_on_micro_runs_every_stage_then_the_table_and_claims(tmp_path, capsys):
    ws = ["--recipe", "micro", "--workspace", str(tmp_path)]
    assert main(["pipeline", *ws]) == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "results" / "results.json").read_text())
    assert data["labels"] == ["base", "SFT", "RM", "PPO", "PPO-ptx"]
    for label in ("base", "SFT", "PPO", "PPO-ptx"):  # every column filled, with its n
        assert all(data["rows"][label][m]["n"] > 0 for m in (*METRICS, *TAX)), label
    assert "The paper's claims on this table:" in out and out.count("held] ") == 7
    assert "rlhf dashboard" in out
    # Again: every stage is reused, nothing retrains.
    assert main(["pipeline", *ws]) == 0
    again = capsys.readouterr().out
    assert again.count("reusing finished run") == 5 and "training a new run" not in again
