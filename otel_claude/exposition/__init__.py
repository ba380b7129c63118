"""Renderers: the same ledger totals as Prometheus text and as OTel instruments."""
