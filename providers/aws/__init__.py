"""The AWS provider (see vip_sidecar.providers.aws.provider): options, identity (IMDSv2), the EC2
client and its retries, the modes, preflight."""

from vip_sidecar.providers.aws.provider import AwsProvider, create

__all__ = ["AwsProvider", "create"]
