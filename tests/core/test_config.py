"""core.config: one field list drives the TrainConfig dataclass, its validation, the CLI's flags and the form."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from core.config import (TRAIN_FIELDS, TRAIN_PRESETS, TRAIN_RULES, ConfigField, TrainConfig, add_config_flags,
                         flag_fields, form_fields, make_config_class)

DUMMY = ConfigField("dummy_knob", int, 3, lambda v: 1 <= v <= 9, "dummy knob must be from 1 to 9",
                    label="Dummy knob", widget=(1, 9, 1), tip="A knob only this test has.",
                    flag="dummy-knob", flag_help="a knob only this test has")


def _spec_with_dummy():
    return (*TRAIN_FIELDS, DUMMY)


def test_the_dataclass_has_exactly_the_listed_fields_in_order():
    assert [f.name for f in dataclasses.fields(TrainConfig)] == [f.key for f in TRAIN_FIELDS]
    assert TrainConfig().to_dict() == {f.key: f.default for f in TRAIN_FIELDS}
    assert TrainConfig.from_dict({"steps": 7, "not_a_field": 1}).steps == 7  # a file's unknown keys are ignored


def test_field_rules_and_cross_rules_keep_their_messages():
    with pytest.raises(ValueError, match="steps must be from 1 to 1,000,000,000"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="noise schedule must be one of linear, cosine, linear_zsnr"):
        TrainConfig(schedule="sigmoid")
    with pytest.raises(ValueError, match="steps must be a whole number"):
        TrainConfig(steps=2.5)
    with pytest.raises(ValueError, match="learning rate must be above 0"):
        TrainConfig(lr=0.0)
    with pytest.raises(ValueError, match="use prediction v or x0"):
        TrainConfig(schedule="linear_zsnr", prediction="eps")
    for preset in TRAIN_PRESETS.values():  # every preset is valid and round-trips through a dict
        assert TrainConfig.from_dict(preset.to_dict()) == preset


def test_a_new_field_reaches_validation_cli_and_form(qtbot):
    spec = _spec_with_dummy()
    cls = make_config_class("WithDummy", spec, TRAIN_RULES)
    # validation: the default, a good value, the rule's message
    assert cls().dummy_knob == 3 and cls(dummy_knob=9).dummy_knob == 9
    with pytest.raises(ValueError, match="dummy knob must be from 1 to 9"):
        cls(dummy_knob=10)
    with pytest.raises(ValueError, match="dummy knob must be a whole number"):
        cls(dummy_knob="5")
    # the CLI: a flag that parses and maps to the field; unset stays None (the preset wins)
    parser = argparse.ArgumentParser()
    add_config_flags(parser, spec)
    assert parser.parse_args(["--dummy-knob", "5"]).dummy_knob == 5
    assert parser.parse_args([]).dummy_knob is None
    assert flag_fields(spec)["dummy_knob"] == "dummy_knob" and "dummy_knob" not in flag_fields(TRAIN_FIELDS)
    # the form: a spin box with the field's range, in values(), filled by set_values()
    from PySide6.QtWidgets import QSpinBox

    from desktop.widgets.config_form import ConfigForm

    form = ConfigForm(fields=form_fields(spec))
    qtbot.addWidget(form)
    box = form.widgets["dummy_knob"]
    assert isinstance(box, QSpinBox) and (box.minimum(), box.maximum()) == (1, 9)
    form.set_values(cls(dummy_knob=7).to_dict())
    assert form.values()["dummy_knob"] == 7
    assert cls(**form.values()).dummy_knob == 7
    assert "dummy_knob" not in ConfigForm().widgets  # the real form is untouched


def test_the_real_cli_and_form_show_the_fields_that_ask_for_it(qtbot):
    from cli import build_parser
    from desktop.widgets.config_form import ConfigForm

    train = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    flags = {opt for action in train._actions for opt in action.option_strings}
    assert {f"--{f.flag}" for f in TRAIN_FIELDS if f.flag} <= flags
    form = ConfigForm()
    qtbot.addWidget(form)
    assert list(form.widgets) == [f.key for f in TRAIN_FIELDS if f.label]
    assert form.widgets["n_feat"].toolTip().startswith("How big the network is")


def test_choice_help_comes_from_the_catalogue():
    from core.catalog import PREDICTION_SUMMARY, SCHEDULE_SUMMARY

    tips = {f.key: f.tip for f in TRAIN_FIELDS}
    assert all(text in tips["prediction"] for text in PREDICTION_SUMMARY.values())
    assert all(text in tips["schedule"] for text in SCHEDULE_SUMMARY.values())
