"""EC2 error classification: which failures are retried, which demote, which are config.

Classification looks only at the error code (and HTTP status for codeless 5xx), never
at the message: message texts differ between AWS and emulators and between releases.
"""

from __future__ import annotations

import enum
from typing import Any

from vip_sidecar.providers.base import ErrorKind, OwnershipLost, ProviderError


class Cause(enum.Enum):
    """What an EC2 failure is about (decides retrying; ProviderError.kind follows)."""

    THROTTLED = "throttled"  # retry with backoff
    TRANSIENT = "transient"  # 5xx, timeouts, connection errors: retry with backoff
    DENIED = "denied"  # missing IAM permission: no retry, demote, alert
    CREDENTIALS = "credentials"  # no/expired credentials or clock skew: no retry
    NOT_FOUND = "not_found"  # a configured id does not exist: configuration error
    INVALID = "invalid"  # rejected parameters: configuration error or control flow
    OTHER = "other"


THROTTLE_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "EC2ThrottledException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "BandwidthLimitExceeded",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InsufficientAddressCapacity",
    }
)
DENIED_CODES = frozenset(
    {
        "UnauthorizedOperation",
        "AccessDenied",
        "AccessDeniedException",
        "AuthFailure",
        "Blocked",
        "OptInRequired",
        "UnauthorizedAccess",
    }
)
CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "InvalidIdentityToken",
        "IncompleteSignature",
    }
)
INVALID_CODES = frozenset(
    {
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "InvalidParameter",
        "MissingParameter",
        "UnknownParameter",
        "InvalidID",
        "InvalidIPAddress.InUse",
        "PrivateIpAddressLimitExceeded",
        "Resource.AlreadyAssociated",
        "RouteAlreadyExists",
        "IncorrectInstanceState",
        "InvalidInput",
    }
)
# botocore exception classes that mean "the request may not have reached EC2": by name,
# so this module needs no botocore import (and unit tests can use stand-ins)
TRANSIENT_EXCEPTIONS = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ConnectionError",
        "HTTPClientError",
        "ProxyConnectionError",
        "ResponseStreamingError",
        "ResponseParserError",  # an HTML error page from a proxy or an emulator crash
        "TimeoutError",
    }
)
CREDENTIAL_EXCEPTIONS = frozenset(
    {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "NoRegionError"}
)


class AwsError(ProviderError):
    """Base of every error the AWS provider raises on purpose."""

    cause: Cause = Cause.OTHER

    def __init__(self, message: str, *, code: str | None = None, op: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.op = op


class AwsPermissionError(AwsError):
    cause = Cause.DENIED

    @property
    def iam_action(self) -> str:
        return iam_action(self.op or "?")


class AwsCredentialsError(AwsError):
    cause = Cause.CREDENTIALS


class AwsConfigError(AwsError):
    """A configured or discovered id is wrong, or a mode's preconditions are not met."""

    cause = Cause.NOT_FOUND


class AwsRetryExhausted(AwsError):
    cause = Cause.TRANSIENT
    kind = ErrorKind.RETRYABLE


class AwsVerifyTimeout(AwsError):
    """The calls were accepted but EC2 never showed the VIP pointing at this node."""

    kind = ErrorKind.RETRYABLE


class AwsTagBudgetError(AwsError):
    """The resource has no room for the fencing tag (EC2: 50 tags per resource)."""

    kind = ErrorKind.PERMANENT


class AwsNotOwner(AwsError):
    """The node is no longer meant to own the VIP: a mutating call was not issued."""

    kind = ErrorKind.RETRYABLE


class AwsFenceLost(AwsError, OwnershipLost):
    """Another node wrote a higher fencing epoch: it claimed the VIP after us."""

    kind = ErrorKind.OWNERSHIP_LOST


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def retry_attempts(obj: Any) -> int:
    """botocore's own retry count, from a response dict or a ClientError."""
    response = obj if isinstance(obj, dict) else getattr(obj, "response", None)
    if not isinstance(response, dict):
        return 0
    return int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0)


def classify(exc: BaseException) -> Cause:
    code = error_code(exc)
    if code is not None:
        if code in THROTTLE_CODES:
            return Cause.THROTTLED
        if code in TRANSIENT_CODES:
            return Cause.TRANSIENT
        if code in DENIED_CODES:
            return Cause.DENIED
        if code in CREDENTIAL_CODES:
            return Cause.CREDENTIALS
        if code.endswith((".NotFound", ".Malformed")):
            return Cause.NOT_FOUND
        if code in INVALID_CODES or code.startswith("Invalid"):
            return Cause.INVALID
    status = http_status(exc)
    if status is not None and status >= 500:
        # codeless 5xx (a proxy's HTML page, an emulator's crash page) is a server fault
        return Cause.TRANSIENT
    if code is None:
        names = {cls.__name__ for cls in type(exc).__mro__}
        if names & TRANSIENT_EXCEPTIONS:
            return Cause.TRANSIENT
        if names & CREDENTIAL_EXCEPTIONS:
            return Cause.CREDENTIALS
    return Cause.OTHER


def is_retryable(kind: Cause) -> bool:
    return kind in (Cause.THROTTLED, Cause.TRANSIENT)


def iam_action(op: str) -> str:
    """EC2 IAM actions are named exactly like the API operations."""
    return f"ec2:{op}"


def translate(exc: BaseException, op: str, context: str = "") -> AwsError:
    """Turn a botocore failure into the provider's error with an operator-facing message."""
    kind = classify(exc)
    code = error_code(exc)
    where = f" ({context})" if context else ""
    if code == "TagLimitExceeded":
        return AwsTagBudgetError(
            f"{op}{where}: TagLimitExceeded: the resource already carries the 50 tags EC2 "
            "allows, so the fencing tag cannot be written; remove unused tags from it "
            "(vip-sidecar needs one per VIP) - not retried",
            code=code,
            op=op,
        )
    if kind is Cause.DENIED:
        return AwsPermissionError(
            f"{op}{where} denied with {code}: the credentials lack the IAM permission "
            f"{iam_action(op)} for this resource; grant it (see docs/aws.md for the minimal "
            "policy) - not retried",
            code=code,
            op=op,
        )
    if kind is Cause.CREDENTIALS:
        return AwsCredentialsError(
            f"{op}{where} failed: AWS credentials missing, invalid or expired "
            f"({code or type(exc).__name__}); check IRSA / instance role and the clock",
            code=code,
            op=op,
        )
    if kind is Cause.NOT_FOUND:
        return AwsConfigError(
            f"{op}{where}: {code}: a configured or discovered id does not exist in this "
            "region/account - check the aws provider options (eni_id, allocation_id, "
            "route_table_ids, region)",
            code=code,
            op=op,
        )
    if kind in (Cause.THROTTLED, Cause.TRANSIENT):
        return AwsRetryExhausted(
            f"{op}{where} kept failing with {code or type(exc).__name__} until the deadline",
            code=code,
            op=op,
        )
    if kind is Cause.INVALID:
        return AwsConfigError(f"{op}{where} rejected with {code}: {exc}", code=code, op=op)
    detail = code or type(exc).__name__
    return AwsError(f"{op}{where} failed: {detail}: {exc}", code=code, op=op)
