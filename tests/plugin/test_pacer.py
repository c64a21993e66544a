"""GUI work in pieces, one per event-loop turn (napari_vafa._pacer), and new result layers
made in such pieces (model, insertion, showing)."""

import itertools
import time
from types import SimpleNamespace

import numpy as np
import pytest
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from napari_vafa._pacer import MAX_WAITS, TURN_MS, Pacer, paint_apart


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


class _SlowWindow(QWidget):
    """A top-level window whose paints log themselves and take ``PAINT_S``."""

    PAINT_S = 0.06

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def paintEvent(self, event) -> None:
        self.log.append("paint")
        _busy(self.PAINT_S)


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_paint_apart_piece_repaints_in_a_turn_of_its_own(qtbot):
    """The piece runs with the window's updates held; its repaint follows in the next turn,
    and the next piece waits a turn after that repaint: a timer that came due while the
    window painted (like input arriving meanwhile) is handled before the next piece."""
    log: list[str] = []
    window = _SlowWindow(log)
    qtbot.addWidget(window)
    window.resize(200, 100)
    window.show()
    qtbot.waitExposed(window)
    qtbot.wait(2 * int(1000 * _SlowWindow.PAINT_S))
    held: list[bool] = []

    def heavy():
        log.append("heavy")
        held.append(not window.updatesEnabled())
        window.update()
        # due during the repaint (which starts TURN_MS after this piece), after the next
        # piece's timer would be due if that timer were started before the repaint
        QTimer.singleShot(TURN_MS + 25, lambda: log.append("probe"))

    def after():
        log.append("after")
        held.append(not window.updatesEnabled())

    log.clear()
    pacer = Pacer(lambda err: pytest.fail(str(err)), lambda: window)
    pacer.run([paint_apart(heavy), after])
    qtbot.waitUntil(lambda: not pacer.busy, timeout=5000)
    qtbot.wait(50)
    assert held == [True, False] and window.updatesEnabled()
    assert log[:4] == ["heavy", "paint", "probe", "after"], log


def test_a_failing_paint_apart_piece_gives_the_window_its_updates_back(qtbot):
    window = QWidget()
    qtbot.addWidget(window)
    errors: list[Exception] = []
    pacer = Pacer(errors.append, lambda: window)

    def broken():
        assert not window.updatesEnabled()
        raise RuntimeError("insert failed")

    pacer.run([paint_apart(broken), lambda: pytest.fail("dropped piece ran")])
    qtbot.waitUntil(lambda: not pacer.busy, timeout=5000)
    assert [str(e) for e in errors] == ["insert failed"] and window.updatesEnabled()
    # clearing while a repaint is held gives the updates back too
    pacer.run([paint_apart(lambda: None), lambda: pytest.fail("cleared piece ran")])
    qtbot.waitUntil(lambda: not window.updatesEnabled(), timeout=5000)
    pacer.clear()
    assert window.updatesEnabled()
    qtbot.wait(5 * TURN_MS)


def test_updates_held_by_someone_else_stay_held(qtbot):
    window = QWidget()
    qtbot.addWidget(window)
    window.setUpdatesEnabled(False)
    pacer = Pacer(lambda err: pytest.fail(str(err)), lambda: window)
    pacer.run([paint_apart(lambda: None)])
    qtbot.waitUntil(lambda: not pacer.busy, timeout=5000)
    assert not window.updatesEnabled()


def test_a_piece_waits_a_turn_when_the_loop_was_busy(qtbot):
    """Something slow ran after a piece (a paint): the next piece's timer fires late, and the
    timers that came due meanwhile run before that piece."""
    log: list[str] = []

    def first():
        log.append("first")
        QTimer.singleShot(0, lambda: _busy(0.06))  # runs before the next piece is due
        QTimer.singleShot(TURN_MS + 10, lambda: log.append("probe"))  # due during it

    pacer = Pacer(lambda err: pytest.fail(str(err)))
    pacer.run([first, lambda: log.append("second")])
    qtbot.waitUntil(lambda: not pacer.busy, timeout=5000)
    qtbot.wait(50)
    assert log == ["first", "probe", "second"]


def test_a_loop_that_stays_busy_still_gets_the_pieces(qtbot):
    busy = QTimer()
    busy.setInterval(0)
    busy.timeout.connect(lambda: _busy(0.03))  # every timer fires late while this runs
    log: list[str] = []
    pacer = Pacer(lambda err: pytest.fail(str(err)))
    busy.start()
    try:
        pacer.run([lambda: log.append("a"), lambda: log.append("b")])
        qtbot.waitUntil(lambda: not pacer.busy, timeout=10 * (MAX_WAITS + 1) * 40)
    finally:
        busy.stop()
    assert log == ["a", "b"]


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
    done = SimpleNamespace(limits={}, class_names=["bg"])
    data = np.zeros((4, 5, 6), dtype=np.int32)
    (insert,) = results.put("adversarial_prediction", data, done)
    layer = results.layers["adversarial_prediction"]
    assert layer not in viewer.layers  # only the model so far
    assert getattr(insert, "paint_apart", False)  # the insertion repaints in its own turn
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
