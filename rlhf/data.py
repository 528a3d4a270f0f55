"""External data in the lab's own types: demonstrations, comparisons and prompts from files.

    load_demonstrations(path) -> [(prompt, completion)]   SFT      (rlhf sft --data PATH)
    load_comparisons(path)    -> [Comparison]             the RM   (rlhf rm --data PATH)
    load_prompts(path)        -> [prompt]                 PPO      (rlhf ppo --data PATH)

A path is a JSONL file (one JSON object a line), a parquet file, or a folder written by
`datasets` save_to_disk (of a DatasetDict, its "train" split or its only one). The format is
told by the first record's fields, once per file (every record must then have them):

    demonstrations  prompt, completion          TRL prompt-completion, text or messages
                    messages                    TRL conversational; the last message is the
                                                assistant's demonstration
    comparisons     prompt, responses, ranking  "kwise": K responses ranked, 0 best, ties equal
                                                (what `rlhf export comparisons` writes)
                    prompt, chosen, rejected    "trl": TRL preference pairs, text or messages
                    chosen, rejected            "hh": Anthropic HH-RLHF transcripts
                                                ("\\n\\nHuman: ...\\n\\nAssistant: ..."), or
                                                TRL implicit-prompt pairs of message lists
    prompts         prompt                      text or messages (repeated prompts kept once)

Messages are TRL's conversational records, lists of {"role", "content"} with the roles system,
user and assistant. They are flattened into the world's chat text, one turn a line: a system
message as it is, a user turn "Q: ...", an assistant turn "A: ...", and the last user turn
through `rlhf.world.format_prompt`, so the prompt ends in "\\nA:" as the world's do:

    [system S, user U1, assistant A1, user U2]  ->  "S\\nQ: U1\\nA: A1\\nQ: U2\\nA:"

A response given as messages (assistant turns only) is their text, joined by newlines; a
demonstration's completion given as messages gets the leading space the world's completions
have (" A2"). Text prompts and completions are kept as they are: prompt + completion is the
training text, as in TRL. Comparison responses are stripped, as the lab store keeps them.

Every problem is a DataError (a ValueError) naming the file, the line (JSONL) or row (parquet,
datasets folder), counted from 1, and the field:

    prefs.jsonl: line 3: field 'chosen': expected text or a list of messages, got int
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rlhf.errors import DataError, StoreError
from rlhf.store import Comparison, validate
from rlhf.world.types import format_prompt

ROLES = ("system", "user", "assistant")
HH_HUMAN, HH_ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
DEMONSTRATION_FORMATS = {"prompt-completion": ("prompt", "completion"), "messages": ("messages",)}
COMPARISON_FORMATS = {  # detection order: the first whose fields the first record has
    "kwise": ("prompt", "responses", "ranking"),
    "trl": ("prompt", "chosen", "rejected"),
    "hh": ("chosen", "rejected"),
}
PROMPT_FORMATS = {"prompt": ("prompt",)}


# ----------------------------------------------------------------------------- reading records


def read_records(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line or row number from 1, record) for every record of a .jsonl file, a .parquet file
    or a datasets folder (save_to_disk). Blank JSONL lines are skipped (and counted)."""
    p = Path(path)
    if p.is_dir():
        records = _read_dataset(p)
    elif not p.exists():
        raise DataError(f"{p}: no such file or folder")
    elif p.suffix == ".jsonl":
        records = _read_jsonl(p)
    elif p.suffix == ".parquet":
        records = _read_parquet(p)
    else:
        raise DataError(
            f"{p}: unknown kind of data file '{p.suffix}': expected .jsonl, .parquet or a "
            "folder written by datasets' save_to_disk"
        )
    empty = True
    for n, record in records:
        empty = False
        yield n, record
    if empty:
        raise DataError(f"{p}: empty: no records")


def where(path: str | os.PathLike, n: int) -> str:
    """Where record n is, e.g. "prefs.jsonl: line 3" or "prefs.parquet: row 3"."""
    unit = "line" if Path(path).suffix == ".jsonl" and not Path(path).is_dir() else "row"
    return f"{path}: {unit} {n}"


