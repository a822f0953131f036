"""The report's analyses and page (issue 22): can ASHA be trusted (rung-vs-final rank
correlation), importances only from enough complete trials and with their spread, readable
parallel coordinates, tables that fit the page, the paper named as Shao & Chen, 2021, and a page
as readable as its pictures. On a run dir built by hand (tests/report_fixtures.py): no Ray."""
from __future__ import annotations

import itertools
import math
import os
import stat

import pytest

from analysis.records import COMPLETE, PRUNED, TrialRecord
from analysis.rungs import (MIN_TRIALS, Schedule, asha_check, asha_rungs, check_sentence,
                            read_schedule, spearman)

from report_fixtures import EPOCHS, KEY, make_run, ranked_trials


def _read(run_dir):
    from analysis.run import read_run
    return read_run(run_dir)


# ---- can ASHA be trusted here? -----------------------------------------------------------------
def test_rungs_are_the_epochs_rays_asha_compares_trials_at():
    from ray.tune.schedulers import AsyncHyperBandScheduler
    for max_t, grace, factor in itertools.product((2, 4, 6, 9, 16, 40), (1, 2, 3), (1.5, 2, 3, 4)):
        asha = AsyncHyperBandScheduler(time_attr="epoch", metric="m", mode="max", max_t=max_t,
                                       grace_period=min(grace, max_t), reduction_factor=factor)
        milestones = [m for m, _ in asha._brackets[0]._rungs]
        expected = sorted({math.ceil(m) for m in milestones if m < max_t})
        assert asha_rungs(grace, factor, max_t) == expected, (max_t, grace, factor)
    assert asha_rungs(2, 2, 6) == [2, 4]  # the demo's old schedule


def test_spearman_ranks_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)  # average ranks
    assert spearman([5, 5, 5, 5], [1, 2, 3, 4]) is None


def test_the_rung_correlation_over_the_complete_trials(tmp_path):
    run = _read(make_run(tmp_path, ranked_trials(6)))
    schedule = read_schedule(run.path)
    assert schedule == Schedule(1, 2.0)
    check = asha_check(run.trials_of(KEY), EPOCHS, schedule, "val_acc")
    assert check.rungs == [1, 2] and check.complete == 6  # the pruned trials are left out
    assert [(c.epoch, c.n) for c in check.correlations] == [(1, 6), (2, 6)]
    assert [c.rho for c in check.correlations] == pytest.approx([1.0, -1.0])
    line = check_sentence(check, "val_acc")
    assert "epoch 1: ρ = +1.00 (n = 6)" in line and "epoch 2: ρ = -1.00 (n = 6)" in line
    assert "over the 6 complete trials" in line


def test_too_few_complete_trials_say_so(tmp_path):
    run = _read(make_run(tmp_path, ranked_trials(MIN_TRIALS - 1)))
    check = asha_check(run.trials_of(KEY), EPOCHS, read_schedule(run.path), "val_acc")
    assert not check.correlations and check.complete == MIN_TRIALS - 1
    assert check_sentence(check, "val_acc") == (
        "Can ASHA be trusted here? Too few complete trials (3; at least 4 are needed).")
    unknown = asha_check(run.trials_of(KEY), EPOCHS, None, "val_acc")
    assert "schedule or epoch budget is unknown" in check_sentence(unknown, "val_acc")


# ---- importances -------------------------------------------------------------------------------
def test_importances_need_enough_complete_trials_and_carry_their_spread(tmp_path):
    from analysis.importance import MIN_COMPLETE, RESAMPLES, study_importances
    few = make_run(tmp_path / "few", ranked_trials(MIN_COMPLETE - 1))
    refused = study_importances(few / "optuna.db", KEY)
    assert not refused.values and refused.trials == MIN_COMPLETE - 1
    assert f"too few complete trials for importances: {MIN_COMPLETE - 1}" in refused.reason
    assert f"at least {MIN_COMPLETE}" in refused.reason

    enough = make_run(tmp_path / "enough", ranked_trials(12))
    found = study_importances(enough / "optuna.db", KEY)
    assert found.trials == 12 and found.resamples == RESAMPLES
    assert next(iter(found.values)) == "lr"  # the final value rises with lr, nothing else varies so
    assert sum(found.values.values()) == pytest.approx(1.0)
    assert set(found.spread) == set(found.values) and all(v >= 0 for v in found.spread.values())
    assert found.spread["lr"] > 0  # resamples differ
    assert study_importances(enough / "optuna.db", KEY).spread == found.spread  # seeded


# ---- parallel coordinates ----------------------------------------------------------------------
def _record(number: int, state: str, params: dict, value: float) -> TrialRecord:
    return TrialRecord(study=KEY, trial_number=number, ray_trial_id=None, state=state,
                       params=params, value=value if state == COMPLETE else None,
                       history=[{"epoch": 1, "val_acc": value}])


