//! A private `redis-server` for a test: a free port, a temporary directory, no persistence
//! (unless started [`TestRedis::start_durable`]). It can be killed and restarted to test faults;
//! it is killed and waited for on drop, and its log is printed if the test is failing.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct TestRedis {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    password: Option<String>,
    /// Started with `--appendonly yes --appendfsync always`: every write acknowledged to a
    /// client is on disk, and a restart (which keeps the directory) replays it.
    durable: bool,
}

impl TestRedis {
    /// Starts a server; fails the test, saying how to install it, when `redis-server` is missing.
    pub fn start() -> Self {
        Self::start_with(None, false)
    }

    /// Starts a server that requires `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(Some(password.to_owned()), false)
    }

    /// Starts a server with an append-only file fsynced on every write
    /// (`--appendonly yes --appendfsync always`) in its temporary directory: whatever it
    /// acknowledged survives a SIGKILL, and [`TestRedis::restart`] (same port, same directory)
    /// loads it back.
    pub fn start_durable() -> Self {
        Self::start_with(None, true)
    }

    fn start_with(password: Option<String>, durable: bool) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut redis = TestRedis { port, dir, child: None, password, durable };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The server's directory (its log, and its append-only files when durable).
    #[allow(dead_code)] // the chaos harness's, not the API tests'
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The pid of the running server, if one runs.
    #[allow(dead_code)] // the chaos harness's, not the API tests'
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused server dies on SIGKILL all the same.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers, as with a hung
    /// or partitioned Redis.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Unfreezes a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Starts the server again on the same port and in the same directory (a durable server
    /// loads its append-only file back), and waits until it answers PING.
    pub fn restart(&mut self) {
        self.stop();
        let persistence: &[&str] = if self.durable {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let spawned = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(persistence)
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log())
            .args(self.password.iter().flat_map(|p| ["--requirepass", p.as_str()]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed; these tests need a real Redis. \
                 Install it (Debian/Ubuntu: `apt-get install redis-server`, macOS: `brew install redis`)."
            ),
            Err(err) => panic!("redis-server did not start: {err}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} never answered PING",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// True when the server answers `PING` with `+PONG`.
    pub fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        if let Some(password) = &self.password {
            let mut ok = [0u8; 5];
            let auth = format!("AUTH {password}\r\n");
            if stream.write_all(auth.as_bytes()).is_err() || stream.read_exact(&mut ok).is_err() {
                return false;
            }
        }
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// Runs one command over a raw connection (RESP), returning the raw reply: for setting up
    /// and inspecting state without going through the code under test.
    pub fn command(&self, args: &[&[u8]]) -> Vec<u8> {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.port)).expect("connect to test redis");
        stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        stream.write_all(&request).unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 65536];
        // Replies here are small and arrive in one piece; read until a short read.
        loop {
            let n = stream.read(&mut buf).unwrap_or(0);
            reply.extend_from_slice(&buf[..n]);
            if n < buf.len() {
                break;
            }
        }
        reply
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            if let Ok(log) = std::fs::read_to_string(self.log()) {
                eprintln!("--- redis-server log (port {}) ---\n{log}", self.port);
            }
        }
    }
}
