//! The connect-time address guard of webhooks and export destinations
//! (`sinks/src/address.rs`) on any address:
//! - an IPv4-mapped IPv6 address gets the verdict of its IPv4 address;
//! - every address inside the IPv4-embedding prefixes (NAT64, 6to4) is refused;
//! - an address an operator allows (`allow_networks` of exactly it) is accepted;
//! - a refusal names the address it refused.
#![no_main]

#[path = "../../../sinks/src/address.rs"]
#[allow(dead_code)]
mod address;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use address::AddressPolicy;
use libfuzzer_sys::fuzz_target;

/// What address.rs needs of its crate (`sinks::Error::invalid`).
#[derive(Debug)]
pub struct Error;

impl Error {
    pub fn invalid(_field: impl Into<String>, _message: impl Into<String>) -> Error {
        Error
    }
}

pub type Result<T> = std::result::Result<T, Error>;

fuzz_target!(|data: &[u8]| {
    let policy = AddressPolicy::default();
    let ip = match data {
        [0, a, b, c, d, ..] => IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d)),
        [_, rest @ ..] if rest.len() >= 16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&rest[..16]);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return,
    };
    let verdict = policy.check(ip);
    if let IpAddr::V4(v4) = ip {
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        assert_eq!(
            verdict.is_ok(),
            policy.check(mapped).is_ok(),
            "{ip} vs {mapped}"
        );
    }
    if let IpAddr::V6(v6) = ip {
        let s = v6.segments();
        let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
        if nat64 || s[0] == 0x2002 {
            assert!(verdict.is_err(), "{ip} passed");
        }
    }
    if let Err(reason) = &verdict {
        let named = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        assert!(reason.contains(&named.to_string()), "{ip}: {reason}");
    }
    let net = ipnet::IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 }).unwrap();
    assert!(
        AddressPolicy::new(vec![net]).check(ip).is_ok(),
        "{ip} allowed"
    );
});
