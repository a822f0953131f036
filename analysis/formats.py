"""``mgkd best`` output formats: table, csv, json, markdown (a registry, one function each)."""
from __future__ import annotations

import csv
import io
import json
import math
from typing import TYPE_CHECKING, Any, Callable

from mgkd.catalog.objectives import OBJECTIVES, Objective

if TYPE_CHECKING:  # kept light: the command line lists the formats without loading the analysis
    from analysis.best import StudyBest
    from analysis.records import Run

Formatter = Callable[["Run", "list[StudyBest]"], str]
# The columns; VALUE / TEST / PAPER are named after the sweep's objective (``headers``).
VALUE, TEST, PAPER = "{objective} (selects)", "{test} (reported)", "paper {objective}"
_COLUMNS: tuple[str, ...] = ("study", "done", "pruned", "err", "running", VALUE, "val se", TEST,
                             "epochs", "trial", "selected by", PAPER, "gain", "verdict",
                             "vs plain kd", "hyperparameters")
_RIGHT: frozenset[str] = frozenset({"done", "pruned", "err", "running", VALUE, "val se", TEST,
                                    "epochs", PAPER, "gain", "vs plain kd"})
def _verdict_rule() -> str:
    # analysis.verdict is imported here, not at the top: building the command line imports this
    # module, and the verdict's statistics pull in numpy.
    from analysis.verdict import SIGNIFICANCE

    return ("verdict: when both trials stored their per-sample validation outcomes, a paired "
            "test on the same samples (exact McNemar for accuracy and rank-1, a sign-flip test of "
            f"per-query AP for mAP): 'beats default' when its two-sided p < {SIGNIFICANCE}; "
            "otherwise (older run dirs) 'beats default' only when the gain exceeds twice the "
            "standard error of the difference (with --confirm: of the per-seed differences, or "
            "the spread over seeds); 'within noise' otherwise, 'default best' when the paper "
            "default is the winner (ties go to it).")


def run_objective(bests: list[StudyBest]) -> Objective:
    """The objective of a run's studies (one per sweep: the data set is sweep-wide)."""
    return bests[0].objective if bests else OBJECTIVES["val_acc"]


def _name(column: str, objective: Objective) -> str:
    return column.format(objective=objective.name, test=objective.test_metric)


def headers(objective: Objective) -> list[str]:
    """The table's column titles, e.g. ``val_acc (selects)`` or ``val_map (selects)``."""
    return [_name(c, objective) for c in _COLUMNS]


def right_aligned(objective: Objective) -> frozenset[str]:
    return frozenset(_name(c, objective) for c in _RIGHT)


def verdict_note(objective: Objective) -> str:
    """How ``val se`` and the verdict are worked out for this objective."""
    if objective.binomial:
        n = ("the number of validation queries" if objective.task != "classification"
             else "the validation set's size")
        se = f"val se: the standard error of {objective.name} from {n}, sqrt(p(1-p)/n); "
    else:
        se = (f"val se: the standard error of {objective.name} the trial reported with it "
              f"({objective.se_metric}); ")
    return se + _verdict_rule()


def test_note(objective: Objective) -> str:
    return f"{objective.test_metric} is reported beside the winner and never used to select it."


TEST_NOTE = test_note(OBJECTIVES["val_acc"])


def fmt_number(value: float | None, sign: bool = False) -> str:
    """Two decimals (the precision every output and the report share); '-' for none."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def fmt_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in params.items()) or "-"


def _val(best: StudyBest) -> str:
    text = fmt_number(best.value)
    if best.value_std is not None:
        text += f" ± {best.value_std:.2f}"
    return text


def _trial(best: StudyBest) -> str:
    if best.trial_number is None:
        return "-"
    return f"#{best.trial_number}" + (" (warm)" if best.warm_start_source else "")


def warm_start_lines(bests: list[StudyBest]) -> list[str]:
    """One line per study with warm-started trials: each one's source, state and value."""
    lines = []
    for b in bests:
        if not b.warm_started:
            continue
        parts = [f"trial {row['trial_number']} from {row['source']} ({row['state']}"
                 + (f", {fmt_number(row['value'])})" if row["value"] is not None else ")")
                 for row in b.warm_start_rows()]
        lines.append(f"{b.study.key}: " + "; ".join(parts))
    return lines


