//! An HTTP receiver for the sink's tests and bench: a hyper server on a loopback port
//! that records every request (method, path, version, headers, body) and answers as its
//! responder says. It speaks HTTP/2 on a connection that asks for it (ALPN `h2` over
//! TLS, when its TLS config offers it, or the HTTP/2 preface in plain text) and
//! HTTP/1.1 otherwise. Included with `#[path]` by the tests and the bench.

// Each includer uses its own subset; in tests an unwrap is an assertion.
#![allow(dead_code, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// A request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Every header, names lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl Recorded {
    /// The value of header `name` (lower case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

/// An answer: status, extra headers, body, and a pause before it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: String,
    /// How long to wait before answering.
    pub delay: Duration,
}

impl Reply {
    /// An answer with this status and body, no pause.
    pub fn status(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    /// 200 with an empty body.
    pub fn ok() -> Reply {
        Reply::status(200, "")
    }

    /// The same answer with a header added.
    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// Decides the answer to a request: the request, and its number (from 1).
pub type Responder = dyn Fn(&Recorded, u64) -> Reply + Send + Sync;

/// A running receiver; it stops with the test's runtime.
pub struct Receiver {
    /// Where it listens.
    pub address: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    count: Arc<AtomicU64>,
}

impl Receiver {
    /// Records every request and answers 200.
    pub async fn start() -> Receiver {
        Receiver::start_with(None, true, |_, _| Reply::ok()).await
    }

    /// Records every request and answers as `responder` says.
    pub async fn answering(
        responder: impl Fn(&Recorded, u64) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::start_with(None, true, responder).await
    }

    /// The general form: TLS when `tls` is given; `record` false keeps only the
    /// count (for the bench).
    pub async fn start_with(
        tls: Option<tokio_rustls::TlsAcceptor>,
        record: bool,
        responder: impl Fn(&Recorded, u64) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicU64::new(0));
        let responder: Arc<Responder> = Arc::new(responder);
        let (recorded, counted) = (requests.clone(), count.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (recorded, counted) = (recorded.clone(), counted.clone());
                let (responder, tls) = (responder.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let (recorded, counted) = (recorded.clone(), counted.clone());
                            let responder = responder.clone();
                            async move {
                                let method = request.method().to_string();
                                let version = format!("{:?}", request.version());
                                let path = request
                                    .uri()
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default();
                                let headers = request
                                    .headers()
                                    .iter()
                                    .map(|(name, value)| {
                                        (name.to_string(), value.to_str().unwrap_or("").to_owned())
                                    })
                                    .collect();
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                let entry = Recorded {
                                    method,
                                    path,
                                    version,
                                    headers,
                                    body,
                                };
                                let number = counted.fetch_add(1, Ordering::SeqCst) + 1;
                                let reply = responder(&entry, number);
                                if record {
                                    recorded.lock().unwrap().push(entry);
                                }
                                if !reply.delay.is_zero() {
                                    // The delay is the behaviour under test (a slow
                                    // endpoint), not a wait for something.
                                    tokio::time::sleep(reply.delay).await;
                                }
                                let mut response = Response::builder()
                                    .status(StatusCode::from_u16(reply.status).unwrap());
                                for (name, value) in &reply.headers {
                                    response = response.header(*name, value);
                                }
                                let response =
                                    response.body(Full::new(Bytes::from(reply.body))).unwrap();
                                Ok::<_, Infallible>(response)
                            }
                        },
                    );
                    match tls {
                        None => {
                            let h2 = starts_with_h2_preface(&stream).await;
                            serve(TokioIo::new(stream), service, h2).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                                serve(TokioIo::new(stream), service, h2).await;
                            }
                        }
                    }
                });
            }
        });
        Receiver {
            address,
            requests,
            count,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Every request recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// How many requests arrived (recorded or not).
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}

/// Serves one connection, HTTP/2 when `h2`, else HTTP/1.1.
async fn serve<I, S>(io: I, service: S, h2: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = Full<Bytes>> + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(io, service)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    }
}

/// Whether a plain connection opens with HTTP/2's preface (`PRI * HTTP/2.0`, a client
/// with prior knowledge): no HTTP/1.1 method starts with `PRI`, so three bytes decide.
async fn starts_with_h2_preface(stream: &tokio::net::TcpStream) -> bool {
    let mut head = [0; 3];
    loop {
        match stream.peek(&mut head).await {
            Ok(0) | Err(_) => return false,
            Ok(read) if read < head.len() && head[..read] == b"PRI"[..read] => {
                // Too few bytes to decide: peek would answer the same at once.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(read) => return read == head.len() && &head == b"PRI",
        }
    }
}
