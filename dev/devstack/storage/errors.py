"""Storage errors shaped like storage-api's ``StorageBackendError``.

The real server answers HTTP 400 for every non-500 error and carries the meaningful status as
the *string* ``statusCode`` in the body, next to ``code`` (machine code, read by supabase-js),
``error`` (read by storage3 as the exception's ``code``) and ``message``.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

logger = logging.getLogger("devstack.storage")


class StorageError(Exception):
    def __init__(self, status: int, code: str, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.error = error or code

    def body(self) -> dict[str, str]:
        return {
            "statusCode": str(self.status),
            "code": self.code,
            "error": self.error,
            "message": self.message,
        }

    def response(self) -> Response:
        # storage-api: userStatusCode = httpStatusCode === 500 ? 500 : 400
        http_status = 500 if self.status == 500 else 400
        return JSONResponse(self.body(), status_code=http_status)


async def handle_storage_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StorageError)
    return exc.response()


async def handle_database_unavailable(request: Request, exc: Exception) -> Response:
    """Connection failures and pool exhaustion: retryable, like storage-api's 503s."""
    logger.warning("storage %s %s: database unavailable: %s", request.method, request.url.path, exc)
    return StorageError(
        503, "DatabaseConnectionLimit", "The database is unavailable. Please try again later."
    ).response()


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """Anything else: storage-api's generic 500 body (the exception is logged by the server)."""
    return StorageError(500, "InternalError", "Internal Server Error", error="Internal").response()


# -- the errors storage-api raises, with its codes and wording -------------------------------
def no_such_key() -> StorageError:
    return StorageError(404, "NoSuchKey", "Object not found", error="not_found")


def no_such_bucket() -> StorageError:
    return StorageError(404, "NoSuchBucket", "Bucket not found", error="Bucket not found")


def key_already_exists() -> StorageError:
    return StorageError(409, "KeyAlreadyExists", "The resource already exists", error="Duplicate")


def bucket_already_exists() -> StorageError:
    return StorageError(
        409, "BucketAlreadyExists", "The resource already exists", error="Duplicate"
    )


def bucket_not_empty() -> StorageError:
    return StorageError(409, "ResourceNotEmpty", "The bucket you tried to delete is not empty")


def invalid_jwt(message: str) -> StorageError:
    return StorageError(400, "InvalidJWT", message)


def access_denied(message: str) -> StorageError:
    return StorageError(403, "AccessDenied", message, error="Unauthorized")


def rls_denied() -> StorageError:
    return access_denied("new row violates row-level security policy")


def invalid_key(key: str) -> StorageError:
    return StorageError(400, "InvalidKey", f"Invalid key: {key}")


def invalid_bucket_name() -> StorageError:
    return StorageError(400, "InvalidBucketName", "Bucket name invalid", error="Invalid Input")


def invalid_request(message: str) -> StorageError:
    return StorageError(400, "InvalidRequest", message)


def entity_too_large() -> StorageError:
    return StorageError(
        413,
        "EntityTooLarge",
        "The object exceeded the maximum allowed size",
        error="Payload too large",
    )


def invalid_mime_type(mime: str) -> StorageError:
    return StorageError(
        415, "InvalidMimeType", f"mime type {mime} is not supported", error="invalid_mime_type"
    )


def invalid_signature(message: str = "Invalid signature") -> StorageError:
    return StorageError(400, "InvalidSignature", message)
