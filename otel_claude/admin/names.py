"""Workspace and API key names, for ``*_info`` series to join on in PromQL.

Names change rarely and are not counted, so they live in memory and are refreshed on a
long interval (default hourly); the usage counters carry only the stable ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from otel_claude.admin.client import AdminClient

SOURCE = "admin_names"


@dataclass(frozen=True)
class ApiKeyInfo:
    """One API key as listed by the Admin API."""

    id: str
    name: str
    workspace_id: str
    status: str


class NamesReport:
    """Refreshes workspace and API key names."""

    name = SOURCE

    def __init__(
        self, client: AdminClient, *, clock: Callable[[], float], refresh_s: float = 3600.0
    ) -> None:
        self._client = client
        self._clock = clock
        self._refresh = refresh_s
        self._last: float | None = None
        self.workspaces: dict[str, str] = {}
        self.api_keys: list[ApiKeyInfo] = []

    def due(self) -> bool:
        """Whether a refresh is due (always before the first success)."""
        return self._last is None or self._clock() - self._last >= self._refresh

    def poll(self) -> None:
        """Re-list workspaces and keys (archived workspaces keep their names)."""
        workspaces = self._client.list_all("workspaces", [("include_archived", "true")])
        keys = self._client.list_all("api_keys")
        self.workspaces = {
            str(w["id"]): str(w.get("name") or w["id"]) for w in workspaces if w.get("id")
        }
        self.api_keys = [
            ApiKeyInfo(
                str(k["id"]),
                str(k.get("name") or ""),
                str(k.get("workspace_id") or "default"),
                str(k.get("status") or ""),
            )
            for k in keys
            if k.get("id")
        ]
        self._last = self._clock()
