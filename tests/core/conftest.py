"""Fixtures the core tests share."""
import itertools

import pytest


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A fresh folder per call, cheaper than tmp_path for hundreds of small cases."""
    base, count = tmp_path_factory.mktemp("cases"), itertools.count()

    def fresh():
        (folder := base / str(next(count))).mkdir()
        return folder
    return fresh
