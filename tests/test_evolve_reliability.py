"""Evolve: storage URLs and search-space files are one error line each; a killed trial becomes FAIL."""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path

import pytest

from build_utils.errors import ConfigError, UserError
from train_val_utils.tune.evolve import check_storage, fail_killed_trials, load_search_space, open_study

optuna = pytest.importorskip("optuna", reason="the tune extra is not installed")


@pytest.mark.parametrize(("url", "phrase"), [
    ("sqlite://", "in-memory"), ("sqlite:///:memory:", "in-memory"),
    ("sqlite:///file:x?mode=memory&uri=true", "in-memory"),
    ("sqlite:////nonexistent/dir/x.db", "the folder /nonexistent/dir does not exist"),
    ("NOTDB", "is not a SQLite database"), ("redis://host/0", "expected sqlite"),
    ("study.db", "expected sqlite"),
])
def test_bad_storage_url(tmp_path: Path, url: str, phrase: str) -> None:
    if url == "NOTDB":
        (tmp_path / "notes.db").write_text("my notes\n")
        url = f"sqlite:///{tmp_path / 'notes.db'}"
    with pytest.raises(UserError, match=phrase):
        check_storage(url)
    assert not Path("/nonexistent").exists()


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/new.db", "postgresql://u:p@host/db", "mysql+pymysql://u@h/d"])
def test_good_storage_url(tmp_path: Path, url: str) -> None:
    assert check_storage(url.format(tmp=tmp_path)) == url.format(tmp=tmp_path)


@pytest.mark.parametrize(("text", "phrase"), [
    ("lr0: {low: 0.001, high: [0.1\n", ":2: not valid YAML"),
    ("lr0: !!python/object:os.system {}\n", ":1: not valid YAML (could not determine a constructor"),
    ("lr0: {low: 0.001, high: 0.1}\nlr0: {low: 0.01, high: 0.1}\n", ":2: not valid YAML (duplicate key"),
    ("lr0: \x00\n", ":1: byte offset 5 is a NUL byte"),
    ("- lr0\n", "expected `key: {low"),
])
def test_bad_search_space(tmp_path: Path, text: str, phrase: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)) as info:
        load_search_space(path)
    assert phrase in str(info.value) and "\n" not in str(info.value)


def test_killed_trial_is_marked_fail_when_the_study_continues(tmp_path: Path) -> None:
    url = check_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = open_study(url, "s", optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial = study.ask()  # a trial whose process then dies: RUNNING, with one heartbeat
    study._storage.record_heartbeat(trial._trial_id)
    with sqlite3.connect(tmp_path / "study.db") as db:  # its last beat long ago (no sleeping in tests)
        db.execute("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00'")
    again = open_study(url, "s", optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner())
    assert fail_killed_trials(again) == [trial.number]
    assert again.trials[0].state == optuna.trial.TrialState.FAIL
    assert fail_killed_trials(again) == []
