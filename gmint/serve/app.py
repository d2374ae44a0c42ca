"""The web page and its JSON API: a FastAPI app over the audits found at start-up.

Routes (documented in `/openapi.json`; the interactive docs pages are off, as they load scripts from a CDN):

    GET  /                               the page (HTML, with /app.js and /style.css; no CDN, works offline)
    GET  /api/audits                     the audits and the upload limits
    GET  /api/audits/{name}              one audit
    POST /api/audits/{name}/score        multipart: files (1..max_files images), labels (one per image, or one
                                         for all: a class, or `predicted` for the model's prediction; required,
                                         none is assumed), to_grey (bool) → per-image probabilities, verdict,
                                         caveats

An audit name in a URL is looked up in the listing built at start-up; no part of a request is ever joined into
a path. Errors are JSON `{"detail": "<one line>"}` with 404 (unknown audit), 413 (too large, too many), 422
(not an image, unknown class, ...). Request bodies are counted while they stream in (`BodyLimit`), so an
oversized upload is cut off before it is parsed, whatever its Content-Length claims.

Only an `UploadError` speaks to the client: every refusal of a request's content is one, in words built from
the request (display names, classes, limits). Any other failure while scoring is the server's own (an audit's
store removed or replaced since start-up, a disk error, a bug): its answer is a generic 5xx line, as the
library's messages name the server's files, and its cause goes to the `gmint.serve` log for whoever runs it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, computed_field
from pydantic.dataclasses import dataclass as pydantic_dataclass

import gmint
from gmint.assess.evaluate import ModelGap
from gmint.errors import GmintError
from gmint.serve.audits import PublishedAudit
from gmint.serve.limits import Limits, UploadError, check_count, check_image, display_name
from gmint.serve.uploads import caveats, score_uploads

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The page loads nothing from elsewhere; thumbnails are the user's own files (blob: URLs).
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; "
                                 b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
log = logging.getLogger("gmint.serve")
# The answers to the server's own faults: generic, as their causes name the server's files.
FAULT = "the server could not score these images: a fault on its side, not in the images (its log says which)"
CHANGED = ("audit {name!r} changed on the server since it started; it scores no images until the server is "
           "restarted")
# A malformed request, field by field, in the page's words (pydantic's own messages speak of types).
MALFORMED = {"files": "no images in the request; send one or more image files",
             "to_grey": "“convert colour images to grey” must be true or false",
             "name": "an audit's name has at most 64 characters"}
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}


# ---------------------------------------------------------------------------------------------------------
# The API's shapes (they document /openapi.json)


@pydantic_dataclass(frozen=True)
class Gap(ModelGap):
    """The audited model's own accuracy and mean loss on members and on external samples (training record)."""

    accuracy_gap = computed_field(ModelGap.accuracy_gap)  # the page shows the gap itself, as `to_dict` gives it


class ModelInput(BaseModel):
    """The audited model's input: uploads are resized to side x side and matched to its channels."""

    channels: int | None
    side: int | None


class Classifier(BaseModel):
    """The MINT classifier: its kind, the layer setup and reduction of the Weight Modifiers it reads."""

    kind: str
    setup: str
    reduction: str


class AuditInfo(BaseModel):
    """One published audit."""

    name: str = Field(description="Its name in URLs.")
    title: str
    description: str
    alpha: float = Field(description="The false-positive rate the verdict is calibrated to.")
    classes: list[str] = Field(description="The audited model's classes; each image is labelled with one, or "
                                           "with `predicted` (the model's own prediction).")
    input: ModelInput
    dataset: str = Field(description="The dataset the classifier's store was extracted from.")
    classifier: Classifier
    gap: Gap | None = Field(description="The audited model's generalisation gap (null if not recorded).")
    n_calibration: int = Field(description="Held-out external samples the verdict is calibrated on.")


class LimitsInfo(BaseModel):
    """What one scoring request may carry."""

    max_files: int
    max_file_bytes: int
    max_request_bytes: int
    max_pixels: int


class AuditList(BaseModel):
    """Every audit this server publishes, and the upload limits."""

    gmint_version: str
    audits: list[AuditInfo]
    limits: LimitsInfo


