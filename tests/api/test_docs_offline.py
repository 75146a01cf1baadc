"""/docs and /redoc work without internet: every asset they load is served by the app itself."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

# Attributes and JavaScript string settings through which a docs page loads something.
ASSET_REFERENCE = re.compile(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""")


def _assets(html: str) -> list[str]:
    return [url for url in ASSET_REFERENCE.findall(html) if not url.startswith("#")]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_assets_the_app_serves(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200, response.text
    assets = _assets(response.text)
    assert any(url.endswith(".js") for url in assets), assets
    for url in assets:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{page} loads {url} from another host"
        assert client.get(url).status_code == 200, f"{page} references {url}, not served"
    assert "cdn." not in response.text and "fonts.googleapis" not in response.text


def test_swagger_ui_loads_its_stylesheet_and_bundle(client: TestClient) -> None:
    assets = _assets(client.get("/docs").text)
    assert any(url.endswith("swagger-ui.css") for url in assets)
    assert any(url.endswith("swagger-ui-bundle.js") for url in assets)


def test_the_authorize_button_offers_the_bearer_scheme(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    bearer = [name for name, s in schemes.items() if s == {**s, "type": "http", "scheme": "bearer"}]
    assert bearer, schemes
    # The button fills the header of the routes that name the scheme.
    assert {bearer[0]: []} in schema["paths"]["/v1/jobs"]["get"]["security"]
