//! nginx from Debian as a plain HTTP origin (a BEP 19 web seed) for the tests: started with a
//! generated config in a temp dir on a free loopback port, stopped on drop.
//!
//! The port is picked, not fixed: a fixed port in the ephemeral range can be the local end of
//! another test's outgoing connection (CI once failed on `bind() to 127.0.0.1:42002`), and a
//! picked one can be taken between picking and nginx's bind, so a failed start is retried on
//! a new port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, Proc};

/// A running nginx serving `root` at `http://127.0.0.1:PORT/`.
pub struct Nginx {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The temp dir of its config, logs and pid file.
    pub dir: tempfile::TempDir,
    _proc: Proc,
}

impl Nginx {
    /// Whether nginx is installed (`.ci/run` installs it).
    pub fn available() -> bool {
        Command::new("nginx")
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Serves the files of `root` on a free 127.0.0.1 port, with `extra` added to the server
    /// block (e.g. `location /loop { return 302 /loop; }`).
    pub fn start(root: &Path, extra: &str) -> Nginx {
        const ATTEMPTS: usize = 5;
        for _ in 0..ATTEMPTS {
            if let Some(nginx) = Nginx::try_start(root, free_port(), extra) {
                return nginx;
            }
        }
        panic!("nginx did not start on any of {ATTEMPTS} free ports (see its stderr above)");
    }

    /// One attempt on `port`: `None` when nginx exits (its port taken) before it listens.
    fn try_start(root: &Path, port: u16, extra: &str) -> Option<Nginx> {
        let dir = tempfile::Builder::new()
            .prefix("b4-nginx-")
            .tempdir()
            .expect("a temp dir");
        let d = dir.path();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\nuser root;\n\
             pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
               proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n    listen 127.0.0.1:{port};\n    root {root};\n\
                 location = /.vmt-ready {{ return 200 \"{d}\"; }}\n{extra}\n  }}\n}}\n",
            d = d.display(),
            root = root.display(),
        );
        let conf_path: PathBuf = d.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let mut proc = Proc::spawn(
            Command::new("nginx")
                .arg("-p")
                .arg(d)
                .arg("-c")
                .arg(&conf_path)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        );
        let addr = format!("127.0.0.1:{port}");
        let start = Instant::now();
        // nginx retries a busy bind for about 2.5 s before it exits, and whoever holds the
        // port may itself listen: only nginx answering with its own temp dir counts.
        while !answers(&addr, &d.display().to_string()) {
            if proc.child.try_wait().expect("wait on nginx").is_some() {
                return None;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out after 20 s waiting for nginx to listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Nginx {
            base: format!("http://{addr}"),
            dir,
            _proc: proc,
        })
    }

    /// Lines of its access log.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

/// Whether `GET /.vmt-ready` at `addr` answers with `token`.
fn answers(addr: &str, token: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = String::new();
    stream
        .write_all(b"GET /.vmt-ready HTTP/1.0\r\n\r\n")
        .and_then(|()| stream.read_to_string(&mut reply))
        .is_ok()
        && reply.ends_with(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The failure CI hit: the port is taken when nginx binds. The attempt must report it
    /// (so `start` moves to another port), not wait out its 20 s and fail the test.
    #[test]
    fn a_taken_port_is_reported_not_waited_on() {
        if !Nginx::available() {
            eprintln!("SKIPPED a_taken_port_is_reported_not_waited_on: no nginx");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let start = Instant::now();
        assert!(Nginx::try_start(root.path(), port, "").is_none());
        assert!(start.elapsed() < Duration::from_secs(10));
        let nginx = Nginx::start(root.path(), "");
        assert_ne!(nginx.base, format!("http://127.0.0.1:{port}"));
    }
}
