//! Small builders of Envoy protobuf values shared by every room of the
//! crate: `Any` packing, durations, matchers, addresses, config sources.

pub use packlight_model::routing::{host_regex, prefix_regex};
use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::envoy::r#type::v3 as types;
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};
use prost::{Message, Name};

/// Packs a message into `Any`.
pub fn any<T: Message + Name>(msg: T) -> Any {
    envoy_types::util::pack_any(msg)
}

/// A protobuf duration.
pub fn duration(d: StdDuration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A wrapped `u32`.
pub fn u32v(v: u32) -> UInt32Value {
    UInt32Value { value: v }
}

/// An RE2 full-match regex.
pub fn regex(re: &str) -> matcher::RegexMatcher {
    matcher::RegexMatcher {
        regex: re.to_string(),
        ..Default::default()
    }
}

/// A string matcher from its pattern.
pub fn string_matcher(p: matcher::string_matcher::MatchPattern) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(p),
        ..Default::default()
    }
}

/// Exact string match.
pub fn exact(s: &str) -> matcher::StringMatcher {
    string_matcher(matcher::string_matcher::MatchPattern::Exact(s.to_string()))
}

/// A percentage (0..=100) as a fractional percent.
pub fn percent(p: u32) -> core::RuntimeFractionalPercent {
    core::RuntimeFractionalPercent {
        default_value: Some(types::FractionalPercent {
            numerator: p,
            denominator: types::fractional_percent::DenominatorType::Hundred as i32,
        }),
        runtime_key: String::new(),
    }
}

/// A TCP socket address.
pub fn address(addr: SocketAddr) -> core::Address {
    socket_address(&addr.ip().to_string(), addr.port())
}

/// A TCP socket address by host text.
pub fn socket_address(host: &str, port: u16) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: host.to_string(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(
                port,
            ))),
            ..Default::default()
        })),
    }
}

/// Resources come over ADS (the packlight xDS server), state of the world
/// or delta as the proxy's bootstrap says.
pub fn ads() -> core::ConfigSource {
    core::ConfigSource {
        resource_api_version: core::ApiVersion::V3 as i32,
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

/// A response header set (overwriting any the app sent).
pub fn set_header(name: &str, value: &str) -> core::HeaderValueOption {
    core::HeaderValueOption {
        header: Some(core::HeaderValue {
            key: name.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        append_action: core::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// A wrapped `bool`.
pub fn bool_value(v: bool) -> envoy_types::pb::google::protobuf::BoolValue {
    envoy_types::pb::google::protobuf::BoolValue { value: v }
}
