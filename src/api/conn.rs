//! The HTTP/1 server of the API: actix-web's app behind actix-http's HTTP/1 service, as
//! `HttpServer::listen` builds it, with a layer of ours around each connection for what
//! actix-web offers no hook for:
//!
//! - **Connections per peer.** A peer (IP address) holding its share of connections
//!   (`JOBYARD_MAX_CONNECTIONS_PER_PEER`) has its next ones closed as soon as they are accepted.
//! - **Idle connections.** actix-http bounds the head of a connection's first request only; a
//!   kept-alive connection trickling the head of its next request, or a body no handler read,
//!   stayed open for as long as bytes kept coming. With no request in the application, a
//!   connection gets [`IDLE_CONNECTION_TIMEOUT`] from its start or from the end of its last
//!   request; then its reads end, and the dispatcher closes it.
//! - **The error body on the dispatcher's own answers.** actix-http's dispatcher answers a
//!   request it cannot parse (400), a head too large (431) or too slow (408) itself, before any
//!   service runs, with an empty body (and no hook: `HttpServiceBuilder` has none for it). Such
//!   an answer is always the last thing written on its connection, and it is written when none
//!   of the application's answers is on its way: each request the application gets is counted
//!   until its answer's body has been encoded (`Tracked`), and the dispatcher hands the socket
//!   everything it encoded before it flushes. So a write that starts while no request is in the
//!   application and everything it answered was flushed is the dispatcher's own; when it is an
//!   error status it is replaced by an answer of the same status with the error body of
//!   the API (`invalid_request` for 400 and 431, `request_timeout` for 408, `internal` for a
//!   5xx) and `Connection: close`, and logged at debug. Not covered: an unparseable request
//!   pipelined behind another before that one's answer was flushed (its 400 shares a write with
//!   that answer) keeps the empty body.
//!
//! Not bounded here: a client that reads its answers slowly, and a peer with many addresses (the
//! share is per address, so an IPv6 client with a whole /64 is many peers).

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::SystemTime;