class ImageResult(BaseModel):
    """One image: the MINT classifier's membership probability under the class it was scored with."""

    name: str = Field(description="The uploaded file's name, cleaned (display only).")
    label: str = Field(description="The class it was scored under.")
    label_source: str = Field(description="true: the class it was given; predicted: the audited model's own "
                                          "prediction, asked for with the label `predicted`.")
    score: float = Field(description="P(member) from the MINT classifier.")


class Verdict(BaseModel):
    """The set-level test of H0 "these images were not in training" against held-out external samples."""

    test: str
    alternative: str
    statistic: float
    p_value: float
    alpha: float
    rejects_h0: bool
    n_candidates: int
    n_calibration: int
    mean_candidate: float
    mean_calibration: float
    effect: float = Field(description="P(an image outscores an external sample); 0.5 under H0.")
    conclusion: str = Field(description="The verdict in plain language (saying so where labels were predicted).")
    label_source: str = Field(description="true: every image had its class; predicted: images labelled "
                                          "`predicted` were scored under the model's prediction.")
    predicted_labels: int = Field(description="How many images were scored under the model's prediction.")


class Caveat(BaseModel):
    """One thing to read beside the verdict."""

    topic: str = Field(description="predicted_labels (only when an image was labelled `predicted`) | resized "
                                   "(only when images were) | gap | false_positive_rate | absence | repeats")
    text: str


class ScoreResult(BaseModel):
    """Per-image probabilities in upload order, the verdict and its caveats."""

    audit: str
    images: list[ImageResult]
    verdict: Verdict
    caveats: list[Caveat]
    resized: int = Field(description="How many images were resized to the model's input side.")
    seconds: float = Field(description="Time spent scoring, on the server.")


class ErrorBody(BaseModel):
    """Every error: one line."""

    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody, "description": text} for code, text in (
    (404, "Unknown audit."), (413, "Too many images, or a file or request over the limits."),
    (422, "Not an image, a damaged one, no label or an unknown class, wrong labels or sizes."),
    (500, "A fault on the server's side (its log says which)."),
    (503, "The audit's files changed on the server since it started."))}


# ---------------------------------------------------------------------------------------------------------
# Request bodies counted as they stream in, and security headers on every response


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse (413) a request body over `max_bytes`, counted as it arrives, and add the
    security headers to every response."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, counting its body; answer 413 instead once it is over the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = f"the request is over this server's limit of {self.max_bytes:,} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _send_error(send, 413, refusal)
            return
        seen, tripped, started = 0, False, False

        async def counted() -> Message:
            nonlocal seen, tripped
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    tripped = True
                    raise _BodyTooLarge
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if tripped:  # whatever the app answers to a body cut off mid-parse, the answer is 413
                return
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except _BodyTooLarge:
            pass
        if tripped and not started:
            await _send_error(send, 413, refusal)


