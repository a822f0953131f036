"""``mgkd report``: a self-contained HTML page (``index.html`` with its PNGs beside it).

Across studies: the best-per-study table (the numbers of ``mgkd best``), a table in the layout of
the CIFAR-100 table of Shao & Chen, 2021 (rows: method x mode, columns: teacher -> student pairs)
and, for re-ID sweeps, one in the layout of its Market-1501 table (``analysis.reid_table``). Every
number is the sweep's objective (val_acc, or val_map / val_rank1 for re-ID) or its test metric. Per
study: the validation curves of the top trials, whether ASHA's rungs rank trials as their final
epoch does (``analysis.rungs``), the selected config beside the paper default, fANOVA
hyperparameter importances with their bootstrap spread (from enough complete trials only) and a
parallel-coordinates view. Tables and wide pictures scroll inside the page instead of running
past it. Every number cell carries ``data-study`` / ``data-field`` attributes naming the
``mgkd best --format json`` value it shows.
"""
from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.best import StudyBest, best_of_run
from analysis.board import board_order
from analysis.formats import fmt_number, fmt_value, run_objective, test_note, verdict_note
from analysis.importance import MIN_COMPLETE, RESAMPLE_TREES, study_importances
from analysis.optuna_db import log_sampled
from analysis.plots import curves_png, importance_png, param_order, parallel_png
from analysis.records import COMPLETE, PRUNED, Run, StudyInfo, TrialRecord
from analysis.reid_table import PAPER, reid_table
from analysis.rungs import Schedule, asha_check, check_sentence, read_schedule
from analysis.run import read_run
from analysis.rundir import OPTUNA_DB
from mgkd.catalog.methods import MODE_NAMES, MODES, mode_has_levels
from mgkd.catalog.objectives import Objective
from mgkd.io import atomic_write_text

