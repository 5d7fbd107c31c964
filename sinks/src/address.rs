//! The connect-time address guard: which destination addresses an environment's
//! settings may make tidemark connect to. Private, loopback, link-local, CGNAT,
//! multicast, documentation and IPv4-embedding ranges (NAT64, 6to4, Teredo) are refused
//! unless a range of the deployment's `allow_networks` holds the address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use ipnet::IpNet;

use crate::{Error, Result};

/// Address ranges refused unless allow-listed, with the name used in errors.
const RANGES: &[(&str, &str)] = &[
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "CGNAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    // Prefixes that embed an IPv4 address a gateway may forward to: NAT64, 6to4, Teredo.
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "unique local (ULA)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
];

/// [`RANGES`] parsed once.
static BLOCKED: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    RANGES
        .iter()
        .filter_map(|(cidr, name)| cidr.parse().ok().map(|net| (net, *name)))
        .collect()
});

/// Which destination addresses may be connected to.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

impl AddressPolicy {
    /// Blocks the private ranges except those inside `allow`.
    pub fn new(allow: Vec<IpNet>) -> AddressPolicy {
        AddressPolicy { allow }
    }

    /// Parses CIDR ranges (`127.0.0.0/8`, `::1/128`); `field` names the setting.
    pub fn parse_allow(items: &[String], field: &str) -> Result<Vec<IpNet>> {
        items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<IpNet>().map_err(|e| {
                    Error::invalid(
                        format!("{field}[{i}]"),
                        format!("{s:?} is not a CIDR range: {e}"),
                    )
                })
            })
            .collect()
    }

    /// `Err(reason)` when `ip` may not be connected to.
    pub fn check(&self, ip: IpAddr) -> std::result::Result<(), String> {
        // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) reaches the IPv4 host: judge that.
        // An allowed range may be written either way.
        let given = ip;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if self
            .allow
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&given))
        {
            return Ok(());
        }
        match blocked_range(ip) {
            Some(name) => Err(format!("{ip} is a {name} address")),
            None => Ok(()),
        }
    }
}

fn blocked_range(ip: IpAddr) -> Option<&'static str> {
    BLOCKED
        .iter()
        .find_map(|(net, name)| net.contains(&ip).then_some(*name))
}

/// Addresses the tests and docs use as examples of each blocked range.
pub fn blocked_examples() -> Vec<IpAddr> {
    vec![
        IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)),
        IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
        IpAddr::V4(Ipv4Addr::new(172, 16, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1)),
        IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1)),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6("fd00::1".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
        IpAddr::V6("fe80::1".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
        IpAddr::V6("ff02::1".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
        IpAddr::V6("::ffff:10.0.0.1".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
        // 169.254.169.254 through NAT64, 6to4 and Teredo.
        IpAddr::V6("64:ff9b::a9fe:a9fe".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
        IpAddr::V6(
            "64:ff9b:1::a9fe:a9fe"
                .parse()
                .unwrap_or(Ipv6Addr::LOCALHOST),
        ),
        IpAddr::V6("2002:a9fe:a9fe::1".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
        IpAddr::V6(
            "2001:0:4136:e378:8000:63bf:5601:5601"
                .parse()
                .unwrap_or(Ipv6Addr::LOCALHOST),
        ),
        IpAddr::V6("2001:db8::1".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
        IpAddr::V6("3fff::1".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
        IpAddr::V6("100::1".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_parses_once() {
        assert_eq!(
            BLOCKED.len(),
            RANGES.len(),
            "a range in RANGES does not parse"
        );
        let e = AddressPolicy::default()
            .check("64:ff9b::a9fe:a9fe".parse().unwrap())
            .unwrap_err();
        assert_eq!(e, "64:ff9b::a9fe:a9fe is a NAT64 address");
    }

    #[test]
    fn every_blocked_range_is_refused_and_public_addresses_pass() {
        let policy = AddressPolicy::default();
        for ip in blocked_examples() {
            assert!(policy.check(ip).is_err(), "{ip} should be refused");
        }
        for ok in [
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:93.184.216.34",
            "172.32.0.1",
        ] {
            let ip: IpAddr = ok.parse().unwrap();
            assert_eq!(policy.check(ip), Ok(()), "{ok}");
        }
        let e = policy
            .check("::ffff:127.0.0.1".parse().unwrap())
            .unwrap_err();
        assert_eq!(e, "127.0.0.1 is a loopback address");
    }

    #[test]
    fn allow_list_opens_only_its_range() {
        let allow = AddressPolicy::parse_allow(&["127.0.0.0/8".into()], "allow").unwrap();
        let policy = AddressPolicy::new(allow);
        assert_eq!(policy.check("127.0.0.2".parse().unwrap()), Ok(()));
        assert_eq!(policy.check("::ffff:127.0.0.1".parse().unwrap()), Ok(()));
        assert!(policy.check("10.0.0.1".parse().unwrap()).is_err());
        assert!(policy.check("::1".parse().unwrap()).is_err());
        // A range written in its IPv4-mapped form allows those addresses too (found by
        // the `address` fuzz target: it was refused after the mapping to IPv4).
        let mapped = AddressPolicy::new(vec!["::ffff:10.0.0.0/104".parse().unwrap()]);
        assert_eq!(mapped.check("::ffff:10.1.2.3".parse().unwrap()), Ok(()));
        let e =
            AddressPolicy::parse_allow(&["127.0.0.0/8".into(), "nope".into()], "webhooks.allow")
                .unwrap_err()
                .to_string();
        assert!(
            e.starts_with("webhooks.allow[1]: \"nope\" is not a CIDR range"),
            "{e}"
        );
    }
}
