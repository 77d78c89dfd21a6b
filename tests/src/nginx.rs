//! nginx from Debian as a plain HTTP origin (a BEP 19 web seed) for the tests: started with a
//! generated config in a temp dir on a loopback port, stopped on drop.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{wait_until, Proc};

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

    /// Serves the files of `root` on 127.0.0.1:`port`, with `extra` added to the server block
    /// (e.g. `location /loop { return 302 /loop; }`).
    pub fn start(root: &Path, port: u16, extra: &str) -> Nginx {
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
               server {{\n    listen 127.0.0.1:{port};\n    root {root};\n{extra}\n  }}\n}}\n",
            d = d.display(),
            root = root.display(),
        );
        let conf_path: PathBuf = d.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let proc = Proc::spawn(
            Command::new("nginx")
                .arg("-p")
                .arg(d)
                .arg("-c")
                .arg(&conf_path)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        );
        let addr = format!("127.0.0.1:{port}");
        wait_until("nginx to listen", Duration::from_secs(20), || {
            TcpStream::connect(&addr).is_ok()
        });
        Nginx {
            base: format!("http://{addr}"),
            dir,
            _proc: proc,
        }
    }

    /// Lines of its access log.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}
