//! A lean RESP2 client for query-api's reads.
//!
//! Why not redis-rs here: its reply parser is built from parser combinators,
//! and on the feed's two round trips (then a ZRANGE of 21 ids with scores,
//! an MGET of 20 views) it took a fifth of query-api's CPU; redis-rs alone reached about
//! half of `redis-benchmark`'s feed pages/s on the benchmark machine, so the
//! service could not come near the ceiling whatever it did on top
//! (docs/benchmarks.md). This client does only what the read path needs:
//! plain commands, pipelined over one connection shared by all requests,
//! replies parsed straight from the read buffer, bulk strings handed out as
//! zero-copy [`Bytes`]. Everything else — streams, scripts, transactions,
//! TLS — stays on redis-rs (see `read_model::Backend`).
//!
//! Failure behaviour matches the `ConnectionManager` it replaces: the
//! connection is made lazily (a process starts while Redis is down), every
//! query has a response deadline, a broken or late connection is dropped
//! and the next query reconnects, and queries that arrive while a connect
//! attempt is under way wait for it and share its outcome instead of each
//! waiting for a connect timeout of their own.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use community_shared::redis_conn::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

/// Deepest nesting of arrays accepted in a reply (ours are at most 1 deep).
const MAX_DEPTH: usize = 8;
/// Redis's own limit for a bulk string (proto-max-bulk-len).
const MAX_BULK: usize = 512 * 1024 * 1024;

/// One reply. Error replies are [`Reply::Error`]; the helpers turn them into [`Error::Server`].
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Nil,
    Int(i64),
    Status(Bytes),
    Bulk(Bytes),
    Error(String),
    Array(Vec<Reply>),
}

impl Reply {
    /// A bulk string or nil (GET, an MGET element).
    pub fn into_bytes(self) -> Result<Option<Bytes>, Error> {
        match self {
            Reply::Nil => Ok(None),
            Reply::Bulk(b) | Reply::Status(b) => Ok(Some(b)),
            other => Err(other.unexpected("a string")),
        }
    }

    pub fn into_array(self) -> Result<Vec<Reply>, Error> {
        match self {
            Reply::Array(v) => Ok(v),
            other => Err(other.unexpected("an array")),
        }
    }

