"""The report's pictures: the heatmap of a failing layer (its worst image and channel) and
the per-step training-difference plot (no zeros drawn, the running maximum, the budget)."""

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from parity import heatmaps, plots, reports, runner


def test_worst_map_is_the_image_and_channel_of_the_planted_difference():
    rng = np.random.default_rng(0)
    desired = rng.normal(size=(3, 5, 6, 4))
    actual = desired + 1e-9 * rng.normal(size=desired.shape)
    actual[0, 0, 0, 0] += 0.5  # a smaller difference elsewhere
    actual[2, 1, 4, 3] += 1.0
    image, channel, diff = heatmaps.worst_map(actual, desired)
    assert (image, channel, diff.shape) == (2, 3, (5, 6))
    assert np.unravel_index(np.argmax(diff), diff.shape) == (1, 4)
    assert diff[1, 4] == pytest.approx(1.0, abs=1e-8)


def test_a_non_finite_element_is_the_worst_and_drawn_as_nan():
    desired = np.zeros((2, 4, 4, 3))
    actual = desired.copy()
    actual[0, 0, 0, 0] = 1e6
    actual[1, 2, 3, 2] = np.nan
    record = heatmaps.heatmap_of(_row(), actual, desired)
    assert (record.image, record.channel, record.peak) == (1, 2, (2, 3))
    assert record.max_abs == np.inf and np.isnan(record.diff[2, 3])


def test_worst_map_refuses_arrays_without_a_spatial_map():
    with pytest.raises(ValueError, match=r"Expected two arrays of one shape \(N, H, W, C\)"):
        heatmaps.worst_map(np.zeros((2, 10)), np.zeros((2, 10)))


def _row(**fields):
    base = dict(check="forward", model="m", dtype="float64", state="random", layer="conv2d",
                quantity="output")  # fmt: skip
    return {**base, **fields}


def test_pick_takes_the_summary_rows_worst_state_and_only_failing_rows():
    diff = np.ones((4, 4, 1, 1))
    maps = [heatmaps.heatmap_of(_row(state=s), diff * k, 0 * diff)
            for s, k in (("initial", 5.0), ("random", 1.0))]  # fmt: skip
    summary = pd.DataFrame([
        {**_row(), "status": "FAIL", "worst_state": "random"},
        {**_row(layer="dense"), "status": "FAIL", "worst_state": "random"},  # no map
    ])  # fmt: skip
    assert [h.state for h in heatmaps.pick(maps, summary)] == ["random"]
    assert heatmaps.pick(maps, summary.assign(status="PASS")) == []


@dataclass(frozen=True)
class AddAt:
    """Add ``delta`` to one element of the scratch forward output (``check="forward"``)
    or of one gradient (``check="gradients"``), native layout."""

    check: str
    layer: str
    quantity: str
    index: tuple
    delta: float = 1.0

    def __call__(self, model) -> None:
        forward, gradients, plant = model.forward, model.gradients, self

        def add(tree: dict, key) -> None:
            tree[key] = tree[key].copy()
            tree[key][plant.index] += plant.delta

        def planted_forward(x):
            outputs = dict(forward(x))
            add(outputs, plant.layer) if plant.check == "forward" else None
            return outputs

        def planted_gradients(x, labels):
            loss, grads = gradients(x, labels)
            add(grads[plant.layer], plant.quantity) if plant.check == "gradients" else None
            return loss, grads

        model.forward, model.gradients = planted_forward, planted_gradients


@pytest.mark.keras
def test_channels_first_model_heatmaps_name_the_planted_image_and_channel(tmp_path):
    hooks = (AddAt("forward", "conv2d", "output", (1, 5, 3, 7)),  # native (N, C, H, W)
             AddAt("gradients", "dense", "input", (0, 2, 6, 9)))  # fmt: skip
    config = runner.RunConfig(models=("chw",), dtypes=("float64",), images=4,
                              checks=("forward", "gradients"), states=("random",),
                              model_hooks=hooks)  # fmt: skip
    results = runner.run(config, in_process=True)
    found = {(h.check, h.layer, h.quantity): (h.image, h.channel, h.peak)
             for h in results.heatmaps}  # fmt: skip
    # (the planted conv output also moves Keras's pool routing, anchored on scratch's
    # activations: max_pooling2d/input and conv2d/input fail too, with maps of their own)
    assert found[("forward", "conv2d", "output")] == (1, 5, (3, 7))
    assert found[("gradients", "dense", "input")] == (0, 2, (6, 9))
    folder = reports.write_report(results, tmp_path, run_id="r")
    pngs = {p.name for p in folder.glob("heatmap_*.png")}
    assert (
        len(pngs) == len(found)
        and {
            "heatmap_forward_chw_float64_conv2d_output.png",
            "heatmap_gradients_chw_float64_dense_input.png",
        }
        <= pngs
    )


