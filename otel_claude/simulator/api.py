"""The Admin API endpoints of the simulator, independent of the HTTP plumbing.

:meth:`AdminApi.handle` takes a parsed request (method, path, query, headers,
current time) and returns a :class:`Reply`.  Parameter validation follows the
published reference: required ``starting_at``, per-width ``limit`` bounds,
``group_by[]`` and filter enums, opaque page tokens.  Unknown query parameters
are rejected with a 400 rather than ignored, so a client typo (``group_by=model``
without brackets) shows up in tests instead of silently returning ungrouped data.

``ending_at`` follows the reference text ("time buckets that end before this
timestamp"): a bucket is returned when its end is at or before ``ending_at``; a
bucket that straddles ``ending_at`` is not.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from otel_claude.simulator.world import (
    COST_GROUPS,
    DAY,
    HOUR,
    MINUTE,
    USAGE_DIMENSIONS,
    CostKey,
    Fields,
    World,
    cost_group_key,
    format_cents,
    rfc3339,
)

API_PREFIX: Final = "/v1/organizations"
USAGE_PATH: Final = f"{API_PREFIX}/usage_report/messages"
COST_PATH: Final = f"{API_PREFIX}/cost_report"
CLAUDE_CODE_PATH: Final = f"{API_PREFIX}/usage_report/claude_code"
WORKSPACES_PATH: Final = f"{API_PREFIX}/workspaces"
API_KEYS_PATH: Final = f"{API_PREFIX}/api_keys"

FAST_MODE_BETA: Final = "fast-mode-2026-02-01"
API_VERSIONS: Final = frozenset({"2023-06-01", "2023-01-01"})

#: bucket_width -> (seconds, default limit, maximum limit)
USAGE_WIDTHS: Final = {"1m": (MINUTE, 60, 1440), "1h": (HOUR, 24, 168), "1d": (DAY, 7, 31)}

#: query array -> (dimension, allowed values or None for free-form ids)
USAGE_FILTERS: Final[Mapping[str, tuple[str, frozenset[str] | None]]] = {
    "api_key_ids[]": ("api_key_id", None),
    "workspace_ids[]": ("workspace_id", None),
    "models[]": ("model", None),
    "service_tiers[]": (
        "service_tier",
        frozenset({"standard", "batch", "priority", "priority_on_demand", "flex", "flex_discount"}),
    ),
    "context_window[]": ("context_window", frozenset({"0-200k", "200k-1M"})),
    "inference_geos[]": ("inference_geo", frozenset({"global", "us", "not_available"})),
    "speeds[]": ("speed", frozenset({"standard", "fast"})),
    "account_ids[]": ("account_id", None),
    "service_account_ids[]": ("service_account_id", None),
}

ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PAGE_PREFIX = "page_"


class ApiError(Exception):
    """An error answer in the API's documented shape."""

    def __init__(self, status: int, message: str, *, details: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def error_body(
    status: int, message: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``{"type": "error", "error": {...}}``; the server adds ``request_id``."""
    error: dict[str, Any] = {"type": ERROR_TYPES.get(status, "api_error"), "message": message}
    if details is not None:
        error["details"] = dict(details)
    return {"type": "error", "error": error}


@dataclass
class Reply:
    """Status, JSON body and extra headers of one answer."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------
# Parameter helpers
# --------------------------------------------------------------------------


class Params:
    """Validated access to a parsed query string."""

    def __init__(
        self, query: Mapping[str, list[str]], scalars: Collection[str], arrays: Collection[str]
    ) -> None:
        for name, values in query.items():
            if name in arrays:
                continue
            if name in scalars:
                if len(values) > 1:
                    raise ApiError(400, f"{name}: expected a single value, got {len(values)}")
                continue
            if f"{name}[]" in arrays:
                raise ApiError(
                    400, f"{name}: array parameter, send it as repeated `{name}[]=value` keys"
                )
            raise ApiError(400, f"{name}: unexpected query parameter")
        self._query = query

    def scalar(self, name: str) -> str | None:
        values = self._query.get(name)
        return values[0] if values else None

    def required(self, name: str) -> str:
        value = self.scalar(name)
        if value is None or value == "":
            raise ApiError(400, f"{name}: field required")
        return value

    def array(self, name: str) -> list[str]:
        return list(self._query.get(name, []))

    def limit(self, default: int, maximum: int) -> int:
        raw = self.scalar("limit")
        if raw is None:
            return default
        if not re.fullmatch(r"[+-]?\d+", raw.strip()):
            raise ApiError(400, f"limit: expected an integer, got {raw!r}")
        value = int(raw)
        if not 1 <= value <= maximum:
            raise ApiError(400, f"limit: must be between 1 and {maximum}, got {value}")
        return value


def parse_time(name: str, raw: str) -> int:
    """Epoch seconds of an RFC 3339 timestamp with an explicit offset."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, f"{name}: invalid RFC 3339 timestamp {raw!r}") from None
    if moment.tzinfo is None:
        raise ApiError(400, f"{name}: timestamp {raw!r} needs a time zone offset (e.g. Z)")
    return int(moment.timestamp() // 1)


def encode_token(payload: str) -> str:
    return _PAGE_PREFIX + base64.urlsafe_b64encode(payload.encode()).decode()


def decode_token(raw: str) -> str:
    if not raw.startswith(_PAGE_PREFIX):
        raise ApiError(400, "page: invalid page token")
    try:
        return base64.urlsafe_b64decode(raw[len(_PAGE_PREFIX) :].encode()).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise ApiError(400, "page: invalid page token") from None


def _bucket_token(start: int) -> str:
    return encode_token(rfc3339(start))


def _bucket_from_token(raw: str) -> int:
    text = decode_token(raw)
    try:
        return parse_time("page", text)
    except ApiError:
        raise ApiError(400, "page: invalid page token") from None


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _sort_key(key: tuple[str | None, ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((v is not None, v or "") for v in key)


def _betas(headers: Mapping[str, str]) -> set[str]:
    return {b.strip() for b in headers.get("anthropic-beta", "").split(",") if b.strip()}


# --------------------------------------------------------------------------
# Endpoints
# --------------------------------------------------------------------------

Handler = Callable[[str, Mapping[str, list[str]], Mapping[str, str], float], dict[str, Any]]


class AdminApi:
    """Routes and answers Admin API requests from a :class:`World`."""

    def __init__(self, world: World, api_key: str) -> None:
        self.world = world
        self.api_key = api_key
        self._routes: dict[str, Handler] = {
            USAGE_PATH: self._usage,
            COST_PATH: self._cost,
            CLAUDE_CODE_PATH: self._claude_code,
            WORKSPACES_PATH: self._list_workspaces,
            API_KEYS_PATH: self._list_api_keys,
        }

    def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        now: float,
    ) -> Reply:
        """Answer one request; ``headers`` must have lower-case names."""
        try:
            route = self._route(path)
            self._check_headers(headers)
            if method != "GET":
                raise ApiError(405, f"method {method} not allowed on {path}")
            return Reply(200, route(path, query, headers, now))
        except ApiError as exc:
            return Reply(exc.status, error_body(exc.status, exc.message, exc.details))

    def _route(self, path: str) -> Handler:
        route = self._routes.get(path)
        if route is not None:
            return route
        for prefix, handler in (
            (WORKSPACES_PATH + "/", self._get_workspace),
            (API_KEYS_PATH + "/", self._get_api_key),
        ):
            if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                return handler
        raise ApiError(404, "The requested resource could not be found.")

    def _check_headers(self, headers: Mapping[str, str]) -> None:
        key = headers.get("x-api-key")
        if key is None:
            auth = headers.get("authorization", "")
            key = auth[7:].strip() if auth.startswith("Bearer ") else None
        if key is None:
            raise ApiError(401, "x-api-key header is required")
        if key != self.api_key:
            raise ApiError(401, "invalid x-api-key")
        version = headers.get("anthropic-version")
        if not version:
            raise ApiError(400, "anthropic-version: header is required")
        if version not in API_VERSIONS:
            raise ApiError(400, f"anthropic-version: unknown version {version!r}")

    # ---------------------------------------------------------- time buckets

    def _buckets(
        self, params: Params, width: int, limit: int, now: float
    ) -> tuple[list[int], int | None]:
        """Bucket starts of this page and the start of the next page (or None)."""
        start = parse_time("starting_at", params.required("starting_at"))
        raw_end = params.scalar("ending_at")
        end = parse_time("ending_at", raw_end) if raw_end else None
        if end is not None and end <= start:
            raise ApiError(400, "ending_at: must be after starting_at")
        page = params.scalar("page")
        first = _bucket_from_token(page) if page else start
        first -= first % width
        current = int(now // width) * width  # the bucket containing now is the last one

        def allowed(bucket: int) -> bool:
            return bucket <= current and (end is None or bucket + width <= end)

        buckets: list[int] = []
        bucket = first
        while len(buckets) < limit and allowed(bucket):
            buckets.append(bucket)
            bucket += width
        more = len(buckets) == limit and allowed(bucket)
        return buckets, bucket if more else None

    @staticmethod
    def _page(data: list[dict[str, Any]], next_start: int | None) -> dict[str, Any]:
        return {
            "data": data,
            "has_more": next_start is not None,
            "next_page": None if next_start is None else _bucket_token(next_start),
        }

    # ------------------------------------------------------------ usage

    def _usage(
        self, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], now: float
    ) -> dict[str, Any]:
        params = Params(
            query,
            ("starting_at", "ending_at", "bucket_width", "limit", "page"),
            ("group_by[]", *USAGE_FILTERS),
        )
        fast_beta = FAST_MODE_BETA in _betas(headers)
        width_name = params.scalar("bucket_width") or "1d"
        if width_name not in USAGE_WIDTHS:
            raise ApiError(400, f"bucket_width: must be one of 1m, 1h, 1d, got {width_name!r}")
        width, default_limit, max_limit = USAGE_WIDTHS[width_name]
        limit = params.limit(default_limit, max_limit)
        group_by = _unique(params.array("group_by[]"))
        for name in group_by:
            if name not in USAGE_DIMENSIONS:
                raise ApiError(
                    400, f"group_by[]: {name!r} is not one of {', '.join(USAGE_DIMENSIONS)}"
                )
        if "speed" in group_by and not fast_beta:
            raise ApiError(400, f"group_by[]: speed requires the {FAST_MODE_BETA} beta header")
        filters: dict[str, set[str]] = {}
        for param, (dimension, allowed) in USAGE_FILTERS.items():
            values = params.array(param)
            if not values:
                continue
            if dimension == "speed" and not fast_beta:
                raise ApiError(400, f"{param}: requires the {FAST_MODE_BETA} beta header")
            for value in values:
                if allowed is not None and value not in allowed:
                    raise ApiError(
                        400, f"{param}: {value!r} is not one of {', '.join(sorted(allowed))}"
                    )
            filters[dimension] = set(values)
        buckets, next_start = self._buckets(params, width, limit, now)
        data = []
        for bucket in buckets:
            groups = self.world.usage(bucket, bucket + width, group_by, now, filters)
            results = [
                _usage_item(dict(zip(group_by, key, strict=True)), groups[key], fast_beta)
                for key in sorted(groups, key=_sort_key)
            ]
            data.append(
                {
                    "starting_at": rfc3339(bucket),
                    "ending_at": rfc3339(bucket + width),
                    "results": results,
                }
            )
        return self._page(data, next_start)

    # ------------------------------------------------------------ cost

    def _cost(
        self, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], now: float
    ) -> dict[str, Any]:
        params = Params(
            query, ("starting_at", "ending_at", "bucket_width", "limit", "page"), ("group_by[]",)
        )
        fast_beta = FAST_MODE_BETA in _betas(headers)
        width_name = params.scalar("bucket_width") or "1d"
        if width_name != "1d":
            raise ApiError(
                400, f"bucket_width: the cost report only supports 1d, got {width_name!r}"
            )
        limit = params.limit(7, 31)
        group_by = _unique(params.array("group_by[]"))
        for name in group_by:
            if name not in COST_GROUPS:
                raise ApiError(400, f"group_by[]: {name!r} is not one of workspace_id, description")
        buckets, next_start = self._buckets(params, DAY, limit, now)
        data = []
        for day in buckets:
            groups: dict[tuple[str | None, ...], tuple[CostKey, Decimal]] = {}
            for key, cents in self.world.cost_rows(day, now).items():
                group = cost_group_key(key, group_by)
                previous = groups.get(group)
                groups[group] = (key, cents if previous is None else previous[1] + cents)
            results = [
                _cost_item(*groups[group], group_by, fast_beta)
                for group in sorted(groups, key=_sort_key)
            ]
            data.append(
                {"starting_at": rfc3339(day), "ending_at": rfc3339(day + DAY), "results": results}
            )
        return self._page(data, next_start)

    # ------------------------------------------------------------ Claude Code

    def _claude_code(
        self, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], now: float
    ) -> dict[str, Any]:
        params = Params(query, ("starting_at", "limit", "page"), ())
        raw_day = params.required("starting_at")
        try:
            if not _DATE_RE.fullmatch(raw_day):
                raise ValueError(raw_day)
            day = date.fromisoformat(raw_day)
        except ValueError:
            raise ApiError(
                400, f"starting_at: expected a UTC date YYYY-MM-DD, got {raw_day!r}"
            ) from None
        limit = params.limit(20, 1000)
        records = self.world.claude_code_records(day, now)
        page = params.scalar("page")
        if page:
            try:
                cursor_day, kind, name = json.loads(decode_token(page))
                if not all(isinstance(part, str) for part in (cursor_day, kind, name)):
                    raise ValueError(page)
            except (ValueError, TypeError):
                raise ApiError(400, "page: invalid page token") from None
            if cursor_day != raw_day:
                raise ApiError(400, "page: token belongs to a different starting_at")
            records = [r for r in records if _actor_key(r) > (kind, name)]
        shown = records[:limit]
        has_more = len(records) > limit
        next_page = (
            encode_token(json.dumps([raw_day, *_actor_key(shown[-1])])) if has_more else None
        )
        return {"data": shown, "has_more": has_more, "next_page": next_page}

    # ------------------------------------------------------------ lists

    def _list_workspaces(
        self, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], now: float
    ) -> dict[str, Any]:
        params = Params(query, ("limit", "after_id", "before_id", "include_archived"), ())
        include = params.scalar("include_archived")
        if include not in (None, "true", "false"):
            raise ApiError(400, f"include_archived: expected true or false, got {include!r}")
        items = [w for w in self.world.workspaces if include == "true" or w["archived_at"] is None]
        return _list_page(items, params)

    def _list_api_keys(
        self, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], now: float
    ) -> dict[str, Any]:
        params = Params(
            query,
            ("limit", "after_id", "before_id", "status", "workspace_id", "created_by_user_id"),
            (),
        )
        items = list(self.world.api_keys)
        status = params.scalar("status")
        if status is not None:
            if status not in ("active", "inactive", "archived"):
                raise ApiError(400, f"status: must be active, inactive or archived, got {status!r}")
            items = [k for k in items if k["status"] == status]
        workspace_id = params.scalar("workspace_id")
        if workspace_id is not None:
            items = [k for k in items if k["workspace_id"] == workspace_id]
        creator = params.scalar("created_by_user_id")
        if creator is not None:
            items = [k for k in items if k["created_by"]["id"] == creator]
        return _list_page(items, params)

    def _get_workspace(
        self, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], now: float
    ) -> dict[str, Any]:
        Params(query, (), ())
        return _find(self.world.workspaces, path.rsplit("/", 1)[1])

    def _get_api_key(
        self, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], now: float
    ) -> dict[str, Any]:
        Params(query, (), ())
        return _find(self.world.api_keys, path.rsplit("/", 1)[1])


def _usage_item(group: Mapping[str, str | None], fields: Fields, fast_beta: bool) -> dict[str, Any]:
    uncached, output, cache_read, write_5m, write_1h, web_search = fields
    item: dict[str, Any] = {
        "uncached_input_tokens": uncached,
        "cache_creation": {
            "ephemeral_1h_input_tokens": write_1h,
            "ephemeral_5m_input_tokens": write_5m,
        },
        "cache_read_input_tokens": cache_read,
        "output_tokens": output,
        "server_tool_use": {"web_search_requests": web_search},
    }
    for dimension in USAGE_DIMENSIONS:
        if dimension != "speed" or fast_beta:
            item[dimension] = group.get(dimension)
    return item


def _cost_item(
    key: CostKey, cents: Decimal, group_by: Sequence[str], fast_beta: bool
) -> dict[str, Any]:
    workspace_id, description, cost_type, model, token_type, tier, window, geo = key
    by_description = "description" in group_by
    item: dict[str, Any] = {
        "currency": "USD",
        "amount": format_cents(cents),
        "workspace_id": workspace_id if "workspace_id" in group_by else None,
        "description": description if by_description else None,
        "cost_type": cost_type if by_description else None,
        "context_window": window if by_description else None,
        "model": model if by_description else None,
        "service_tier": tier if by_description else None,
        "token_type": token_type if by_description else None,
        "inference_geo": geo if by_description else None,
    }
    if fast_beta:
        item["speed"] = "standard" if by_description and cost_type == "tokens" else None
    return item


def _actor_key(record: Mapping[str, Any]) -> tuple[str, str]:
    actor = record["actor"]
    name = actor.get("email_address") or actor.get("api_key_name") or ""
    return (str(actor["type"]), str(name))


def _list_page(items: list[dict[str, Any]], params: Params) -> dict[str, Any]:
    limit = params.limit(20, 100)
    after, before = params.scalar("after_id"), params.scalar("before_id")
    if after and before:
        raise ApiError(400, "after_id and before_id are mutually exclusive")
    ids = [item["id"] for item in items]
    for name, value in (("after_id", after), ("before_id", before)):
        if value and value not in ids:
            raise ApiError(400, f"{name}: unknown id {value!r}")
    if after:
        lo = ids.index(after) + 1
        page, has_more = items[lo : lo + limit], lo + limit < len(items)
    elif before:
        hi = ids.index(before)
        lo = max(0, hi - limit)
        page, has_more = items[lo:hi], lo > 0
    else:
        page, has_more = items[:limit], len(items) > limit
    return {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }


def _find(items: list[dict[str, Any]], item_id: str) -> dict[str, Any]:
    for item in items:
        if item["id"] == item_id:
            return item
    raise ApiError(404, f"no object with id {item_id!r}")
