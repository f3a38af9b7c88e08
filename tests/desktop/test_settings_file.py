"""The settings file is the user's: hand-edited or damaged values cost only themselves, the window always opens.

Table-driven: every key the app reads back, set to each kind of damage (text where a number or a Qt state is
kept, a list where text is, a JSON depth bomb, a huge string, a NUL, JSON of the wrong types), then the window
is opened and loaded as on a real start.
"""
from __future__ import annotations

import json

import pytest

pytest.importorskip("pytestqt")

STRING_KEYS = ("data/last", "model/last", "train/last_run", "export/last_dir")
STATE_KEYS = ("window/geometry", "window/state", "data_panel/splitter")
JSON_KEYS = ("composer/state", "train/last", "sample/columns")
EVERY_KEY = (*STRING_KEYS, *STATE_KEYS, *JSON_KEYS, "window/tab", "recent/items")

WRONG_TYPES = {  # valid JSON, wrong shapes: each field a type the reader does not expect
    "composer/state": {"names": "face", "rows": [[float("nan")]], "guidance": "1"},
    "train/last": {"preset": ["quick"], "config": {"lr": "fast", "steps": -3, "n_feat": True, "prediction": "magic",
                                                   "batch_size": 1e300, "warmup_steps": None},
                   "preview_every": "often"},
    "sample/columns": [{"sampler": 5, "steps": "ten"}, None, "ddim"],
}
DAMAGE = {
    "text": lambda key: "abc\x01 not what was saved",
    "list": lambda key: ["a", "b", 3],  # what an INI line with commas reads back as
    "depth_bomb": lambda key: "[" * 200_000,
    "huge": lambda key: "x" * 3_000_000,
    "nul": lambda key: "/tmp/a\0b",
    "number": lambda key: -(2**62),
    "wrong_json_types": lambda key: json.dumps(WRONG_TYPES[key], allow_nan=True) if key in WRONG_TYPES else "{}",
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_the_window_opens_whatever_the_settings_file_holds(qtbot, user_home, dialogs, kind):
    from desktop import settings
    from desktop.main_window import TAB_SAMPLE, MainWindow

    st = settings.qsettings()
    for key in EVERY_KEY:
        st.setValue(key, DAMAGE[kind](key))
    st.sync()
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    w.start_loading()
    qtbot.waitUntil(lambda: w.loaded, timeout=30000)
    assert w.state.dataset is not None and w.state.dataset.name == "emoji16"  # the built-in set, not a bad path
    assert w.tabs.currentIndex() == TAB_SAMPLE
    assert w.train_panel.preset_combo.currentData() == "quick"
    assert len(w.sample_panel.columns) >= 1
    assert not dialogs, dialogs  # nothing to tell the user: the defaults were used
    w.close()


def test_the_typed_readers_fall_back_to_their_defaults(user_home):
    from PySide6.QtCore import QByteArray

    from desktop import settings

    st = settings.qsettings()
    for value, expected in (("2", 2), (2, 2), ("  1 ", 1), (2.0, 2), ("9", 0), ("-1", 0), ("1e400", 0), (True, 0),
                            ("9" * 40, 0), (["1"], 0), (None, 0)):
        st.setValue("k/int", value)
        assert settings.read_int("k/int", 0, 0, 2) == expected, value
    for value, expected in (("a/b", "a/b"), (["a", "b"], ""), ("x\0y", ""), ("y" * 5000, ""), (7, "")):
        st.setValue("k/str", value)
        assert settings.read_str("k/str") == expected, value
    st.setValue("k/bytes", "not a state")
    assert settings.read_bytes("k/bytes") is None
    st.setValue("k/bytes", QByteArray(b"\x01\x02"))
    assert settings.read_bytes("k/bytes") == QByteArray(b"\x01\x02")
    for text, expected in (('{"a": [1, 2]}', {"a": [1, 2]}), ("[" * 100, None), ("{oops", None), ("", None)):
        st.setValue("k/json", text)
        assert settings.load_json("k/json") == expected, text[:20]


def test_the_composer_state_check_refuses_every_unsound_part():
    from desktop.state import composer_state

    good = {"names": ["face", "food"], "rows": [[1, 0], [0.5, 0.5]], "guidance": 2, "guide_with": "label:food"}
    assert composer_state(good) == {"names": ["face", "food"], "rows": [[1.0, 0.0], [0.5, 0.5]], "guidance": 2.0,
                                    "guide_with": "label:food", "negatives": ["", ""]}
    assert composer_state({**good, "negatives": ["food", ""]})["negatives"] == ["food", ""]
    for bad_negatives in (["food"], [1, 2], "food", ["x" * 1000, ""]):  # each row's "not" label, or none at all
        assert composer_state({**good, "negatives": bad_negatives})["negatives"] == ["", ""], bad_negatives
    for bad in ({**good, "names": "face"}, {**good, "names": [1, 2]}, {**good, "rows": [[1]]},
                {**good, "rows": [[float("nan"), 0]]}, {**good, "rows": [[True, 0]]}, {**good, "guidance": -1},
                {**good, "guidance": float("inf")}, {**good, "rows": [[0, 0]] * 1000}, [], None):
        assert composer_state(bad) is None, bad
    assert composer_state({**good, "guide_with": 5})["guide_with"] == ""
