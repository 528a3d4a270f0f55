"""External data (rlhf.data): every format from JSONL, parquet and a datasets folder, errors that
name the file, line and field, and `rlhf sft|rm|ppo --data` end to end on the micro recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf import cli
from rlhf.data import (
    fingerprint,
    load_comparisons,
    load_demonstrations,
    load_prompts,
    read_records,
    render_prompt,
)
from rlhf.errors import DataError, LabError
from rlhf.store import Comparison, Store
from rlhf.world import format_prompt

# ----------------------------------------------------------------------------- writers


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path = path.with_suffix(".jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = path.with_suffix(".parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_hf(path: Path, rows: list[dict]) -> Path:
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(path))
    return path


WRITERS = {"jsonl": write_jsonl, "parquet": write_parquet, "hf": write_hf}
layouts = pytest.mark.parametrize("layout", WRITERS)


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


# ----------------------------------------------------------------------------- formats


@layouts
def test_trl_pairs_plain(tmp_path, layout):
    rows = [
        {"prompt": "Q: Name a colour.\nA:", "chosen": " Red.", "rejected": " A dog."},
        {"prompt": "Q: 2+2?\nA:", "chosen": " 4", "rejected": " 5"},
    ]
    path = WRITERS[layout](tmp_path / "prefs", rows)
    got = load_comparisons(path)
    assert [(c.prompt, c.responses, c.ranking) for c in got] == [
        ("Q: Name a colour.\nA:", ["Red.", "A dog."], [0, 1]),  # stripped, as the store keeps them
        ("Q: 2+2?\nA:", ["4", "5"], [0, 1]),
    ]
    assert {(c.labeler, c.source) for c in got} == {("prefs", "human")}  # the file's stem
    assert {c.labeler for c in load_comparisons(path, labeler="ann")} == {"ann"}


@layouts
def test_trl_pairs_conversational(tmp_path, layout):
    rows = [
        {
            "prompt": [user("Name a colour.")],
            "chosen": [assistant("Red.")],
            "rejected": [assistant("A dog.")],
        },
        {  # multi-turn, with a system message: flattened one turn a line
            "prompt": [
                {"role": "system", "content": "Be brief."},
                user("Hi."),
                assistant("Hello."),
                user("2+2?"),
            ],
            "chosen": [assistant("4")],
            "rejected": [assistant("5")],
        },
    ]
    path = WRITERS[layout](tmp_path / "prefs", rows)
    a, b = load_comparisons(path)
    assert a.prompt == format_prompt("Name a colour.") and a.responses == ["Red.", "A dog."]
    assert b.prompt == "Be brief.\nQ: Hi.\nA: Hello.\nQ: 2+2?\nA:"
    assert b.responses == ["4", "5"] and b.ranking == [0, 1]


HH = "\n\nHuman: What is 2+2?\n\nAssistant: It is 4.\n\nHuman: Sure?\n\nAssistant:"


@layouts
def test_hh_rlhf_transcripts(tmp_path, layout):
    rows = [
        {"chosen": HH + " Yes, 4.", "rejected": HH + " No, 5."},
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant:"},
        {"chosen": HH + " Yes.", "rejected": HH + " Yes, surely not."},  # responses share "Yes"
    ]
    path = WRITERS[layout](tmp_path / "hh", rows)
    got = load_comparisons(path)
    assert got[0].prompt == HH and got[0].responses == ["Yes, 4.", "No, 5."]
    assert got[1].prompt == "\n\nHuman: Hi\n\nAssistant:" and got[1].responses == ["Hello!", ""]
    assert got[2].prompt == HH and got[2].responses == ["Yes.", "Yes, surely not."]
    assert all(c.ranking == [0, 1] for c in got)


def test_trl_implicit_prompt_conversations(tmp_path):
    turns = [user("Hi."), assistant("Hello."), user("2+2?")]
    rows = [{"chosen": [*turns, assistant("4")], "rejected": [*turns, assistant("5")]}]
    [c] = load_comparisons(write_jsonl(tmp_path / "implicit", rows))
    assert c.prompt == "Q: Hi.\nA: Hello.\nQ: 2+2?\nA:" and c.responses == ["4", "5"]


@layouts
def test_kwise_round_trips_through_the_stores_export(tmp_path, layout):
    records = [
        Comparison("Q: a\nA:", ["x", "y", "z"], [0, 2, 1], labeler="ann", source="human"),
        Comparison("Q: b\nA:", ["p", "q", "r", "s"], [1, 0, 1, 3], labeler="sim-1"),
    ]
    with Store(tmp_path / "lab.db") as store:
        store.add_comparisons(records)
        if layout == "parquet":  # the store writes JSONL or a datasets folder; parquet: by hand
            store.export(tmp_path / "k.jsonl", "kwise")
            path = write_parquet(tmp_path / "k", [r for _, r in read_records(tmp_path / "k.jsonl")])
        else:
            path = tmp_path / ("k.jsonl" if layout == "jsonl" else "k")
            store.export(path, "kwise", layout=layout)
        got = load_comparisons(path)
        assert [(c.prompt, c.responses, c.ranking, c.labeler, c.source) for c in got] == [
            (c.prompt, c.responses, c.ranking, c.labeler, c.source) for c in records
        ]
        # The pairs export reads back as TRL pairs: every strictly ordered pair, chosen first.
        store.export(tmp_path / "pairs.jsonl", "pairs")
        pairs = load_comparisons(tmp_path / "pairs.jsonl")
        assert [tuple(c.responses) for c in pairs] == [p for r in records for p in r.pairs()]


@layouts
def test_demonstrations_plain_and_conversational(tmp_path, layout):
    plain = [
        {"prompt": "Q: 2+2?\nA:", "completion": " 4"},
        {"prompt": "Say hi", "completion": "hi"},
    ]
    path = WRITERS[layout](tmp_path / "demos", plain)
    assert load_demonstrations(path) == [("Q: 2+2?\nA:", " 4"), ("Say hi", "hi")]  # as given

    conversational = [{"prompt": [user("2+2?")], "completion": [assistant("4")]}]
    path = WRITERS[layout](tmp_path / "conv", conversational)
    assert load_demonstrations(path) == [(format_prompt("2+2?"), " 4")]

    messages = [{"messages": [user("Hi."), assistant("Hello."), user("2+2?"), assistant("4")]}]
    path = WRITERS[layout](tmp_path / "messages", messages)
    assert load_demonstrations(path) == [("Q: Hi.\nA: Hello.\nQ: 2+2?\nA:", " 4")]


@layouts
def test_prompts_text_or_messages_each_once(tmp_path, layout):
    rows = [{"prompt": "Q: a\nA:"}, {"prompt": "Q: b\nA:"}, {"prompt": "Q: a\nA:"}]
    assert load_prompts(WRITERS[layout](tmp_path / "p", rows)) == ["Q: a\nA:", "Q: b\nA:"]
    rows = [{"prompt": [user("a")]}, {"prompt": [user("b")]}]
    assert load_prompts(WRITERS[layout](tmp_path / "m", rows)) == ["Q: a\nA:", "Q: b\nA:"]


def test_prompts_of_a_pairs_file(tmp_path):
    rows = [{"prompt": "p1", "chosen": "a", "rejected": "b"}] * 2
    assert load_prompts(write_jsonl(tmp_path / "pairs", rows)) == ["p1"]


def test_single_turn_is_the_worlds_prompt_template():
    assert render_prompt([user("Name a capital.")]) == format_prompt("Name a capital.")


def test_datasetdict_folder_reads_its_train_split(tmp_path):
    from datasets import Dataset, DatasetDict

    row = {"prompt": "p", "completion": " c"}
    DatasetDict(
        {"train": Dataset.from_list([row]), "test": Dataset.from_list([row] * 3)}
    ).save_to_disk(str(tmp_path / "dd"))
    assert load_demonstrations(tmp_path / "dd") == [("p", " c")]


def test_format_can_be_forced(tmp_path):
    path = write_jsonl(tmp_path / "prefs", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    with pytest.raises(DataError, match=r"prefs.jsonl: line 1: field 'responses': missing"):
        load_comparisons(path, format="kwise")
    with pytest.raises(DataError, match="unknown format 'dpo'"):
        load_comparisons(path, format="dpo")


def test_fingerprint_changes_with_the_content(tmp_path):
    path = write_jsonl(tmp_path / "p", [{"prompt": "a"}])
    before = fingerprint(path)
    assert fingerprint(path) == before
    write_jsonl(tmp_path / "p", [{"prompt": "b"}])
    assert fingerprint(path) != before


# ----------------------------------------------------------------------------- errors

GOOD = '{"prompt": "p", "chosen": "a", "rejected": "b"}'


@pytest.mark.parametrize(
    ("lines", "load", "expected"),
    [
        (
            [GOOD, '{"prompt": "p", "chosen": "a",'],
            load_comparisons,
            "prefs.jsonl: line 2: not valid JSON",
        ),
        (
            [GOOD, GOOD, '{"prompt": "p", "chosen": 3, "rejected": "b"}'],
            load_comparisons,
            "prefs.jsonl: line 3: field 'chosen': expected text or a list of messages, got int",
        ),
        (
            [GOOD, '{"prompt": "p", "chosen": "a"}'],
            load_comparisons,
            "prefs.jsonl: line 2: field 'rejected': missing",
        ),
        (
            [GOOD, '{"prompt": null, "chosen": "a", "rejected": "b"}'],
            load_comparisons,
            "prefs.jsonl: line 2: field 'prompt': is null",
        ),
        (
            ['{"prompt": "p", "chosen": "a", "rejected": "a"}'],
            load_comparisons,
            "prefs.jsonl: line 1: field 'rejected': the same text as 'chosen'",
        ),
        (
            [GOOD, "", "[1, 2]"],  # the blank line is counted
            load_comparisons,
            "prefs.jsonl: line 3: expected a JSON object, got list",
        ),
        (
            [json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c"})],
            load_comparisons,
            "prefs.jsonl: line 1: field 'rejected': does not share a prefix ending in "
            "'\\n\\nAssistant:' with 'chosen'",
        ),
        (
            [
                json.dumps(
                    {
                        "chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d",
                        "rejected": "\n\nHuman: a\n\nAssistant: x\n\nHuman: c\n\nAssistant: d",
                    }
                )
            ],
            load_comparisons,
            "prefs.jsonl: line 1: field 'chosen': the transcripts differ before the last "
            "assistant turn",
        ),
        (
            [json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": [assistant("c")]})],
            load_comparisons,
            "prefs.jsonl: line 1: field 'rejected': expected the same kind as 'chosen'",
        ),
        (
            ['{"prompt": "p", "responses": ["a", "b"], "ranking": [0, 1]}'] * 2
            + ['{"prompt": "p", "responses": ["a", "b"], "ranking": [0, 2]}'],
            load_comparisons,
            "prefs.jsonl: line 3: field 'ranking': rank 1 is 2, but 2 responses have ranks 0..1",
        ),
        (
            ['{"prompt": "p", "responses": ["a", "b"], "ranking": [0]}'],
            load_comparisons,
            "prefs.jsonl: line 1: field 'ranking': 1 ranks for 2 responses",
        ),
        (
            ['{"prompt": "p", "responses": ["a", "a"], "ranking": [0, 1]}'],
            load_comparisons,
            "prefs.jsonl: line 1: field 'responses': response 1 duplicates response 0",
        ),
        (
            ['{"prompt": "p", "responses": "ab", "ranking": [0, 1]}'],
            load_comparisons,
            "prefs.jsonl: line 1: field 'responses': expected a list of texts, got str",
        ),
        (
            ['{"prompt": "p", "responses": ["a", "b"], "ranking": [0, 1], "labeler": ""}'],
            load_comparisons,
            "prefs.jsonl: line 1: field 'labeler': must be a non-empty name",
        ),
        (
            ['{"question": "p", "answer": "a"}'],
            load_comparisons,
            "prefs.jsonl: line 1: not comparisons: expected the fields prompt, responses, "
            "ranking (kwise); prompt, chosen, rejected (trl); chosen, rejected (hh); "
            "got answer, question",
        ),
        (
            [
                json.dumps(
                    {"prompt": [{"role": "tool", "content": "x"}], "chosen": "a", "rejected": "b"}
                )
            ],
            load_comparisons,
            "prefs.jsonl: line 1: field 'prompt': message 1: role 'tool' is not one of system, "
            "user, assistant",
        ),
        (
            [json.dumps({"prompt": [{"role": "user"}], "chosen": "a", "rejected": "b"})],
            load_comparisons,
            "prefs.jsonl: line 1: field 'prompt': message 1: expected {role, content} as text",
        ),
        (
            [json.dumps({"prompt": [user("q")], "chosen": [user("a")], "rejected": "b"})],
            load_comparisons,
            "prefs.jsonl: line 1: field 'chosen': message 1: a response is the assistant's",
        ),
        (
            ['{"prompt": "p", "completion": "c"}', '{"prompt": "p", "completion": "  "}'],
            load_demonstrations,
            "prefs.jsonl: line 2: field 'completion': is empty",
        ),
        (
            [json.dumps({"messages": [user("a"), assistant("b"), user("c")]})],
            load_demonstrations,
            "prefs.jsonl: line 1: field 'messages': expected the conversation to end with the "
            "assistant's demonstration",
        ),
        (
            [json.dumps({"prompt": [user("a"), assistant("b")], "completion": "c"})],
            load_demonstrations,
            "prefs.jsonl: line 1: field 'prompt': the prompt's last message must be the user's",
        ),
        (
            ['{"text": "p"}'],
            load_demonstrations,
            "prefs.jsonl: line 1: not demonstrations: expected the fields prompt, completion "
            "(prompt-completion); messages (messages); got text",
        ),
        (
            ['{"prompt": 1}'],
            load_prompts,
            "prefs.jsonl: line 1: field 'prompt': expected text or a list of messages, got int",
        ),
        ([], load_comparisons, "prefs.jsonl: empty: no records"),
        (["", "  "], load_prompts, "prefs.jsonl: empty: no records"),
        (  # PPO rolled out from nothing; all empty crashed in a reshape
            ['{"prompt": "Q: hi"}', '{"prompt": " "}'],
            load_prompts,
            "prefs.jsonl: line 2: field 'prompt': empty prompt",
        ),
        (
            ['{"prompt": "", "chosen": "a", "rejected": "b"}'],
            load_comparisons,
            "prefs.jsonl: line 1: field 'prompt': empty prompt",
        ),
    ],
)
def test_errors_name_the_file_line_and_field(tmp_path, lines, load, expected):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(DataError) as e:
        load(path)
    assert expected in str(e.value)
    assert str(tmp_path) in str(e.value)  # the path as given
    assert isinstance(e.value, ValueError) and isinstance(e.value, LabError)


@pytest.mark.parametrize("layout", ["parquet", "hf"])
def test_parquet_and_dataset_errors_name_the_row(tmp_path, layout):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a"}]
    rows[1]["rejected"] = None  # a column, null in row 2
    path = WRITERS[layout](tmp_path / "prefs", rows)
    with pytest.raises(DataError, match=r"prefs(\.parquet)?: row 2: field 'rejected': is null"):
        load_comparisons(path)


def test_unreadable_paths(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: no such file or folder"):
        load_prompts(tmp_path / "nope.jsonl")
    (tmp_path / "prefs.csv").write_text("prompt\np\n")
    with pytest.raises(DataError, match=r"prefs.csv: unknown kind of data file '.csv'"):
        load_prompts(tmp_path / "prefs.csv")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="folder: a folder, but not a dataset"):
        load_prompts(tmp_path / "folder")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="bad.parquet: not a readable parquet file"):
        load_prompts(tmp_path / "bad.parquet")
    (tmp_path / "bytes.jsonl").write_bytes(b'{"prompt": "a"}\n\xff\xfe\n')
    with pytest.raises(DataError, match="bytes.jsonl: line 2: not UTF-8 text"):
        load_prompts(tmp_path / "bytes.jsonl")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda d: (d / "state.json").write_text('{"_data_files": ['), "JSONDecodeError"),
        (lambda d: (d / "dataset_info.json").write_text('{"feat'), "JSONDecodeError"),
        (lambda d: (d / "state.json").write_text("[]"), "TypeError"),
        (lambda d: _cut(next(d.glob("*.arrow"))), "ArrowInvalid"),
    ],
)
def test_a_damaged_datasets_folder_is_a_one_line_error(tmp_path, damage, expected):
    """Each was a traceback from inside datasets or pyarrow."""
    from datasets import Dataset

    folder = tmp_path / "demos"
    Dataset.from_list([{"prompt": "Q: a\nA:", "completion": " b."}] * 4).save_to_disk(str(folder))
    assert len(load_demonstrations(folder)) == 4
    damage(folder)
    with pytest.raises(DataError, match=rf"demos: a damaged datasets folder \({expected}: ") as e:
        load_demonstrations(folder)
    assert "\n" not in str(e.value)


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """A micro workspace after pretraining, and small data files written from its world."""
    import torch

    from rlhf import pretrain
    from rlhf.config import load
    from rlhf.world import build_world

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("data")
    cfg = load("micro", workspace=str(root / "ws"))
    pretrain.train(cfg, progress=False)
    demos = build_world(cfg, progress=False).demonstrations("train")[:20]
    files = {
        "demos": write_jsonl(
            root / "demos", [{"prompt": d.prompt, "completion": " " + d.response} for d in demos]
        ),
        "kwise": write_jsonl(
            root / "kwise",
            [
                {
                    "prompt": d.prompt,
                    "responses": ["I do not know.", d.response, "Blue blue blue."],
                    "ranking": [1, 0, 2],
                }
                for d in demos
            ],
        ),
        "prompts": write_jsonl(
            root / "prompts", [{"prompt": [user(d.prompt[3:-3])]} for d in demos]
        ),
    }
    return cfg, files


def last_line(capsys) -> Path:
    return Path(capsys.readouterr().out.strip().splitlines()[-1])


def test_sft_rm_and_ppo_train_on_data_files(micro, capsys):
    from rlhf import sft
    from rlhf.runs import Run, read_eval

    cfg, files = micro
    ws = ["--workspace", cfg.workspace]
    assert cli.main([*ws, "sft", "--recipe", "micro", "--data", str(files["demos"])]) == 0
    sft_run = Run.open(last_line(capsys))
    report = read_eval(sft_run)
    assert sft_run.done and report["train_demonstrations"] == 18
    assert report["val_demonstrations"] == 2 and report["data"] == str(files["demos"])
    assert sft_run.raw_config()["sft"]["data"] == str(files["demos"])
    assert "data" not in sft_run.raw_config()["rm"]  # empty: left out, older runs still match

    # The RM on the K-wise file, from that SFT run (sft.data selects it, as --set sft_run would).
    rm_args = [*ws, "rm", "--recipe", "micro", "--data", str(files["kwise"])]
    rm_args += ["--set", f"sft.data={files['demos']}"]
    assert cli.main(rm_args) == 0
    out = capsys.readouterr().out
    assert "accuracy val_data" in out
    report = read_eval(Run.open(Path(out.strip().splitlines()[-1])))
    assert report["sft_run"] == str(sft_run.dir)
    assert report["comparisons/train"] == 18 and report["comparisons/val_data"] == 2
    assert report["pairs/val_data"] == 6 and 0 <= report["accuracy/val_data"] <= 1
    assert "accuracy/val_train_labelers" not in report

    # PPO's rollouts on the file's prompts (conversational: rendered as the world's).
    ppo_args = [*ws, "ppo", "--recipe", "micro", "--data", str(files["prompts"])]
    ppo_args += ["--set", f"sft.data={files['demos']}", "--set", f"rm.data={files['kwise']}"]
    assert cli.main(ppo_args) == 0
    ppo_run = Run.open(last_line(capsys))
    assert read_eval(ppo_run)["data_prompts"] == 20
    samples = ppo_run.samples()
    assert samples and all(s["prompt_id"].startswith("data-") for s in samples)
    assert all(s["gold_likert"] is None for s in samples)
    assert not any("objective/gold" in r for r in ppo_run.metrics())

    # The same file again: reused; once it changes, a new run.
    sft_args = [*ws, "sft", "--recipe", "micro", "--data", str(files["demos"])]
    assert cli.main(sft_args) == 0
    assert capsys.readouterr().out.startswith("reusing finished run")
    data_cfg = Run.open(sft_run.dir).config
    assert sft.stale(sft_run, data_cfg) is None
    files["demos"].write_text(files["demos"].read_text() + files["demos"].read_text())
    assert "has changed since the run trained on it" in sft.stale(sft_run, data_cfg)


def test_bad_data_is_one_line_and_leaves_no_run(micro, tmp_path, capsys):
    from rlhf.runs import list_runs

    cfg, _ = micro
    bad = write_jsonl(tmp_path / "bad", [{"prompt": "p", "completion": 3}])
    before = [r.dir for r in list_runs(cfg.workspace_dir)]
    assert (
        cli.main(["--workspace", cfg.workspace, "sft", "--recipe", "micro", "--data", str(bad)])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {bad}: line 1: field 'completion': expected text or a list of messages, got int"
    ]
    assert [r.dir for r in list_runs(cfg.workspace_dir)] == before


def test_rm_data_of_one_comparison_is_refused_before_any_run(micro, tmp_path, capsys):
    """It trained on the one comparison and held none out: an RM with no accuracy at all."""
    from rlhf.runs import list_runs

    cfg, files = micro
    one = write_jsonl(tmp_path / "one", [json.loads(files["kwise"].read_text().splitlines()[0])])
    before = [r.dir for r in list_runs(cfg.workspace_dir)]
    args = ["--workspace", cfg.workspace, "rm", "--recipe", "micro", "--data", str(one)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {one}: 1 comparison; rm.data needs at ")
    assert [r.dir for r in list_runs(cfg.workspace_dir)] == before


def test_demonstrations_whose_prompts_fill_the_context_are_counted_or_refused(
    micro, tmp_path, capsys
):
    """TRL drops them silently; with none left it was a num_samples=0 traceback after the run
    had started. Every prompt too long: an error before any run; some: a note with the count."""
    from rlhf import sft
    from rlhf.config import load
    from rlhf.errors import DataError
    from rlhf.runs import list_runs

    cfg, _ = micro
    long = "Q: " + " ".join(["word"] * 2000) + "\nA:"
    rows = [{"prompt": long, "completion": " yes."}] * 8
    path = write_jsonl(tmp_path / "long", rows)
    before = [r.dir for r in list_runs(cfg.workspace_dir)]
    with pytest.raises(DataError, match=r"long.jsonl: every training prompt is \d+ tokens or"):
        sft.train(load("micro", [f"sft.data={path}"], workspace=cfg.workspace), progress=False)
    assert [r.dir for r in list_runs(cfg.workspace_dir)] == before

    base = sft.base_model_dir(cfg)
    short = [{"prompt": "Q: hi\nA:", "completion": " hello."}] * 8
    train = sft.Dataset.from_list(rows[:3] + short)
    sft.check_prompt_lengths("mixed.jsonl", train, base, cfg.sft.max_length)
    err = capsys.readouterr().err
    assert "note: 3 of 11 training demonstrations of mixed.jsonl have prompts of" in err