def _read_jsonl(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{where(p, n)}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{where(p, n)}: not valid JSON: {e.msg} (column {e.colno})"
                ) from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{where(p, n)}: expected a JSON object, got {type(record).__name__}"
                )
            yield n, record


def _read_parquet(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(p).iter_batches()
        n = 0
        for batch in batches:
            for record in batch.to_pylist():  # lists and structs as Python lists and dicts
                n += 1
                yield n, record
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{p}: not a readable parquet file ({e})") from None


def _read_dataset(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow as pa
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(p))
    except FileNotFoundError:
        raise DataError(
            f"{p}: a folder, but not a dataset written by datasets' save_to_disk"
        ) from None
    except (ValueError, TypeError, KeyError, OSError, pa.ArrowException) as e:
        # A truncated state.json or dataset_info.json (JSONDecodeError), a cut .arrow file
        # (ArrowInvalid), a state.json of the wrong shape (TypeError): tracebacks before.
        raise DataError(
            f"{p}: a damaged datasets folder ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None
    if isinstance(ds, DatasetDict):
        splits = list(ds)
        if "train" not in ds and len(splits) != 1:
            raise DataError(f"{p}: a DatasetDict without a 'train' split (splits: {splits})")
        ds = ds["train" if "train" in ds else splits[0]]
    yield from enumerate(ds, 1)


def fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a data file, or of a folder's files (their names and bytes): runs record it, to
    tell later that the file changed under the same path."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        h.update(str(f.relative_to(p)).encode() if p.is_dir() else b"")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def data_changed(report: dict[str, Any], path: str | os.PathLike) -> str | None:
    """Why a finished run that trained on `path` should not be reused (the file changed since:
    its fingerprint differs from the report's `data_sha256`), else None."""
    before = report.get("data_sha256")
    if before and before != fingerprint(path):
        return f"{path} has changed since the run trained on it"
    return None


# ----------------------------------------------------------------------------- fields


class _Bad(ValueError):
    """A field's problem; the record loop adds the file and line."""

    def __init__(self, field: str, problem: str):
        super().__init__(field, problem)
        self.field, self.problem = field, problem


def _kind(value: Any) -> str:
    return type(value).__name__


def _get(record: dict[str, Any], field: str) -> Any:
    if record.get(field) is None:
        raise _Bad(field, "missing" if field not in record else "is null")
    return record[field]


def _text_or_messages(record: dict[str, Any], field: str) -> str | list[dict[str, str]]:
    value = _get(record, field)
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _Bad(field, f"expected text or a list of messages, got {_kind(value)}")
    return _messages(value, field)


def _messages(value: Any, field: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else _kind(value)
        raise _Bad(field, f"expected a list of messages ({{role, content}}), got {got}")
    for k, m in enumerate(value, 1):
        if not (
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
        ):
            raise _Bad(field, f"message {k}: expected {{role, content}} as text, got {str(m)[:60]}")
        if m["role"] not in ROLES:
            raise _Bad(field, f"message {k}: role {m['role']!r} is not one of {', '.join(ROLES)}")
    return value


def render_prompt(messages: list[dict[str, str]], field: str = "prompt") -> str:
    """The world's chat text of a conversation that ends with the user's turn (module docstring)."""
    *history, last = messages
    if last["role"] != "user":
        raise _Bad(field, f"the prompt's last message must be the user's, got {last['role']!r}")
    template = {"system": "{}", "user": "Q: {}", "assistant": "A: {}"}
    lines = [template[m["role"]].format(m["content"]) for m in history]
    return "\n".join([*lines, format_prompt(last["content"])])


def _response_text(messages: list[dict[str, str]], field: str) -> str:
    for k, m in enumerate(messages, 1):
        if m["role"] != "assistant":
            raise _Bad(field, f"message {k}: a response is the assistant's, got {m['role']!r}")
    return "\n".join(m["content"] for m in messages)


def _prompt(record: dict[str, Any], field: str = "prompt") -> str:
    value = _text_or_messages(record, field)
    text = value if isinstance(value, str) else render_prompt(value, field)
    if not text.strip():  # PPO rolled out from nothing, or (all empty) crashed in a reshape
        raise _Bad(field, "empty prompt")
    return text


def _response(record: dict[str, Any], field: str) -> str:
    value = _text_or_messages(record, field)
    return (value if isinstance(value, str) else _response_text(value, field)).strip()


# ----------------------------------------------------------------------------- formats


def _detect(
    path: str | os.PathLike,
    n: int,
    record: dict[str, Any],
    formats: dict[str, tuple[str, ...]],
    what: str,
) -> str:
    """The first format whose fields `record` (the file's first) has; else what was expected."""
    present = {k for k, v in record.items() if v is not None}
    for name, fields in formats.items():
        if present >= set(fields):
            return name
    expected = "; ".join(
        ", ".join(fields) + (f" ({name})" if len(formats) > 1 else "")
        for name, fields in formats.items()
    )
    raise DataError(
        f"{where(path, n)}: not {what}: expected the fields {expected}; "
        f"got {', '.join(sorted(record)) or 'none'}"
    )


def _load(
    path: str | os.PathLike,
    formats: dict[str, tuple[str, ...]],
    what: str,
    parsers: dict[str, Callable[[dict[str, Any]], Any]],
    format: str | None = None,  # noqa: A002
) -> list[Any]:
    """Parse every record with the file's format (detected from the first record, or given)."""
    if format is not None and format not in formats:
        raise DataError(f"unknown format {format!r} for {what} (one of {', '.join(formats)})")
    out = []
    fmt = format
    for n, record in read_records(path):
        fmt = fmt or _detect(path, n, record, formats, what)
        try:
            out.append(parsers[fmt](record))
        except _Bad as e:
            raise DataError(f"{where(path, n)}: field '{e.field}': {e.problem}") from None
        except StoreError as e:  # rlhf.store.validate: "record 0: field 'x': ..."
            raise DataError(f"{where(path, n)}: {str(e).removeprefix('record 0: ')}") from None
    return out


def load_demonstrations(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(prompt, completion) pairs; prompt + completion is the text SFT trains on."""

    def prompt_completion(record: dict[str, Any]) -> tuple[str, str]:
        prompt = _prompt(record)
        completion = _text_or_messages(record, "completion")
        if not isinstance(completion, str):
            completion = " " + _response_text(completion, "completion").strip()
        if not completion.strip():
            raise _Bad("completion", "is empty")
        return prompt, completion

    def messages(record: dict[str, Any]) -> tuple[str, str]:
        turns = _messages(_get(record, "messages"), "messages")
        if turns[-1]["role"] != "assistant" or len(turns) < 2:
            raise _Bad(
                "messages",
                "expected the conversation to end with the assistant's demonstration after "
                f"a user turn, got {len(turns)} message(s) ending with {turns[-1]['role']!r}",
            )
        completion = turns[-1]["content"].strip()
        if not completion:
            raise _Bad("messages", "the assistant's demonstration is empty")
        return render_prompt(turns[:-1], "messages"), " " + completion

    parsers = {"prompt-completion": prompt_completion, "messages": messages}
    return _load(path, DEMONSTRATION_FORMATS, "demonstrations", parsers)


def load_comparisons(
    path: str | os.PathLike,
    labeler: str | None = None,
    format: str | None = None,  # noqa: A002
) -> list[Comparison]:
    """Comparisons for the RM, each checked by `rlhf.store.validate`. A pair (TRL or HH) is a
    comparison of 2 responses, chosen ranked 0. `labeler` and `source` come from the record's
    fields if it has them, else `labeler` (default: the file's name without its suffix) and
    "human". `format` is "kwise", "trl" or "hh" (default: told by the first record's fields)."""
    default_labeler = labeler or Path(path).stem

    def comparison(record: dict[str, Any], prompt: str, responses: list[str], ranking: Any):
        c = Comparison(
            prompt,
            responses,
            ranking,
            labeler=default_labeler if record.get("labeler") is None else record["labeler"],
            source="human" if record.get("source") is None else record["source"],
        )
        validate(c)
        return c

    def kwise(record: dict[str, Any]) -> Comparison:
        prompt, responses = _prompt(record), _get(record, "responses")
        if not isinstance(responses, list):
            raise _Bad("responses", f"expected a list of texts, got {_kind(responses)}")
        for k, r in enumerate(responses):
            if not isinstance(r, str):
                raise _Bad("responses", f"response {k} must be text, got {_kind(r)}")
        return comparison(record, prompt, [r.strip() for r in responses], _get(record, "ranking"))

    def trl(record: dict[str, Any]) -> Comparison:
        prompt = _prompt(record)
        chosen, rejected = _response(record, "chosen"), _response(record, "rejected")
        if chosen == rejected:
            raise _Bad("rejected", "the same text as 'chosen': nothing to prefer")
        return comparison(record, prompt, [chosen, rejected], [0, 1])

    def hh(record: dict[str, Any]) -> Comparison:
        chosen = _text_or_messages(record, "chosen")
        rejected = _text_or_messages(record, "rejected")
        if isinstance(chosen, str) != isinstance(rejected, str):
            raise _Bad("rejected", "expected the same kind as 'chosen' (text or messages)")
        if isinstance(chosen, str):
            prompt, responses = _split_transcripts(chosen, rejected)
        else:
            prompt, responses = _split_conversations(chosen, rejected)
        if responses[0] == responses[1]:
            raise _Bad("rejected", "the same text as 'chosen': nothing to prefer")
        return comparison(record, prompt, responses, [0, 1])

    parsers = {"kwise": kwise, "trl": trl, "hh": hh}
    return _load(path, COMPARISON_FORMATS, "comparisons", parsers, format)


def _split_transcripts(chosen: str, rejected: str) -> tuple[str, list[str]]:
    """HH-RLHF: the shared prefix up to and including its last "\\n\\nAssistant:" is the prompt;
    what follows in each transcript is that response (its final assistant turn)."""
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(HH_ASSISTANT)
    if cut < 0:
        raise _Bad(
            "rejected",
            "does not share a prefix ending in '\\n\\nAssistant:' with 'chosen' (HH-RLHF "
            "transcripts differ only in the last assistant turn)",
        )
    cut += len(HH_ASSISTANT)
    responses = [chosen[cut:].strip(), rejected[cut:].strip()]
    for field, r in zip(("chosen", "rejected"), responses, strict=True):
        if HH_HUMAN in r:
            raise _Bad(field, "the transcripts differ before the last assistant turn")
    return chosen[:cut], responses


def _split_conversations(chosen: list, rejected: list) -> tuple[str, list[str]]:
    """TRL implicit prompt: the same messages, then one assistant message each."""
    for field, turns in (("chosen", chosen), ("rejected", rejected)):
        if turns[-1]["role"] != "assistant" or len(turns) < 2:
            raise _Bad(field, "expected a conversation ending with the assistant's response")
    if chosen[:-1] != rejected[:-1]:
        raise _Bad("rejected", "differs from 'chosen' before the last (assistant) message")
    return render_prompt(chosen[:-1], "chosen"), [
        chosen[-1]["content"].strip(),
        rejected[-1]["content"].strip(),
    ]


def load_prompts(path: str | os.PathLike) -> list[str]:
    """Prompts for PPO's rollouts, each once, in file order (a pairs file repeats them)."""
    prompts = _load(path, PROMPT_FORMATS, "prompts", {"prompt": _prompt})
    return list(dict.fromkeys(prompts))


__all__ = [
    "DataError",
    "data_changed",
    "fingerprint",
    "load_comparisons",
    "load_demonstrations",
    "load_prompts",
    "read_records",
    "render_prompt",
]
