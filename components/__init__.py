"""Reusable UI pieces: figures, KPI cards, grids, filter bar, page furniture (pure builders)."""
