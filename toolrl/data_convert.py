"""`toolrl data convert`: tasks from any file `datasets` reads (parquet, JSON/JSONL, CSV, arrow).

A field mapping says which column is the question, which the answer, and
where the system prompt and tools come from; every row becomes one task.
GSM8K's parquet files, for example::

    toolrl data convert gsm8k/train-00000-of-00001.parquet --out data/gsm8k_train.jsonl \\
        --question question --answer answer --answer-regex '####\\s*(.+)$' \\
        --system "Solve the problem. End with the answer after four hashes: #### N"

gives tasks with `metadata.answer = "72"` (the regex's first group) and the
full worked solution kept as `metadata.solution`. A problem in a row is an
error naming the row and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolrl.errors import TaskFormatError, ToolrlError
from toolrl.types import Task

FORMATS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv",
           ".arrow": "arrow", ".txt": "text"}


@dataclass(frozen=True)
class FieldMapping:
    """Which columns make a task.

    Attributes:
        question: column with the user's question (required).
        answer: column with the reference answer, stored as `metadata.answer` (optional).
        answer_regex: take the answer from this regex's first group (or whole match) in that column;
            the whole column value is then kept as `metadata.solution`.
        system: a system prompt for every task (text).
        system_field: a column holding each row's system prompt (instead of `system`).
        tools: tool schemas (OpenAI function format) for every task.
        tools_field: a column with each row's tools: a list, or a JSON string of one.
        env: environment that runs the tools (e.g. `python`), for every task.
        id_field: column with a unique id; default `<file stem>-<row>`.
        metadata_fields: more columns copied into `metadata` under their own names.
        prompt_template: how the question is put to the model; `{question}` is replaced.
    """

    question: str = "question"
    answer: str | None = "answer"
    answer_regex: str | None = None
    system: str | None = None
    system_field: str | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    tools_field: str | None = None
    env: str | None = None
    id_field: str | None = None
    metadata_fields: tuple[str, ...] = field(default_factory=tuple)
    prompt_template: str = "{question}"


def load_rows(path: str | Path, fmt: str | None = None, split: str = "train") -> Any:
    """The file as a `datasets.Dataset` (a folder written by `save_to_disk` works too)."""
    try:
        import datasets
    except ImportError:
        raise ToolrlError("`toolrl data convert` needs the 'datasets' package", where="toolrl data convert",
                          fix="pip install 'toolrl[data]'") from None
    p = Path(path)
    if p.is_dir() and (p / "dataset_info.json").exists():
        ds = datasets.load_from_disk(str(p))
        return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    if not p.exists():
        raise ToolrlError(f"no such file: {p}", where="toolrl data convert INPUT", fix="check the path")
    builder = fmt or FORMATS.get(p.suffix.lower())
    if builder is None:
        raise ToolrlError(f"cannot tell the format of {p.name!r} from its extension", where="toolrl data convert",
                          fix=f"pass --format with one of {', '.join(sorted(set(FORMATS.values())))}")
    kwargs = {"delimiter": "\t"} if p.suffix.lower() == ".tsv" and builder == "csv" else {}
    try:
        return datasets.load_dataset(builder, data_files=str(p), split=split, **kwargs)
    except Exception as exc:  # the library's own message says what it could not parse
        raise ToolrlError(f"datasets could not read {p} as {builder}: {type(exc).__name__}: {exc}",
                          where=str(p), fix="check the file, or pass the right --format") from None


def _check_columns(columns: Sequence[str], mapping: FieldMapping, where: str) -> None:
    import difflib

    wanted = [("--question", mapping.question), ("--answer", mapping.answer), ("--system-field", mapping.system_field),
              ("--tools-field", mapping.tools_field), ("--id-field", mapping.id_field)]
    wanted += [("--metadata", m) for m in mapping.metadata_fields]
    for flag, col in wanted:
        if col is not None and col not in columns:
            close = difflib.get_close_matches(col, list(columns), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ToolrlError(f"{flag} names the column {col!r}, which the file does not have "
                              f"(columns: {', '.join(columns)})", where=where, fix=f"{hint}pass {flag} COLUMN")


def _text(row: Mapping[str, Any], col: str, i: int, where: str) -> str:
    v = row.get(col)
    if v is None or (isinstance(v, str) and not v.strip()):
        raise TaskFormatError(f"row {i}: field {col!r} is empty", where=where,
                              fix="fill it in, or filter the rows before converting")
    if isinstance(v, (dict, list)):
        raise TaskFormatError(f"row {i}: field {col!r} holds a {type(v).__name__}, not text", where=where,
                              fix="map a text column to it")
    return str(v)


def _tools(row: Mapping[str, Any], col: str, i: int, where: str) -> tuple[Mapping[str, Any], ...]:
    v = row.get(col)
    if v is None or v == "":
        return ()
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError as exc:
            raise TaskFormatError(f"row {i}: field {col!r} is not valid JSON ({exc.msg} at char {exc.pos})",
                                  where=where, fix="store the tools as a JSON list of function schemas") from None
    if not isinstance(v, list) or not all(isinstance(t, Mapping) for t in v):
        raise TaskFormatError(f"row {i}: field {col!r} must be a list of tool schemas, got {type(v).__name__}",
                              where=where, fix='e.g. [{"type": "function", "function": {"name": ...}}]')
    return tuple(v)


def _json_value(v: Any) -> Any:
    """Column values as JSON types (numpy/arrow scalars and dates become numbers/strings)."""
    try:
        json.dumps(v, allow_nan=False)
        return v
    except (TypeError, ValueError):
        return v.item() if hasattr(v, "item") else str(v)


def convert_rows(rows: Any, mapping: FieldMapping, *, source: str = "tasks", limit: int | None = None) -> list[Task]:
    """Tasks from the rows of a dataset (anything with `column_names` and iteration of dicts, or a list of dicts)."""
    columns = list(getattr(rows, "column_names", None) or (rows[0].keys() if len(rows) else []))
    where = f"toolrl data convert {source}"
    _check_columns(columns, mapping, where)
    if "{question}" not in mapping.prompt_template:
        raise ToolrlError("--prompt-template has no {question} placeholder", where=where,
                          fix='e.g. --prompt-template "{question}\\nEnd with #### N"')
    pattern = re.compile(mapping.answer_regex, re.S | re.M) if mapping.answer_regex else None
    stem = Path(source).stem or "task"
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        question = _text(row, mapping.question, i, where)
        messages: list[dict[str, str]] = []
        system = _text(row, mapping.system_field, i, where) if mapping.system_field else mapping.system
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": mapping.prompt_template.replace("{question}", question)})
        metadata: dict[str, Any] = {"source": source, "source_index": i}
        if mapping.answer:
            answer = _text(row, mapping.answer, i, where)
            if pattern is not None:
                m = pattern.search(answer)
                if m is None:
                    raise TaskFormatError(f"row {i}: field {mapping.answer!r} does not match --answer-regex "
                                          f"{mapping.answer_regex!r} (value: {answer[-80:]!r})", where=where,
                                          fix="fix the row, or loosen the regex")
                metadata["solution"] = answer
                answer = (m.group(1) if m.groups() else m.group(0)).strip()
                if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", answer):
                    answer = answer.replace(",", "")  # 1,000 -> 1000: a number, as rewards compare it
            metadata["answer"] = answer
        for col in mapping.metadata_fields:
            metadata[col] = _json_value(row.get(col))
        tools = _tools(row, mapping.tools_field, i, where) if mapping.tools_field else mapping.tools
        task_id = _text(row, mapping.id_field, i, where) if mapping.id_field else f"{stem}-{i:06d}"
        if task_id in seen:
            raise TaskFormatError(f"row {i}: field {mapping.id_field!r} repeats the id {task_id!r} of row "
                                  f"{seen[task_id]}", where=where, fix="ids must be unique; drop --id-field to number rows")
        seen[task_id] = i
        data = {"id": task_id, "messages": messages, "tools": [dict(t) for t in tools],
                "env": mapping.env if tools or mapping.env else None, "env_args": {}, "metadata": metadata}
        tasks.append(Task.from_dict(data, where=f"{where}, row {i}"))
    if not tasks:
        raise ToolrlError("the file has no rows", where=where, fix="check the file and --split")
    return tasks


def convert_command(path: str, *, out: str, fmt: str | None = None, split: str = "train", limit: int | None = None,
                    tools_file: str | None = None, **mapping: Any) -> Path:
    """What `toolrl data convert INPUT --out FILE [mapping options]` runs."""
    import sys

    from toolrl.data import write_tasks

    if tools_file:
        try:
            tools = json.loads(Path(tools_file).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ToolrlError(f"cannot read the tools file: {exc}", where=f"--tools {tools_file}",
                              fix="pass a JSON file holding a list of tool schemas") from None
        if not isinstance(tools, list):
            raise ToolrlError("the tools file must hold a JSON list of tool schemas", where=f"--tools {tools_file}",
                              fix='e.g. [{"type": "function", "function": {"name": "python", ...}}]')
        mapping["tools"] = tuple(tools)
    mapping["metadata_fields"] = tuple(mapping.get("metadata_fields") or ())
    tasks = convert_rows(load_rows(path, fmt, split), FieldMapping(**mapping), source=Path(path).name, limit=limit)
    written = write_tasks(tasks, out)
    print(f"wrote {len(tasks)} tasks from {path} to {written}", file=sys.stderr)
    return written
