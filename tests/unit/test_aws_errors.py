"""EC2 error classification: by code (and status for codeless 5xx), never by message."""

import pytest
from botocore.exceptions import (
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from tests.awsfakes.fake_ec2 import client_error
from vip_sidecar.providers.aws.errors import (
    AwsConfigError,
    AwsCredentialsError,
    AwsPermissionError,
    AwsRetryExhausted,
    Cause,
    classify,
    is_retryable,
    translate,
)


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("RequestLimitExceeded", 503, Cause.THROTTLED),
        ("EC2ThrottledException", 503, Cause.THROTTLED),
        ("Throttling", 400, Cause.THROTTLED),
        ("InternalError", 500, Cause.TRANSIENT),
        ("ServiceUnavailable", 503, Cause.TRANSIENT),
        ("Unavailable", 503, Cause.TRANSIENT),
        ("RequestTimeout", 400, Cause.TRANSIENT),
        ("500", 500, Cause.TRANSIENT),  # an HTML 500 page: botocore's code is the status
        ("SomethingNew", 502, Cause.TRANSIENT),
        ("UnauthorizedOperation", 403, Cause.DENIED),
        ("AccessDenied", 403, Cause.DENIED),
        ("AuthFailure", 401, Cause.DENIED),
        ("OptInRequired", 401, Cause.DENIED),
        ("ExpiredToken", 400, Cause.CREDENTIALS),
        ("RequestExpired", 400, Cause.CREDENTIALS),
        ("InvalidClientTokenId", 403, Cause.CREDENTIALS),
        ("InvalidNetworkInterfaceID.NotFound", 400, Cause.NOT_FOUND),
        ("InvalidAllocationID.NotFound", 400, Cause.NOT_FOUND),
        ("InvalidRouteTableID.NotFound", 400, Cause.NOT_FOUND),
        ("InvalidInstanceID.Malformed", 400, Cause.NOT_FOUND),
        ("InvalidParameterValue", 400, Cause.INVALID),
        ("RouteAlreadyExists", 400, Cause.INVALID),
        ("Resource.AlreadyAssociated", 400, Cause.INVALID),
        ("DryRunOperation", 412, Cause.OTHER),
    ],
)
def test_classify_by_code(code, status, kind):
    assert classify(client_error(code, status)) is kind
    assert is_retryable(kind) == (kind in (Cause.THROTTLED, Cause.TRANSIENT))


def test_message_text_is_ignored():
    err = client_error("UnauthorizedOperation", 403)
    err.response["Error"]["Message"] = "Request limit exceeded. Please retry (throttling)"
    assert classify(err) is Cause.DENIED


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="http://x"),
        ConnectTimeoutError(endpoint_url="http://x"),
        ReadTimeoutError(endpoint_url="http://x"),
    ],
)
def test_network_failures_are_transient(exc):
    assert classify(exc) is Cause.TRANSIENT


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