def test_axes_are_ranged_over_complete_trials_and_hold_only_their_levels():
    from analysis.plots import parallel_columns
    trials = [_record(0, COMPLETE, {"num_granularities": 1, "g0_dim": 16, "lr": 0.01}, 80.0),
              _record(1, COMPLETE, {"num_granularities": 2, "g0_dim": 64, "g1_dim": 32,
                                    "lr": 0.1}, 90.0),
              _record(2, PRUNED, {"num_granularities": 4, "g0_dim": 16, "g1_dim": 16, "g2_dim": 16,
                                  "g3_dim": 256, "lr": 0.5}, 10.0)]
    names = ["num_granularities", "g0_dim", "g1_dim", "g2_dim", "g3_dim", "lr"]
    columns = parallel_columns(trials, names, {"lr"}, "val_acc")
    assert [c.name for c in columns] == ["num_granularities", "g0_dim", "g1_dim", "lr", "val_acc"]
    objective = columns[-1]
    assert [label for _, label in objective.ticks] == ["80", "90"]  # the pruned 10 does not count
    assert objective.scaled[:2] == [0.0, 1.0] and objective.scaled[2] < 0 and objective.clipped == 1
    lr = columns[3]
    assert lr.log and lr.scaled[2] > 1 and [label for _, label in lr.ticks] == ["0.01", "0.1"]


def test_parallel_coordinate_labels_never_overlap_with_four_levels_and_long_numbers():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from analysis.plots import parallel_figure
    names = ["num_granularities"] + [f"g{k}_{f}" for k in range(4)
                                     for f in ("dim", "temperature", "weight")] + [
        "ce_weight", "logit_weight", "feature_weight", "temperature", "lr", "weight_decay"]
    trials = []
    for i in range(8):
        params = {n: 1.0e-5 * (1 + i) ** 3 + 0.000123 for n in names}
        trials.append(_record(i, COMPLETE if i < 6 else PRUNED, params, 33.3333 + 7.77 * i))
    figure = parallel_figure(trials, names, KEY)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    axes = figure.axes[0]
    assert len(axes.get_xticklabels()) == len(names) + 1  # every level and the objective
    # Value labels and the title are horizontal: their boxes must not meet one another, nor any
    # axis label's box.
    ticks = axes.get_xticklabels()
    texts = [t for t in [*axes.texts, axes.title] if t.get_text()]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), (a, b)
    for (a, box_a), tick in itertools.product(boxes, ticks):
        assert not box_a.overlaps(tick.get_window_extent(renderer)), (a, tick.get_text())
    # Axis labels are parallel strips at the same angle, anchored one axis apart: they never meet
    # when that spacing times sin(angle) exceeds a line's height.
    (angle,) = {t.get_rotation() for t in ticks}
    xs = [axes.transData.transform((x, 0))[0] for x in axes.get_xticks()]
    height = max(t.get_fontsize() for t in ticks) * figure.dpi / 72 * 1.2
    assert min(b - a for a, b in zip(xs, xs[1:])) * math.sin(math.radians(angle)) > height


# ---- the page ----------------------------------------------------------------------------------
def test_the_page_names_the_paper_fits_its_tables_and_is_readable_like_its_pictures(tmp_path):
    from analysis.importance import MIN_COMPLETE
    from analysis.report import write_report
    run_dir = make_run(tmp_path / "runs", ranked_trials(12))
    previous = os.umask(0o022)
    try:
        report = write_report(run_dir, tmp_path / "report")
    finally:
        os.umask(previous)
    page = report.index.read_text()
    modes = {stat.S_IMODE(p.stat().st_mode) for p in [report.index, *report.images]}
    assert modes == {0o644}  # index.html as world-readable as its PNGs
    assert len(report.images) == 3  # curves, importances, parallel coordinates

    assert "Shao &amp; Chen, 2021" in page and "readme" not in page.lower()
    assert "the paper's" not in page and "layout of the CIFAR-100 table of Shao &amp; Chen, 2021" in page
    # Every table sits in a box as wide as the page that scrolls sideways (nothing runs past it).
    assert page.count("<table>") == page.count('<div class="wide"><table>') >= 4
    assert ".wide { max-width: 100%; overflow-x: auto; }" in page
    assert f"{KEY.split('__')[0]}__<wbr>" in page  # long study keys can wrap

    assert "Can ASHA be trusted here? Spearman rank correlation" in page
    assert "epoch 1: ρ = +1.00 (n = 12); epoch 2: ρ = -1.00 (n = 12)" in page
    assert (f"over this study's 12 complete trials (importances are shown from {MIN_COMPLETE} "
            "on") in page and "± 1 standard deviation over 8 bootstrap resamples" in page
    assert "<th>± sd</th>" in page