def test_heatmap_title_names_image_channel_layer_quantity_and_max(tmp_path):
    diff = np.zeros((1, 6, 6, 2))
    diff[0, 2, 3, 1] = 0.25
    record = heatmaps.heatmap_of(_row(), diff, 0 * diff)
    title = record.title()
    for text in ("image 0", "channel 1", "forward conv2d/output", "2.500e-01", "(2, 3)"):
        assert text in title
    path = plots.plot_heatmap(record.diff, tmp_path / record.file_name(), title=title,
                              peak=record.peak)  # fmt: skip
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the training-difference plot ---------------------------------------------------------


def _training(diffs, path="tape", per_epoch=None):
    n = len(diffs)
    per_epoch = per_epoch or n
    steps = np.arange(n)
    return pd.DataFrame(dict(
        model="m", dtype="float64", keras_path=path, epoch=steps // per_epoch + 1,
        step=steps % per_epoch + 1, global_step=steps + 1, abs_diff=np.asarray(diffs),
    ))  # fmt: skip


def test_difference_series_leaves_zeros_out_and_counts_them():
    diffs = [0.0, 0.0, 1e-15, 0.0, 4e-15, 2e-15, 0.0, np.nan]
    s = plots.difference_series(_training(diffs), window=2)
    assert (s.total, s.zeros, s.nonfinite) == (8, 4, 1)
    assert s.steps.tolist() == [3, 5, 6] and s.values.tolist() == [1e-15, 4e-15, 2e-15]
    assert s.envelope_steps.tolist() == [3, 4, 5, 6, 7]  # the window of 2 zeros: not drawn
    assert s.envelope.tolist() == [1e-15, 1e-15, 4e-15, 4e-15, 2e-15]
    assert (s.worst_step, s.worst) == (5, 4e-15)


def _drawn(budget):
    diffs = np.r_[np.zeros(5), np.full(5, 3e-16), 2e-14]
    fig, ax = plt.subplots()
    plots._draw_differences(ax, plots.difference_series(_training(diffs)), "tape", budget, 50)
    ys = np.concatenate([np.ravel(c.get_offsets()[:, 1]) for c in ax.collections]
                        + [np.asarray(line.get_ydata(), float) for line in ax.lines])  # fmt: skip
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    red = [line for line in ax.lines if line.get_color() == "red"]
    plt.close(fig)
    return ys, legend, red


def test_difference_plot_draws_no_zero_and_says_how_many_steps_were_equal():
    ys, legend, _ = _drawn(1e-13)
    assert ys.min() == 3e-16  # the smallest nonzero difference: nothing at a floor
    assert any("5 of 11 steps exactly equal" in text for text in legend)
    assert any("largest 2.00e-14 at step 11" in text for text in legend)


def test_difference_plot_draws_the_budget_only_where_the_path_is_judged():
    assert len(_drawn(1e-13)[2]) == 1 and _drawn(None)[2] == []


def test_epochs_are_labelled_and_separated():
    fig, ax = plt.subplots()
    plots._label_epochs(ax, _training(np.full(30, 1e-15), per_epoch=10))
    labels = [t.get_text() for t in ax.texts]
    lines = [line.get_xdata()[0] for line in ax.lines]
    plt.close(fig)
    assert labels == ["epoch 1", "epoch 2", "epoch 3"] and lines == [10.5, 20.5]


def test_training_plots_take_a_budget_per_model_dtype_and_path(tmp_path):
    frame = pd.concat(
        [_training(np.full(20, 1e-15), p, per_epoch=10) for p in ("epoch", "lockstep")]
    )
    frame = frame.assign(scratch_loss=2.3, keras_loss=2.3)
    budgets = {("m", "float64", "epoch"): 1e-13, ("m", "float64", "lockstep"): 2e-13}
    written = plots.write_training_plots(frame, tmp_path, budgets)
    assert [p.name for p in written] == [
        "training_loss_m_float64.png",
        "training_diff_m_float64.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_a_single_epoch_shorter_than_the_smoothing_window_plots_without_warnings(tmp_path):
    frame = _training(np.full(60, 1e-15), "epoch").assign(scratch_loss=2.3, keras_loss=2.3)
    written = plots.write_training_plots(frame, tmp_path, {("m", "float64", "epoch"): 1e-13})
    assert len(written) == 2  # filterwarnings=error: a layout warning fails here
