"""GUI work in pieces, one per event-loop turn (napari_vafa._pacer), and new result layers
made in such pieces (model, insertion, showing)."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_vafa._pacer import TURN_MS, Pacer


def _ticker(ticks: list[str]) -> QTimer:
    """A timer that records a tick every millisecond: it can only fire between pieces."""
    timer = QTimer()
    timer.setInterval(1)
    timer.timeout.connect(lambda: ticks.append("tick"))
    timer.start()
    return timer


def _pieces(log: list[str]) -> list:
    def first():
        log.append("first")
        return [lambda: log.append("follow-1"), lambda: log.append("follow-2")]

    return [first, lambda: log.append("second")]


def test_pieces_run_in_order_one_per_turn_follow_ups_first(qtbot):
    log: list[str] = []
    errors: list[Exception] = []
    pacer = Pacer(errors.append)
    timer = _ticker(log)
    pacer.run(_pieces(log))
    assert pacer.busy and "first" not in log  # nothing runs inside run()
    qtbot.waitUntil(lambda: not pacer.busy, timeout=5000)
    timer.stop()
    work = [entry for entry in log if entry != "tick"]
    assert work == ["first", "follow-1", "follow-2", "second"]
    # the event loop handled the other timer between every two pieces
    positions = [log.index(name) for name in work]
    for a, b in itertools.pairwise(positions):
        assert "tick" in log[a + 1 : b], log
    assert errors == []


def test_a_failing_piece_drops_the_rest_and_reports(qtbot):
    log: list[str] = []
    errors: list[Exception] = []
    pacer = Pacer(errors.append)

    def broken():
        raise RuntimeError("layer gone")

    pacer.run([lambda: log.append("a"), broken, lambda: log.append("never")])
    qtbot.waitUntil(lambda: not pacer.busy, timeout=5000)
    qtbot.wait(5 * TURN_MS)
    assert log == ["a"]
    assert [str(e) for e in errors] == ["layer gone"]


def test_clear_drops_waiting_pieces(qtbot):
    log: list[str] = []
    pacer = Pacer(lambda err: pytest.fail(str(err)))
    pacer.run(_pieces(log))
    pacer.clear()
    qtbot.waitUntil(lambda: not pacer.busy, timeout=5000)
    qtbot.wait(5 * TURN_MS)
    assert log == []


@pytest.mark.gui
def test_a_new_result_layer_is_made_inserted_and_shown_in_three_pieces(make_napari_viewer):
    from napari_vafa._result_layers import ResultLayers

    viewer = make_napari_viewer()
    changes: list[int] = []
    results = ResultLayers(viewer, lambda: changes.append(len(viewer.layers)))
    results.source = SimpleNamespace(
        name="ct", scale=(2.0, 1.0, 1.0), translate=(0.0, 0.0, 0.0), metadata={"affine": 1},
        contrast_limits=(0.0, 1.0), colormap="gray", source=None,
    )  # fmt: skip
    done = SimpleNamespace(limits={}, outcome=SimpleNamespace(settings={"class_names": ["bg"]}))
    data = np.zeros((4, 5, 6), dtype=np.int32)
    (insert,) = results.put("adversarial_prediction", data, done)
    layer = results.layers["adversarial_prediction"]
    assert layer not in viewer.layers  # only the model so far
    (show,) = insert()
    assert layer in viewer.layers and not layer.visible and changes == [1]
    assert tuple(layer.scale) == (2.0, 1.0, 1.0) and layer.metadata["class_names"] == ["bg"]
    show()
    assert layer.visible
    # the same key again: updated in place, nothing left to do
    assert results.put("adversarial_prediction", data + 1, done) == []
    assert results.layers["adversarial_prediction"] is layer and int(layer.data.max()) == 1
    # a layer removed before its insertion ran is never inserted
    (insert,) = results.put("clean_prediction", data, done)
    results.remove("clean_prediction")
    assert insert() is None and len(viewer.layers) == 1
