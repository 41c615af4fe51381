"""The cross-site ``server_document()`` embed through the generated Apache config.

The same check as ``test_bokeh_embed_proxies`` (third-party cookies blocked, one Bokeh session
per page view), with Apache httpd, whose mod_rewrite matches the worker's slot in the
base64url session token and proxies the WebSocket straight to that worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from selenium.webdriver import Chrome

from test_bokeh_embed import EmbeddingSite, embedding_site  # noqa: F401 - a fixture
from test_bokeh_embed_proxies import check_embed, embedded_workers  # noqa: F401 - a fixture
from up_helpers import Fleet


def test_cross_site_embed_behind_the_generated_apache_makes_one_session_per_view(
        embedded_workers: Fleet, embedding_site: EmbeddingSite,  # noqa: F811
        browsers: Callable[..., Chrome], tmp_path: Path, report: Callable[[str], None]) -> None:
    check_embed("apache", embedded_workers, embedding_site, browsers, tmp_path, report)
