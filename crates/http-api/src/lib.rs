//! The management HTTP API, on hyper with no web framework: connector status and
//! lifecycle, config versions (through the configured provider), health, readiness,
//! stats and Prometheus metrics.
//!
//! It talks only to runtime-core's public API ([`Runtime`]) and to the
//! [`ConfigProvider`]. Every route is listed once, in `routes::ROUTES`, which the
//! router matches against and a test compares with the OpenAPI document served at
//! `GET /openapi.json` (the file `openapi.json` of this crate).
//!
//! ```no_run
//! # async fn example(runtime: runtime_core::Runtime, provider: std::sync::Arc<dyn config_provider::ConfigProvider>) -> Result<(), http_api::ServeError> {
//! let http = config_provider::HttpConfig::default();
//! let server = http_api::serve(&http, http_api::ApiContext::new(runtime, provider, http.clone())).await?;
//! println!("API at {}", server.local_addr());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod cors;
mod handlers;
mod render;
mod routes;
mod server;
mod system;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use config_provider::{ConfigProvider, HttpConfig};
use runtime_core::Runtime;

pub use routes::{ROUTES, RouteSpec};
pub use server::{ApiServer, ServeError, serve};

/// The OpenAPI 3 document of every route.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Largest request body accepted; larger ones get 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// What the handlers work with.
pub struct ApiContext {
    runtime: Runtime,
    provider: Arc<dyn ConfigProvider>,
    http: HttpConfig,
    started: Instant,
    started_at: SystemTime,
    /// Request handlers running, at most `http.max_connections`.
    handlers: Arc<tokio::sync::Semaphore>,
    /// CPU and memory for `/stats`.
    system: system::SystemMonitor,
}

impl ApiContext {
    /// The API of `runtime`, changing configs through `provider`, as `http` says.
    pub fn new(runtime: Runtime, provider: Arc<dyn ConfigProvider>, http: HttpConfig) -> Self {
        ApiContext {
            runtime,
            provider,
            started: Instant::now(),
            started_at: SystemTime::now(),
            handlers: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(http.max_connections).unwrap_or(usize::MAX),
            )),
            http,
            system: system::SystemMonitor::default(),
        }
    }
}

impl std::fmt::Debug for ApiContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiContext")
            .field("runtime", &self.runtime)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}