use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::{Extensions, HttpService, Request, Response, StatusCode};
use actix_service::{IntoServiceFactory, Service, ServiceFactory};
use actix_web::dev::{AppConfig, Server, ServiceResponse};
use actix_web::http::header::HttpDate;
use actix_web::rt::net::TcpStream;
use actix_web::web::Bytes;
use actix_web::App;
use futures_util::future::{ready, Either, LocalBoxFuture, Ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::limits::{
    DISCONNECT_TIMEOUT, IDLE_CONNECTION_TIMEOUT, KEEP_ALIVE, REQUEST_HEAD_TIMEOUT,
};
use super::{ApiError, ApiSettings};
use crate::runtime::Client;

/// Serves the API on `listener` until the returned server is stopped (gracefully: idle
/// connections close at once, requests in progress get `shutdown_timeout_secs`).
pub fn serve(
    listener: TcpListener,
    client: Client,
    settings: ApiSettings,
    shutdown_timeout_secs: u64,
    routes: Routes,
) -> io::Result<Server> {
    let addr = listener.local_addr()?;
    let peers = Peers { held: Arc::default(), max: settings.max_connections_per_peer };
    let builder =
        actix_server::Server::build().disable_signals().shutdown_timeout(shutdown_timeout_secs);
    let graceful = builder.graceful_shutdown_signal();
    let builder = builder.listen(format!("jobyard-http-{addr}"), listener, move || {
        let routes = routes.clone();
        let app = App::new()
            .wrap(actix_web::middleware::from_fn(super::metrics::record_request))
            .configure(move |cfg| routes(cfg))
            .configure(super::configure(client.clone(), settings.clone()));
        let graceful = graceful.clone();
        let http = HttpService::build()
            .keep_alive(KEEP_ALIVE)
            .client_request_timeout(REQUEST_HEAD_TIMEOUT)
            .client_disconnect_timeout(DISCONNECT_TIMEOUT)
            .local_addr(addr)
            // What HttpServer does so that a graceful stop closes idle connections at once.
            .graceful_shutdown_signal(move || {
                let graceful = graceful.clone();
                async move { graceful.notified().await }
            })
            .on_connect_ext(|conn: &Conn, data: &mut Extensions| {
                data.insert(conn.state.clone());
            })
            .h1(Tracked { app: app.into_factory(), config: AppConfig::default() });
        Accept { peers: peers.clone(), http }
    })?;
    Ok(builder.run())
}

/// An embedder's own routes, served beside the API by every HTTP worker.
pub type Routes = Arc<dyn Fn(&mut actix_web::web::ServiceConfig) + Send + Sync>;

/// Connections held per peer, shared by every worker of a server, and the most one may hold.
#[derive(Clone)]
struct Peers {
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max: usize,
}

impl Peers {
    /// A slot for one more connection of `ip`, unless it holds its share already.
    fn admit(&self, ip: IpAddr) -> Option<PeerSlot> {
        let ip = ip.to_canonical();
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(PeerSlot { peers: self.clone(), ip })
    }
}

/// One connection of a peer, given back when the connection is dropped.
struct PeerSlot {
    peers: Peers,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut held = self.peers.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// Admits a new connection (or closes it), wraps it and hands it to the HTTP/1 service.
struct Accept<H> {
    peers: Peers,
    http: H,
}

impl<H> ServiceFactory<TcpStream> for Accept<H>
where
    H: ServiceFactory<(Conn, Option<SocketAddr>), Config = (), Response = (), InitError = ()>,
    H::Service: 'static,
    H::Future: 'static,
{
    type Response = ();
    type Error = H::Error;
    type Config = ();
    type Service = AcceptService<H::Service>;
    type InitError = ();
    type Future = LocalBoxFuture<'static, Result<Self::Service, ()>>;

    fn new_service(&self, _: ()) -> Self::Future {
        let peers = self.peers.clone();
        let http = self.http.new_service(());
        Box::pin(async move { Ok(AcceptService { peers, http: http.await? }) })
    }
}

struct AcceptService<S> {
    peers: Peers,
    http: S,
}

impl<S> Service<TcpStream> for AcceptService<S>
where
    S: Service<(Conn, Option<SocketAddr>), Response = ()>,
{
    type Response = ();
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<(), S::Error>>>;

    actix_service::forward_ready!(http);

    fn call(&self, stream: TcpStream) -> Self::Future {
        // Returning without handing the stream on drops it: the connection is closed.
        let Ok(peer) = stream.peer_addr() else {
            return Either::Right(ready(Ok(())));
        };
        let Some(slot) = self.peers.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection closed: its peer holds {} already", self.peers.max);
            return Either::Right(ready(Ok(())));
        };
        let _ = stream.set_nodelay(true);
        Either::Left(self.http.call((Conn::new(stream, peer, slot), Some(peer))))
    }
}

/// What a connection's socket layer and the application tell each other.
struct ConnState {
    /// Requests in the application: from its call until its answer's body is dropped, which
    /// the dispatcher does once it has encoded the whole answer.
    requests: Cell<usize>,
    /// True when every byte of the application's answers has been handed to the socket.
    settled: Cell<bool>,
    /// When `requests` last fell to 0, or when the connection started.
    idle_since: Cell<Instant>,
}

impl ConnState {
    fn start_request(self: &Rc<Self>) -> InRequest {
        self.requests.set(self.requests.get() + 1);
        self.settled.set(false);
        InRequest(self.clone())
    }
}

/// A request in the application, until dropped.
struct InRequest(Rc<ConnState>);

impl Drop for InRequest {
    fn drop(&mut self) {
        let left = self.0.requests.get() - 1;
        self.0.requests.set(left);
        if left == 0 {
            self.0.idle_since.set(Instant::now());
        }
    }
}

/// A TCP connection under the HTTP/1 dispatcher: see the module doc.
struct Conn {
    io: TcpStream,
    state: Rc<ConnState>,
    peer: SocketAddr,
    _slot: PeerSlot,
    idle: Pin<Box<Sleep>>,
    /// Reads end from then on.
    timed_out: bool,
    /// Our answer in place of the dispatcher's, and how much of it is written.
    answer: Option<(Vec<u8>, usize)>,
}

impl Conn {
    fn new(io: TcpStream, peer: SocketAddr, slot: PeerSlot) -> Self {
        let now = Instant::now();
        let state = ConnState {
            requests: Cell::new(0),
            settled: Cell::new(true),
            idle_since: Cell::new(now),
        };
        Conn {
            io,
            state: Rc::new(state),
            peer,
            _slot: slot,
            idle: Box::pin(tokio::time::sleep_until(now + IDLE_CONNECTION_TIMEOUT)),
            timed_out: false,
            answer: None,
        }
    }

    /// True once the connection has been idle too long; otherwise arms the timer.
    fn idle_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        if self.timed_out {
            return true;
        }
        if self.state.requests.get() > 0 {
            return false;
        }
        let deadline = self.state.idle_since.get() + IDLE_CONNECTION_TIMEOUT;
        if self.idle.deadline() != deadline {
            self.idle.as_mut().reset(deadline);
        }
        if self.idle.as_mut().poll(cx).is_pending() {
            return false;
        }
        tracing::debug!(
            peer = %self.peer,
            "closing a connection that sent no whole request in {IDLE_CONNECTION_TIMEOUT:?}"
        );
        self.timed_out = true;
        true
    }

    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((answer, written)) = &mut self.answer else {
            return Poll::Ready(Ok(()));
        };
        while *written < answer.len() {
            match ready!(Pin::new(&mut self.io).poll_write(cx, &answer[*written..]))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => *written += n,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.idle_too_long(cx) {
            // The end of the stream: the dispatcher finishes what it is writing and closes.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.answer.is_none() && this.state.requests.get() == 0 && this.state.settled.get() {
            // Nothing of the application's is on its way: this is the dispatcher's own answer.
            match dispatcher_error(buf) {
                Some(status) => {
                    tracing::debug!(
                        peer = %this.peer,
                        status = status.as_u16(),
                        "answered a request the HTTP layer refused"
                    );
                    this.answer = Some((error_answer(status), 0));
                }
                None => this.state.settled.set(false),
            }
        }
        if this.answer.is_some() {
            // It ends the connection: ours is written instead of it, and of anything after it.
            ready!(this.poll_answer(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        // The dispatcher flushes once the socket has taken all it encoded: with no request in
        // the application, nothing of its answers is left to come.
        if this.state.requests.get() == 0 {
            this.state.settled.set(true);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// The error status of an answer starting in `buf` (`HTTP/1.x NNN ...`).
fn dispatcher_error(buf: &[u8]) -> Option<StatusCode> {
    let rest = buf.strip_prefix(b"HTTP/1.")?;
    if rest.get(1) != Some(&b' ') {
        return None;
    }
    let status = StatusCode::from_bytes(rest.get(2..5)?).ok()?;
    (status.is_client_error() || status.is_server_error()).then_some(status)
}

/// The whole answer for a dispatcher's `status`, with the error body.
fn error_answer(status: StatusCode) -> Vec<u8> {
    let error = match status {
        StatusCode::REQUEST_TIMEOUT => ApiError::request_timeout(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ApiError::new(status, "invalid_request", "the request's headers are too large")
        }
        status if status.is_server_error() => ApiError::new(status, "internal", "internal error"),
        status => ApiError::new(
            status,
            "invalid_request",
            "the request is not valid HTTP/1.1 (request line, headers or framing)",
        ),
    };
    let body = error.body();
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\ndate: {}\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        HttpDate::from(SystemTime::now()),
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

/// The application, counting its requests on their connection (see [`ConnState`]).
struct Tracked<F> {
    app: F,
    config: AppConfig,
}

impl<F, B> ServiceFactory<Request> for Tracked<F>
where
    F: ServiceFactory<
        Request,
        Config = AppConfig,
        Response = ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    F::Future: 'static,
    F::Service: 'static,
    B: MessageBody + 'static,
{
    type Response = Response<TrackedBody>;
    type Error = actix_web::Error;
    type Config = ();
    type Service = TrackedService<F::Service>;
    type InitError = F::InitError;
    type Future = LocalBoxFuture<'static, Result<Self::Service, F::InitError>>;

    fn new_service(&self, _: ()) -> Self::Future {
        let app = self.app.new_service(self.config.clone());
        Box::pin(async move { Ok(TrackedService { app: app.await? }) })
    }
}

struct TrackedService<S> {
    app: S,
}

impl<S, B> Service<Request> for TrackedService<S>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = Response<TrackedBody>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, actix_web::Error>>;

    actix_service::forward_ready!(app);

    fn call(&self, req: Request) -> Self::Future {
        let request = req.conn_data::<Rc<ConnState>>().map(ConnState::start_request);
        let answer = self.app.call(req);
        Box::pin(async move {
            let response: Response<BoxBody> = match answer.await {
                Ok(response) => Response::from(response).map_into_boxed_body(),
                Err(err) => err.error_response().into(),
            };
            Ok(response.map_body(|_, body| TrackedBody { body, _request: request }))
        })
    }
}

/// An answer's body, holding its request in the application until dropped.
struct TrackedBody {
    body: BoxBody,
    _request: Option<InRequest>,
}

impl MessageBody for TrackedBody {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_error_answers_are_the_dispatchers() {
        let canned = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(dispatcher_error(canned), Some(StatusCode::BAD_REQUEST));
        assert_eq!(
            dispatcher_error(b"HTTP/1.1 408 Request Timeout\r\n"),
            Some(StatusCode::REQUEST_TIMEOUT)
        );
        assert_eq!(dispatcher_error(b"HTTP/1.1 100 Continue\r\n\r\n"), None);
        assert_eq!(dispatcher_error(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(dispatcher_error(b"HTTP/1.1 4"), None);
        assert_eq!(dispatcher_error(b"{\"status\":\"ok\"}"), None);
    }

    #[test]
    fn the_answer_carries_the_error_body() {
        let answer = String::from_utf8(error_answer(StatusCode::REQUEST_TIMEOUT)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "request_timeout");
    }
}
