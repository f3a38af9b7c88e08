"""Data & labels tab: label editing, the image browser, imports, saving edits, the context composer."""
from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pytestqt")


@pytest.fixture
def panel(qtbot, user_home, dialogs, emoji_small):
    from desktop.state import AppState
    from desktop.panels.data_panel import DataPanel

    state = AppState()
    p = DataPanel(state)
    qtbot.addWidget(p)
    p.resize(1280, 760)
    state.set_dataset(emoji_small)
    p.compositions = []
    state.composition_changed.connect(p.compositions.append)
    return p


def select_rows(panel, rows):
    from PySide6.QtCore import QItemSelectionModel

    sm = panel.view.selectionModel()
    sm.clearSelection()
    for r in rows:
        sm.select(panel.model.index(r), QItemSelectionModel.SelectionFlag.Select)


def names_in_table(panel):
    return [panel.table.item(i, 0).text() for i in range(panel.table.rowCount())]


def test_rename_reaches_state_composer_and_is_saved(qtbot, panel, user_home):
    seen = []
    panel.state.label_names_changed.connect(seen.append)
    panel.table.item(0, 0).setText("smiley")  # what an in-place edit in the table does
    assert panel.state.dataset.label_names[0] == "smiley"
    assert seen[-1][0] == "smiley"
    assert panel.composer.names[0] == "smiley"
    assert panel.composer.rows[0].title.text() == "smiley"
    qtbot.waitUntil(lambda: bool(panel.compositions) and panel.compositions[-1].rows[0].name == "smiley", timeout=3000)
    # the edited set is saved as .npz in the user data folder, never over the built-in file
    with qtbot.waitSignal(panel.dataset_saved, timeout=10000) as blocker:
        pass
    path = blocker.args[0]
    assert path.startswith(str(user_home / "datasets"))
    from core.data import load_npz
    saved = load_npz(path)
    assert saved.label_names[0] == "smiley" and saved.n == panel.state.dataset.n


def test_duplicate_name_is_refused_and_the_table_reverts(panel, monkeypatch):
    from desktop.panels import data_panel

    shown = []
    monkeypatch.setattr(data_panel.QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    panel.table.item(1, 0).setText("face")
    assert shown and "unique" in shown[0]
    assert panel.state.dataset.label_names[1] == "person"
    assert names_in_table(panel)[1] == "person"


def test_add_delete_and_reorder_labels_keep_composer_weights_by_name(panel):
    ds0 = panel.state.dataset
    food = ds0.label_names.index("food")
    panel.composer.rows[food].set_weights([0, 0, 0, 1.0, 0.5, 0])  # "food + object 0.5"
    assert panel.move_label(food, -1)  # food moves above animal & nature
    names = panel.state.dataset.label_names
    assert names[food - 1] == "food" and names[food] == "animal & nature"
    assert np.array_equal(panel.state.dataset.labels[:, food - 1], ds0.labels[:, food])
    row = next(r for r in panel.composer.rows if r.title.text().startswith("food"))
    assert row.weights()[names.index("food")] == 1.0 and row.weights()[names.index("object")] == 0.5
    assert panel.add_label()
    assert panel.state.dataset.label_names[-1] == "new label" and panel.state.dataset.labels[:, -1].sum() == 0
    assert panel.composer.names[-1] == "new label"
    assert panel.delete_label(names.index("object"))
    assert "object" not in panel.state.dataset.label_names and "object" not in panel.composer.names
    assert panel.state.dataset.n_labels == 6
    assert names_in_table(panel) == panel.state.dataset.label_names


def test_assign_and_unassign_selected_images(panel):
    ds = panel.state.dataset
    new = panel.add_label("favourite") and panel.state.dataset.n_labels - 1
    select_rows(panel, [0, 2, 5])
    assert panel.assign_btn.isEnabled()
    assert panel.assign_selected(new, True) == 3
    labels = panel.state.dataset.labels
    assert labels[[0, 2, 5], new].tolist() == [1, 1, 1] and labels[:, new].sum() == 3
    assert panel.table.item(new, 1).text() == "3"
    # images keep their other labels
    assert np.array_equal(labels[:, :ds.n_labels], ds.labels)
    # the filter shows exactly the images with that label
    panel.filter_combo.setCurrentIndex(panel.filter_combo.findData(new))
    assert panel.model.rowCount() == 3
    select_rows(panel, [1])  # the second shown image is data set row 2
    assert panel.assign_selected(new, False) == 1
    assert panel.model.rowCount() == 2
    assert panel.state.dataset.labels[:, new].sum() == 2


def test_import_folder_reports_the_broken_file(qtbot, panel, user_home, tmp_path):
    root = tmp_path / "my sprites"
    for label, color in (("cats", (200, 100, 0)), ("dogs", (0, 100, 200))):
        (root / label).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (24, 24), tuple(c + 10 * k for c in color)).save(root / label / f"{k}.png")
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with qtbot.waitSignal(panel.import_dialog_shown, timeout=15000) as blocker:
        panel.import_folder(str(root), size=16)
    dlg = blocker.args[0]
    assert "broken.png" in dlg.report.toPlainText()
    assert "6 images" in dlg.summary.text()
    with qtbot.waitSignal(panel.dataset_saved, timeout=10000) as saved:
        dlg.accept()
    ds = panel.state.dataset
    assert ds.label_names == ["cats", "dogs"] and ds.n == 6 and ds.size == 16
    assert names_in_table(panel) == ["cats", "dogs"]
    assert saved.args[0].startswith(str(user_home / "datasets"))