    fn unexpected(self, wanted: &str) -> Error {
        match self {
            Reply::Error(e) => Error::Server(e),
            other => Error::Protocol(format!("expected {wanted}, got {other:?}")),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to Redis: {0}")]
    Connect(String),
    #[error("Redis connection lost: {0}")]
    Closed(String),
    #[error("no reply from Redis within {0:?}")]
    Timeout(Duration),
    #[error("Redis replied with an error: {0}")]
    Server(String),
    #[error("unexpected reply from Redis: {0}")]
    Protocol(String),
}

/// What commands are written into: a [`Pipeline`], or the read model's
/// `Commands` for either backend.
pub trait Encode {
    /// Appends `name` and one argument per item of `args`, each the
    /// concatenation of its parts: a key made of prefix, id and suffix goes
    /// out without being built as a string first (a feed page has 20).
    fn command_parts<'a, const N: usize>(
        &mut self,
        name: &str,
        args: impl ExactSizeIterator<Item = [&'a [u8]; N]>,
    ) -> &mut Self;

    /// Appends `name args...`.
    fn command<A: AsRef<[u8]>>(&mut self, name: &str, args: &[A]) -> &mut Self {
        self.command_parts(name, args.iter().map(|a| [a.as_ref()]))
    }
}

/// Commands to send together; their replies come back in order.
#[derive(Debug, Default)]
pub struct Pipeline {
    bytes: Vec<u8>,
    count: usize,
}

impl Pipeline {
    pub fn new() -> Self {
        Self {
            bytes: Vec::with_capacity(256),
            count: 0,
        }
    }

    fn header(&mut self, kind: u8, n: usize) {
        self.bytes.push(kind);
        self.bytes
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.bytes.extend_from_slice(b"\r\n");
    }

    fn bulk(&mut self, parts: &[&[u8]]) {
        self.header(b'$', parts.iter().map(|p| p.len()).sum());
        for part in parts {
            self.bytes.extend_from_slice(part);
        }
        self.bytes.extend_from_slice(b"\r\n");
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl Encode for Pipeline {
    fn command_parts<'a, const N: usize>(
        &mut self,
        name: &str,
        args: impl ExactSizeIterator<Item = [&'a [u8]; N]>,
    ) -> &mut Self {
        self.header(b'*', 1 + args.len());
        self.bulk(&[name.as_bytes()]);
        for parts in args {
            self.bulk(&parts);
        }
        self.count += 1;
        self
    }
}

/// Where to connect, from a `redis://` or `redis+unix://`/`unix://` URL.
#[derive(Debug, Clone)]
enum Target {
    Tcp(String, u16),
    Unix(PathBuf),
}

/// No `Debug`: it holds the password.
struct Settings {
    target: Target,
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

/// A shared, self-healing, pipelined connection. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    settings: Arc<Settings>,
    current: Arc<Mutex<Option<Conn>>>,
    /// Held while connecting, so concurrent queries wait for one attempt;
    /// holds the time of the last failed attempt.
    connecting: Arc<tokio::sync::Mutex<Option<Instant>>>,
}

impl Client {
    /// `None` for TLS (`rediss://`), which this client does not speak.
    /// Deadlines: [`CONNECT_TIMEOUT`] and [`RESPONSE_TIMEOUT`], as for every Redis connection here.
    pub fn new(info: &redis::ConnectionInfo) -> Option<Self> {
        let target = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => Target::Tcp(host.clone(), *port),
            redis::ConnectionAddr::Unix(path) => Target::Unix(path.clone()),
            _ => return None,
        };
        let redis = info.redis_settings();
        Some(Self {
            settings: Arc::new(Settings {
                target,
                username: redis.username().map(str::to_string),
                password: redis.password().map(str::to_string),
                db: redis.db(),
            }),
            current: Arc::new(Mutex::new(None)),
            connecting: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// Sends `pipeline` and returns one reply per command.
    pub async fn query(&self, pipeline: Pipeline) -> Result<Vec<Reply>, Error> {
        // Nothing to wait for: queued, it would take the next request's reply.
        if pipeline.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn().await?;
        self.send(&conn, pipeline.bytes, pipeline.count).await
    }

    async fn send(&self, conn: &Conn, bytes: Vec<u8>, replies: usize) -> Result<Vec<Reply>, Error> {
        let (tx, rx) = oneshot::channel();
        if conn.requests.send(Request { bytes, replies, tx }).is_err() {
            conn.close();
            return Err(Error::Closed("the connection has shut down".into()));
        }
        match tokio::time::timeout(RESPONSE_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Closed("the connection has shut down".into())),
            Err(_) => {
                // A late reply may never come (a black-holed peer): start over.
                conn.close();
                Err(Error::Timeout(RESPONSE_TIMEOUT))
            }
        }
    }

    fn live(&self) -> Option<Conn> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().filter(|c| c.is_open()).cloned()
    }

    async fn conn(&self) -> Result<Conn, Error> {
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let asked = Instant::now();
        let mut last_failure = self.connecting.lock().await;
        if let Some(c) = self.live() {
            return Ok(c); // another query reconnected while we waited
        }
        // Queries that waited for an attempt that failed share its outcome,
        // so a burst costs one connect timeout, not one each.
        if last_failure.is_some_and(|t| t >= asked) {
            return Err(Error::Connect("Redis is unreachable".into()));
        }
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await;
        match attempt {
            Ok(Ok(conn)) => {
                *last_failure = None;
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
                Ok(conn)
            }
            Ok(Err(e)) => {
                *last_failure = Some(Instant::now());
                Err(e)
            }
            Err(_) => {
                *last_failure = Some(Instant::now());
                Err(Error::Connect(format!(
                    "no connection within {:?}",
                    CONNECT_TIMEOUT
                )))
            }
        }
    }

    async fn connect(&self) -> Result<Conn, Error> {
        let connect_err = |e: std::io::Error| Error::Connect(e.to_string());
        let conn = match &self.settings.target {
            Target::Tcp(host, port) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(connect_err)?;
                stream.set_nodelay(true).map_err(connect_err)?;
                let (r, w) = stream.into_split();
                Conn::start(r, w)
            }
            Target::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect_err)?;
                let (r, w) = stream.into_split();
                Conn::start(r, w)
            }
        };
        let mut hello = Pipeline::new();
        if let Some(password) = &self.settings.password {
            match &self.settings.username {
                Some(user) => hello.command("AUTH", &[user.as_str(), password.as_str()]),
                None => hello.command("AUTH", &[password.as_str()]),
            };
        }
        if self.settings.db != 0 {
            hello.command("SELECT", &[itoa::Buffer::new().format(self.settings.db)]);
        }
        if !hello.is_empty() {
            let replies = self.send(&conn, hello.bytes, hello.count).await?;
            for r in replies {
                if let Reply::Error(e) = r {
                    conn.close();
                    return Err(Error::Connect(e));
                }
            }
        }
        Ok(conn)
    }
}

struct Request {
    bytes: Vec<u8>,
    replies: usize,
    tx: oneshot::Sender<Result<Vec<Reply>, Error>>,
}

/// A request written to the socket, waiting for its replies.
struct Waiting {
    want: usize,
    got: Vec<Reply>,
    tx: oneshot::Sender<Result<Vec<Reply>, Error>>,
}

type Queue = Arc<Mutex<VecDeque<Waiting>>>;

/// One socket: a writer task batches requests into as few writes as it can,
/// a reader task parses replies and hands them out in order.
#[derive(Clone)]
struct Conn {
    requests: mpsc::UnboundedSender<Request>,
    state: Arc<State>,
}

/// What the two tasks share with the handles: whether the connection is
/// closed. The tasks hold no request sender, so they end when the last
/// handle is dropped.
struct State {
    closed: watch::Sender<bool>,
}

impl State {
    fn close(&self) {
        self.closed.send_replace(true);
    }
}

impl Conn {
    fn start<R, W>(reader: R, writer: W) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (requests, rx) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            closed: watch::channel(false).0,
        });
        let queue: Queue = Arc::default();
        tokio::spawn(write_loop(writer, rx, queue.clone(), state.clone()));
        tokio::spawn(read_loop(reader, queue, state.clone()));
        Self { requests, state }
    }

    fn is_open(&self) -> bool {
        !*self.state.closed.borrow()
    }

    fn close(&self) {
        self.state.close();
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::UnboundedReceiver<Request>,
    queue: Queue,
    state: Arc<State>,
) {
    let mut closed = state.closed.subscribe();
    let mut out = Vec::with_capacity(16 * 1024);
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = closed.wait_for(|c| *c) => None,
        };
        let Some(first) = first else { break };
        // Let the requests being made right now join this write. Woken by
        // the first, this task would otherwise run right after it (the
        // worker's LIFO slot) and write it alone: one syscall here, and a
        // read and a wake-up in Redis, per command. Measured under wrk on the
        // feed: 1.7 writes per page → 0.14; CPU per page, query-api 34–36 →
        // 30–31 µs and Redis 15–16 → 12–13 µs; 30–32 k → 33–35 k pages/s.
        tokio::task::yield_now().await;
        out.clear();
        {
            // Queue before writing, in the same order, so replies find their request.
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            let mut next = Some(first);
            while let Some(req) = next {
                out.extend_from_slice(&req.bytes);
                q.push_back(Waiting {
                    want: req.replies,
                    got: Vec::with_capacity(req.replies),
                    tx: req.tx,
                });
                next = rx.try_recv().ok();
            }
        }
        if writer.write_all(&out).await.is_err() {
            break;
        }
    }
    state.close();
}

