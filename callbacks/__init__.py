"""Every page's callbacks, registered in one place (DESIGN.md §2).

Each module exposes ``register(app)``; its callbacks stay thin: parse inputs, ask the read
model (app.readmodel) or the engine (forecasting), build outputs with components. The view
functions they wrap are plain functions so tests call them directly.

To add a page's callbacks: write ``callbacks/<page>.py`` with ``register(app)`` and add the
module to ``MODULES`` below.
"""

from __future__ import annotations

from dash import Dash

from . import changes, consolidation, decisions, overview, risk, server, shell, track_record, whatif

MODULES = (shell, overview, server, whatif, risk, consolidation, decisions, changes, track_record)


def register(app: Dash) -> None:
    """Register the callbacks of the shell and of every page on ``app``."""
    for module in MODULES:
        module.register(app)