def display_rows(bests: list[StudyBest], objective: Objective) -> list[dict[str, str]]:
    """The human-readable columns of the table and markdown formats (keys: ``headers``)."""
    rows = []
    for b in bests:
        c = b.counts
        rows.append({"study": b.study.key, "done": str(c["COMPLETE"]), "pruned": str(c["PRUNED"]),
                     "err": str(c["FAIL"]), "running": str(c["RUNNING"] + c["UNKNOWN"]),
                     _name(VALUE, objective): _val(b), "val se": fmt_number(b.val_se),
                     _name(TEST, objective): fmt_number(b.test_value),
                     "epochs": "-" if b.epochs is None else str(b.epochs),
                     "trial": _trial(b),
                     "selected by": b.selected_by,
                     _name(PAPER, objective): fmt_number(b.paper_value),
                     "gain": fmt_number(b.gain, sign=True), "verdict": b.verdict.verdict,
                     "vs plain kd": fmt_number(b.gain_over_plain_kd, sign=True),
                     "hyperparameters": fmt_params(b.params)})
    return rows


def _notes(run: Run, bests: list[StudyBest]) -> list[str]:
    lines = [f"{b.study.key}: {note}" for b in bests for note in b.notes]
    return ["", "notes:", *(f"  {line}" for line in lines)] if lines else []


def _footer(run: Run, bests: list[StudyBest]) -> list[str]:
    objective = run_objective(bests)
    lines = ["", test_note(objective),
             f"{objective.name}: the winner's last-epoch validation {objective.label} (mean ± std "
             "over seeds when confirmed); gain: over the paper default; vs plain kd: over the "
             "same pair's kd/plain study.", verdict_note(objective)]
    warm = warm_start_lines(bests)
    if warm:
        lines += ["", "warm start (configs of earlier studies, tried after the paper default; "
                      "'(warm)' after a trial number):", *(f"  {line}" for line in warm)]
    groups = sorted({b.study.label for b in bests if b.study.is_group})
    if groups:
        lines.append(f"peer groups ({', '.join(groups)}): {objective.name} is the best peer's "
                     f"(each epoch the peer with the highest {objective.name}); "
                     f"{objective.test_metric} is that same peer's.")
    return lines + _notes(run, bests) + ["", f"run dir: {run.path}"]


def format_table(run: Run, bests: list[StudyBest]) -> str:
    objective = run_objective(bests)
    rows = display_rows(bests, objective)
    titles, right = headers(objective), right_aligned(objective)
    widths = {h: max([len(h)] + [len(r[h]) for r in rows]) for h in titles}

    def line(values: dict[str, str]) -> str:
        cells = [values[h].rjust(widths[h]) if h in right else values[h].ljust(widths[h])
                 for h in titles[:-1]]
        return "  ".join(cells + [values[titles[-1]]])
    body = [line({h: h for h in titles}), *(line(r) for r in rows)]
    return "\n".join(body + _footer(run, bests)) + "\n"


def format_markdown(run: Run, bests: list[StudyBest]) -> str:
    objective = run_objective(bests)
    rows = display_rows(bests, objective)
    titles = headers(objective)
    lines = ["| " + " | ".join(titles) + " |", "|" + "|".join("---" for _ in titles) + "|"]
    lines += ["| " + " | ".join(r[h].replace("|", "\\|") for h in titles) + " |" for r in rows]
    return "\n".join(lines + _footer(run, bests)) + "\n"


def best_document(run: Run, bests: list[StudyBest]) -> dict[str, Any]:
    """What ``--format json`` prints (the report's numbers come from the same rows)."""
    return {"run_dir": str(run.path), "sweep": run.name,
            "studies": [b.to_dict() for b in bests], "warnings": list(run.notes)}


def format_json(run: Run, bests: list[StudyBest]) -> str:
    return json.dumps(best_document(run, bests), indent=2) + "\n"


def format_csv(run: Run, bests: list[StudyBest]) -> str:
    dicts = [b.to_dict() for b in bests]
    param_names = sorted({name for d in dicts for name in d["params"]})
    scalar = [k for k in (dicts[0] if dicts else {})
              if k not in ("params", "notes", "confirmation", "single_run", "warm_started")]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(scalar + [f"param.{n}" for n in param_names] + ["notes"])
    for d in dicts:
        writer.writerow([_csv_cell(d[k]) for k in scalar]
                        + [_csv_cell(d["params"].get(n)) for n in param_names]
                        + [" | ".join(d["notes"])])
    return out.getvalue()


def _csv_cell(value: Any) -> Any:
    return "" if value is None else value


FORMATS: dict[str, Formatter] = {"table": format_table, "csv": format_csv, "json": format_json,
                                 "markdown": format_markdown}
