//! The client's IP: the socket peer, or — only when the peer is a trusted proxy — the
//! rightmost untrusted address of `X-Forwarded-For` (else `X-Real-IP`).

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::settings::ClientIpPolicy;

pub fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    if let Some(xff) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        let hops: Vec<IpAddr> = xff
            .split(',')
            .filter_map(|h| h.trim().parse().ok())
            .collect();
        if let Some(ip) = hops.iter().rev().find(|ip| !is_trusted(ip)) {
            return Some(*ip);
        }
        if let Some(first) = hops.first() {
            return Some(*first);
        }
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(Some(peer))
}

/// The IP as the request log keeps it.
pub fn for_log(ip: Option<IpAddr>, policy: ClientIpPolicy) -> Option<String> {
    let ip = ip?;
    match policy {
        ClientIpPolicy::Keep => Some(ip.to_string()),
        ClientIpPolicy::Drop => None,
        ClientIpPolicy::Hash => {
            let d = Sha256::digest(ip.to_string().as_bytes());
            Some(format!("h:{}", hex::encode(&d[..8])))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.1.1.1".parse().unwrap());
        let untrusted_peer: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            resolve(Some(untrusted_peer), &h, &trusted),
            Some(untrusted_peer)
        );
        let proxy: IpAddr = "10.2.2.2".parse().unwrap();
        assert_eq!(
            resolve(Some(proxy), &h, &trusted),
            "203.0.113.9".parse().ok()
        );
        assert_eq!(for_log(Some(proxy), ClientIpPolicy::Drop), None);
        assert!(
            for_log(Some(proxy), ClientIpPolicy::Hash)
                .unwrap()
                .starts_with("h:")
        );
    }
}
