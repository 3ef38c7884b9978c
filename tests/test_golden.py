"""Golden files: what users see and what committed results hold must not change by accident.

`--help` of every command, the resolved config of every family and preset, the committed records read
and written back, and the study reports re-rendered from the committed results.json. After an intended change, rewrite the golden files with
`BLOODGEN_UPDATE_GOLDEN=1 pytest tests/test_golden.py` and review their diff like code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import pytest

from bloodgen.cli import build_parser
from bloodgen.models.config import load_presets
from bloodgen.models.registry import model_names
from bloodgen.study.layout import StudyResults
from bloodgen.training.checkpoint import ExportMeta
from bloodgen.training.records import RunSummary, read_log

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).parents[1]
UPDATE = os.environ.get("BLOODGEN_UPDATE_GOLDEN") == "1"


def check(path: Path, text: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"no golden file {path.relative_to(ROOT)}: run with BLOODGEN_UPDATE_GOLDEN=1 to write it"
    assert text == path.read_text(), (f"{path.relative_to(ROOT)} changed; if intended, rewrite it with "
                                      f"BLOODGEN_UPDATE_GOLDEN=1 and review the diff")


def _parsers(parser: argparse.ArgumentParser, name: str = "bloodgen"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_command_help_is_as_recorded(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps to the terminal's width
    texts = {name: parser.format_help() for name, parser in _parsers(build_parser())}
    for name, text in texts.items():
        check(GOLDEN / "help" / f"{name.replace(' ', '_')}.txt", text)
    if not UPDATE:
        recorded = {p.stem for p in (GOLDEN / "help").glob("*.txt")}
        assert recorded == {n.replace(" ", "_") for n in texts}, "a command was added or removed"


def test_every_family_and_preset_resolves_to_the_recorded_config():
    configs = {model: load_presets(model) for model in model_names()}
    check(GOLDEN / "configs.json", json.dumps(configs, indent=1, sort_keys=True) + "\n")


@pytest.mark.parametrize("study", ["results/record", "results"])
def test_committed_study_reports_re_render_byte_for_byte(study, tmp_path, real_npz):
    """The report is a function of results.json and the run folders: re-rendered in a copy (figures are
    written beside it), report.md comes out identical to the committed one."""
    from bloodgen.data import load_bloodmnist
    from bloodgen.study.report import write_study_report

    source = ROOT / study
    copy = tmp_path / "study"
    copy.mkdir()
    for child in source.iterdir():
        if child.is_dir() and child.name != "figures":
            (copy / child.name).symlink_to(child)
    shutil.copy2(source / "results.json", copy / "results.json")
    write_study_report(StudyResults.load(copy), load_bloodmnist(real_npz), copy)
    assert (copy / "report.md").read_text() == (source / "report.md").read_text()


def _committed(name: str, has: str | None = None) -> list[Path]:
    """Committed files called `name` (with a sibling `has`), where results and shipped models live."""
    found = [p for top in ("results", "benchmarks/results", "src/bloodgen/pretrained") for p in (ROOT / top).rglob(name)]
    return sorted(p for p in found if has is None or (p.parent / has).is_file())


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


STUDIES = [p for p in _committed("results.json") if "families" in json.loads(p.read_text())]


@pytest.mark.parametrize("path", STUDIES, ids=_ids(STUDIES))
def test_committed_study_results_read_and_write_back_unchanged(path):
    record = json.loads(path.read_text())
    assert json.dumps(StudyResults.from_json(record).to_json()) == json.dumps(record)  # key order included


RECORDS = [(ExportMeta, p) for p in _committed("model.json", has="model.safetensors")] + \
          [(RunSummary, p) for p in _committed("summary.json", has="config.json")]


@pytest.mark.parametrize("kind, path", RECORDS, ids=_ids([p for _, p in RECORDS]))
def test_committed_run_records_read_and_write_back_to_the_same_record(kind, path):
    """Older files are upgraded once on reading (defaults of newer keys, portable paths); after that a
    record written and read again is the same record."""
    record = kind.from_dict(json.loads(path.read_text()))
    assert kind.from_dict(json.loads(json.dumps(record.to_dict()))) == record


LOGS = _committed("log.jsonl", has="config.json")  # training runs' logs (not the cell-feature autoencoders')


@pytest.mark.parametrize("path", LOGS, ids=_ids(LOGS))
def test_committed_training_logs_read_and_write_back_unchanged(path):
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert [row.to_json() for row in read_log(path.parent)] == lines and lines


def test_the_committed_records_are_found():
    assert len(STUDIES) >= 3 and sum(kind is ExportMeta for kind, _ in RECORDS) >= 25 and \
        sum(kind is RunSummary for kind, _ in RECORDS) >= 20 and len(LOGS) >= 20
