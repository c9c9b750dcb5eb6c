//! Logs to stderr, and spans to an OpenTelemetry collector over OTLP/HTTP when
//! `otlp.endpoint` (`PIVOTWATCH_OTLP_ENDPOINT`) is set.
//!
//! The log filter (`--log`) applies to stderr only; spans at info level and above from
//! pivotwatch itself (one per HTTP request, per model call, per tool call) are
//! exported whatever the log level. The SDK batches spans on its own thread; each batch
//! is sent with reqwest on a small runtime of its own, so exporting never takes a
//! worker from the server. Dropping the returned guard flushes what is still queued.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how spans are exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The collector's base URL (`http://collector:4318`); `/v1/traces` is appended
    /// unless the URL already ends with it.
    pub endpoint: String,
    /// `http/protobuf` (the default) or `http/json`.
    pub protocol: Protocol,
}

impl OtlpSettings {
    /// From `otlp.endpoint` and `otlp.protocol`; `None` when no endpoint is set.
    pub fn from_settings(
        get: crate::actions::settings::Lookup<'_>,
    ) -> Result<Option<OtlpSettings>, String> {
        let Some(endpoint) = get("otlp.endpoint") else { return Ok(None) };
        reqwest::Url::parse(&endpoint).map_err(|err| {
            format!("otlp.endpoint (PIVOTWATCH_OTLP_ENDPOINT) {endpoint:?}: {err}")
        })?;
        let protocol = match get("otlp.protocol").as_deref() {
            None | Some("http/protobuf") => Protocol::HttpBinary,
            Some("http/json") => Protocol::HttpJson,
            Some(other) => {
                return Err(format!(
                    "otlp.protocol (PIVOTWATCH_OTLP_PROTOCOL) {other:?}: use http/protobuf or http/json"
                ));
            }
        };
        Ok(Some(OtlpSettings { endpoint, protocol }))
    }

    fn traces_url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        if base.ends_with("/v1/traces") { base.to_string() } else { format!("{base}/v1/traces") }
    }
}

/// Flushes and stops the exporter when dropped (outside any async runtime).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("warning: exporting the last spans failed: {err}");
        }
    }
}

/// Installs the global subscriber: stderr filtered by `log`, and the OTLP exporter when
/// `otlp` is given.
pub fn init(log: &str, otlp: Option<&OtlpSettings>) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_new(log).unwrap_or_else(|_| EnvFilter::new("warn"));
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
    let Some(otlp) = otlp else {
        tracing_subscriber::registry().with(stderr).try_init().map_err(|err| err.to_string())?;
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Sender::new()?)
        .with_protocol(otlp.protocol)
        .with_endpoint(otlp.traces_url())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|err| format!("the OTLP exporter: {err}"))?;
    let resource = Resource::builder()
        .with_service_name("pivotwatch")
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider =
        SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("pivotwatch"))
        .with_filter(EnvFilter::new("pivotwatch=info"));
    tracing_subscriber::registry()
        .with(stderr)
        .with(spans)
        .try_init()
        .map_err(|err| err.to_string())?;
    Ok(Telemetry { provider: Some(provider) })
}

/// Sends the SDK's export requests with reqwest. The SDK calls it from its own thread,
/// outside any tokio runtime, so it drives the request on a runtime of its own.
#[derive(Debug)]
struct Sender {
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Sender {
    fn new() -> Result<Sender, String> {
        let http = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|err| format!("the OTLP client: {err}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| format!("the OTLP runtime: {err}"))?;
        Ok(Sender { http, runtime })
    }
}

#[async_trait]
impl opentelemetry_http::HttpClient for Sender {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request)?;
        self.runtime.block_on(async {
            let response = self.http.execute(request).await?;
            let mut answer = http::Response::builder().status(response.status().as_u16());
            for (name, value) in response.headers() {
                answer = answer.header(name.as_str(), value.as_bytes());
            }
            let body = response.bytes().await?;
            Ok(answer.body(body)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_what_is_wrong() {
        let none = |_: &str| None;
        assert_eq!(OtlpSettings::from_settings(&none), Ok(None));
        let bad = |key: &str| match key {
            "otlp.endpoint" => Some("http://collector:4318".to_string()),
            "otlp.protocol" => Some("grpc".to_string()),
            _ => None,
        };
        let err = OtlpSettings::from_settings(&bad).err().unwrap_or_default();
        assert!(err.contains("otlp.protocol") && err.contains("http/json"), "{err}");
        let good = |key: &str| (key == "otlp.endpoint").then(|| "http://c:4318/".to_string());
        let settings = OtlpSettings::from_settings(&good).ok().flatten();
        assert_eq!(
            settings.map(|s| (s.traces_url(), s.protocol)),
            Some(("http://c:4318/v1/traces".to_string(), Protocol::HttpBinary))
        );
    }
}
