"""The tiny default model, registered under its own name as `relaytune up` does: jobs naming
it resolve it as a registered model, and registering it again uploads nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from orchestrator.base_models import resolve_base_model
from orchestrator.db import session_scope
from orchestrator.layout import model_prefix
from orchestrator.model_registry import find_model
from orchestrator.settings import TINY_MODEL_NAME, get_settings
from services.cli.standalone import register_tiny_model


def test_the_tiny_model_registers_under_its_name_and_resolves_as_registered(
    clean_db: None, tiny_model_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.cli.standalone")
    register_tiny_model(Path(tiny_model_dir))
    register_tiny_model(Path(tiny_model_dir))

    uploads = [r.getMessage() for r in caplog.records if "registered" in r.getMessage()]
    assert len(uploads) == 2 and "(0 of" in uploads[1] and "(0 of" not in uploads[0]
    with session_scope() as session:
        model = find_model(session, TINY_MODEL_NAME)
        assert model is not None
        known = resolve_base_model(TINY_MODEL_NAME, get_settings(), session)
    assert (known.name, known.location) == (TINY_MODEL_NAME, model_prefix(model.digest))