log = logging.getLogger(__name__)
DEFAULT_TOP = 5
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.note { color: #8a4b00; } .muted { color: #777; } img { max-width: 100%; }
section { border-top: 2px solid #ddd; margin-top: 2em; }
.wide { max-width: 100%; overflow-x: auto; }
.wide img { max-width: none; }
th { font-weight: 600; }
"""


@dataclass
class Report:
    """The written page and its pictures."""

    index: Path
    images: list[Path] = field(default_factory=list)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _wide(content: str) -> str:
    """``content`` (a table, a wide picture) in a box as wide as the page that scrolls
    sideways when the content is wider: nothing runs past the page."""
    return f'<div class="wide">{content}</div>'


def _key(key: str) -> str:
    """A study key with line-break opportunities after each ``__`` (they are long)."""
    return "__<wbr>".join(_e(part) for part in key.split("__"))


def _num(study: str, name: str, text: str) -> str:
    return f'<td data-study="{_e(study)}" data-field="{_e(name)}">{_e(text)}</td>'


def _int_text(value: int | None) -> str:
    return "-" if value is None else str(value)


# ---- across studies ----------------------------------------------------------------------------
def summary_table(bests: list[StudyBest]) -> str:
    objective = run_objective(bests)
    name, test = objective.name, objective.test_metric
    head = ("<tr><th>study</th><th>complete</th><th>pruned</th><th>errored</th><th>running</th>"
            f"<th>best {name}</th><th>val se</th><th>its {test}</th><th>epochs</th><th>trial</th>"
            f"<th>selected by</th><th>paper default {name}</th><th>gain</th><th>verdict</th>"
            "<th>vs plain kd</th></tr>")
    rows = []
    for b in bests:
        d, key = b.to_dict(), b.study.key
        rows.append(
            f'<tr><td><a href="#{_e(key)}">{_key(key)}</a></td>'
            + _num(key, "complete", str(d["complete"])) + _num(key, "pruned", str(d["pruned"]))
            + _num(key, "errored", str(d["errored"]))
            + _num(key, "running", str(d["running"] + d["unknown"]))
            + _num(key, name, fmt_number(d[name]))
            + _num(key, "val_se", fmt_number(d["val_se"]))
            + _num(key, test, fmt_number(d[test]))
            + _num(key, "epochs", _int_text(d["epochs"]))
            + _num(key, "trial_number", _int_text(d["trial_number"]))
            + f"<td>{_e(d['selected_by'])}</td>"
            + _num(key, f"paper_default_{name}", fmt_number(d[f"paper_default_{name}"]))
            + _num(key, "gain_over_paper_default", fmt_number(d["gain_over_paper_default"], True))
            + _num(key, "verdict", d["verdict"])
            + _num(key, "gain_over_plain_kd", fmt_number(d["gain_over_plain_kd"], True)) + "</tr>")
    return _wide(f"<table>{head}{''.join(rows)}</table>")


def mode_label(method: str, mode: str) -> str:
    """``kd`` for a mode without levels (plain), ``kd + MAS`` for one with; ``kd (mode)`` for a
    mode this version does not know (an older run dir's)."""
    if mode not in MODES:
        return f"{method} ({mode})"
    return method if not mode_has_levels(mode) else f"{method} + {mode.upper()}"


def _row_keys(studies: list[StudyInfo]) -> list[tuple[str, str]]:
    methods = list(dict.fromkeys(s.method for s in studies))
    modes = sorted({s.mode for s in studies},
                   key=lambda m: (MODE_NAMES.index(m) if m in MODE_NAMES else len(MODE_NAMES), m))
    present = {(s.method, s.mode) for s in studies}
    return [(method, mode) for method in methods for mode in modes if (method, mode) in present]


def paper_table(bests: list[StudyBest]) -> str:
    """Rows method x mode, columns pairs; each cell the best objective value and its test
    metric (val_acc / test_acc for classification)."""
    objective = run_objective(bests)
    by_cell = {(b.study.method, b.study.mode, b.study.pair): b for b in bests}
    pairs = list(dict.fromkeys(b.study.pair for b in bests))
    labels = {b.study.pair: b.study.label for b in bests}  # a peer group's: "dml: a+b"
    head = "<tr><th>method</th>" + "".join(f"<th>{_e(labels[p])}</th>" for p in pairs) + "</tr>"
    rows = []
    for method, mode in _row_keys([b.study for b in bests]):
        label = mode_label(method, mode)
        cells = []
        for pair in pairs:
            b = by_cell.get((method, mode, pair))
            if b is None:
                cells.append('<td class="muted">—</td>')
                continue
            key = b.study.key
            cells.append(f'<td><span data-study="{_e(key)}" data-field="{objective.name}">'
                         f'{_e(fmt_number(b.value))}</span> / <span data-study="{_e(key)}" '
                         f'data-field="{objective.test_metric}">{_e(fmt_number(b.test_value))}'
                         "</span></td>")
        rows.append(f"<tr><td>{_e(label)}</td>{''.join(cells)}</tr>")
    return (_wide(f"<table>{head}{''.join(rows)}</table>")
            + "<p class=\"muted\">Each cell: best validation "
            f"{objective.label} ({objective.name}) / the {objective.test_metric} of that config "
            "(%). Rows: method and mode (plain: the method alone; MAG: granularity-wise; MAS: "
            "stable excitation).</p>")


# ---- per study ---------------------------------------------------------------------------------
def config_table(best: StudyBest) -> str:
    key = best.study.key
    paper = best.paper.params if best.paper else {}
    names = param_order([*best.params, *paper])
    rows = [f"<tr><td>{_e(n)}</td>"
            + (_num(key, f"params.{n}", fmt_value(best.params[n])) if n in best.params
               else "<td>-</td>")
            + f"<td>{_e(fmt_value(paper[n])) if n in paper else '-'}</td></tr>" for n in names]
    return _wide("<table><tr><th>hyperparameter</th><th>selected config</th><th>paper default"
                 "</th></tr>" + "".join(rows) + "</table>")


def warm_start_table(best: StudyBest) -> str:
    """The study's warm-started trials: where each config came from, and how it did here."""
    key = best.study.key
    rows = "".join(
        f"<tr><td>#{_e(row['trial_number'])}</td>"
        + _num(key, f"warm_start_source.{row['trial_number']}",
               f"warm-started from {row['source']}")
        + f"<td>{_e(row['state'])}</td><td>{_e(fmt_number(row['value']))}</td></tr>"
        for row in best.warm_start_rows())
    return (f"<h3>Warm start</h3><table><tr><th>trial</th><th>config from</th><th>state</th>"
            f"<th>{_e(best.objective.name)}</th></tr>{rows}</table>"
            '<p class="muted">Configs of earlier studies (the sweep file\'s warm_start), tried '
            "after the paper default.</p>")


def _img(out: Path, path: Path, alt: str, images: list[Path]) -> str:
    images.append(path)
    return f'<p><img src="{_e(path.relative_to(out).as_posix())}" alt="{_e(alt)}"></p>'


def study_section(run: Run, best: StudyBest, out: Path, top: int, images: list[Path],
                  schedule: Schedule | None = None) -> str:
    key = best.study.key
    trials = run.trials_of(key)
    parts = [f'<section id="{_e(key)}"><h2>{_e(key)}</h2>',
             f"<p>{best.counts[COMPLETE]} complete, {best.counts['PRUNED']} pruned, "
             f"{best.counts['FAIL']} errored, {best.counts['RUNNING'] + best.counts['UNKNOWN']} "
             f"running or unknown; epoch budget {_e(best.study.budget or '?')}.</p>"]
    parts += [f'<p class="note">{_e(note)}</p>' for note in best.notes]
    if best.warm_started:
        parts.append(warm_start_table(best))

    objective = best.objective
    shown = [t for t in board_order(trials) if t.history][:top]
    parts.append(f"<h3>Validation curves ({_e(objective.name)}) of the top {top} trials</h3>")
    if shown:
        path = curves_png(shown, best.paper, key, out / f"{key}-curves.png", objective)
        parts.append(_img(out, path, f"validation curves of {key}", images))
    else:
        parts.append('<p class="muted">No trial has reported an epoch yet.</p>')

    check = asha_check(trials, best.study.budget, schedule, objective.name)
    parts.append(f'<p class="asha">{_e(check_sentence(check, objective.name))}</p>')

    source = best.warm_start_source
    parts += ["<h3>Selected config</h3>",
              f'<p data-study="{_e(key)}" data-field="warm_start_source">warm-started from '
              f"{_e(source)}</p>" if source else "",
              config_table(best) if best.selected else
              '<p class="muted">No trial finished yet: nothing selected.</p>']
    parts += importance_part(run, key, out, images)
    parts += parallel_part(run, key, trials, out, images, objective)
    return "\n".join(parts) + "</section>"


def importance_part(run: Run, key: str, out: Path, images: list[Path]) -> list[str]:
    """fANOVA importances with their bootstrap spread, or why there are none."""
    parts = ["<h3>Hyperparameter importances</h3>"]
    found = study_importances(run.path / OPTUNA_DB, key)
    if not found.values:
        return parts + [f'<p class="muted">{_e(found.reason)}</p>']
    path = importance_png(found.values, key, out / f"{key}-importance.png", found.spread)
    parts.append(_img(out, path, f"hyperparameter importances of {key}", images))
    parts.append(_wide("<table><tr><th>hyperparameter</th><th>importance</th><th>± sd</th></tr>"
                       + "".join(f"<tr><td>{_e(n)}</td><td>{v:.3f}</td>"
                                 f"<td>{found.spread.get(n, 0.0):.3f}</td></tr>"
                                 for n, v in found.values.items()) + "</table>"))
    parts.append(f'<p class="muted">fANOVA (Optuna, seeded) over this study\'s {found.trials} '
                 f"complete trials (importances are shown from {MIN_COMPLETE} on; pruned and "
                 "errored trials have no final value). Error bars: ± 1 standard deviation over "
                 f"{found.resamples} bootstrap resamples of those trials ({RESAMPLE_TREES} trees "
                 "each); bars whose error bars overlap are not told apart.</p>")
    return parts


def parallel_part(run: Run, key: str, trials: list[TrialRecord], out: Path, images: list[Path],
                  objective: Objective) -> list[str]:
    """The parallel-coordinates picture (scrolling sideways when wider than the page)."""
    parts = ["<h3>Parallel coordinates</h3>"]
    names = param_order([n for t in trials for n in t.params])
    # what the figure draws: ended trials (complete or pruned) with a value
    drawable = [t for t in trials if t.params and t.objective_value is not None
                and t.state in (COMPLETE, PRUNED)]
    if len(drawable) < 2 or not names:
        return parts + [f'<p class="muted">Fewer than two ended trials with a '
                        f"{_e(objective.name)}: nothing to compare.</p>"]
    path = parallel_png(drawable, names, key, out / f"{key}-parallel.png",
                        log_params=log_sampled(run.path / OPTUNA_DB, key), objective=objective)
    tag = _img(out, path, f"parallel coordinates of {key}", images)
    parts.append(_wide(tag.removeprefix("<p>").removesuffix("</p>")))
    parts.append(f'<p class="muted">One line per trial. Axes: the hyperparameters the complete '
                 f"trials have (levels no complete trial uses are left out) and the "
                 f"{_e(objective.name)} at the last epoch, each ranged over the complete trials. "
                 "Pruned trials (faint grey) stopped at an ASHA rung, so their "
                 f"{_e(objective.name)} is an early value; values outside the complete trials' "
                 "range sit just past the axis ends.</p>")
    return parts


# ---- the page ----------------------------------------------------------------------------------
def render(run: Run, bests: list[StudyBest], out: Path, top: int, images: list[Path],
           finals: list | None = None) -> str:
    schedule = read_schedule(run.path)
    sections = [study_section(run, b, out, top, images, schedule) for b in bests]
    warnings = "".join(f"<li>{_e(n)}</li>" for n in run.notes)
    objective = run_objective(bests)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>MGKD-Tune report: {_e(run.name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Sweep {_e(run.name)}</h1>", f'<p class="muted">run dir: {_e(run.path)}</p>',
        f'<h2>Warnings</h2><ul class="note">{warnings}</ul>' if warnings else "",
        f"<p>Objective: <b>{_e(objective.name)}</b> (validation {_e(objective.label)}) selects; "
        f"{_e(objective.test_metric)} is reported beside it. The <i>paper default</i> is the "
        f"setting {_e(PAPER)} publish for the study's method and mode, every study's first "
        "trial.</p>",
        "<h2>Best config per study</h2>", summary_table(bests), f"<p>{_e(test_note(objective))}</p>",
        f"<p>{_e(verdict_note(objective))}</p>",
        *_classification_section(bests), *_reid_section(bests),
        *final_runs_section(finals or [], out, images), *sections, "</body></html>"])


def final_runs_section(finals: list, out: Path, images: list[Path]) -> list[str]:
    """The final runs (``analysis.final_runs.FinalRun``): recorded test accuracy, prediction noise
    and ECE of their student on the test split, the CKA of the embeddings, and a CKA heatmap each."""
    if not finals:
        return []
    from analysis.cka_plot import cka_heatmap_png

    head = ("<tr><th>final run</th><th>run dir</th><th>test_acc (metrics.json)</th>"
            "<th>test accuracy (re-evaluated)</th><th>prediction noise</th><th>ECE (%)</th>"
            "<th>mean confidence</th><th>CKA embedding↔embedding</th></tr>")
    rows, pictures = [], []
    for index, run in enumerate(finals, 1):
        noise, cka = run.noise, run.cka
        cells = [fmt_number(run.final.get("test_acc")),
                 *(("", "", "", "") if noise is None else (
                     f"{noise.accuracy:.2f}", f"{noise.prediction_noise:.4f}",
                     f"{100 * noise.ece:.2f}", f"{noise.mean_confidence:.4f}")),
                 "" if cka is None else f"{cka.matrix.values[-1][-1]:.3f}"]
        rows.append(f"<tr><td>{_e(run.label)}</td><td>{_e(run.path)}</td>"
                    + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
        pictures += [f'<p class="note">{_e(run.label)}: {_e(note)}</p>' for note in run.notes]
        if cka is not None:
            title = (f"{run.label}: linear CKA, {cka.dataset} {cka.split}, {cka.samples} images")
            path = cka_heatmap_png(cka.matrix, title, out / f"final-{index}-cka.png")
            pictures.append(_img(out, path, f"CKA of {run.label}", images))
    return ["<h2>Final runs</h2>", "<table>" + head + "".join(rows) + "</table>",
            '<p class="muted">Prediction noise: mean over test images of the sum over non-top '
            "classes of |p_j − (1 − p_max)/(C − 1)|; ECE over 15 equal-width confidence bins; "
            "CKA: linear CKA on a seeded subset of the test split (the heatmaps: every teacher "
            "stage against every student stage).</p>", *pictures]


def _classification_section(bests: list[StudyBest]) -> list[str]:
    chosen = [b for b in bests if b.objective.task != "reid"]
    if not chosen:
        return []
    return [f"<h2>All pairs (layout of the CIFAR-100 table of {_e(PAPER)})</h2>",
            paper_table(chosen)]


def _reid_section(bests: list[StudyBest]) -> list[str]:
    table = reid_table(bests)
    return ([f"<h2>Re-ID (layout of the Market-1501 table of {_e(PAPER)})</h2>", table] if table
            else [])


def write_report(run_dir: str | Path | Run, out_dir: str | Path, top: int = DEFAULT_TOP,
                 finals: list | None = None) -> Report:
    """Write ``out_dir/index.html`` and its PNGs; returns their paths. ``finals``: analysed final
    runs (``analysis.final_runs.read_final_run``) for the "Final runs" section."""
    run = run_dir if isinstance(run_dir, Run) else read_run(run_dir)
    out = Path(out_dir).expanduser().absolute()
    out.mkdir(parents=True, exist_ok=True)
    bests = best_of_run(run)
    images: list[Path] = []
    page = render(run, bests, out, top, images, finals)
    atomic_write_text(out / "index.html", page)
    log.debug("report %s: %d pictures", out / "index.html", len(images))
    return Report(out / "index.html", images)