async fn read_loop<R: AsyncRead + Unpin>(mut reader: R, queue: Queue, state: Arc<State>) {
    let mut closed = state.closed.subscribe();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let failure = 'outer: loop {
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(64 * 1024);
        }
        let read = tokio::select! {
            r = reader.read_buf(&mut buf) => r,
            _ = closed.wait_for(|c| *c) => break Error::Closed("closed".into()),
        };
        match read {
            Ok(0) => break Error::Closed("Redis closed the connection".into()),
            Err(e) => break Error::Closed(e.to_string()),
            Ok(_) => {}
        }
        loop {
            let (node, used) = match parse(&buf) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break, // incomplete: read more
                Err(e) => break 'outer e,
            };
            let frame = buf.split_to(used).freeze();
            let reply = node.reply(&frame);
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            let Some(front) = q.front_mut() else {
                break 'outer Error::Protocol("a reply nobody asked for".into());
            };
            front.got.push(reply);
            if front.got.len() >= front.want
                && let Some(done) = q.pop_front()
            {
                drop(q);
                let _ = done.tx.send(Ok(done.got));
            }
        }
    };
    state.close();
    let waiting: Vec<Waiting> = queue
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
        .collect();
    for w in waiting {
        let _ = w.tx.send(Err(failure.clone()));
    }
}

/// A parsed reply as offsets into the frame, turned into [`Reply`] once the
/// frame is split off the buffer (so bulk strings can share its memory).
#[derive(Debug)]
enum Node {
    Nil,
    Int(i64),
    Status(usize, usize),
    Bulk(usize, usize),
    Error(usize, usize),
    Array(Vec<Node>),
}

