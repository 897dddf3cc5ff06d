"""The pre-screen API's HTTP layer (Starlette on uvicorn): authentication, limits, validation, errors, metrics.

Each request: the API key (header X-API-Key) first, so an unauthenticated client costs one hash; then the body
(declared JSON, at most AML_API_MAX_BODY_BYTES, checked before and while reading), then the models, then the
screening. The screening runs on the event loop itself: a lookup is one Redis round trip of ~100 us, less than
handing it to a thread would cost; a Redis that stops answering holds a request for at most
AML_REDIS_TIMEOUT_SECONDS, then every request answers 503 (fail closed) until it is back.

Errors are JSON (models.ErrorAnswer) with a stable code and, for invalid fields, the path of each field; they never
repeat the values sent. Log lines name the key id, the endpoint, the error and decision ids, never an address, an
account or a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from aml_screener.api.keys import KeyRing
from aml_screener.api.metrics import ApiMetrics
from aml_screener.api.models import AddressesRequest, WithdrawalRequest
from aml_screener.api.openapi import API_KEY_HEADER, openapi_document
from aml_screener.api.recorder import DecisionRecorder, NotRecorded
from aml_screener.api.screening import InvalidWithdrawal, PreScreener
from aml_screener.screener.errors import LookupUnavailable
from aml_screener.screener.health import loop_liveness_problem
from aml_screener.screening.decision import Outcome

log = logging.getLogger(__name__)

_JSON = "application/json"
# The event loop's heartbeat period: /healthz (on the probe port, another thread) calls the API stuck when the loop
# has not beaten for AML_HEALTH_STALL_SECONDS.
_HEARTBEAT_SECONDS = 1.0
_T = TypeVar("_T")


class ApiError(Exception):
    """An answer other than 200: its status, stable code, a sentence, and the fields at fault."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        *,
        reason: str | None = None,
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.reason, self.errors = status, error, detail, reason, errors or []

    def response(self) -> Response:
        body = {"error": self.error, "detail": self.detail, "reason": self.reason, "errors": self.errors}
        return Response(orjson.dumps(body), status_code=self.status, media_type=_JSON)


@dataclass
class ApiState:
    """What /healthz and /readyz (served by screener.health.HealthServer on AML_HTTP_PORT) ask the API."""

    stall_seconds: float = 60.0
    last_beat: float = field(default_factory=time.monotonic)
    watchlist_version: str | None = None
    outage: str | None = "starting"  # why the watchlist cannot be consulted; None when it can
    on_readiness: Callable[[bool], None] | None = None

    def heartbeat(self) -> None:
        self.last_beat = time.monotonic()

    def set_ready(self, version: str) -> None:
        if self.outage is not None or version != self.watchlist_version:
            self.outage, self.watchlist_version = None, version
            if self.on_readiness is not None:
                self.on_readiness(True)

    def set_not_ready(self, reason: str) -> None:
        if self.outage != reason:
            self.outage = reason
            if self.on_readiness is not None:
                self.on_readiness(False)

    def liveness_problem(self) -> str | None:
        return loop_liveness_problem(time.monotonic(), self.last_beat, None, self.stall_seconds)

    def snapshot(self) -> dict[str, Any]:
        return {
            "ready": self.outage is None,
            "reason": self.outage,
            "watchlist_version": self.watchlist_version,
            "seconds_since_loop": round(time.monotonic() - self.last_beat, 3),
        }

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return self.outage is None, self.snapshot()


@dataclass
class ApiContext:
    """Everything the routes use, built by api/app.py (tests build it against their own Redis)."""

    screener: PreScreener
    keys: Callable[[], KeyRing]
    metrics: ApiMetrics
    state: ApiState
    max_body_bytes: int
    max_batch: int
    recorder: DecisionRecorder | None = None


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _invalid(exc: ValidationError) -> ApiError:
    problems = exc.errors(include_url=False, include_input=False, include_context=False)
    if any(problem["type"] == "json_invalid" for problem in problems):
        return ApiError(400, "invalid_json", "the body is not valid JSON")
    errors = [{"field": _field_path(problem["loc"]), "message": problem["msg"]} for problem in problems]
    shown = ", ".join(error["field"] or "(body)" for error in errors[:5])
    return ApiError(422, "invalid_request", f"invalid fields: {shown}", errors=errors)


def _unavailable(exc: LookupUnavailable) -> ApiError:
    return ApiError(
        503,
        "watchlist_unavailable",
        "the watchlist cannot be consulted: nothing is screened (fail closed); retry later",
        reason=exc.reason,
    )