async def _send_error(send: Send, status: int, detail: str) -> None:
    response = JSONResponse({"detail": detail}, status_code=status, headers={"connection": "close"})
    body = response.body
    await send({"type": "http.response.start", "status": status,
                "headers": [*response.raw_headers, *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------------------
# The app


def _static() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the installed package (URL → bytes, media type)."""
    folder = resources.files("gmint.serve") / "static"
    return {url: ((folder / file).read_bytes(), media) for url, (file, media) in STATIC.items()}


def create_app(audits: Mapping[str, PublishedAudit], limits: Limits | None = None, *,
               tmp_root: Path | None = None) -> FastAPI:
    """The web app over `audits` (see `gmint.serve.audits.find_audits`).

    Args:
        audits: the published audits by name; the listing every URL is looked up in.
        limits: upload limits (default: `Limits()`).
        tmp_root: where each request's temporary folder, for its candidates' feature store, is made (default:
            the system's); it is removed when the request ends.
    """
    limits = limits or Limits()
    audits = dict(audits)
    static = _static()
    app = FastAPI(title="gmint — was my data used to train this model?", version=gmint.__version__,
                  description="Membership-inference audits of image models (gMINT), published by whoever runs this "
                              "server. Upload images with their classes (or ask for the model's prediction); get "
                              "each image's membership probability and a set-level verdict with its p-value.",
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)

    @app.exception_handler(GmintError)
    async def _gmint_error(request: Request, exc: GmintError) -> JSONResponse:
        if isinstance(exc, UploadError):
            return JSONResponse({"detail": str(exc)}, status_code=exc.status)
        log.error("%s %s: %s", request.method, request.url.path, exc)  # its message may name server files
        return JSONResponse({"detail": FAULT}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = first.get("loc", ())  # ("body" | "path", field, ...)
        field = str(loc[1]) if len(loc) > 1 else "request"
        return JSONResponse({"detail": MALFORMED.get(field, f"the {field} sent is not valid")}, status_code=422)

    def audit_named(name: str) -> PublishedAudit:
        if name not in audits:
            known = ", ".join(audits) or "none"
            raise HTTPException(404, f"unknown audit {name[:64]!r}; this server has: {known}")
        return audits[name]

    def page(url: str) -> Callable[[], Response]:
        content, media = static[url]

        def serve() -> Response:
            return Response(content, media_type=media, headers={"cache-control": "no-cache"})

        return serve

    for url in STATIC:
        app.add_api_route(url, page(url), methods=["GET"], include_in_schema=False)

    @app.get("/api/audits", response_model=AuditList, summary="The published audits and the upload limits")
    def list_audits() -> dict[str, object]:
        return {"gmint_version": gmint.__version__, "audits": [a.to_dict() for a in audits.values()],
                "limits": limits.to_dict()}

    @app.get("/api/audits/{name}", response_model=AuditInfo, responses={404: ERRORS[404]}, summary="One audit")
    def get_audit(name: Annotated[str, PathParam(max_length=64)]) -> dict[str, object]:
        return audit_named(name).to_dict()

    @app.post("/api/audits/{name}/score", response_model=ScoreResult, responses=ERRORS,
              summary="Score images and test them as a set")
    def score(name: Annotated[str, PathParam(max_length=64)],
              files: Annotated[list[UploadFile], File(description="The images (PNG, JPEG, BMP, PPM).")],
              labels: Annotated[list[str] | None, Form(
                  description="The class of each image, in the order of `files`, or one for all of them; "
                              "`predicted` scores an image under the audited model's own prediction. Required: "
                              "no class is assumed.")] = None,
              to_grey: Annotated[bool, Form(description="Convert colour images to grey (luma) for a greyscale "
                                                        "model; without it they are refused.")] = False,
              ) -> dict[str, object]:
        """Each image's membership probability and the set-level verdict, with the caveats to read beside it.

        The verdict tests H0 "these images were not used in training" with a one-sided Mann–Whitney U test
        against the MINT scores of held-out external samples; its false-positive rate is the audit's α.
        """
        audit = audit_named(name)
        try:
            check_count(len(files), limits)
            checked = []
            for i, upload in enumerate(files):
                shown = display_name(upload.filename, i)
                # One byte more than allowed is enough to refuse it (check_image says so, with the limit).
                checked.append(check_image(shown, upload.file.read(limits.max_file_bytes + 1), limits, audit.side))
            unchanged(audit)
            start = time.perf_counter()
            result = score_uploads(audit, checked, labels or [], to_grey=to_grey, tmp_root=tmp_root)
            unchanged(audit)  # a store replaced while it was read may have given a mixed answer
        except (UploadError, HTTPException):
            raise
        except (GmintError, OSError) as exc:
            log.error("audit %s: scoring failed: %s", audit.name, exc)
            raise HTTPException(500, FAULT) from None
        except Exception:  # a bug: the client gets the same generic line, the log the traceback
            log.exception("audit %s: scoring failed", audit.name)
            raise HTTPException(500, FAULT) from None
        return {**result.to_dict(), "caveats": caveats(audit, result.resized, len(checked), result.predicted),
                "seconds": round(time.perf_counter() - start, 4)}

    return app


def unchanged(audit: PublishedAudit) -> None:
    """Refuse (503) to score with an audit whose store was removed or replaced since it was loaded: its
    verdict would no longer be the one published; the reason, naming the file, goes to the log."""
    reason = audit.changed()
    if reason is not None:
        log.error("audit %s: %s; restart the server to publish it again", audit.name, reason)
        raise HTTPException(503, CHANGED.format(name=audit.name))
