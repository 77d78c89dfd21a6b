//! A transmission-daemon (Debian's Transmission 3.00) started by a test, driven through
//! transmission-remote, stopped on drop; optionally inside a network namespace
//! ([`crate::netns::Netns`]), because Transmission never dials 127.0.0.0/8 peers it learned
//! from a tracker or through PEX.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::{free_port, run_with_timeout, wait_until, Proc};

/// How to start a [`Transmission`].
#[derive(Clone, Debug)]
pub struct TransmissionSetup {
    /// `bind-address-ipv4`: the address it listens on and announces.
    pub bind: String,
    /// Its peer port; `None` takes a free loopback port.
    pub peer_port: Option<u16>,
    /// Its RPC port (on 127.0.0.1 of its namespace); `None` takes a free loopback port.
    pub rpc_port: Option<u16>,
    /// `pex-enabled` (Transmission's default is on; off unless a test is about PEX).
    pub pex: bool,
    /// Run it (and transmission-remote) in this network namespace (`/run/netns/NAME`).
    pub netns: Option<String>,
    /// `encryption`: 0 prefers plaintext, 1 (Transmission's default) prefers MSE, 2 requires it.
    pub encryption: u8,
}

impl Default for TransmissionSetup {
    fn default() -> TransmissionSetup {
        TransmissionSetup {
            bind: "127.0.0.1".into(),
            peer_port: None,
            rpc_port: None,
            pex: false,
            netns: None,
            encryption: 1,
        }
    }
}

/// A running transmission-daemon.
pub struct Transmission {
    _daemon: Proc,
    /// Its RPC address, for transmission-remote.
    pub rpc: String,
    /// The port it accepts peers on.
    pub peer_port: u16,
    config: PathBuf,
    netns: Option<String>,
}

/// `cmd`, run in network namespace `netns` if given (nsenter changes only the network).
pub fn in_netns(netns: &Option<String>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(program);
            c
        }
        None => Command::new(program),
    }
}

impl Transmission {
    /// A daemon on loopback with its config in `config`, downloading to `download`.
    pub fn start(config: &Path, download: &Path) -> Transmission {
        Transmission::start_with(config, download, &TransmissionSetup::default())
    }

    /// A daemon set up as `setup` says.
    pub fn start_with(config: &Path, download: &Path, setup: &TransmissionSetup) -> Transmission {
        std::fs::create_dir_all(config).unwrap();
        std::fs::create_dir_all(download).unwrap();
        let peer_port = setup.peer_port.unwrap_or_else(free_port);
        let rpc_port = setup.rpc_port.unwrap_or_else(free_port);
        let settings = format!(
            r#"{{ "bind-address-ipv4": "{}", "bind-address-ipv6": "::1", "peer-port": {peer_port},
  "rpc-bind-address": "127.0.0.1", "rpc-port": {rpc_port}, "rpc-whitelist": "127.0.0.1",
  "rpc-authentication-required": false, "download-dir": "{}",
  "dht-enabled": false, "lpd-enabled": false, "pex-enabled": {}, "utp-enabled": false,
  "port-forwarding-enabled": false, "ratio-limit-enabled": false, "message-level": 3,
  "encryption": {} }}"#,
            setup.bind,
            download.display(),
            setup.pex,
            setup.encryption,
        );
        std::fs::write(config.join("settings.json"), settings).unwrap();
        let daemon = Proc::spawn(
            in_netns(&setup.netns, "transmission-daemon")
                .args(["-f", "-g"])
                .arg(config)
                .arg("-e")
                .arg(config.join("log"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let t = Transmission {
            _daemon: daemon,
            rpc: format!("127.0.0.1:{rpc_port}"),
            peer_port,
            config: config.to_owned(),
            netns: setup.netns.clone(),
        };
        wait_until(
            "transmission-daemon answers RPC",
            Duration::from_secs(30),
            || t.remote(&["-si"]).status.success(),
        );
        t
    }

    /// Runs transmission-remote against it with `args`.
    pub fn remote(&self, args: &[&str]) -> Output {
        run_with_timeout(
            in_netns(&self.netns, "transmission-remote")
                .arg(&self.rpc)
                .args(args),
            Duration::from_secs(20),
        )
    }

    /// Adds a torrent file.
    pub fn add(&self, torrent: &Path) {
        let out = self.remote(&["-a", torrent.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds a magnet link.
    pub fn add_magnet(&self, magnet: &str) {
        let out = self.remote(&["-a", magnet]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether every torrent it has is complete.
    pub fn complete(&self) -> bool {
        let out = self.remote(&["-t", "all", "-i"]);
        String::from_utf8_lossy(&out.stdout).contains("Percent Done: 100%")
    }

    /// The peer list of its torrents (`-pi`), as transmission-remote prints it.
    pub fn peers(&self) -> String {
        String::from_utf8_lossy(&self.remote(&["-t", "all", "-pi"]).stdout).into_owned()
    }

    /// Its log file.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.join("log")).unwrap_or_default()
    }
}
