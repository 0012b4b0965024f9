"""Who this node is in EC2: region, instance, ENI, subnet; from options, IMDSv2 or EC2.

Discovery runs at init (and again from up()/check() until it succeeds), never in the
advertisement loop. The IMDS part is blocking and runs in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from vip_sidecar.providers.aws.api import Ec2Api
from vip_sidecar.providers.aws.errors import AwsConfigError
from vip_sidecar.providers.aws.imds import ImdsClient, ImdsError, interface_mac
from vip_sidecar.providers.aws.options import AwsOptions


@dataclass
class Identity:
    region: str
    eni_id: str
    instance_id: str | None = None
    mac: str | None = None
    subnet_id: str | None = None
    vpc_id: str | None = None
    private_ip: IPv4Address | None = None  # the ENI's primary private IP
    subnet_cidr: IPv4Network | None = None
    vpc_cidrs: tuple[IPv4Network, ...] = ()
    # None: not known yet (IMDS not used); () : the subnet/VPC has no IPv6 CIDR
    subnet_ipv6_cidrs: tuple[IPv6Network, ...] | None = None
    vpc_ipv6_cidrs: tuple[IPv6Network, ...] = ()
    source_dest_check: bool | None = None
    eni_tags: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # field -> option|imds|describe


def discover(
    opts: AwsOptions, environ: Mapping[str, str], interface: str, imds: Callable[[], ImdsClient]
) -> tuple[Identity, list[str]]:
    """Region, instance and ENI: options first, then IMDSv2, then the environment.

    Runs in a worker thread. eni_id "" means: find it by MAC through EC2."""
    o = opts
    sources: dict[str, str] = {}
    warnings: list[str] = []
    region = o.region
    if region:
        sources["region"] = "option"
    instance_id = o.instance_id
    eni_id = o.eni_id
    mac = o.mac
    info: dict[str, str | None] = {}
    env_region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    imds_failed: ImdsError | None = None
    if o.needs_imds or (region is None and not env_region):
        client = imds()
        try:
            if region is None:
                region = client.region()
                sources["region"] = "imds"
            if instance_id is None:
                instance_id = client.instance_id()
                sources["instance_id"] = "imds"
            if eni_id is None:
                if mac is None:
                    mac = interface_mac(interface)
                    sources["mac"] = f"interface {interface}"
                info = client.interface(mac)
                eni_id = info["interface-id"]
                sources["eni_id"] = "imds"
        except ImdsError as exc:
            imds_failed = exc
    if region is None and env_region:
        # boto3 reads AWS_DEFAULT_REGION only; we also honour AWS_REGION (IRSA sets it)
        region = env_region
        sources["region"] = "environment"
    elif (
        region is not None
        and sources.get("region") == "imds"
        and env_region
        and env_region != region
    ):
        warnings.append(
            f"the environment says region {env_region} but this instance is in {region} "
            "(from IMDS); using the instance's region"
        )
    if region is None:
        raise AwsConfigError(
            "cannot determine the AWS region: set option region (IMDS "
            f"{'failed: ' + str(imds_failed) if imds_failed else 'unavailable'})"
        )
    if imds_failed is not None:
        warnings.append(
            f"IMDS discovery failed ({imds_failed})"
            + ("; finding the ENI by MAC through EC2 instead" if eni_id is None else "")
        )
    if eni_id is None:
        if mac is None:
            mac = interface_mac(interface)
            sources["mac"] = f"interface {interface}"
        eni_id = ""  # resolved by DescribeNetworkInterfaces(mac-address) after init
    ident = Identity(
        region=region, eni_id=eni_id, instance_id=instance_id, mac=mac, sources=sources
    )
    if info:
        ident.subnet_id = info.get("subnet-id")
        ident.vpc_id = info.get("vpc-id")
        ident.subnet_cidr = _network(info.get("subnet-ipv4-cidr-block"))
        cidrs = (info.get("vpc-ipv4-cidr-blocks") or "").split()
        ident.vpc_cidrs = tuple(n for n in map(_network, cidrs) if n is not None)
        # IMDS answers 404 (None here) for the IPv6 leaves of an IPv4-only subnet
        ident.subnet_ipv6_cidrs = _networks6(info.get("subnet-ipv6-cidr-blocks"))
        ident.vpc_ipv6_cidrs = _networks6(info.get("vpc-ipv6-cidr-blocks"))
        first = (info.get("local-ipv4s") or "").split()
        if first:
            ident.private_ip = IPv4Address(first[0])
    if o.subnet_id:
        ident.subnet_id = o.subnet_id
        sources["subnet_id"] = "option"
    return ident, warnings


async def eni_by_mac(api: Ec2Api, ident: Identity, deadline: float) -> None:
    resp = await api.call(
        "DescribeNetworkInterfaces",
        deadline,
        f"find the ENI with MAC {ident.mac}",
        Filters=[{"Name": "mac-address", "Values": [str(ident.mac)]}],
    )
    found = resp.get("NetworkInterfaces", [])
    if len(found) != 1:
        raise AwsConfigError(
            f"no single ENI has MAC {ident.mac} (found {len(found)}); set option eni_id"
        )
    ident.eni_id = str(found[0]["NetworkInterfaceId"])
    ident.sources["eni_id"] = "describe(mac-address)"


async def describe_own_eni(api: Ec2Api, ident: Identity, deadline: float) -> None:
    resp = await api.call(
        "DescribeNetworkInterfaces",
        deadline,
        f"own ENI {ident.eni_id}",
        NetworkInterfaceIds=[ident.eni_id],
    )
    enis = resp.get("NetworkInterfaces", [])
    if not enis:
        raise AwsConfigError(f"ENI {ident.eni_id} not found in {ident.region}")
    eni = enis[0]
    ident.subnet_id = ident.subnet_id or eni.get("SubnetId")
    ident.vpc_id = ident.vpc_id or eni.get("VpcId")
    if ident.private_ip is None and eni.get("PrivateIpAddress"):
        ident.private_ip = IPv4Address(eni["PrivateIpAddress"])
    if ident.instance_id is None:
        ident.instance_id = (eni.get("Attachment") or {}).get("InstanceId")
        if ident.instance_id:
            ident.sources["instance_id"] = "describe"
    ident.source_dest_check = eni.get("SourceDestCheck")
    ident.eni_tags = {str(t.get("Key")): str(t.get("Value")) for t in eni.get("TagSet", [])}
    if ident.mac is None and eni.get("MacAddress"):
        ident.mac = str(eni["MacAddress"])


def _network(text: str | None) -> IPv4Network | None:
    if not text:
        return None
    try:
        return IPv4Network(text.strip(), strict=False)
    except ValueError:
        return None


def _networks6(text: str | None) -> tuple[IPv6Network, ...]:
    out = []
    for item in (text or "").split():
        try:
            out.append(IPv6Network(item, strict=False))
        except ValueError:
            continue
    return tuple(out)
