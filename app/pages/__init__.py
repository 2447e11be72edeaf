"""Dash Pages of the app: each module here declares ``PAGES`` (layouts only, no callbacks).

``app.create_app`` imports every module of this package and registers each :class:`PageSpec`
with ``dash.register_page``; pages with a ``nav_label`` get a navbar link. To add a page:
create ``app/pages/<name>.py`` with a ``layout(**kwargs)`` function and
``PAGES = [PageSpec(...)]``, add its ids to ``app/ids.py`` and its callbacks to
``callbacks/<name>.py`` (listed in ``callbacks/__init__.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PageSpec:
    """What dash.register_page needs, plus how the navbar shows the page."""

    key: str  # registry key; a key ending in "not_found_404" is Dash's 404 page
    layout: Callable[..., Any]
    name: str
    title: str | Callable[..., str]
    path: str | None = None
    path_template: str | None = None
    order: int | None = None
    nav_label: str | None = None  # shown in the navbar when set
    nav_path: str | None = None  # the link's target and the prefix that marks it active
    scenario: bool = False  # the page reads the what-if scenario: its link carries it along
    description: str = ""

    def register_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "name": self.name,
            "title": self.title,
            "order": self.order,
            "layout": self.layout,
            "description": self.description,
            "nav_label": self.nav_label,
            "nav_path": self.nav_path or self.path,
            "scenario": self.scenario,
        }
        if self.path_template:
            kw["path_template"] = self.path_template
        if self.path:
            kw["path"] = self.path
        return kw
