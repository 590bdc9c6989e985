//! IP networks in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), as `api.trusted_proxies`
//! names the reverse proxies whose forwarding headers the API believes.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IP network: an address and how many of its leading bits are the network's.
///
/// Invariant: the bits past the prefix are zero (`10.1.2.3/8` is refused rather than silently
/// widened), so two spellings of one network compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpCidr {
    network: IpAddr,
    prefix_bits: u8,
}

/// Why a text is not a CIDR network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a CIDR network: {reason}")]
pub struct IpCidrError {
    /// The text.
    pub text: String,
    /// What is wrong.
    pub reason: &'static str,
}

fn address_bits(address: IpAddr) -> (u128, u8) {
    match address {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

fn mask(prefix_bits: u8, width: u8) -> u128 {
    if prefix_bits == 0 {
        0
    } else {
        (u128::MAX << (128 - u32::from(prefix_bits))) >> (128 - u32::from(width))
    }
}

impl IpCidr {
    /// The network of `network`/`prefix_bits`; `None` when the prefix is longer than the
    /// address or host bits are set.
    pub fn new(network: IpAddr, prefix_bits: u8) -> Option<Self> {
        let (bits, width) = address_bits(network);
        (prefix_bits <= width && bits & !mask(prefix_bits, width) == 0).then_some(Self {
            network,
            prefix_bits,
        })
    }

    /// Whether `address` lies in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
    /// what a dual-stack socket reports) counts as its IPv4 address.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            IpAddr::V4(_) => address,
        };
        let (bits, width) = address_bits(address);
        let (network, network_width) = address_bits(self.network);
        width == network_width && bits & mask(self.prefix_bits, width) == network
    }
}

impl FromStr for IpCidr {
    type Err = IpCidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = |reason| IpCidrError {
            text: text.to_owned(),
            reason,
        };
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| error("not an IPv4 or IPv6 address"))?;
        let width = address_bits(address).1;
        let prefix_bits = match prefix {
            // A bare address is the network of that one address.
            None => width,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|bits| *bits <= width)
                .ok_or_else(|| error("the prefix length is not 0..=32 (IPv4) or 0..=128 (IPv6)"))?,
        };
        Self::new(address, prefix_bits).ok_or_else(|| error("bits past the prefix are set"))
    }
}

impl TryFrom<String> for IpCidr {
    type Error = IpCidrError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<IpCidr> for String {
    fn from(cidr: IpCidr) -> Self {
        cidr.to_string()
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> IpCidr {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let check = |network: &str, address: &str, expected: bool| {
            assert_eq!(
                cidr(network).contains(ip(address)),
                expected,
                "{network} ∋ {address}"
            );
        };
        check("10.0.0.0/8", "10.255.1.2", true);
        check("10.0.0.0/8", "11.0.0.0", false);
        check("127.0.0.1", "127.0.0.1", true);
        check("127.0.0.1", "127.0.0.2", false);
        check("0.0.0.0/0", "203.0.113.9", true);
        check("0.0.0.0/0", "2001:db8::1", false);
        check("2001:db8::/32", "2001:db8:ffff::1", true);
        check("2001:db8::/32", "2001:db9::1", false);
        check("::/0", "::1", true);
        check("192.168.0.0/16", "::ffff:192.168.4.5", true);
    }

    #[test]
    fn malformed_networks_are_refused() {
        for text in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.1.0.0/8",
            "10.0.0.0/x",
            "example.com/8",
            "10.0.0.0/-1",
        ] {
            assert!(text.parse::<IpCidr>().is_err(), "{text:?}");
        }
        for (text, shown) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("::1", "::1/128"),
            ("0.0.0.0/0", "0.0.0.0/0"),
        ] {
            assert_eq!(cidr(text).to_string(), shown);
            assert_eq!(cidr(shown), cidr(text));
        }
    }
}
