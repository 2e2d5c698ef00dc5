//! The client's address behind reverse proxies. Limits key on it, so it must be the client's,
//! not the proxy's (every user would share one bucket), and never a header anyone can write
//! (anyone would pick their own bucket).
//!
//! `KINKO_TRUSTED_PROXIES` lists the proxies (addresses or CIDR blocks, comma-separated). Only
//! when the peer is one of them is `X-Forwarded-For` read, from the right: the first address
//! that is not a trusted proxy is the client. Without the setting the header is ignored. The
//! middleware replaces the request's `ConnectInfo`, so every handler sees the client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

/// At most this many proxies may be listed (each check walks the list).
pub const TRUSTED_PROXIES_MAX: usize = 64;
/// At most this many `X-Forwarded-For` entries are read, from the right.
pub const FORWARDED_HOPS_MAX: usize = 16;

/// The configured proxies: (network address, prefix length).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `KINKO_TRUSTED_PROXIES`: `192.0.2.10, 10.0.0.0/8, 2001:db8::/32`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut blocks = Vec::new();
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (address, prefix) = match part.split_once('/') {
                Some((address, prefix)) => (address, Some(prefix)),
                None => (part, None),
            };
            let address: IpAddr = address
                .parse()
                .map_err(|_| format!("{part:?} is not an address or CIDR block"))?;
            let bits = if address.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => bits,
                Some(prefix) => prefix
                    .parse::<u8>()
                    .ok()
                    .filter(|prefix| *prefix <= bits)
                    .ok_or_else(|| format!("{part:?} has an invalid prefix length"))?,
            };
            // An IPv4-mapped block is the IPv4 block it maps.
            let block = match (address, canonical(address)) {
                (IpAddr::V6(_), IpAddr::V4(v4)) => {
                    let prefix = prefix
                        .checked_sub(96)
                        .ok_or_else(|| format!("{part:?} has an invalid prefix length"))?;
                    (IpAddr::V4(v4), prefix)
                }
                _ => (address, prefix),
            };
            blocks.push(block);
        }
        if blocks.len() > TRUSTED_PROXIES_MAX {
            return Err(format!("at most {TRUSTED_PROXIES_MAX} entries"));
        }
        Ok(Self(blocks))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|(network, prefix)| match (*network, ip) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(network)), *prefix, 32)
                    == masked(u128::from(u32::from(ip)), *prefix, 32)
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                masked(u128::from(network), *prefix, 128) == masked(u128::from(ip), *prefix, 128)
            }
            _ => false,
        })
    }

    /// The client's address for a request that came from `peer` with `headers`.
    pub fn client_address(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.contains(peer.ip()) {
            return peer;
        }
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        for entry in entries.iter().rev().take(FORWARDED_HOPS_MAX) {
            match entry.parse::<IpAddr>() {
                Ok(ip) if self.contains(ip) => continue,
                Ok(ip) => return SocketAddr::new(canonical(ip), peer.port()),
                // A garbled hop: nothing to its left can be believed; the last proxy is all
                // that is known.
                Err(_) => return peer,
            }
        }
        peer
    }
}

/// IPv4-mapped IPv6 addresses are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn masked(value: u128, prefix: u8, bits: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        let shift = u32::from(bits - prefix);
        (value >> shift) << shift
    }
}

/// Middleware: replaces `ConnectInfo` with the client's address.
pub async fn rewrite(
    State(trusted): State<Arc<TrustedProxies>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !trusted.is_empty()
        && let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
    {
        let client = trusted.client_address(*peer, request.headers());
        request.extensions_mut().insert(ConnectInfo(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append(
                "x-forwarded-for",
                value.parse().unwrap_or_else(|error| panic!("{error}")),
            );
        }
        headers
    }

    fn peer(text: &str) -> SocketAddr {
        SocketAddr::new(text.parse().unwrap_or_else(|error| panic!("{error}")), 4242)
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_proxy() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 2001:db8::1")
            .unwrap_or_else(|error| panic!("{error}"));
        // From the proxy: the client is the right-most address that is not a proxy.
        assert_eq!(
            trusted.client_address(peer("10.1.2.3"), &headers(&["198.51.100.7, 10.9.9.9"])),
            peer("198.51.100.7")
        );
        // A client that writes its own header only adds entries to the left of the truth.
        assert_eq!(
            trusted.client_address(peer("10.1.2.3"), &headers(&["1.2.3.4", "198.51.100.7"])),
            peer("198.51.100.7")
        );
        assert_eq!(
            trusted.client_address(peer("2001:db8::1"), &headers(&["2001:db8:5::9"])),
            peer("2001:db8:5::9")
        );
        // From anyone else the header is ignored.
        assert_eq!(
            trusted.client_address(peer("203.0.113.5"), &headers(&["198.51.100.7"])),
            peer("203.0.113.5")
        );
        // Garbled or missing: only the proxy is known.
        assert_eq!(
            trusted.client_address(peer("10.1.2.3"), &headers(&["1.2.3.4, nonsense"])),
            peer("10.1.2.3")
        );
        assert_eq!(
            trusted.client_address(peer("10.1.2.3"), &headers(&[])),
            peer("10.1.2.3")
        );
        // Not configured: never read.
        assert_eq!(
            TrustedProxies::default().client_address(peer("10.1.2.3"), &headers(&["198.51.100.7"])),
            peer("10.1.2.3")
        );
    }

    #[test]
    fn the_setting_is_parsed_strictly() {
        assert!(TrustedProxies::parse("").is_ok_and(|proxies| proxies.is_empty()));
        assert!(TrustedProxies::parse("::ffff:10.0.0.1/128").is_ok());
        for bad in ["10.0.0.0/33", "proxy.example", "10.0.0.1/", "::1/129"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
        let trusted =
            TrustedProxies::parse("192.0.2.0/24").unwrap_or_else(|error| panic!("{error}"));
        assert!(trusted.contains("192.0.2.200".parse().unwrap_or_else(|_| panic!())));
        assert!(trusted.contains("::ffff:192.0.2.1".parse().unwrap_or_else(|_| panic!())));
        assert!(!trusted.contains("192.0.3.1".parse().unwrap_or_else(|_| panic!())));
    }
}