def test_import_of_a_bad_course_file_shows_a_dialog(qtbot, panel, monkeypatch, tmp_path):
    from desktop.panels import data_panel

    bad = tmp_path / "sprites_x.npy"
    bad.write_bytes(b"definitely not numpy")
    shown = []
    monkeypatch.setattr(data_panel.QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    panel.import_course(str(bad))
    qtbot.waitUntil(lambda: bool(shown), timeout=10000)
    assert "sprites_x.npy" in shown[0] and "Traceback" not in shown[0]


def test_browser_is_virtualised_for_90k_sprites(qtbot, panel):
    from core.data import ImageDataset

    rng = np.random.default_rng(0)
    n = 90_000
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    labels = np.eye(5, dtype=np.float32)[rng.integers(0, 5, n)]
    big = ImageDataset(images, labels, ["hero", "non-hero", "food", "spell", "side-facing"], "sprites")
    panel.show()
    t = time.perf_counter()
    panel.state.set_dataset(big)
    qtbot.wait(50)
    panel.grab()
    assert time.perf_counter() - t < 3.0
    assert panel.model.rowCount() == n
    assert 0 < panel.model.pixmaps_made < 2000  # pixmaps only for what is on screen
    panel.view.scrollToBottom()
    panel.grab()
    assert panel.model.pixmaps_made < 4000
    assert panel.composer.names == big.label_names


def test_composer_presets_guidance_and_course_mixes(qtbot, panel):
    from desktop.widgets.composer import preset_list

    comp = panel.composer
    comp.set_label_names(["hero", "non-hero", "food", "spell", "side-facing"])
    titles = [comp.preset_combo.itemText(i) for i in range(comp.preset_combo.count())]
    mixes = titles.index("Label mixes (as in the course)")
    comp.apply_preset(mixes)
    assert comp.rows[0].title.text() == "hero + food 0.6"
    comp.guidance_spin.setValue(3.0)
    qtbot.waitUntil(lambda: bool(panel.compositions) and panel.compositions[-1].guidance == 3.0, timeout=3000)
    m = panel.compositions[-1].matrix(5)
    assert m.shape == (4, 5) and m[0].tolist() == pytest.approx([1, 0, 0.6, 0, 0])
    comp.rows[0].remove_btn.click()
    assert len(comp.rows) == 3
    comp.add_row([0.0] * 5)
    assert comp.rows[-1].title.text() == "no label (unconditional)"
    # other label sets get neighbouring-pair mixes
    generic = dict(preset_list(["a", "b", "c"]))["Label mixes"]
    assert generic == [[1.0, 0.6, 0.0], [0.0, 1.0, 0.6]]


def test_import_sprite_sheet_with_preview(qtbot, panel, tmp_path):
    sheet = np.full((2 * 16, 3 * 16, 4), 0, np.uint8)  # 2 rows x 3 cells, transparent
    for r in range(2):
        for c in range(3 if r == 0 else 2):  # the last cell stays blank and is dropped
            sheet[r * 16 + 4:r * 16 + 12, c * 16 + 4:c * 16 + 12] = (40 * c, 100, 200 - 80 * r, 255)
    path = tmp_path / "sheet.png"
    Image.fromarray(sheet, "RGBA").save(path)
    with qtbot.waitSignal(panel.import_dialog_shown, timeout=15000) as blocker:
        panel.import_sprite_sheet(str(path), {"cell": 16, "margin": 0, "spacing": 0, "size": 16})
    dlg = blocker.args[0]
    assert "5 images" in dlg.summary.text()
    dlg.reject()
    assert panel.state.dataset.name != "sheet"  # cancelled: nothing changed


def test_composer_says_which_labels_the_model_does_not_know(qtbot, emoji_small):
    import dataclasses

    import torch

    from core.checkpoint import ModelBundle
    from core.schedule import ScheduleConfig
    from core.unet import ContextUnet, UNetConfig
    from desktop.state import AppState
    from desktop.widgets.composer import Composer

    state = AppState()
    composer = Composer(state)
    qtbot.addWidget(composer)
    names = list(emoji_small.label_names)
    torch.manual_seed(0)
    net = ContextUnet(UNetConfig(n_feat=8, n_cfeat=len(names), height=16)).eval()
    state.set_model(ModelBundle(net, ScheduleConfig(), names, {"dataset": "emoji16", "step": 1}))
    state.set_dataset(emoji_small)
    assert composer.unknown_note.isHidden()
    labels = np.concatenate([emoji_small.labels, np.zeros((emoji_small.n, 1), np.float32)], 1)
    state.set_dataset(dataclasses.replace(emoji_small, name="emoji16-edited", label_names=names + ["fruit"],
                                          labels=labels))
    assert not composer.unknown_note.isHidden()
    assert f"This model knows {len(names)} labels; 'fruit' appears after you train" in composer.unknown_note.text()
    assert composer.names == names  # the model still only draws its own labels


def test_label_edits_reach_the_train_tab_and_a_new_set_resets_the_filter(qtbot, panel, emoji_small):
    from desktop.panels.train_panel import TrainPanel

    train = TrainPanel(panel.state)
    qtbot.addWidget(train)
    panel.filter_combo.setCurrentIndex(3)  # one label's images
    assert panel.rename_label(3, "snacks")
    assert panel.state.dataset.name.endswith("-edited")
    assert train.dataset_combo.itemData(0) == "__current__" and train.dataset_combo.currentIndex() == 0
    assert "snacks" in train.dataset_info.text()
    panel.state.set_dataset(emoji_small)  # another data set: the filter starts on All again
    assert panel.filter_combo.currentIndex() == 0


def test_the_composers_rows_and_guidance_come_back_in_the_next_session(qtbot, user_home, emoji_small):
    from desktop import settings
    from desktop.panels.data_panel import DataPanel
    from desktop.state import AppState

    first = DataPanel(AppState())
    qtbot.addWidget(first)
    first.state.set_dataset(emoji_small)
    names = list(emoji_small.label_names)
    c = first.composer
    c._clear_rows()
    c.add_row([1.0 if n == "food" else 0.0 for n in names])
    c.add_row([0.5 if n in ("face", "animal & nature") else 0.0 for n in names])
    c.guidance_spin.setValue(2.5)
    st = settings.qsettings()
    first.save_layout(st)
    st.sync()

    second = DataPanel(AppState())  # a new window: restore before the data set has arrived, as at start-up
    qtbot.addWidget(second)
    second.restore_layout(settings.qsettings())
    second.state.set_dataset(emoji_small)
    got = [r.weights() for r in second.composer.rows]
    assert got == [r.weights() for r in c.rows] and second.composer.guidance_spin.value() == 2.5


def test_a_sprite_sheet_that_is_no_image_is_refused_before_the_cell_sizes_are_asked(qtbot, panel, monkeypatch,
                                                                                    tmp_path):
    from desktop.panels import data_panel

    bad = tmp_path / "sheet.png"
    bad.write_bytes(b"not a png at all")
    shown, asked = [], []
    monkeypatch.setattr(data_panel.QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    monkeypatch.setattr(data_panel, "SheetOptionsDialog", lambda *a, **k: asked.append(a) or pytest.fail("asked"))
    panel.import_sprite_sheet(str(bad))
    assert not asked and len(shown) == 1 and "sheet.png is not an image" in shown[0]


def test_composer_rows_follow_a_model_switch_by_label_name_and_a_taught_label_is_offered(qtbot, emoji_small):
    import torch

    from core.checkpoint import ModelBundle
    from core.schedule import ScheduleConfig
    from core.unet import ContextUnet, UNetConfig
    from desktop.state import AppState
    from desktop.widgets.composer import Composer

    state = AppState()
    composer = Composer(state)
    qtbot.addWidget(composer)
    messages = []
    state.status_message.connect(messages.append)
    names = list(emoji_small.label_names)
    torch.manual_seed(0)

    def bundle(labels, dataset):
        net = ContextUnet(UNetConfig(n_feat=8, n_cfeat=len(labels), height=16)).eval()
        return ModelBundle(net, ScheduleConfig(), labels, {"dataset": dataset, "step": 1})

    shipped, taught = bundle(names, "emoji16"), bundle(names + ["fruit"], "emoji16-edited")
    state.set_model(shipped)
    assert len(composer.composition().rows) == len(names)
    state.set_model(taught)  # the fine-tune finished: its new label gets a row without touching the composer
    comp = composer.composition()
    assert [r.name for r in comp.rows][-1] == "fruit" and comp.rows[-1].weights[-1] == 1.0
    assert any("'fruit'" in m for m in messages)
    composer.rows[-1].set_weights([0.0] * len(names) + [0.7])
    state.set_model(shipped)  # the shipped model cannot draw fruit: that row waits, hidden
    assert len(composer.composition().rows) == len(names) and "fruit" not in composer.names
    state.set_model(taught)  # and comes back intact
    comp = composer.composition()
    assert len(comp.rows) == len(names) + 1 and comp.rows[-1].weights == pytest.approx([0.0] * len(names) + [0.7])
    assert comp.rows[-1].name == "fruit 0.7"