impl Node {
    fn reply(self, frame: &Bytes) -> Reply {
        match self {
            Node::Nil => Reply::Nil,
            Node::Int(i) => Reply::Int(i),
            Node::Status(s, e) => Reply::Status(frame.slice(s..e)),
            Node::Bulk(s, e) => Reply::Bulk(frame.slice(s..e)),
            Node::Error(s, e) => Reply::Error(String::from_utf8_lossy(&frame[s..e]).into_owned()),
            Node::Array(items) => Reply::Array(items.into_iter().map(|n| n.reply(frame)).collect()),
        }
    }
}

/// Parses one reply at the start of `buf`: `Ok(None)` when more bytes are
/// needed, else the reply and the bytes it took.
fn parse(buf: &[u8]) -> Result<Option<(Node, usize)>, Error> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Node, usize)>, Error> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((start, end)) = line(buf, pos + 1)? else {
        return Ok(None);
    };
    let next = end + 2;
    Ok(Some(match kind {
        b'+' => (Node::Status(start, end), next),
        b'-' => (Node::Error(start, end), next),
        b':' => (Node::Int(integer(&buf[start..end])?), next),
        b'$' => {
            let len = integer(&buf[start..end])?;
            if len < 0 {
                return Ok(Some((Node::Nil, next)));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= MAX_BULK)
                .ok_or_else(|| Error::Protocol(format!("bulk string of {len} bytes")))?;
            let stop = next + len;
            match buf.get(stop..stop + 2) {
                None => return Ok(None),
                Some(b"\r\n") => (Node::Bulk(next, stop), stop + 2),
                Some(_) => return Err(Error::Protocol("bulk string not ended by CRLF".into())),
            }
        }
        b'*' => {
            let len = integer(&buf[start..end])?;
            if len < 0 {
                return Ok(Some((Node::Nil, next)));
            }
            if depth >= MAX_DEPTH {
                return Err(Error::Protocol("arrays nested too deep".into()));
            }
            // The length comes from the peer: do not trust it for the allocation.
            let mut items = Vec::with_capacity((len as usize).min(1024));
            let mut at = next;
            for _ in 0..len {
                match parse_at(buf, at, depth + 1)? {
                    Some((item, after)) => {
                        items.push(item);
                        at = after;
                    }
                    None => return Ok(None),
                }
            }
            (Node::Array(items), at)
        }
        other => {
            return Err(Error::Protocol(format!(
                "unknown reply type {:?}",
                char::from(other)
            )));
        }
    }))
}

/// The line starting at `pos`: `(pos, index of its CR)`, or `None` if incomplete.
fn line(buf: &[u8], pos: usize) -> Result<Option<(usize, usize)>, Error> {
    let Some(rest) = buf.get(pos..) else {
        return Ok(None);
    };
    let Some(cr) = memchr::memchr(b'\r', rest) else {
        return Ok(None);
    };
    match rest.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((pos, pos + cr))),
        Some(_) => Err(Error::Protocol("CR without LF".into())),
    }
}

