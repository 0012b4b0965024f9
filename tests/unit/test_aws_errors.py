"""EC2 error classification: by code (and status for codeless 5xx), never by message."""

import pytest
from botocore.exceptions import (
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from providers.aws_errors import (
    AwsConfigError,
    AwsCredentialsError,
    AwsPermissionError,
    AwsRetryExhausted,
    ErrorKind,
    classify,
    is_retryable,
    translate,
)
from tests.awsfakes.fake_ec2 import client_error


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("RequestLimitExceeded", 503, ErrorKind.THROTTLED),
        ("EC2ThrottledException", 503, ErrorKind.THROTTLED),
        ("Throttling", 400, ErrorKind.THROTTLED),
        ("InternalError", 500, ErrorKind.TRANSIENT),
        ("ServiceUnavailable", 503, ErrorKind.TRANSIENT),
        ("Unavailable", 503, ErrorKind.TRANSIENT),
        ("RequestTimeout", 400, ErrorKind.TRANSIENT),
        ("500", 500, ErrorKind.TRANSIENT),  # an HTML 500 page: botocore's code is the status
        ("SomethingNew", 502, ErrorKind.TRANSIENT),
        ("UnauthorizedOperation", 403, ErrorKind.DENIED),
        ("AccessDenied", 403, ErrorKind.DENIED),
        ("AuthFailure", 401, ErrorKind.DENIED),
        ("OptInRequired", 401, ErrorKind.DENIED),
        ("ExpiredToken", 400, ErrorKind.CREDENTIALS),
        ("RequestExpired", 400, ErrorKind.CREDENTIALS),
        ("InvalidClientTokenId", 403, ErrorKind.CREDENTIALS),
        ("InvalidNetworkInterfaceID.NotFound", 400, ErrorKind.NOT_FOUND),
        ("InvalidAllocationID.NotFound", 400, ErrorKind.NOT_FOUND),
        ("InvalidRouteTableID.NotFound", 400, ErrorKind.NOT_FOUND),
        ("InvalidInstanceID.Malformed", 400, ErrorKind.NOT_FOUND),
        ("InvalidParameterValue", 400, ErrorKind.INVALID),
        ("RouteAlreadyExists", 400, ErrorKind.INVALID),
        ("Resource.AlreadyAssociated", 400, ErrorKind.INVALID),
        ("DryRunOperation", 412, ErrorKind.OTHER),
    ],
)
def test_classify_by_code(code, status, kind):
    assert classify(client_error(code, status)) is kind
    assert is_retryable(kind) == (kind in (ErrorKind.THROTTLED, ErrorKind.TRANSIENT))


def test_message_text_is_ignored():
    err = client_error("UnauthorizedOperation", 403)
    err.response["Error"]["Message"] = "Request limit exceeded. Please retry (throttling)"
    assert classify(err) is ErrorKind.DENIED


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="http://x"),
        ConnectTimeoutError(endpoint_url="http://x"),
        ReadTimeoutError(endpoint_url="http://x"),
    ],
)
def test_network_failures_are_transient(exc):
    assert classify(exc) is ErrorKind.TRANSIENT


def test_translate_gives_operator_messages():
    denied = translate(client_error("UnauthorizedOperation", 403), "ReplaceRoute", "rtb-1")
    assert isinstance(denied, AwsPermissionError)
    assert "ec2:ReplaceRoute" in str(denied) and "not retried" in str(denied)
    assert denied.iam_action == "ec2:ReplaceRoute" and denied.code == "UnauthorizedOperation"
    missing = translate(client_error("InvalidAllocationID.NotFound"), "AssociateAddress")
    assert isinstance(missing, AwsConfigError) and "allocation_id" in str(missing)
    assert isinstance(translate(client_error("RequestLimitExceeded", 503), "CreateTags"),
                      AwsRetryExhausted)
    creds = translate(NoCredentialsError(), "DescribeAddresses")
    assert isinstance(creds, AwsCredentialsError) and "credentials" in str(creds)
    invalid = translate(client_error("InvalidParameterValue"), "ReplaceRoute")
    assert isinstance(invalid, AwsConfigError) and invalid.code == "InvalidParameterValue"
