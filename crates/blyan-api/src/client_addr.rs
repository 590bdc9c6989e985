//! Who a request comes from, for limits: the client's address and the bucket it is counted in.
//!
//! The client is the TCP peer, unless the peer is one of `api.trusted_proxies`: then the
//! configured forwarding header (`X-Forwarded-For` or RFC 7239 `Forwarded`) is read from the
//! right, hop by hop, and the first address that is not a trusted proxy is the client. A header
//! from any other peer is ignored: anyone can write one.
//!
//! Limits count buckets, not addresses: an IPv4 address is one bucket, while an IPv6 client is
//! counted by its /64 (one subscriber's LAN under standard allocation; rotating addresses
//! inside it is free, so counting addresses would make each rotation a new quota).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::http::HeaderMap;
use blyan_node_core::{ForwardedHeader, IpCidr};

/// Most forwarding hops read from the right of a header; a longer chain is a client padding it.
pub const FORWARDED_HOPS_MAX: usize = 16;

/// Leading bits of an IPv6 address that name one client.
pub const IPV6_CLIENT_PREFIX_BITS: u32 = 64;

/// What rate limits, the free tier and sign-in nonces count a client by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientBucket {
    /// An IPv4 address (an IPv4-mapped IPv6 address counts as its IPv4 address).
    V4(Ipv4Addr),
    /// The first [`IPV6_CLIENT_PREFIX_BITS`] bits of an IPv6 address.
    V6Prefix(u64),
}

impl ClientBucket {
    /// The bucket `ip` is counted in.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                None => Self::V6Prefix(
                    u64::try_from(u128::from(v6) >> (128 - IPV6_CLIENT_PREFIX_BITS))
                        .expect("a 128-bit value shifted right by 64 fits in 64 bits"),
                ),
            },
        }
    }
}

impl std::fmt::Display for ClientBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::V4(v4) => write!(f, "{v4}"),
            Self::V6Prefix(prefix) => write!(
                f,
                "{}/{IPV6_CLIENT_PREFIX_BITS}",
                Ipv6Addr::from(u128::from(*prefix) << (128 - IPV6_CLIENT_PREFIX_BITS))
            ),
        }
    }
}

/// The reverse proxies believed, and which header they write.
#[derive(Debug, Clone)]
pub(crate) struct TrustedProxies {
    networks: Vec<IpCidr>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    pub(crate) fn new(networks: Vec<IpCidr>, header: ForwardedHeader) -> Self {
        Self { networks, header }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|network| network.contains(ip))
    }

    /// The client of a request from `peer` carrying `headers`.
    pub(crate) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let (name, node_of): (&str, fn(&str) -> Option<&str>) = match self.header {
            ForwardedHeader::Forwarded => ("forwarded", forwarded_for),
            // `ForwardedHeader` is non-exhaustive; X-Forwarded-For is its default.
            _ => ("x-forwarded-for", |entry| Some(entry)),
        };
        // Every line of the header, in order, then its entries from the right.
        let entries: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        let mut client = peer;
        for entry in entries.iter().rev().take(FORWARDED_HOPS_MAX) {
            // An entry a trusted proxy wrote is an address; anything else ends the walk at the
            // last hop known for sure.
            let Some(hop) = node_of(entry).and_then(parse_node) else {
                return client;
            };
            client = hop;
            if !self.trusts(hop) {
                return hop;
            }
        }
        client
    }
}

/// The `for=` value of one RFC 7239 `Forwarded` element (`for=192.0.2.60;proto=http`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })
}

/// An address from a forwarding entry: `192.0.2.60`, `192.0.2.60:4711`, `2001:db8::1`,
/// `"[2001:db8::1]:4711"`. Obfuscated identifiers (`_hidden`, `unknown`) are no address.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Some(rest) = text.strip_prefix('[') {
        return rest
            .split_once(']')?
            .0
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    let (host, port) = text.split_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies(networks: &[&str], header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies::new(
            networks.iter().map(|text| text.parse().unwrap()).collect(),
            header,
        )
    }

    fn headers(name: &'static str, lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(name, HeaderValue::from_str(line).unwrap());
        }
        map
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_an_ipv4_client_its_address() {
        let one = ClientBucket::of(ip("2001:db8:1:2:aaaa::1"));
        let same_lan = ClientBucket::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        let next_lan = ClientBucket::of(ip("2001:db8:1:3::1"));
        assert_eq!(one, same_lan);
        assert_ne!(one, next_lan);
        assert_eq!(one.to_string(), "2001:db8:1:2::/64");
        assert_ne!(
            ClientBucket::of(ip("192.0.2.1")),
            ClientBucket::of(ip("192.0.2.2"))
        );
        assert_eq!(
            ClientBucket::of(ip("::ffff:192.0.2.1")),
            ClientBucket::of(ip("192.0.2.1"))
        );
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let none = proxies(&[], ForwardedHeader::XForwardedFor);
        let spoof = headers("x-forwarded-for", &["203.0.113.7"]);
        assert_eq!(none.client(ip("198.51.100.1"), &spoof), ip("198.51.100.1"));
        let loopback = proxies(&["127.0.0.1"], ForwardedHeader::XForwardedFor);
        assert_eq!(
            loopback.client(ip("198.51.100.1"), &spoof),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = proxies(&["127.0.0.1", "10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let peer = ip("127.0.0.1");
        let check = |lines: &[&str], expected: &str| {
            assert_eq!(
                trusted.client(peer, &headers("x-forwarded-for", lines)),
                ip(expected),
                "{lines:?}"
            );
        };
        // A client-written entry on the left does not move the client.
        check(&["6.6.6.6, 203.0.113.7"], "203.0.113.7");
        check(&["6.6.6.6", "203.0.113.7, 10.1.1.1"], "203.0.113.7");
        check(&["2001:db8::5, 10.0.0.2 , 10.0.0.1"], "2001:db8::5");
        // Nothing forwarded, or only proxies: the last proxy known.
        check(&[], "127.0.0.1");
        check(&["10.0.0.9"], "10.0.0.9");
        // Garbage where a proxy should have written an address: the last hop known for sure.
        check(&["203.0.113.7, garbage"], "127.0.0.1");
        check(&["203.0.113.7:5555"], "203.0.113.7");
    }

    #[test]
    fn rfc_7239_forwarded_is_read_when_configured() {
        let trusted = proxies(&["127.0.0.1"], ForwardedHeader::Forwarded);
        let peer = ip("127.0.0.1");
        let map = headers(
            "forwarded",
            &[r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https"#],
        );
        assert_eq!(trusted.client(peer, &map), ip("2001:db8:cafe::17"));
        let map = headers("forwarded", &["For=192.0.2.60;proto=http;by=203.0.113.43"]);
        assert_eq!(trusted.client(peer, &map), ip("192.0.2.60"));
        // The other header is not believed.
        let map = headers("x-forwarded-for", &["192.0.2.60"]);
        assert_eq!(trusted.client(peer, &map), peer);
        let map = headers("forwarded", &["for=_hidden"]);
        assert_eq!(trusted.client(peer, &map), peer);
    }

    #[test]
    fn a_padded_chain_is_read_only_so_far() {
        let trusted = proxies(&["10.0.0.0/8", "127.0.0.1"], ForwardedHeader::XForwardedFor);
        let mut hops = vec!["203.0.113.7"];
        hops.extend(std::iter::repeat_n("10.0.0.1", FORWARDED_HOPS_MAX));
        let map = headers("x-forwarded-for", &[&hops.join(", ")]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &map), ip("10.0.0.1"));
    }
}