fn integer(text: &[u8]) -> Result<i64, Error> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            Error::Protocol(format!(
                "not an integer: {:?}",
                String::from_utf8_lossy(text)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(input: &[u8]) -> Reply {
        let (node, used) = parse(input).unwrap().unwrap();
        assert_eq!(used, input.len());
        node.reply(&Bytes::copy_from_slice(input))
    }

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn encodes_commands_as_resp_arrays() {
        let mut p = Pipeline::new();
        p.command("GET", &["k"]).command("MGET", &["a", "bc"]);
        assert_eq!(
            p.bytes,
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$2\r\nbc\r\n"
        );
        assert_eq!(p.len(), 2);
        let mut empty = Pipeline::new();
        empty.command("PING", &[] as &[&str]);
        assert_eq!(empty.bytes, b"*1\r\n$4\r\nPING\r\n");
        // An argument given in parts goes out as one bulk string of their total length.
        let mut joined = Pipeline::new();
        let ids: [&[u8]; 2] = [b"1", b"22"];
        joined.command_parts("MGET", ids.iter().map(|id| [&b"p:{"[..], id, b"}"]));
        assert_eq!(
            joined.bytes,
            b"*3\r\n$4\r\nMGET\r\n$5\r\np:{1}\r\n$6\r\np:{22}\r\n"
        );
        assert_eq!(joined.len(), 1);
    }

    #[test]
    fn parses_every_reply_type() {
        assert_eq!(
            parse_all(b"+OK\r\n"),
            Reply::Status(Bytes::from_static(b"OK"))
        );
        assert_eq!(parse_all(b":-42\r\n"), Reply::Int(-42));
        assert_eq!(parse_all(b"$-1\r\n"), Reply::Nil);
        assert_eq!(parse_all(b"*-1\r\n"), Reply::Nil);
        assert_eq!(parse_all(b"$0\r\n\r\n"), bulk(""));
        // Bulk strings are binary-safe: CR LF inside is data.
        assert_eq!(parse_all(b"$4\r\na\r\nb\r\n"), bulk("a\r\nb"));
        assert_eq!(
            parse_all(b"-WRONGTYPE Operation against a key\r\n"),
            Reply::Error("WRONGTYPE Operation against a key".into())
        );
        assert_eq!(
            parse_all(b"*3\r\n$2\r\nid\r\n$-1\r\n*1\r\n:1\r\n"),
            Reply::Array(vec![
                bulk("id"),
                Reply::Nil,
                Reply::Array(vec![Reply::Int(1)])
            ])
        );
    }

    #[test]
    fn incomplete_input_waits_for_more() {
        let whole = b"*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n";
        for cut in 0..whole.len() {
            assert!(parse(&whole[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        // Two replies back to back: the first is taken, the rest stays.
        let two = b":1\r\n:2\r\n";
        assert_eq!(parse(two).unwrap().unwrap().1, 4);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &b"?x\r\n"[..],
            b":abc\r\n",
            b"$3\r\nabcde\r\n",
            b"+OK\rX",
            b"$99999999999999\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn replies_convert_or_say_what_they_were() {
        assert_eq!(
            bulk("v").into_bytes().unwrap(),
            Some(Bytes::from_static(b"v"))
        );
        assert_eq!(Reply::Nil.into_bytes().unwrap(), None);
        assert!(matches!(
            Reply::Error("ERR x".into()).into_array(),
            Err(Error::Server(e)) if e == "ERR x"
        ));
        assert!(matches!(
            Reply::Int(1).into_bytes(),
            Err(Error::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn an_empty_pipeline_is_answered_without_a_round_trip() {
        // Port 1: nothing listens; the answer must not need a connection.
        let info = redis::Client::open("redis://127.0.0.1:1/").unwrap();
        let client = Client::new(info.get_connection_info()).unwrap();
        assert_eq!(client.query(Pipeline::new()).await.unwrap(), Vec::new());
        let mut ping = Pipeline::new();
        ping.command("PING", &[] as &[&str]);
        assert!(matches!(client.query(ping).await, Err(Error::Connect(_))));
    }

    /// A socket's write side that records the size of every write.
    struct Recorder(Arc<Mutex<Vec<usize>>>);

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.0.lock().unwrap().push(buf.len());
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Handlers that run at the same moment share one write. On a
    /// multi-thread runtime the writer, woken by the first request, would run
    /// right after it (the worker's LIFO slot) and write it alone, one
    /// syscall per command, unless it yields first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn requests_made_at_the_same_moment_share_one_write() {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let (reader, _peer) = tokio::io::duplex(64); // never answers
        let conn = Conn::start(reader, Recorder(writes.clone()));
        let (go, ready) = watch::channel(false);
        let ping = b"*1\r\n$4\r\nPING\r\n".to_vec();
        let mut handlers = Vec::new();
        for _ in 0..10 {
            let (conn, mut ready, ping) = (conn.clone(), ready.clone(), ping.clone());
            handlers.push(tokio::spawn(async move {
                let _ = ready.wait_for(|go| *go).await;
                // The reply is not awaited: Redis is not there to answer.
                let (tx, _reply) = oneshot::channel();
                let _ = conn.requests.send(Request {
                    bytes: ping,
                    replies: 1,
                    tx,
                });
            }));
        }
        drop(ready);
        go.send_replace(true);
        for h in handlers {
            h.await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while writes.lock().unwrap().iter().sum::<usize>() < 10 * ping.len() {
            assert!(Instant::now() < deadline, "the requests were not written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(*writes.lock().unwrap(), vec![10 * ping.len()]);
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panicking(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&input);
        }

        #[test]
        fn arrays_of_bulk_strings_round_trip(items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..30)) {
            let mut wire = format!("*{}\r\n", items.len()).into_bytes();
            for it in &items {
                wire.extend_from_slice(format!("${}\r\n", it.len()).as_bytes());
                wire.extend_from_slice(it);
                wire.extend_from_slice(b"\r\n");
            }
            let expected = Reply::Array(items.iter().map(|i| Reply::Bulk(Bytes::copy_from_slice(i))).collect());
            prop_assert_eq!(parse_all(&wire), expected);
        }
    }
}
