"""`toolrl data convert`: files that `datasets` reads become tasks; round trips through real parquet/CSV/JSON/arrow."""

import json
import subprocess
import sys

import pytest

datasets = pytest.importorskip("datasets", reason="pip install 'toolrl[data]'")  # make setup installs it

from toolrl.data_convert import FieldMapping, convert_rows, load_rows  # noqa: E402
from toolrl.errors import TaskFormatError, ToolrlError  # noqa: E402
from toolrl.types import load_tasks  # noqa: E402

GSM_ROWS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"},
    {"question": "A shop sells 1,250 pens a week. How many in 2 weeks?",
     "answer": "1,250 * 2 = 2,500\n#### 2,500"},
]
PYTHON_TOOL = {"type": "function", "function": {"name": "python", "description": "Run Python code",
                                                "parameters": {"type": "object", "properties": {
                                                    "code": {"type": "string"}}, "required": ["code"]}}}


def toolrl(*args):
    return subprocess.run([sys.executable, "-m", "toolrl.cli", *args], capture_output=True, text=True, timeout=300)


def test_parquet_round_trip_through_the_command_line(tmp_path):
    src = tmp_path / "train-00000-of-00001.parquet"
    datasets.Dataset.from_list(GSM_ROWS).to_parquet(str(src))
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([PYTHON_TOOL]))
    out = tmp_path / "gsm.jsonl"
    r = toolrl("data", "convert", str(src), "--out", str(out), "--answer-regex", r"####\s*(.+)$",
               "--system", "Solve it. End with #### N", "--tools", str(tools), "--env", "python")
    assert r.returncode == 0, r.stderr
    assert "wrote 2 tasks" in r.stderr
    tasks = load_tasks(out)  # the task loader training uses accepts the file
    assert [t.metadata["answer"] for t in tasks] == ["72", "2500"]
    assert tasks[0].metadata["solution"] == GSM_ROWS[0]["answer"]
    assert tasks[0].messages == ({"role": "system", "content": "Solve it. End with #### N"},
                                 {"role": "user", "content": GSM_ROWS[0]["question"]})
    assert tasks[0].tools == (PYTHON_TOOL,) and tasks[0].env == "python"
    assert [t.id for t in tasks] == ["train-00000-of-00001-000000", "train-00000-of-00001-000001"]
    # and back: the tasks' questions and answers rebuild the source rows
    back = [{"question": t.messages[-1]["content"], "answer": t.metadata["solution"]} for t in tasks]
    assert back == GSM_ROWS


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".arrow"])
def test_other_formats_give_the_same_tasks(tmp_path, suffix):
    ds = datasets.Dataset.from_list([{"id": f"p{i}", "q": r["question"], "a": r["answer"], "level": i}
                                     for i, r in enumerate(GSM_ROWS)])
    path = tmp_path / f"rows{suffix}"
    if suffix == ".csv":
        ds.to_csv(str(path), index=False)
    elif suffix == ".jsonl":
        ds.to_json(str(path), lines=True)
    elif suffix == ".json":
        path.write_text(json.dumps([dict(r) for r in ds]))
    else:
        ds.save_to_disk(str(tmp_path / "saved"))
        path = next((tmp_path / "saved").glob("*.arrow"))
    mapping = FieldMapping(question="q", answer="a", answer_regex=r"####\s*(.+)$", id_field="id",
                           metadata_fields=("level",), prompt_template="{question}\nAnswer after ####.")
    tasks = convert_rows(load_rows(path), mapping, source=path.name)
    assert [(t.id, t.metadata["answer"], t.metadata["level"]) for t in tasks] == [("p0", "72", 0), ("p1", "2500", 1)]
    assert tasks[1].messages[-1]["content"].endswith("\nAnswer after ####.")


def test_saved_dataset_folder(tmp_path):
    datasets.Dataset.from_list(GSM_ROWS).save_to_disk(str(tmp_path / "saved"))
    tasks = convert_rows(load_rows(tmp_path / "saved"), FieldMapping(answer_regex=r"####\s*(.+)$"))
    assert len(tasks) == 2


def test_errors_name_the_row_and_the_field(tmp_path):
    rows = datasets.Dataset.from_list([GSM_ROWS[0], {"question": "", "answer": "#### 1"},
                                       {"question": "q", "answer": "no hashes here"}])
    with pytest.raises(TaskFormatError, match=r"row 1: field 'question' is empty"):
        convert_rows(rows, FieldMapping())
    with pytest.raises(TaskFormatError, match=r"row 1: field 'answer' does not match --answer-regex"):
        convert_rows(rows.select([0, 2]), FieldMapping(answer_regex=r"####\s*(.+)$"))
    with pytest.raises(ToolrlError, match=r"(?s)--question names the column 'questoin'.*did you mean 'question'"):
        convert_rows(rows, FieldMapping(question="questoin"))
    bad_tools = datasets.Dataset.from_list([{"question": "q", "answer": "1", "tools": "[{\"type\": \"function\""}])
    with pytest.raises(TaskFormatError, match=r"row 0: field 'tools' is not valid JSON"):
        convert_rows(bad_tools, FieldMapping(tools_field="tools"))
    dup = datasets.Dataset.from_list([{"id": "a", "question": "q", "answer": "1"}] * 2)
    with pytest.raises(TaskFormatError, match=r"row 1: field 'id' repeats the id 'a' of row 0"):
        convert_rows(dup, FieldMapping(id_field="id"))


def test_command_line_errors_exit_2(tmp_path):
    src = tmp_path / "x.parquet"
    datasets.Dataset.from_list(GSM_ROWS).to_parquet(str(src))
    r = toolrl("data", "convert", str(src), "--out", str(tmp_path / "o.jsonl"), "--question", "prompt")
    assert r.returncode == 2 and "--question names the column 'prompt'" in r.stderr and "columns: question, answer" \
        in r.stderr
    other = tmp_path / "x.xlsx"
    other.write_text("x")
    r = toolrl("data", "convert", str(other), "--out", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and "pass --format" in r.stderr
