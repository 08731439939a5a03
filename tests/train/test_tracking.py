"""Training reports through Accelerate's tracking API (``log_with``) beside history.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "train" / "tiny.yaml")
SMALL = ["--config", TINY, "batch_size=16", "n_folds=4", "fold=0", "loader.num_workers=0",
         "progress=false"]


def _history(fold: Path) -> list[dict]:
    with (fold / "history.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture
def recorder():
    """A tracker registered with accelerate (``register_tracker_class``) that keeps what it
    is given: needs no tracking package, goes through the same Accelerator calls."""
    from accelerate import tracking

    class Recorder(tracking.GeneralTracker):
        name = "g2net_test_recorder"
        requires_logging_directory = False
        calls: list = []

        def __init__(self, run_name: str, **kwargs):
            super().__init__()
            self.calls.append(("init", run_name, kwargs))

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values: dict):
            self.calls.append(("config", values))

        def log(self, values: dict, step=None, **kwargs):
            self.calls.append(("log", step, values))

        def finish(self):
            self.calls.append(("finish",))

    tracking.register_tracker_class(Recorder)
    yield Recorder
    del tracking.LOGGER_TYPE_TO_CLASS[Recorder.name]  # registered for this test only


@pytest.mark.timeout(240)
def test_config_and_every_epoch_reach_the_tracker(train_store, tmp_path, recorder):
    from train.cli import main

    main([*SMALL, f"store={train_store}", f"out={tmp_path}", "name=tracked", "epochs=2",
          "seed=7", f"log_with=[{recorder.name}]"])
    calls = recorder.calls
    assert [c[0] for c in calls] == ["init", "config", "log", "log", "finish"]
    assert calls[0][1] == "tracked"  # project_name: the run's name
    config = calls[1][1]
    assert config["seed"] == 7 and config["model.name"] == "test_efficientnet"
    assert config["augment.erase_scale"] == "[0.001, 0.004]" and config["image_size"] == "null"
    assert all(isinstance(v, (bool, int, float, str)) for v in config.values())  # flat scalars
    history = _history(tmp_path / "tracked" / "fold0")
    assert [c[1] for c in calls[2:4]] == [int(r["epoch"]) for r in history] == [1, 2]
    for (_, _, logged), row in zip(calls[2:4], history):
        assert set(logged) == set(row) - {"epoch"}
        for key, value in logged.items():
            assert value == pytest.approx(float(row[key]), rel=1e-6), key


@pytest.mark.timeout(240)
def test_tensorboard_writes_events(train_store, tmp_path):
    pytest.importorskip("tensorboard")  # the `track` extra
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from train.cli import main

    main([*SMALL, f"store={train_store}", f"out={tmp_path}", "name=tb", "epochs=2",
          "log_with=tensorboard"])
    fold = tmp_path / "tb" / "fold0"
    events = list((fold / "logs" / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1, list((fold / "logs").rglob("*"))
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    history = _history(fold)
    for key in ("train_loss", "val_loss", "val_auc", "lr", "samples_per_s"):
        scalars = acc.Scalars(key)
        assert [s.step for s in scalars] == [1, 2], key
        assert [s.value for s in scalars] == pytest.approx([float(r[key]) for r in history],
                                                           rel=1e-6), key