class _Routes:
    """The handlers, over one ApiContext."""

    def __init__(self, context: ApiContext) -> None:
        self.context = context
        self.metrics = context.metrics
        self.state = context.state
        self.document = orjson.dumps(openapi_document())

    async def body_of(self, request: Request) -> bytes:
        """The body: declared JSON, at most max_body_bytes (checked from Content-Length, then while reading)."""
        limit = self.context.max_body_bytes
        content_type = request.headers.get("content-type", "")
        if content_type.split(";", 1)[0].strip().lower() != _JSON:
            raise ApiError(415, "unsupported_media_type", "the body must be sent as application/json")
        too_large = ApiError(413, "payload_too_large", f"the body may have at most {limit} bytes")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
        except ClientDisconnect:
            raise ApiError(400, "invalid_request", "the client went away before sending the whole body") from None
        return b"".join(chunks)

    def authenticate(self, request: Request) -> str:
        key_id = self.context.keys().authenticate(request.headers.get(API_KEY_HEADER))
        if key_id is None:
            raise ApiError(401, "unauthorized", f"a valid API key is required in the {API_KEY_HEADER} header")
        return key_id

    def endpoint(
        self, name: str, handler: Callable[[bytes, str], Awaitable[bytes]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A route: authentication, body, the handler, the error answers, metrics and the log line of a refusal."""
        requests, duration = self.metrics.requests, self.metrics.duration.labels(name)

        async def serve(request: Request) -> Response:
            started = time.perf_counter()
            key_id: str | None = None
            try:
                key_id = self.authenticate(request)
                answer = await handler(await self.body_of(request), key_id)
            except ApiError as exc:
                requests.labels(name, exc.error if exc.error != "invalid_json" else "invalid_request").inc()
                duration.observe(time.perf_counter() - started)
                log.log(
                    logging.WARNING if exc.status >= 500 else logging.INFO,
                    "request refused",
                    extra={"endpoint": name, "status": exc.status, "error": exc.error, "reason": exc.reason,
                           "key_id": key_id, "fields": [error["field"] for error in exc.errors[:10]]},
                )  # fmt: skip
                return exc.response()
            except Exception:
                requests.labels(name, "error").inc()
                log.exception("request failed", extra={"endpoint": name, "key_id": key_id})
                return ApiError(500, "error", "internal error; the request was not screened").response()
            requests.labels(name, "ok").inc()
            duration.observe(time.perf_counter() - started)
            return Response(answer, media_type=_JSON)

        return serve

    def screen(self, run: Callable[[], _T]) -> _T:
        """Run a screening; a watchlist that cannot be consulted becomes a 503 (and not-ready)."""
        try:
            return run()
        except LookupUnavailable as exc:
            self.metrics.lookup_errors.labels(exc.reason).inc()
            self.state.set_not_ready(exc.reason)
            raise _unavailable(exc) from None

    async def addresses(self, body: bytes, key_id: str) -> bytes:
        del key_id
        try:
            parsed = AddressesRequest.model_validate_json(body)
        except ValidationError as exc:
            raise _invalid(exc) from None
        limit = self.context.max_batch
        if len(parsed.addresses) > limit:
            raise ApiError(
                422,
                "invalid_request",
                f"at most {limit} pairs per request",
                errors=[{"field": "addresses", "message": f"at most {limit} items (AML_API_MAX_BATCH)"}],
            )
        answer = self.screen(lambda: self.context.screener.addresses(parsed.addresses))
        self.state.set_ready(answer["watchlist_version"])
        self.metrics.batch_size.observe(len(parsed.addresses))
        screened = self.metrics.screened
        for result in answer["results"]:
            screened.labels("addresses", result["outcome"], result["action"]).inc()
        return orjson.dumps(answer)

    async def withdrawal(self, body: bytes, key_id: str) -> bytes:
        try:
            parsed = WithdrawalRequest.model_validate_json(body)
        except ValidationError as exc:
            raise _invalid(exc) from None
        try:
            screened = self.screen(lambda: self.context.screener.withdrawal(parsed))
        except InvalidWithdrawal as exc:
            raise ApiError(422, "invalid_request", f"the stream would refuse this withdrawal ({exc.reason}): "
                           f"{exc.detail}", errors=[{"field": "", "message": exc.detail}]) from None  # fmt: skip
        decision = screened.decision
        if decision["watchlist_version"] is not None:
            self.state.set_ready(decision["watchlist_version"])
        self.metrics.screened.labels("withdrawal", decision["decision"], decision["action"] or "").inc()
        if decision["decision"] == Outcome.FLAGGED:
            log.info(
                "pre-screened withdrawal flagged",
                extra={"decision_id": decision["decision_id"], "event_id": decision["event_id"],
                       "action": decision["action"], "severity": decision["severity"], "key_id": key_id},
            )  # fmt: skip
        recorded = False
        recorder = self.context.recorder
        if recorder is not None:
            try:
                await recorder.record(screened.outputs)
            except NotRecorded as exc:
                self.metrics.recorded.labels("failed").inc()
                raise ApiError(503, "not_recorded", f"the decision was not recorded on the decisions topic: {exc}",
                               reason="kafka") from None  # fmt: skip
            self.metrics.recorded.labels("acknowledged").inc()
            recorded = True
        return orjson.dumps({"decision": decision, "recorded": recorded})

    async def openapi(self, request: Request) -> Response:
        del request
        return Response(self.document, media_type=_JSON)

    @staticmethod
    async def http_error(request: Request, exc: Exception) -> Response:
        """Starlette's own refusals (unknown path, wrong method) as JSON errors too."""
        del request
        assert isinstance(exc, HTTPException)
        codes = {404: "not_found", 405: "method_not_allowed"}
        answer = ApiError(exc.status_code, codes.get(exc.status_code, "invalid_request"), str(exc.detail)).response()
        if exc.headers:
            answer.headers.update(exc.headers)
        return answer

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """The event loop's heartbeat, for /healthz."""
        del app

        async def beat() -> None:
            while True:
                self.state.heartbeat()
                await asyncio.sleep(_HEARTBEAT_SECONDS)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()


def build_app(context: ApiContext) -> Starlette:
    routes = _Routes(context)
    return Starlette(
        routes=[
            Route("/v1/screen/addresses", routes.endpoint("addresses", routes.addresses), methods=["POST"]),
            Route("/v1/screen/withdrawal", routes.endpoint("withdrawal", routes.withdrawal), methods=["POST"]),
            Route("/v1/openapi.json", routes.openapi, methods=["GET"]),
        ],
        exception_handlers={HTTPException: routes.http_error},
        lifespan=routes.lifespan,
    )
