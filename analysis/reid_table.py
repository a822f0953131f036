"""The report's re-ID table, in the layout of the Market-1501 table of Shao & Chen, 2021 (Setting |
Data set | Method | Backbone | Rank1 | mAP): one row per study's selected config, naming the data
set it ran on, with the paper's published Market-1501 rows for the same backbones beside the
Market-1501 studies (its rows for other backbones are left out, and the note says how many)."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from analysis.formats import fmt_number
from mgkd.catalog.methods import MODES, mode_has_levels

if TYPE_CHECKING:
    from analysis.best import StudyBest

RANK1, MAP = "test_rank1", "test_map"  # the ``mgkd best --format json`` keys the cells show
PAPER = "Shao & Chen, 2021"  # how the report names the paper, everywhere
PAPER_DATASET = "market1501"  # the data set of the paper's re-ID table


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's Market-1501 table (as its README lists it)."""

    setting: int
    method: str
    backbone: str
    rank1: float
    map: float
    arch: str  # the model it reports, as :func:`arch_key` spells our zoo's names


PAPER_MARKET1501: tuple[PaperRow, ...] = (
    PaperRow(1, "Vanilla", "ResNet50", 88.84, 71.59, "resnet50"),
    PaperRow(2, "Vanilla", "DenseNet121", 90.17, 74.02, "densenet121"),
    PaperRow(3, "Circle loss", "DenseNet121", 91.00, 76.54, "densenet121"),
    PaperRow(4, "HA-CNN", "Inception", 90.90, 75.60, "inception"),
    PaperRow(5, "MLFN", "ResNeXt", 90.10, 74.30, "resnext"),
    PaperRow(6, "PCB", "ResNet50", 92.64, 77.47, "resnet50"),
    PaperRow(7, "OSNetx0.75", "OSNet", 93.60, 82.50, "osnetx075"),
    PaperRow(8, "OSNetx1.0", "OSNet", 94.10, 82.90, "osnetx10"),
    PaperRow(9, "MAS_RKD(T:2)", "ResNet50", 91.09, 79.43, "resnet50"),
    PaperRow(10, "MAS_RKD(T:8)", "OSNetx0.75", 94.50, 84.30, "osnetx075"),
)
_ALIASES = {"osnetx1": "osnetx10", "osnet": "osnetx10"}
NOTE = ("Rank1 / mAP: test (query against gallery, %) of each study's selected config at its "
        "final epoch; it was selected on the validation split's {objective}, never on test. "
        "Muted rows: {paper}'s Market-1501 rows for the backbones shown ({shown} of its "
        "{total}); they come from its own training recipe and initialisation, so compare with "
        "care.")

NOTE_OURS = ("Rank1 / mAP: test (query against gallery, %) of each study's selected config at its "
             "final epoch; it was selected on the validation split's {objective}, never on test.")


def arch_key(name: str) -> str:
    """A model name reduced for matching: ``osnet_x0_75`` and ``OSNetx0.75`` both give
    ``osnetx075``; a ``reid`` tag is dropped."""
    key = re.sub(r"[^a-z0-9]", "", name.lower()).replace("reid", "")
    return _ALIASES.get(key, key)


def paper_rows(arch: str) -> list[PaperRow]:
    """The paper's rows whose model is ``arch`` (none for backbones it did not report)."""
    key = arch_key(arch)
    return [row for row in PAPER_MARKET1501 if row.arch == key]


def method_label(best: StudyBest) -> str:
    """``MAS_RKD`` style, as the paper writes its rows, with the teacher."""
    s = best.study
    name = (s.method.upper() if s.mode in MODES and not mode_has_levels(s.mode)
            else f"{s.mode.upper()}_{s.method.upper()}")
    return f"{name} (teacher {s.teacher})"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def dataset_of(best: StudyBest) -> str:
    """The data set the study ran on, from its base config ("?" when the run dir lacks it)."""
    return str((best.study.base or {}).get("dataset", "?"))


def _ours(best: StudyBest) -> str:
    d, key = best.to_dict(), best.study.key
    cell = lambda field: (f'<td data-study="{_e(key)}" data-field="{field}">'
                          f"{_e(fmt_number(d.get(field)))}</td>")
    return (f'<tr><td><a href="#{_e(key)}">this sweep</a></td><td>{_e(dataset_of(best))}</td>'
            f"<td>{_e(method_label(best))}</td><td>{_e(best.study.student)}</td>"
            f"{cell(RANK1)}{cell(MAP)}</tr>")


def _paper(row: PaperRow) -> str:
    return (f'<tr class="muted"><td>{_e(PAPER)}, setting {row.setting}</td><td>{PAPER_DATASET}</td>'
            f"<td>{_e(row.method)}</td><td>{_e(row.backbone)}</td><td>{row.rank1:.2f}</td>"
            f"<td>{row.map:.2f}</td></tr>")


def reid_table(bests: list[StudyBest]) -> str:
    """The table for the re-ID studies among ``bests`` (empty text when there are none)."""
    reid = [b for b in bests if b.objective.task == "reid"]
    if not reid:
        return ""
    rows, shown = [], 0
    for dataset, student in dict.fromkeys((dataset_of(b), b.study.student) for b in reid):
        rows += [_ours(b) for b in reid if (dataset_of(b), b.study.student) == (dataset, student)]
        if dataset == PAPER_DATASET:
            published = paper_rows(student)
            rows += [_paper(row) for row in published]
            shown += len(published)
    head = ("<tr><th>Setting</th><th>Data set</th><th>Method</th><th>Backbone</th><th>Rank1</th>"
            "<th>mAP</th></tr>")
    note = (NOTE.format(objective=reid[0].objective.name, paper=PAPER, shown=shown,
                        total=len(PAPER_MARKET1501)) if shown else NOTE_OURS.format(
        objective=reid[0].objective.name))
    return (f'<div class="wide"><table>{head}{"".join(rows)}</table></div>'
            f'<p class="muted">{_e(note)}</p>')
