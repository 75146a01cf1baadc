"""Client commands run against the in-process API of tests/api."""

from tests.api.conftest import client, dataset_id  # noqa: F401
